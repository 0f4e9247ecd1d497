"""The one doorway to libsodium: typed X25519, ChaCha20-Poly1305, XChaCha20-Poly1305, Ed25519.

Everything here calls libsodium through PyNaCl's own cffi module (`nacl._sodium`) rather
than `nacl.bindings`. The wrappers in `nacl.bindings` check argument types with
`isinstance` chains, allocate zero-filled output buffers and copy twice; on a 600-byte
ChaCha20-Poly1305 message that costs more than the cipher itself (11.3 µs against 3.4 µs
measured on the reference machine). This module keeps the checks that matter for safety
(lengths, return codes) and skips the rest.

Conventions:

* Secret keys live in `bytearray`s, so they can be zeroed with `zero`. Functions accept
  `bytes` too, for tests and for keys that arrive from storage; the caller owns zeroing.
* Anything that comes from a peer (ciphertexts, signatures, public keys) and fails a
  check raises `CryptoError`, whose message never says which check failed. A wrong-size
  key or nonce that our own code passed in is a bug on our side and raises `ValueError`.
* Outputs are `bytes` (immutable, so they cannot be zeroed); a secret output (a DH
  result, a private key) is a fresh `bytearray` the caller can zero.

`CountingCipher` is the one stateful object: a ChaCha20-Poly1305 key whose nonce is a
message counter, the per-message path of Noise transport (`protocol/wire/_noise.py`'s
`CipherState` builds on it). It lives here, not in `_noise`, so that path is a single
Python frame above libsodium and this module stays the only one that touches `lib`.

AEAD output goes to a reusable scratch buffer and is copied out as `bytes` (measured
here: an `ffi.new` per call costs 0.2-0.5 µs, the reused buffer 0.1 µs). libsodium releases
the GIL during each call, so the buffer is per thread (`_Scratch`): a shared one would let
two threads write into it at once. It keeps the last plaintext or ciphertext until the next
call overwrites it; the `bytes` handed back are no easier to wipe, so wiping it buys nothing.

To add a primitive: call `lib` directly, pass `bytearray`s through `ffi.from_buffer`,
check every return code, and add its Wycheproof file to tests/protocol/test_crypto.py.
"""

from __future__ import annotations

import struct
import threading
from typing import TYPE_CHECKING, Final, Self, TypeAlias

from nacl._sodium import ffi, lib

from ._errors import CryptoError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "AEAD_TAG_SIZE",
    "BLAKE2B_MAX_KEY_SIZE",
    "BLAKE2B_MAX_SIZE",
    "BLAKE2B_PERSONAL_SIZE",
    "CHACHA20POLY1305_KEY_SIZE",
    "CHACHA20POLY1305_NONCE_SIZE",
    "ED25519_PUBLIC_KEY_SIZE",
    "ED25519_SECRET_KEY_SIZE",
    "ED25519_SEED_SIZE",
    "ED25519_SIGNATURE_SIZE",
    "MAX_COUNTER",
    "MAX_COUNTING_PLAINTEXT",
    "X25519_KEY_SIZE",
    "XCHACHA20POLY1305_KEY_SIZE",
    "XCHACHA20POLY1305_NONCE_SIZE",
    "CountingCipher",
    "HashChain",
    "Readable",
    "SigningKey",
    "XChaChaKey",
    "blake2b",
    "blake2b_secret",
    "chacha20poly1305_decrypt",
    "chacha20poly1305_encrypt",
    "ed25519_from_seed",
    "ed25519_generate",
    "ed25519_public_from_secret",
    "ed25519_sign",
    "ed25519_verify",
    "random_bytes",
    "random_secret",
    "x25519",
    "x25519_generate",
    "x25519_public_from_private",
    "xchacha20poly1305_decrypt",
    "xchacha20poly1305_encrypt",
    "zero",
]

Readable: TypeAlias = bytes | bytearray | memoryview
"""Byte strings we only read: libsodium gets a pointer into them, never a copy."""

# RFC 7748 §5: X25519 scalars, u-coordinates and shared secrets are 32 bytes.
X25519_KEY_SIZE: Final = 32
# RFC 8439 §2.8: 256-bit key, 96-bit nonce, 128-bit Poly1305 tag.
CHACHA20POLY1305_KEY_SIZE: Final = 32
CHACHA20POLY1305_NONCE_SIZE: Final = 12
AEAD_TAG_SIZE: Final = 16
# draft-irtf-cfrg-xchacha-03 §2: the same key and tag, a 192-bit nonce (safe to pick at random).
XCHACHA20POLY1305_KEY_SIZE: Final = 32
XCHACHA20POLY1305_NONCE_SIZE: Final = 24
# RFC 8032 §5.1.5-6: 32-byte seed and public key, 64-byte signature. libsodium's secret key
# is seed || public key, 64 bytes.
ED25519_SEED_SIZE: Final = 32
ED25519_PUBLIC_KEY_SIZE: Final = 32
ED25519_SECRET_KEY_SIZE: Final = 64
ED25519_SIGNATURE_SIZE: Final = 64

# RFC 7693 §2.1 and libsodium's crypto_generichash_blake2b: 1..64-byte digests, keys of at
# most 64 bytes, a 16-byte personalisation string.
BLAKE2B_MAX_SIZE: Final = 64
BLAKE2B_MAX_KEY_SIZE: Final = 64
BLAKE2B_PERSONAL_SIZE: Final = 16

# Each thread's output buffer is this big; larger outputs get a buffer of their own. It is
# the largest Noise message (Noise spec rev 34 §3: 65,535 bytes), so transport never
# allocates, and it is also CountingCipher's message limit.
_SCRATCH_SIZE: Final = 65_535
# The most a CountingCipher message carries: a full buffer less the tag (65,519 bytes).
MAX_COUNTING_PLAINTEXT: Final = _SCRATCH_SIZE - AEAD_TAG_SIZE

# sodium_init() picks the fastest implementation for this CPU (AVX2 ChaCha20, the sandy2x
# X25519) and seeds the CSPRNG. Importing nacl._sodium alone does not call it; without it,
# X25519 ran 2x and ChaCha20-Poly1305 1.5-2x slower on the reference machine. It returns
# 0 on the first call, 1 if already done, -1 on failure.
if lib.sodium_init() < 0:  # pragma: no cover - libsodium cannot set itself up; nothing works
    raise ImportError("libsodium failed to initialise")

_NULL: Final = ffi.NULL
_UCHAR_ARRAY: Final = ffi.typeof("unsigned char[]")
# Output buffers are written in full before they are read, so skip cffi's memset.
_new_uninitialised: Final = ffi.new_allocator(should_clear_after_alloc=False)
# CountingCipher's nonce: 4 zero bytes, then the 64-bit message counter little-endian.
MAX_COUNTER: Final = 2**64 - 1  # never used for a message: Noise's rekey nonce (spec §4.2)
# `_counter_nonce(n)` in one C call: 0.13 µs, less than rewriting a nonce buffer in place
# through a memoryview (0.18 µs), and the buffer and view cost 0.6 KiB per cipher.
_nonce_for: Final = struct.Struct("<4xQ").pack


def _counter_nonce(n: int) -> bytes:
    return bytes(4) + n.to_bytes(8, "little")


_REKEY_NONCE: Final = _counter_nonce(MAX_COUNTER)

_aead_encrypt: Final = lib.crypto_aead_chacha20poly1305_ietf_encrypt
_aead_decrypt: Final = lib.crypto_aead_chacha20poly1305_ietf_decrypt
_xaead_encrypt: Final = lib.crypto_aead_xchacha20poly1305_ietf_encrypt
_xaead_decrypt: Final = lib.crypto_aead_xchacha20poly1305_ietf_decrypt
_blake2b: Final = lib.crypto_generichash_blake2b_salt_personal


class _Scratch(threading.local):
    """One reusable output buffer per thread (see the module docstring for why per thread)."""

    def __init__(self) -> None:
        buf = ffi.new("unsigned char[]", _SCRATCH_SIZE)
        # (pointer for libsodium, buffer whose slices copy out to bytes): one lookup, not two.
        self.pair = (buf, ffi.buffer(buf))


_scratch: Final = _Scratch()


def _ptr(data: Readable) -> object:
    """Return something cffi accepts as `const unsigned char *` for `data`, without copying."""
    return data if type(data) is bytes else ffi.from_buffer(data)


def _nbytes(data: Readable) -> int:
    """Return the size of `data` in bytes (a memoryview's len() counts items, not bytes)."""
    return data.nbytes if type(data) is memoryview else len(data)


def _check_size(value: Readable, size: int, what: str) -> None:
    if _nbytes(value) != size:
        raise ValueError(f"{what} must be {size} bytes")


# -- randomness and wiping -----------------------------------------------------------------


def random_bytes(size: int) -> bytes:
    """Return `size` bytes from libsodium's CSPRNG."""
    if size <= _SCRATCH_SIZE:
        # The scratch buffer saves an allocation (a nonce per group message draws here);
        # what it keeps until the next call is no more exposed than the bytes returned.
        out, view = _scratch.pair
        lib.randombytes(out, size)
        return view[:size]  # type: ignore[no-any-return]
    out = ffi.new("unsigned char[]", size)
    lib.randombytes(out, size)
    return bytes(ffi.buffer(out, size))


def random_secret(size: int) -> bytearray:
    """Return `size` bytes from libsodium's CSPRNG in a `bytearray` the caller can zero."""
    out = bytearray(size)
    if size:
        lib.randombytes(ffi.from_buffer(out), size)
    return out


def zero(buf: bytearray) -> None:
    """Overwrite `buf` with zeros in place (sodium_memzero, which the compiler cannot elide)."""
    if buf:
        lib.sodium_memzero(ffi.from_buffer(buf), len(buf))


# -- BLAKE2b (RFC 7693) ----------------------------------------------------------------------
# crypto_generichash_blake2b_salt_personal with a NULL salt is plain BLAKE2b with the given
# personalisation (NULL: all zeros, which is BLAKE2b's default parameter block), so these
# agree with hashlib.blake2b(data, digest_size=size, key=key, person=person) byte for byte;
# tests/protocol/test_group_primitives.py checks that, and BLAKE2's own keyed test vector.


def _blake2b_args(
    size: int, key: Readable | None, person: bytes | None
) -> tuple[object, int, object]:
    if not 1 <= size <= BLAKE2B_MAX_SIZE:
        raise ValueError(f"a BLAKE2b digest is 1 to {BLAKE2B_MAX_SIZE} bytes")
    if person is not None and len(person) != BLAKE2B_PERSONAL_SIZE:
        raise ValueError(f"a BLAKE2b personalisation is {BLAKE2B_PERSONAL_SIZE} bytes")
    if key is None:
        return _NULL, 0, _NULL if person is None else person
    keylen = _nbytes(key)
    if not 1 <= keylen <= BLAKE2B_MAX_KEY_SIZE:
        raise ValueError(f"a BLAKE2b key is 1 to {BLAKE2B_MAX_KEY_SIZE} bytes")
    return _ptr(key), keylen, _NULL if person is None else person


def blake2b(
    data: Readable, *, size: int = 32, key: Readable | None = None, person: bytes | None = None
) -> bytes:
    """Return the `size`-byte BLAKE2b digest of `data`, keyed (a PRF/MAC) when `key` is given.

    Raises:
        ValueError: `size` is not 1..64, `key` not 1..64 bytes, or `person` not 16 bytes.
    """
    key_ptr, keylen, person_ptr = _blake2b_args(size, key, person)
    out, view = _scratch.pair
    _blake2b(out, size, _ptr(data), _nbytes(data), key_ptr, keylen, _NULL, person_ptr)
    return view[:size]  # type: ignore[no-any-return]


def blake2b_secret(data: Readable, *, key: Readable, size: int = 32) -> bytearray:
    """Return the keyed BLAKE2b digest of `data` in a fresh `bytearray` the caller can zero.

    For derived keys: the output goes from libsodium straight into the `bytearray`, so no
    immutable copy of it is made. This is on the group layer's per-message path (two calls
    per message), hence the checks inline rather than through `_blake2b_args`.

    Raises:
        ValueError: `size` is not 1..64 or `key` not 1..64 bytes.
    """
    keylen = _nbytes(key)
    if not (1 <= size <= BLAKE2B_MAX_SIZE and 1 <= keylen <= BLAKE2B_MAX_KEY_SIZE):
        raise ValueError("a BLAKE2b digest and key are 1 to 64 bytes")
    out = bytearray(size)
    _blake2b(ffi.from_buffer(out), size, _ptr(data), _nbytes(data), _ptr(key), keylen, _NULL, _NULL)
    return out


# -- X25519 (RFC 7748) -----------------------------------------------------------------------


def x25519_public_from_private(private: bytes | bytearray) -> bytes:
    """Return the X25519 public key of `private` (clamping is done by libsodium)."""
    _check_size(private, X25519_KEY_SIZE, "an X25519 private key")
    out = ffi.new("unsigned char[32]")
    # Fails only if the result is the identity, which no clamped scalar gives; check anyway.
    if lib.crypto_scalarmult_base(out, _ptr(private)) != 0:  # pragma: no cover
        raise CryptoError("unusable key")
    return bytes(ffi.buffer(out, X25519_KEY_SIZE))


def x25519_generate() -> tuple[bytes, bytearray]:
    """Return a fresh X25519 key pair as (public, private) from libsodium's CSPRNG."""
    private = random_secret(X25519_KEY_SIZE)
    return x25519_public_from_private(private), private


def x25519(private: bytes | bytearray, public: Readable) -> bytearray:
    """Return the X25519 shared secret of `private` and the peer's `public`.

    Raises:
        CryptoError: `public` is not 32 bytes, or is a low-order point, so the result
            would be all zeros (libsodium refuses it; RFC 7748 §6.1 allows the check).
        ValueError: `private` is not 32 bytes.
    """
    _check_size(private, X25519_KEY_SIZE, "an X25519 private key")
    if _nbytes(public) != X25519_KEY_SIZE:
        raise CryptoError("unusable key")
    shared = bytearray(X25519_KEY_SIZE)
    if lib.crypto_scalarmult(ffi.from_buffer(shared), _ptr(private), _ptr(public)) != 0:
        zero(shared)  # libsodium leaves whatever it computed there
        raise CryptoError("unusable key")
    return shared


# -- ChaCha20-Poly1305-IETF (RFC 8439) and XChaCha20-Poly1305 ---------------------------------


def _seal(
    fn: Callable[..., int], key: object, nonce: bytes, ad: Readable, plaintext: Readable
) -> bytes:
    """Encrypt through `fn` (one of libsodium's *_ietf_encrypt) with an already-checked key."""
    mlen = plaintext.nbytes if type(plaintext) is memoryview else len(plaintext)
    clen = mlen + AEAD_TAG_SIZE
    if clen <= _SCRATCH_SIZE:
        out, view = _scratch.pair
    else:
        out = _new_uninitialised(_UCHAR_ARRAY, clen)
        view = ffi.buffer(out)
    fn(out, _NULL, _ptr(plaintext), mlen, _ptr(ad), _nbytes(ad), _NULL, nonce, key)
    return view[:clen]  # type: ignore[no-any-return]


def _open(
    fn: Callable[..., int], key: object, nonce: bytes, ad: Readable, ciphertext: Readable
) -> bytes:
    """Decrypt through `fn` (one of libsodium's *_ietf_decrypt); CryptoError if forged."""
    clen = ciphertext.nbytes if type(ciphertext) is memoryview else len(ciphertext)
    mlen = clen - AEAD_TAG_SIZE
    if mlen < 0:
        raise CryptoError("decryption failed")
    if mlen <= _SCRATCH_SIZE:
        out, view = _scratch.pair
    else:
        out = _new_uninitialised(_UCHAR_ARRAY, mlen)
        view = ffi.buffer(out)
    if fn(out, _NULL, _NULL, _ptr(ciphertext), clen, _ptr(ad), _nbytes(ad), nonce, key) != 0:
        raise CryptoError("decryption failed")
    return view[:mlen]  # type: ignore[no-any-return]


class CountingCipher:
    """A ChaCha20-Poly1305-IETF key that numbers its messages: nonce = 4 zero bytes || LE64(n).

    This is the construction of Noise's ChaChaPoly (spec rev 34 §12.3) and of WireGuard's
    transport, kept here so that the per-message path is one Python frame between the
    caller and libsodium (`protocol/wire/_noise.py`'s `CipherState` subclasses it and adds the
    Noise rules). `n` is the next message number: a successful `encrypt` / `decrypt` moves
    it on by one, a failed `decrypt` does not. The counter value 2^64-1 is never used for
    a message (Noise reserves it for `rekey`).

    The key lives in a 32-byte cffi block (`ffi.new`), which libsodium reads directly and
    `_zero_key` wipes; no message pays for `ffi.from_buffer` on the key, and the nonce is
    built per message. A relay holds two of these per connection: a `bytearray` key with
    its cffi pointer and a nonce buffer with a memoryview took 800 bytes per cipher, the
    block takes 150 (docs/design.md). Only subclasses change the key after
    construction (`_set_key`, `_zero_key`), so they can refuse to revive a wiped one.

    A message carries at most `MAX_COUNTING_PLAINTEXT` (65,519) bytes of plaintext, so a
    ciphertext is at most 65,535 bytes: Noise's limit.

    Subclasses decide what is raised where this class cannot go on, through `_refuse`
    (no key, or the counter is used up) and `_too_long` (a message over the limit).
    """

    __slots__ = ("_ptr", "n")

    def __init__(self, key: Readable | None = None) -> None:
        """Start with `key` (32 bytes, copied), or with no key, and `n` = 0."""
        # The key block, made by the first `_set_key`: a cipher that never gets a key (most
        # handshake cipher states until the first DH) never pays for it.
        self._ptr: object | None = None
        self.n = 0
        if key is not None:
            self._set_key(key)

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        """Return an independent copy: the same key (in its own buffer) and the same `n`.

        For tests that probe a copy of a connection without touching the original (STYLE.md
        §2). The copy would reuse the original's nonces, so it must never encrypt anything
        that leaves the process while the original is also in use.
        """
        cls = type(self)
        clone = cls.__new__(cls)
        CountingCipher.__init__(clone)
        if self._ptr is not None:
            clone._set_key(ffi.buffer(self._ptr, CHACHA20POLY1305_KEY_SIZE))
        clone.n = self.n
        return clone

    def __copy__(self) -> Self:
        """Return `copy.deepcopy(self)`: a shallow copy would share the key buffer."""
        return self.__deepcopy__({})

    # -- what subclasses change --------------------------------------------------------------

    def _refuse(self) -> Exception:
        """Return the exception for a message that cannot be processed: no key, or n is spent."""
        if self._ptr is None:
            return ValueError("no key")
        return CryptoError("message counter exhausted")

    def _too_long(self, size: int, *, received: bool) -> Exception:
        """Return the exception for a `size`-byte plaintext over `max_plaintext`."""
        if received:
            return CryptoError("decryption failed")
        return ValueError(f"a {size}-byte plaintext exceeds {MAX_COUNTING_PLAINTEXT}")

    # -- the hot path ------------------------------------------------------------------------

    def encrypt(self, plaintext: Readable) -> bytes:
        """Return ciphertext || 16-byte tag of `plaintext` with nonce n and empty AD; n += 1."""
        key = self._ptr
        n = self.n
        if key is None or n >= MAX_COUNTER:
            raise self._refuse()
        if type(plaintext) is bytes:
            source: object = plaintext
            mlen = len(plaintext)
        else:
            source = ffi.from_buffer(plaintext)
            mlen = len(source)  # type: ignore[arg-type]
        if mlen > MAX_COUNTING_PLAINTEXT:
            raise self._too_long(mlen, received=False)
        out, view = _scratch.pair
        _aead_encrypt(out, _NULL, source, mlen, _NULL, 0, _NULL, _nonce_for(n), key)
        self.n = n + 1
        return view[: mlen + AEAD_TAG_SIZE]  # type: ignore[no-any-return]

    def decrypt(self, ciphertext: Readable) -> bytes:
        """Return the plaintext of ciphertext || tag with nonce n and empty AD; n += 1.

        Raises:
            CryptoError: authentication failed; `n` does not move.
        """
        key = self._ptr
        n = self.n
        if key is None or n >= MAX_COUNTER:
            raise self._refuse()
        if type(ciphertext) is bytes:
            source: object = ciphertext
            clen = len(ciphertext)
        else:
            source = ffi.from_buffer(ciphertext)
            clen = len(source)  # type: ignore[arg-type]
        mlen = clen - AEAD_TAG_SIZE
        if mlen > MAX_COUNTING_PLAINTEXT:
            raise self._too_long(mlen, received=True)
        if mlen < 0:
            raise CryptoError("decryption failed")
        out, view = _scratch.pair
        if _aead_decrypt(out, _NULL, _NULL, source, clen, _NULL, 0, _nonce_for(n), key):
            raise CryptoError("decryption failed")
        self.n = n + 1
        return view[:mlen]  # type: ignore[no-any-return]

    # -- with associated data ----------------------------------------------------------------

    def encrypt_ad(self, ad: Readable, plaintext: Readable) -> bytes:
        """Return ciphertext || tag of `plaintext` with nonce n and associated data `ad`."""
        key = self._ptr
        n = self.n
        if key is None or n >= MAX_COUNTER:
            raise self._refuse()
        if type(plaintext) is bytes:
            source: object = plaintext
            mlen = len(plaintext)
        else:
            source = ffi.from_buffer(plaintext)
            mlen = len(source)  # type: ignore[arg-type]
        if mlen > MAX_COUNTING_PLAINTEXT:
            raise self._too_long(mlen, received=False)
        out, view = _scratch.pair
        _aead_encrypt(out, _NULL, source, mlen, _ptr(ad), _nbytes(ad), _NULL, _nonce_for(n), key)
        self.n = n + 1
        return view[: mlen + AEAD_TAG_SIZE]  # type: ignore[no-any-return]

    def decrypt_ad(self, ad: Readable, ciphertext: Readable) -> bytes:
        """Return the plaintext of ciphertext || tag with nonce n and associated data `ad`.

        Raises:
            CryptoError: authentication failed; `n` does not move.
        """
        key = self._ptr
        n = self.n
        if key is None or n >= MAX_COUNTER:
            raise self._refuse()
        if type(ciphertext) is bytes:
            source: object = ciphertext
            clen = len(ciphertext)
        else:
            source = ffi.from_buffer(ciphertext)
            clen = len(source)  # type: ignore[arg-type]
        mlen = clen - AEAD_TAG_SIZE
        if mlen > MAX_COUNTING_PLAINTEXT:
            raise self._too_long(mlen, received=True)
        if mlen < 0:
            raise CryptoError("decryption failed")
        nonce = _nonce_for(n)
        out, view = _scratch.pair
        adlen = _nbytes(ad)
        if _aead_decrypt(out, _NULL, _NULL, source, clen, _ptr(ad), adlen, nonce, key):
            raise CryptoError("decryption failed")
        self.n = n + 1
        return view[:mlen]  # type: ignore[no-any-return]

    # -- the key -----------------------------------------------------------------------------

    def has_key(self) -> bool:
        """Whether a key is set."""
        return self._ptr is not None

    def _set_key(self, key: Readable) -> None:
        """Copy `key` (32 bytes) over the current key, in place; `n` is left alone.

        Raises:
            ValueError: `key` is not 32 bytes.
        """
        _check_size(key, CHACHA20POLY1305_KEY_SIZE, "a ChaCha20-Poly1305 key")
        if self._ptr is None:
            self._ptr = ffi.new("unsigned char[]", CHACHA20POLY1305_KEY_SIZE)
        ffi.memmove(self._ptr, key, CHACHA20POLY1305_KEY_SIZE)

    def _zero_key(self) -> None:
        """Overwrite the key with zeros and forget it; `has_key()` is then False."""
        if self._ptr is not None:
            # Not `ffi.release`d: a `_key` view (below) may still read the zeroed block.
            lib.sodium_memzero(self._ptr, CHACHA20POLY1305_KEY_SIZE)
            self._ptr = None

    @property
    def _key(self) -> Readable:
        """The key's bytes as a live view of its block (zeros without a key).

        For tests that check the key is wiped in place; nothing else reads it.
        """
        if self._ptr is None:
            return bytes(CHACHA20POLY1305_KEY_SIZE)
        return ffi.buffer(self._ptr, CHACHA20POLY1305_KEY_SIZE)  # type: ignore[no-any-return]

    def rekey(self) -> None:
        """Replace the key with the first 32 bytes of ENCRYPT(k, 2^64-1, b"", 32 zero bytes).

        Noise's default REKEY (spec rev 34 §4.2). The new key goes from libsodium's output
        straight into the key's block, so no immutable copy of it is ever made. `n`
        is unchanged.
        """
        key = self._ptr
        if key is None:
            raise self._refuse()
        out = ffi.new("unsigned char[]", CHACHA20POLY1305_KEY_SIZE + AEAD_TAG_SIZE)
        zeros = bytes(CHACHA20POLY1305_KEY_SIZE)
        _aead_encrypt(out, _NULL, zeros, len(zeros), _NULL, 0, _NULL, _REKEY_NONCE, key)
        ffi.memmove(key, out, CHACHA20POLY1305_KEY_SIZE)
        lib.sodium_memzero(out, len(out))


def _checked_key(key: bytes | bytearray, nonce: bytes, nonce_size: int) -> object:
    _check_size(key, CHACHA20POLY1305_KEY_SIZE, "a (X)ChaCha20-Poly1305 key")
    if type(nonce) is not bytes or len(nonce) != nonce_size:
        raise ValueError(f"the nonce must be {nonce_size} bytes")
    return _ptr(key)


def chacha20poly1305_encrypt(
    key: bytes | bytearray, nonce: bytes, ad: Readable, plaintext: Readable
) -> bytes:
    """Return ciphertext || tag: ChaCha20-Poly1305-IETF with a 12-byte nonce (RFC 8439).

    Raises:
        ValueError: the key is not 32 bytes or the nonce not 12.
    """
    ptr = _checked_key(key, nonce, CHACHA20POLY1305_NONCE_SIZE)
    return _seal(_aead_encrypt, ptr, nonce, ad, plaintext)


def chacha20poly1305_decrypt(
    key: bytes | bytearray, nonce: bytes, ad: Readable, ciphertext: Readable
) -> bytes:
    """Return the plaintext of a ChaCha20-Poly1305-IETF ciphertext || tag.

    Raises:
        CryptoError: authentication failed.
        ValueError: the key is not 32 bytes or the nonce not 12.
    """
    ptr = _checked_key(key, nonce, CHACHA20POLY1305_NONCE_SIZE)
    return _open(_aead_decrypt, ptr, nonce, ad, ciphertext)


def xchacha20poly1305_encrypt(
    key: bytes | bytearray, nonce: bytes, ad: Readable, plaintext: Readable
) -> bytes:
    """Return ciphertext || tag: XChaCha20-Poly1305-IETF with a 24-byte nonce.

    A 24-byte nonce drawn from `random_bytes` is safe to use without a counter.

    Raises:
        ValueError: the key is not 32 bytes or the nonce not 24.
    """
    ptr = _checked_key(key, nonce, XCHACHA20POLY1305_NONCE_SIZE)
    return _seal(_xaead_encrypt, ptr, nonce, ad, plaintext)


def xchacha20poly1305_decrypt(
    key: bytes | bytearray, nonce: bytes, ad: Readable, ciphertext: Readable
) -> bytes:
    """Return the plaintext of an XChaCha20-Poly1305-IETF ciphertext || tag.

    Raises:
        CryptoError: authentication failed.
        ValueError: the key is not 32 bytes or the nonce not 24.
    """
    ptr = _checked_key(key, nonce, XCHACHA20POLY1305_NONCE_SIZE)
    return _open(_xaead_decrypt, ptr, nonce, ad, ciphertext)


class XChaChaKey:
    """An XChaCha20-Poly1305 key held for many messages, each with its own 24-byte nonce.

    The key lives in a `bytearray` whose cffi pointer is made once, so a message pays for
    neither the size checks nor `ffi.from_buffer` on the key (the group layer's headers and
    distributions are sealed under such long-lived keys).
    """

    __slots__ = ("_key", "_ptr")

    def __init__(self, key: Readable) -> None:
        """Copy a 32-byte key into a buffer of our own."""
        _check_size(key, XCHACHA20POLY1305_KEY_SIZE, "an XChaCha20-Poly1305 key")
        self._key = bytearray(key)
        self._ptr = ffi.from_buffer(self._key)

    def encrypt(self, nonce: bytes, ad: Readable, plaintext: Readable) -> bytes:
        """Return ciphertext || tag (ValueError if `nonce` is not 24 bytes)."""
        if type(nonce) is not bytes or len(nonce) != XCHACHA20POLY1305_NONCE_SIZE:
            raise ValueError("the nonce must be 24 bytes")
        return _seal(_xaead_encrypt, self._ptr, nonce, ad, plaintext)

    def decrypt(self, nonce: bytes, ad: Readable, ciphertext: Readable) -> bytes:
        """Return the plaintext (CryptoError if it does not authenticate)."""
        if type(nonce) is not bytes or len(nonce) != XCHACHA20POLY1305_NONCE_SIZE:
            raise ValueError("the nonce must be 24 bytes")
        return _open(_xaead_decrypt, self._ptr, nonce, ad, ciphertext)

    def export(self) -> bytes:
        """Return the key (SECRET: for saving it)."""
        return bytes(self._key)

    def clear(self) -> None:
        """Zero the key; it must not be used afterwards."""
        zero(self._key)


class HashChain:
    """A 32-byte key that derives outputs with keyed BLAKE2b and steps forward in place.

    The per-message hash ratchet of the group layer: `derive` gives BLAKE2b(key=k, data)
    of a chosen size, `step` replaces k with BLAKE2b(key=k, data, 32), overwriting it in
    its buffer (through the scratch buffer, which is zeroed after). Like `XChaChaKey`, the
    cffi pointer is made once.
    """

    __slots__ = ("_key", "_ptr")

    def __init__(self, key: Readable) -> None:
        """Copy a 32-byte key into a buffer of our own."""
        _check_size(key, 32, "a chain key")
        self._key = bytearray(key)
        self._ptr = ffi.from_buffer(self._key)

    def derive(self, data: bytes, size: int) -> bytes:
        """Return BLAKE2b(digest_size=size, key=k, data): 1..64 bytes."""
        if not 1 <= size <= BLAKE2B_MAX_SIZE:
            raise ValueError("a BLAKE2b digest is 1 to 64 bytes")
        out, view = _scratch.pair
        _blake2b(out, size, data, len(data), self._ptr, 32, _NULL, _NULL)
        return view[:size]  # type: ignore[no-any-return]

    def step(self, data: bytes) -> None:
        """Replace the key with BLAKE2b(digest_size=32, key=k, data)."""
        out, _ = _scratch.pair
        _blake2b(out, 32, data, len(data), self._ptr, 32, _NULL, _NULL)
        ffi.memmove(self._ptr, out, 32)
        lib.sodium_memzero(out, 32)

    def advance(self, output: bytes, size: int, step: bytes) -> bytes:
        """Return `derive(output, size)`, then `step(step)`: one message's work in one call."""
        if not 1 <= size <= BLAKE2B_MAX_SIZE:
            raise ValueError("a BLAKE2b digest is 1 to 64 bytes")
        out, view = _scratch.pair
        key = self._ptr
        _blake2b(out, size, output, len(output), key, 32, _NULL, _NULL)
        derived: bytes = view[:size]
        _blake2b(out, 32, step, len(step), key, 32, _NULL, _NULL)
        ffi.memmove(key, out, 32)
        lib.sodium_memzero(out, 32)
        return derived

    def copy(self) -> HashChain:
        """Return an independent chain at the same key."""
        return HashChain(self._key)

    def export(self) -> bytes:
        """Return the key (SECRET: for saving or sending it)."""
        return bytes(self._key)

    def clear(self) -> None:
        """Zero the key; it must not be used afterwards."""
        zero(self._key)


# -- Ed25519 (RFC 8032) ------------------------------------------------------------------------
# PyNaCl's cffi module has only the combined-mode crypto_sign / crypto_sign_open, not the
# detached functions; a detached signature is the first 64 bytes of the combined output, and
# crypto_sign_open on signature || message runs the same checks as the detached verify
# (canonical S, canonical and not small-order public key and R).


def ed25519_from_seed(seed: bytes | bytearray) -> tuple[bytes, bytearray]:
    """Return (public key, 64-byte secret key) derived from a 32-byte seed."""
    _check_size(seed, ED25519_SEED_SIZE, "an Ed25519 seed")
    public = ffi.new("unsigned char[32]")
    secret = bytearray(ED25519_SECRET_KEY_SIZE)
    rc = lib.crypto_sign_seed_keypair(public, ffi.from_buffer(secret), _ptr(seed))
    if rc != 0:  # pragma: no cover - libsodium's key derivation cannot fail on a 32-byte seed
        raise CryptoError("unusable key")
    return bytes(ffi.buffer(public, ED25519_PUBLIC_KEY_SIZE)), secret


def ed25519_generate() -> tuple[bytes, bytearray]:
    """Return a fresh Ed25519 (public key, 64-byte secret key) from libsodium's CSPRNG."""
    seed = random_secret(ED25519_SEED_SIZE)
    try:
        return ed25519_from_seed(seed)
    finally:
        zero(seed)


class SigningKey:
    """An Ed25519 key pair held for many signatures, its cffi pointer made once.

    The group layer signs every message with its per-epoch key; this saves the size checks
    and `ffi.from_buffer` a call to `ed25519_sign` pays, and signs into the scratch buffer.
    """

    __slots__ = ("_ptr", "_secret", "public")

    def __init__(self, seed: Readable) -> None:
        """Derive the key pair from a 32-byte seed."""
        self.public, self._secret = ed25519_from_seed(bytes(seed))
        self._ptr = ffi.from_buffer(self._secret)

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte signature of `message`."""
        size = len(message) + ED25519_SIGNATURE_SIZE
        if size <= _SCRATCH_SIZE:
            out, view = _scratch.pair
        else:
            out = _new_uninitialised(_UCHAR_ARRAY, size)
            view = ffi.buffer(out)
        lib.crypto_sign(out, _NULL, message, len(message), self._ptr)
        return view[:ED25519_SIGNATURE_SIZE]  # type: ignore[no-any-return]

    def seed(self) -> bytes:
        """Return the 32-byte seed (SECRET: for saving the key)."""
        return bytes(self._secret[:ED25519_SEED_SIZE])

    def clear(self) -> None:
        """Zero the secret key; it must not be used afterwards."""
        zero(self._secret)


def ed25519_public_from_secret(secret_key: bytes | bytearray) -> bytes:
    """Return the public key inside libsodium's 64-byte secret key (seed || public)."""
    _check_size(secret_key, ED25519_SECRET_KEY_SIZE, "an Ed25519 secret key")
    return bytes(secret_key[ED25519_SEED_SIZE:])


def ed25519_sign(secret_key: bytes | bytearray, message: Readable) -> bytes:
    """Return the 64-byte detached Ed25519 signature of `message`."""
    _check_size(secret_key, ED25519_SECRET_KEY_SIZE, "an Ed25519 secret key")
    mlen = _nbytes(message)
    # crypto_sign writes signature || message: the scratch buffer takes it when it fits
    # (every group message does), which saves an allocation per signature.
    if mlen + ED25519_SIGNATURE_SIZE <= _SCRATCH_SIZE:
        signed, view = _scratch.pair
    else:
        signed = _new_uninitialised(_UCHAR_ARRAY, mlen + ED25519_SIGNATURE_SIZE)
        view = ffi.buffer(signed)
    rc = lib.crypto_sign(signed, _NULL, _ptr(message), mlen, _ptr(secret_key))
    if rc != 0:  # pragma: no cover - libsodium's signing cannot fail on well-sized input
        raise CryptoError("signing failed")
    return view[:ED25519_SIGNATURE_SIZE]  # type: ignore[no-any-return]


def ed25519_verify(public_key: Readable, message: Readable, signature: Readable) -> None:
    """Return if `signature` is a valid Ed25519 signature of `message` by `public_key`.

    Strict verification (libsodium's): non-canonical encodings, small-order keys and a
    malleable S are all refused.

    Raises:
        CryptoError: it is not (whatever the reason, including wrong sizes).
    """
    if (
        _nbytes(public_key) != ED25519_PUBLIC_KEY_SIZE
        or _nbytes(signature) != ED25519_SIGNATURE_SIZE
    ):
        raise CryptoError("bad signature")
    signed = bytes(signature) + bytes(message)
    if len(signed) <= _SCRATCH_SIZE:
        out, _ = _scratch.pair
    else:
        out = _new_uninitialised(_UCHAR_ARRAY, len(signed))
    if lib.crypto_sign_open(out, _NULL, signed, len(signed), _ptr(public_key)) != 0:
        raise CryptoError("bad signature")


# -- Passphrase keys and SecretBox (the client's keystore) -------------------------------------
# Not on any hot path (one derivation per unlock), so these use PyNaCl's bindings.

ARGON2ID_SALT_SIZE: Final = 16
SECRETBOX_KEY_SIZE: Final = 32
SECRETBOX_NONCE_SIZE: Final = 24


def argon2id_key(passphrase: bytes, salt: bytes, *, opslimit: int, memlimit: int) -> bytearray:
    """Derive a 32-byte SecretBox key from a passphrase with Argon2id (libsodium's pwhash).

    Raises:
        ValueError: the salt is not 16 bytes or the limits are outside libsodium's range.
    """
    from nacl import bindings

    if len(salt) != ARGON2ID_SALT_SIZE:
        raise ValueError("an Argon2id salt is 16 bytes")
    key = bindings.crypto_pwhash_alg(
        SECRETBOX_KEY_SIZE,
        passphrase,
        salt,
        opslimit,
        memlimit,
        bindings.crypto_pwhash_ALG_ARGON2ID13,
    )
    return bytearray(key)


def secretbox_seal(key: bytes | bytearray, nonce: bytes, plaintext: bytes) -> bytes:
    """Return XSalsa20-Poly1305 (crypto_secretbox_easy) of `plaintext` under `key`."""
    from nacl import bindings

    return bindings.crypto_secretbox_easy(plaintext, nonce, bytes(key))


def secretbox_open(key: bytes | bytearray, nonce: bytes, ciphertext: bytes) -> bytes:
    """Open a SecretBox.

    Raises:
        CryptoError: wrong key or tampered data (the two cannot be told apart).
    """
    from nacl import bindings
    from nacl.exceptions import CryptoError as NaclCryptoError

    try:
        return bindings.crypto_secretbox_open_easy(ciphertext, nonce, bytes(key))
    except (NaclCryptoError, ValueError):
        raise CryptoError("the box does not open") from None
