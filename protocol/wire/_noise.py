"""The Noise Protocol Framework (revision 34) for X25519, ChaCha20-Poly1305 and BLAKE2b/SHA256.

Theory of operation
-------------------

This is a direct transcription of the specification's three objects, in its words:

* `CipherState` (spec §5.1) is a key `k` and a 64-bit nonce `n`. `encrypt_with_ad` /
  `decrypt_with_ad` are EncryptWithAd / DecryptWithAd; `encrypt` / `decrypt` are the same
  with empty associated data, the transport hot path, except that without a key they
  refuse rather than pass the plaintext through; `rekey` is Rekey (§4.2, §11.3):
  `k = first 32 bytes of ENCRYPT(k, 2^64-1, b"", 32 zero bytes)`. The nonce is the 32-bit
  zero prefix and `n` little-endian (§12.3, ChaChaPoly).
  It is built on `_crypto.CountingCipher`, which holds the key and runs the per-message
  path in one Python frame; this class adds the Noise rules (the pass-through without a
  key, the 65,535-byte limit, which errors are raised).
* `SymmetricState` (§5.2) is the chaining key `ck`, the handshake hash `h` and a
  `CipherState`: MixHash, MixKey, EncryptAndHash, DecryptAndHash and Split. HKDF is
  §4.3's, over an HMAC (RFC 2104) built from hashlib with the key pads precomputed.
* `HandshakeState` (§5.3) runs a handshake pattern's tokens (`e`, `s`, `ee`, `es`, `se`,
  `ss`) from the table `PATTERNS` (§7.4 one-way and §7.5 interactive patterns: all 15
  basic ones). The initiator writes messages 0, 2, 4, ...; the responder 1, 3, ... For a
  one-way pattern (N, K, X) there is one message, initiator to responder.

Invariants:

* `n` only grows, by one per successful encryption or decryption; a failed decryption does
  not advance it (§5.1). The nonce 2^64-1 is reserved for Rekey: `n` reaching it raises
  `NonceExhaustedError` rather than wrapping or reusing a nonce. Rekey leaves `n` alone.
* Every message is at most 65,535 bytes (§3): a longer one is refused in both directions.
* A handshake message is checked against its pattern's minimum length *before* any
  Diffie-Hellman work, so a short message costs the receiver no DH (and raises
  `RemoteProtocolError` with `HANDSHAKE_FAILED`).
* A DH result that is all zeros (the peer sent a low-order point) raises `CryptoError`.
  §12.1 allows this instead of carrying on with zeros (while discouraging it as adding
  variance without improving Noise's own security); we refuse anyway, as WireGuard does:
  such a key contributes nothing to the session, and the check is free inside libsodium.
* `HandshakeState` fails closed: any exception from `write_message` / `read_message`
  marks it failed and zeroes its secrets, and every later call raises
  `LocalProtocolError`. A `CipherState` does not: a transport decryption that fails leaves
  it usable (§5.1), and the connection above decides to close.
* Keys we were handed (`s`, and `e` when a test pins it) are used, never copied. The
  caller's static key is never zeroed here; an ephemeral key is, pinned or not.

What is zeroed, and what Python will not let us zero
----------------------------------------------------

Zeroed (sodium_memzero) in place: `ck` (a `bytearray`) and the handshake's `k` on
`split()` / `clear()`, or when a handshake fails; the ephemeral private key `e.private`
on `split()` / `clear()` / failure; every DH result right after MixKey has consumed it;
a `CipherState`'s key on `clear()`; the old key on `rekey()` (overwritten in place, and
the new key never exists outside that `bytearray`).

Not zeroable, and left for the allocator to reuse:

* Everything inside HKDF: the padded key blocks (key XOR ipad / opad), hashlib's internal
  states, and the `bytes` that `digest()` returns, which carry the HKDF outputs (the new
  `ck` and `k` of each MixKey, the two transport keys of Split) before they are copied
  into `bytearray`s. hashlib offers no way to wipe its states or its outputs, so wiping
  our own copies of the pads would buy nothing.
* The `bytes` copy of a key given to `CipherState(key)` (the caller's) and of the 32-byte
  slices Split makes for the two new cipher states.
* Plaintexts and payloads, returned as `bytes` to the caller; and the per-thread output
  buffer in `_crypto`, overwritten by the next operation rather than wiped.
* `h`, the public keys and the ciphertexts are not secret and are plain `bytes`.

So zeroing here shortens how long secrets sit in memory; it does not promise that a
memory dump taken after `split()` holds no trace of the handshake. The forward secrecy
that matters against a seized relay comes from the ephemeral keys being discarded.

Not handled: PSK modes (MixKeyAndHash, HKDF with three outputs), the deferred patterns
of §7.6, fallback and pre-shared ephemeral keys (`re` is accepted by the constructor, as
the spec's Initialize() has it, but no supported pattern uses it, so it must be None).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol, Self, TypeAlias, cast

from .._crypto import (
    AEAD_TAG_SIZE,
    MAX_COUNTER,
    MAX_COUNTING_PLAINTEXT,
    X25519_KEY_SIZE,
    CountingCipher,
    x25519,
    x25519_generate,
    x25519_public_from_private,
    zero,
)
from .._errors import CryptoError, ErrorCode, LocalProtocolError, RemoteProtocolError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .._crypto import Readable

__all__ = [
    "DHLEN",
    "MAX_MESSAGE",
    "MAX_NONCE",
    "PATTERNS",
    "CipherState",
    "HandshakePattern",
    "HandshakeState",
    "HashName",
    "KeyPair",
    "NonceExhaustedError",
    "SymmetricState",
    "Token",
]

DHLEN: Final = X25519_KEY_SIZE  # spec §12.1: 25519's DHLEN is 32
MAX_MESSAGE: Final = 65_535  # spec §3: every Noise message fits in 65,535 bytes
MAX_PLAINTEXT: Final = MAX_MESSAGE - AEAD_TAG_SIZE  # the most a full-size message carries
if MAX_PLAINTEXT != MAX_COUNTING_PLAINTEXT:  # pragma: no cover - CipherState relies on it
    raise ImportError("_crypto.CountingCipher's message limit is not Noise's")
# Spec §5.1: n = 2^64-1 is reserved (Rekey uses it), so the last usable nonce is 2^64-2.
MAX_NONCE: Final = MAX_COUNTER
_KEY_SIZE: Final = 32  # spec §4.2: cipher keys are 32 bytes; HASHLEN 64 outputs are truncated

# RFC 2104: HMAC key pads. bytes.translate XORs a whole key block in one C call.
_IPAD: Final = bytes(b ^ 0x36 for b in range(256))
_OPAD: Final = bytes(b ^ 0x5C for b in range(256))


class NonceExhaustedError(CryptoError):
    """A cipher state has used every nonce it may (2^64-1 messages) and refuses to go on.

    Rekeying does not reset the nonce; the session must be replaced by a new handshake.
    """


# -- hash functions (spec §12.7, §12.8) --------------------------------------------------------


class _HashObject(Protocol):
    def digest(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class _HashSpec:
    """One of Noise's hash functions: its constructor, HASHLEN and BLOCKLEN."""

    name: str
    new: Callable[[Readable], _HashObject]
    hashlen: int
    blocklen: int

    key_pad: bytes = field(init=False)  # zeros extending a HASHLEN key to BLOCKLEN (RFC 2104)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_pad", bytes(self.blocklen - self.hashlen))


HashName: TypeAlias = Literal["BLAKE2b", "SHA256"]

_HASHES: Final[Mapping[str, _HashSpec]] = {
    "BLAKE2b": _HashSpec("BLAKE2b", hashlib.blake2b, hashlen=64, blocklen=128),
    "SHA256": _HashSpec("SHA256", hashlib.sha256, hashlen=32, blocklen=64),
}


# -- KeyPair -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class KeyPair:
    """An X25519 key pair; the private half is a `bytearray` so `clear()` can zero it.

    Not comparable with `==`: comparing private keys is nothing code here should do.
    """

    public: bytes
    private: bytearray = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.public) != DHLEN or len(self.private) != DHLEN:
            raise LocalProtocolError(f"X25519 keys are {DHLEN} bytes")

    @classmethod
    def generate(cls) -> KeyPair:
        """Return a fresh key pair from libsodium's CSPRNG."""
        public, private = x25519_generate()
        return cls(public, private)

    @classmethod
    def from_private(cls, private: bytes | bytearray) -> KeyPair:
        """Return the key pair of `private` (32 bytes), copied into a new `bytearray`."""
        if len(private) != DHLEN:
            raise LocalProtocolError(f"an X25519 private key is {DHLEN} bytes")
        return cls(x25519_public_from_private(private), bytearray(private))

    def clear(self) -> None:
        """Zero the private key in place; the pair is unusable afterwards."""
        zero(self.private)


# -- CipherState (spec §5.1) ---------------------------------------------------------------------


class CipherState(CountingCipher):
    """A ChaCha20-Poly1305 key and its nonce counter `n` (spec §5.1).

    `encrypt` / `decrypt` carry transport messages (empty associated data); they are
    `CountingCipher`'s, so a transport message costs one Python frame above libsodium.
    `encrypt_with_ad` / `decrypt_with_ad` are the spec's EncryptWithAd / DecryptWithAd,
    which the handshake uses with `h` as associated data.
    """

    __slots__ = ("_cleared",)

    def __init__(self, key: bytes | bytearray | None = None) -> None:
        """Start with `key` (32 bytes, copied) or, with None, no key (spec InitializeKey)."""
        self._cleared = False
        if key is not None and len(key) != _KEY_SIZE:
            raise LocalProtocolError(f"a cipher key is {_KEY_SIZE} bytes")
        super().__init__(key)

    def __repr__(self) -> str:
        state = "cleared" if self._cleared else "keyed" if self.has_key() else "empty"
        return f"<CipherState {state} n={self.n}>"

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        """Return an independent copy (see `CountingCipher.__deepcopy__` for the caveat)."""
        clone = super().__deepcopy__(memo)
        clone._cleared = self._cleared
        return clone

    def _refuse(self) -> Exception:
        # Off the hot path: called only when a message cannot be processed.
        if self._cleared:
            return LocalProtocolError("this cipher state was cleared")
        if not self.has_key():
            return LocalProtocolError("this cipher state has no key")
        return NonceExhaustedError("nonce space exhausted")

    def _too_long(self, size: int, *, received: bool) -> Exception:
        if received:
            return RemoteProtocolError(
                f"a {size + AEAD_TAG_SIZE}-byte message exceeds {MAX_MESSAGE}", ErrorCode.BAD_FRAME
            )
        return LocalProtocolError(f"a {size}-byte plaintext exceeds {MAX_PLAINTEXT}")

    def initialize_key(self, key: Readable) -> None:
        """Set a new key (32 bytes, copied over the old one) and reset `n` to 0."""
        if self._cleared:
            raise self._refuse()
        if len(key) != _KEY_SIZE:
            raise LocalProtocolError(f"a cipher key is {_KEY_SIZE} bytes")
        self._set_key(key)
        self.n = 0

    def encrypt_with_ad(self, ad: Readable, plaintext: Readable) -> bytes:
        """Return EncryptWithAd(ad, plaintext): the plaintext itself while there is no key.

        Raises:
            NonceExhaustedError: `n` reached 2^64-1.
            LocalProtocolError: the state was cleared, or the message would exceed 65,535 bytes.
        """
        if self.has_key() or self._cleared:
            return self.encrypt_ad(ad, plaintext)
        if len(plaintext) > MAX_MESSAGE:
            raise LocalProtocolError(f"a {len(plaintext)}-byte message exceeds {MAX_MESSAGE}")
        return bytes(plaintext)

    def decrypt_with_ad(self, ad: Readable, ciphertext: Readable) -> bytes:
        """Return DecryptWithAd(ad, ciphertext): the ciphertext itself while there is no key.

        Raises:
            CryptoError: authentication failed (`n` does not advance).
            NonceExhaustedError: `n` reached 2^64-1.
            RemoteProtocolError: the message exceeds 65,535 bytes (BAD_FRAME).
            LocalProtocolError: the state was cleared.
        """
        if self.has_key() or self._cleared:
            return self.decrypt_ad(ad, ciphertext)
        if len(ciphertext) > MAX_MESSAGE:
            raise self._too_long(len(ciphertext) - AEAD_TAG_SIZE, received=True)
        return bytes(ciphertext)

    # encrypt(plaintext) / decrypt(ciphertext): inherited from CountingCipher. Unlike the
    # *_with_ad forms they refuse to run without a key (LocalProtocolError): a transport
    # cipher without a key is a bug, and passing plaintext through would send it in clear.

    def rekey(self) -> None:
        """Replace the key with REKEY(k) (spec §4.2, §11.3); `n` is unchanged.

        Both sides must rekey at the same point in the message stream.
        """
        super().rekey()

    def clear(self) -> None:
        """Zero the key; every later use raises `LocalProtocolError`."""
        self._zero_key()
        self._cleared = True


# -- SymmetricState (spec §5.2) ------------------------------------------------------------------


class SymmetricState:
    """The chaining key `ck`, the handshake hash `h` and a `CipherState` (spec §5.2)."""

    __slots__ = ("_ck", "_h", "_spec", "cipher")

    def __init__(self, protocol_name: bytes, hash_name: HashName = "BLAKE2b") -> None:
        """InitializeSymmetric(protocol_name)."""
        spec = _HASHES.get(hash_name)
        if spec is None:
            raise LocalProtocolError(f"unsupported hash {hash_name!r}")
        self._spec = spec
        if len(protocol_name) <= spec.hashlen:
            h = protocol_name + bytes(spec.hashlen - len(protocol_name))
        else:
            h = spec.new(protocol_name).digest()
        self._h = h
        self._ck = bytearray(h)
        self.cipher = CipherState()

    @property
    def handshake_hash(self) -> bytes:
        """The current `h` (GetHandshakeHash)."""
        return self._h

    def has_key(self) -> bool:
        """Whether the inner cipher state has a key yet."""
        return self.cipher.has_key()

    def mix_hash(self, data: Readable) -> None:
        """MixHash: h = HASH(h || data)."""
        self._h = self._spec.new(self._h + data).digest()

    def _hkdf2(self, ikm: Readable) -> tuple[bytes, bytes]:
        """Return HKDF(ck, ikm, 2) (spec §4.3) over an HMAC built by hand (RFC 2104).

        HMAC(K, m) = HASH((K' ^ opad) || HASH((K' ^ ipad) || m)), K' = K padded to BLOCKLEN.
        Every HMAC key here is HASHLEN <= BLOCKLEN bytes, so it is only ever padded. Written
        as concatenations rather than hmac.digest or hasher.update calls: on the reference
        machine this is 2x faster than hmac.digest, and HKDF runs three times per handshake.
        The padded key blocks, hashlib's states and the digests are not zeroed (see the
        module docstring).
        """
        spec = self._spec
        new = spec.new
        pad = spec.key_pad
        block = self._ck + pad
        inner = new(block.translate(_IPAD) + ikm).digest()
        temp_key = new(block.translate(_OPAD) + inner).digest() + pad
        ipad_key = temp_key.translate(_IPAD)
        opad_key = temp_key.translate(_OPAD)
        output1 = new(opad_key + new(ipad_key + b"\x01").digest()).digest()
        output2 = new(opad_key + new(ipad_key + output1 + b"\x02").digest()).digest()
        return output1, output2

    def mix_key(self, ikm: Readable) -> None:
        """MixKey: ck, temp_k = HKDF(ck, ikm, 2); InitializeKey(temp_k[:32])."""
        new_ck, temp_k = self._hkdf2(ikm)
        self._ck[:] = new_ck  # same length: overwrites in place, no reallocation
        self.cipher.initialize_key(temp_k[:_KEY_SIZE])

    def encrypt_and_hash(self, plaintext: Readable) -> bytes:
        """EncryptAndHash: ciphertext = EncryptWithAd(h, plaintext); MixHash(ciphertext)."""
        ciphertext = self.cipher.encrypt_with_ad(self._h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: Readable) -> bytes:
        """DecryptAndHash: plaintext = DecryptWithAd(h, ciphertext); MixHash(ciphertext)."""
        plaintext = self.cipher.decrypt_with_ad(self._h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """Split: return (c1, c2) from HKDF(ck, b"", 2); does not clear this state."""
        key1, key2 = self._hkdf2(b"")
        return (
            CipherState(key1[:_KEY_SIZE]),
            CipherState(key2[:_KEY_SIZE]),
        )

    def clear(self) -> None:
        """Zero `ck` and the cipher key; `h` (public) stays readable."""
        zero(self._ck)
        self.cipher.clear()


# -- handshake patterns (spec §7) --------------------------------------------------------------

Token: TypeAlias = Literal["e", "s", "ee", "es", "se", "ss"]
_DH_TOKENS: Final = frozenset({"ee", "es", "se", "ss"})


@dataclass(frozen=True, slots=True)
class HandshakePattern:
    """A handshake pattern: pre-message tokens and the tokens of each message, in order."""

    name: str
    initiator_pre: tuple[Token, ...]
    responder_pre: tuple[Token, ...]
    messages: tuple[tuple[Token, ...], ...]
    # Filled in by __post_init__: each message's minimum length, which is every key it
    # carries plus a tag for each encrypted part. Known in advance because, without PSKs,
    # whether the cipher has a key at a given token depends only on the pattern.
    min_lengths: tuple[int, ...] = field(init=False)
    # Per side, (initiator, responder): does it have a static key at all, and is that key
    # a pre-message, known to the other side in advance?
    has_static: tuple[bool, bool] = field(init=False)
    static_known: tuple[bool, bool] = field(init=False)

    def __post_init__(self) -> None:
        known = ("s" in self.initiator_pre, "s" in self.responder_pre)
        sent = tuple(any("s" in tokens for tokens in self.messages[side::2]) for side in (0, 1))
        object.__setattr__(self, "static_known", known)
        object.__setattr__(self, "has_static", (known[0] or sent[0], known[1] or sent[1]))
        lengths = []
        keyed = False
        for tokens in self.messages:
            size = 0
            for tok in tokens:
                if tok == "e":
                    size += DHLEN
                elif tok == "s":
                    size += DHLEN + (AEAD_TAG_SIZE if keyed else 0)
                else:
                    keyed = True
            lengths.append(size + (AEAD_TAG_SIZE if keyed else 0))
        object.__setattr__(self, "min_lengths", tuple(lengths))

    @property
    def one_way(self) -> bool:
        """Whether only the initiator sends (spec §7.4)."""
        return len(self.messages) == 1


def _pattern(name: str, pre: tuple[str, str], *messages: str) -> HandshakePattern:
    """Build a pattern from the spec's notation: "e, es" per message, pre as (initiator, responder)."""

    def tokens(text: str) -> tuple[Token, ...]:
        words = tuple(word.strip() for word in text.split(",") if word.strip())
        if not set(words) <= {"e", "s", *_DH_TOKENS}:  # pragma: no cover - a typo in PATTERNS
            raise ValueError(f"bad token in pattern {name}: {text!r}")
        return cast("tuple[Token, ...]", words)

    return HandshakePattern(name, tokens(pre[0]), tokens(pre[1]), tuple(map(tokens, messages)))


# Spec rev 34 §7.4 (one-way) and §7.5 (interactive), copied token for token. Messages
# alternate: -> (initiator) first, then <-, then -> ...
PATTERNS: Final[Mapping[str, HandshakePattern]] = {
    p.name: p
    for p in (
        _pattern("N", ("", "s"), "e, es"),
        _pattern("K", ("s", "s"), "e, es, ss"),
        _pattern("X", ("", "s"), "e, es, s, ss"),
        _pattern("NN", ("", ""), "e", "e, ee"),
        _pattern("NK", ("", "s"), "e, es", "e, ee"),
        _pattern("NX", ("", ""), "e", "e, ee, s, es"),
        _pattern("KN", ("s", ""), "e", "e, ee, se"),
        _pattern("KK", ("s", "s"), "e, es, ss", "e, ee, se"),
        _pattern("KX", ("s", ""), "e", "e, ee, se, s, es"),
        _pattern("XN", ("", ""), "e", "e, ee", "s, se"),
        _pattern("XK", ("", "s"), "e, es", "e, ee", "s, se"),
        _pattern("XX", ("", ""), "e", "e, ee, s, es", "s, se"),
        _pattern("IN", ("", ""), "e, s", "e, ee, se"),
        _pattern("IK", ("", "s"), "e, es, s, ss", "e, ee, se"),
        _pattern("IX", ("", ""), "e, s", "e, ee, se, s, es"),
    )
}


# -- HandshakeState (spec §5.3) ------------------------------------------------------------------


class HandshakeState:
    """One side of one Noise handshake (spec §5.3); see the module docstring.

    `e` may be given only so tests can pin known-answer vectors; otherwise the ephemeral
    key comes from libsodium's CSPRNG when the pattern's `e` token is written.
    """

    def __init__(
        self,
        pattern: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: KeyPair | None = None,
        e: KeyPair | None = None,
        rs: bytes | None = None,
        re: bytes | None = None,
        hash_name: HashName = "BLAKE2b",
    ) -> None:
        """Initialize(): check the keys against the pattern, hash the prologue and pre-messages.

        Raises:
            LocalProtocolError: unknown pattern or hash; a key the pattern needs is
                missing, or one is given that it does not use. A pattern that learns the
                peer's static key during the handshake (XX, ...) refuses `rs`: compare
                `remote_static` after the handshake instead, so a pin is never silently
                ignored.
        """
        spec = PATTERNS.get(pattern)
        if spec is None:
            raise LocalProtocolError(f"unsupported handshake pattern {pattern!r}")
        if hash_name not in _HASHES:
            raise LocalProtocolError(f"unsupported hash {hash_name!r}")
        self._pattern = spec
        self._initiator = initiator
        self.protocol_name: Final = f"Noise_{pattern}_25519_ChaChaPoly_{hash_name}"

        ours, theirs = (0, 1) if initiator else (1, 0)
        if (s is None) == spec.has_static[ours]:
            need = "does not use" if s is not None else "needs"
            raise LocalProtocolError(f"{pattern} {need} a local static key for this role")
        if spec.static_known[theirs] != (rs is not None):
            need = "needs" if rs is None else "does not take"
            raise LocalProtocolError(f"{pattern} {need} the remote static key in advance")
        if re is not None:
            raise LocalProtocolError("no supported pattern takes a pre-shared remote ephemeral")
        if rs is not None and len(rs) != DHLEN:
            raise LocalProtocolError(f"a static public key is {DHLEN} bytes")

        self._s = s
        self._e = e
        self._rs = None if rs is None else bytes(rs)
        self._re: bytes | None = None
        self._message = 0  # index of the next message in spec.messages
        self._failed = False
        self._split = False

        symmetric = SymmetricState(self.protocol_name.encode("ascii"), hash_name)
        symmetric.mix_hash(prologue)
        # §7.1: the initiator's pre-message key is hashed first, then the responder's. Only
        # "s" occurs in the basic patterns' pre-messages.
        for side in (0, 1):
            if spec.static_known[side]:
                symmetric.mix_hash(self._need_s().public if side == ours else self._need_rs())
        self._symmetric = symmetric

    def __repr__(self) -> str:
        role = "initiator" if self._initiator else "responder"
        state = (
            "failed" if self._failed else f"message {self._message}/{len(self._pattern.messages)}"
        )
        return f"<HandshakeState {self.protocol_name} {role} {state}>"

    @property
    def finished(self) -> bool:
        """Whether every message of the pattern has been written or read."""
        return self._message == len(self._pattern.messages)

    @property
    def handshake_hash(self) -> bytes:
        """The handshake hash `h`: readable at any time, final once `finished`."""
        return self._symmetric.handshake_hash

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key, once known (given in advance, or read).

        None after a failure or `clear()`: a key read from a handshake that did not finish
        must not be mistaken for an authenticated peer.
        """
        return None if self._failed else self._rs

    @property
    def is_initiator(self) -> bool:
        """Whether this side started the handshake."""
        return self._initiator

    def _need_s(self) -> KeyPair:
        if self._s is None:  # pragma: no cover - __init__ checked the pattern needs none
            raise LocalProtocolError("no local static key")
        return self._s

    def _need_rs(self) -> bytes:
        if self._rs is None:  # pragma: no cover - the pattern guarantees it was read
            raise LocalProtocolError("no remote static key")
        return self._rs

    def _check_turn(self, writing: bool) -> None:
        if self._failed or self._split:
            raise LocalProtocolError(f"{self!r} cannot be used any more")
        if self.finished:
            raise LocalProtocolError(f"{self!r} is finished: split() it")
        initiator_turn = self._message % 2 == 0
        if (initiator_turn == self._initiator) != writing:
            verb = "write" if writing else "read"
            raise LocalProtocolError(f"{self!r} cannot {verb} now: it is the other side's turn")

    def _mix_dh(self, tok: Token) -> None:
        """Run a DH token: MixKey(DH(...)) with the keys the token and our role name."""
        e, s = self._e, self._s
        if tok == "ee":
            local, remote = e, self._re
        elif tok == "ss":
            local, remote = s, self._rs
        elif (tok == "es") == self._initiator:  # initiator's es, responder's se
            local, remote = e, self._rs
        else:  # initiator's se, responder's es
            local, remote = s, self._re
        if local is None or remote is None:  # pragma: no cover - patterns order their tokens
            raise LocalProtocolError(f"token {tok} before its keys")
        shared = x25519(local.private, remote)
        try:
            self._symmetric.mix_key(shared)
        finally:
            zero(shared)

    def write_message(self, payload: Readable = b"") -> bytes:
        """Return the next handshake message, carrying `payload` (WriteMessage).

        Raises:
            LocalProtocolError: it is the peer's turn, the handshake is over or failed, or
                the message would exceed 65,535 bytes.
            CryptoError: the peer's key is a low-order point.
        """
        try:
            self._check_turn(writing=True)
            return self._write(payload)
        except BaseException:
            self.clear()  # fail closed: no half-updated transcript is ever used again
            raise

    def _write(self, payload: Readable) -> bytes:
        symmetric = self._symmetric
        parts: list[bytes] = []
        for tok in self._pattern.messages[self._message]:
            if tok == "e":
                if self._e is None:
                    self._e = KeyPair.generate()
                parts.append(self._e.public)
                symmetric.mix_hash(self._e.public)
            elif tok == "s":
                parts.append(symmetric.encrypt_and_hash(self._need_s().public))
            else:
                self._mix_dh(tok)
        parts.append(symmetric.encrypt_and_hash(payload))
        message = b"".join(parts)
        if len(message) > MAX_MESSAGE:
            raise LocalProtocolError(
                f"a {len(message)}-byte handshake message exceeds {MAX_MESSAGE}"
            )
        self._message += 1
        return message

    def read_message(self, message: Readable) -> bytes:
        """Process the peer's next handshake message and return its payload (ReadMessage).

        Raises:
            RemoteProtocolError: (HANDSHAKE_FAILED) the message is shorter than the pattern
                allows, or longer than 65,535 bytes.
            CryptoError: it failed to authenticate, or carries a low-order key.
            LocalProtocolError: it is our turn to write, or the handshake is over or failed.
        """
        try:
            self._check_turn(writing=False)
            return self._read(message)
        except BaseException:
            self.clear()  # fail closed: no half-updated transcript is ever used again
            raise

    def _read(self, message: Readable) -> bytes:
        size = message.nbytes if type(message) is memoryview else len(message)
        index = self._message
        if not self._pattern.min_lengths[index] <= size <= MAX_MESSAGE:
            raise RemoteProtocolError(
                f"handshake message {index} of {self._pattern.name} cannot be {size} bytes",
                ErrorCode.HANDSHAKE_FAILED,
            )
        data = message if type(message) is bytes else bytes(message)
        symmetric = self._symmetric
        pos = 0
        for tok in self._pattern.messages[index]:
            if tok == "e":
                self._re = data[pos : pos + DHLEN]
                pos += DHLEN
                symmetric.mix_hash(self._re)
            elif tok == "s":
                end = pos + DHLEN + (AEAD_TAG_SIZE if symmetric.has_key() else 0)
                self._rs = symmetric.decrypt_and_hash(data[pos:end])
                pos = end
            else:
                self._mix_dh(tok)
        payload = symmetric.decrypt_and_hash(data[pos:])
        self._message = index + 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """Return (send, receive) cipher states for this side and zero the handshake's secrets.

        The initiator gets (c1, c2) and the responder (c2, c1) (spec §5.2 Split). After a
        one-way pattern only the initiator sends. Zeroed: `ck`, the handshake cipher key
        and our ephemeral private key; the static key is the caller's and is left alone.

        Raises:
            LocalProtocolError: the handshake has not finished, failed, or was split already.
        """
        if self._failed or self._split or not self.finished:
            raise LocalProtocolError(f"{self!r} cannot be split")
        c1, c2 = self._symmetric.split()
        self._split = True
        self._wipe()
        return (c1, c2) if self._initiator else (c2, c1)

    def clear(self) -> None:
        """Abandon the handshake: zero its secrets; every later call raises."""
        self._failed = True
        self._wipe()

    def _wipe(self) -> None:
        self._symmetric.clear()
        if self._e is not None:
            self._e.clear()
