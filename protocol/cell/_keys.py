"""Key derivation for the group layer: named purposes, epoch keys and sender-key chains.

docs/protocol.md, Part 2, "Key derivation". Every key is

    KDF(key, purpose, context, n) = BLAKE2b(digest_size=n, key=key, data=purpose || 0x00 || context)

where `purpose` is one of the ASCII labels below, each used for exactly one thing (STYLE.md
§2), and `context` has a fixed layout per purpose. Keyed BLAKE2b is a PRF (RFC 7693 §4), so
this is a PRF-based KDF in the manner of HKDF-Expand with a single block.

Theory of operation of a sender-key chain (one per member per epoch):

    chain_key_0 = 32 random bytes, sent to the other members in a sender key distribution
    material_i  = KDF(chain_key_i, CHAIN_MESSAGE, "", 56) = message key (32) || nonce (24)
    chain_key_{i+1} = KDF(chain_key_i, CHAIN_NEXT, "", 32)

A sender keeps only the next chain key; a receiver keeps the chain key at its next
expected counter plus the message material of counters it skipped (a bounded number, for
out-of-order arrival). A chain key is overwritten in place when it steps, and skipped
material is zeroed when used or evicted, so a saved state cannot re-derive the key of a
message it has already opened: that is the forward secrecy the design promises (within an
epoch, against a seized device). The material of an in-order message exists only as an
immutable `bytes` object for the length of the call that uses it: Python cannot wipe those,
and copying it into a zeroable buffer would cost more than the rest of the bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from .._crypto import (
    HashChain,
    SigningKey,
    XChaChaKey,
    blake2b_secret,
    xchacha20poly1305_decrypt,
    xchacha20poly1305_encrypt,
    zero,
)

if TYPE_CHECKING:
    from .._crypto import Readable

__all__ = [
    "CHAIN_MESSAGE",
    "CHAIN_NEXT",
    "DISPATCH_BOX",
    "EPOCH_CONTROL_BODY",
    "EPOCH_CONTROL_HEADER",
    "EPOCH_DISTRIBUTION",
    "EPOCH_HEADER",
    "MATERIAL_SIZE",
    "PAIRWISE_ADMIN_GRANT",
    "PAIRWISE_DISTRIBUTION_MAC",
    "PAIRWISE_EPOCH_BOX",
    "PURPOSES",
    "RELAY_CAPABILITY",
    "WELCOME",
    "EpochKeys",
    "Gap",
    "ReceiveChain",
    "SendChain",
    "advance_chain",
    "aead_decrypt",
    "aead_encrypt",
    "kdf",
    "message_material",
    "relay_seed",
    "step_chain",
]

# Pairwise keys between two members (context: the two X25519 public keys, smaller first).
PAIRWISE_EPOCH_BOX: Final = b"cellrelay/1 pairwise epoch-box"
PAIRWISE_DISTRIBUTION_MAC: Final = b"cellrelay/1 pairwise distribution-mac"
PAIRWISE_ADMIN_GRANT: Final = b"cellrelay/1 pairwise admin-grant"
# A welcome's key (context: the ephemeral public key, then the joiner's X25519 public key).
WELCOME: Final = b"cellrelay/1 welcome"
# A dispatch seal's box key (context: its e_pub, the recipient's X25519 public key and member
# id; docs/protocol.md §C11).
DISPATCH_BOX: Final = b"cellrelay/1 dispatch box"
# Per-epoch keys from the epoch secret (context: cell id (16) || epoch (u32 BE)).
EPOCH_HEADER: Final = b"cellrelay/1 epoch header"
EPOCH_DISTRIBUTION: Final = b"cellrelay/1 epoch distribution"
EPOCH_CONTROL_HEADER: Final = b"cellrelay/1 epoch control-header"
EPOCH_CONTROL_BODY: Final = b"cellrelay/1 epoch control-body"
# A mailbox capability seed for one relay of a cell on several (context: the relay's static
# X25519 public key, 32 bytes; docs/protocol.md §C5.2).
RELAY_CAPABILITY: Final = b"cellrelay/1 relay capability"
# Sender-key chain steps (empty context).
CHAIN_MESSAGE: Final = b"cellrelay/1 chain message"
CHAIN_NEXT: Final = b"cellrelay/1 chain next"

PURPOSES: Final = (
    PAIRWISE_EPOCH_BOX,
    PAIRWISE_DISTRIBUTION_MAC,
    PAIRWISE_ADMIN_GRANT,
    WELCOME,
    DISPATCH_BOX,
    EPOCH_HEADER,
    EPOCH_DISTRIBUTION,
    EPOCH_CONTROL_HEADER,
    EPOCH_CONTROL_BODY,
    CHAIN_MESSAGE,
    CHAIN_NEXT,
    RELAY_CAPABILITY,
)
"""Every KDF purpose label; a test checks that none is a prefix of another."""

KEY_SIZE: Final = 32
# A message's material: a 32-byte XChaCha20-Poly1305 key and its 24-byte nonce.
MATERIAL_SIZE: Final = 56


def kdf(key: Readable, purpose: bytes, context: bytes = b"", size: int = KEY_SIZE) -> bytearray:
    """Return KDF(key, purpose, context, size) (see the module docstring) in a zeroable buffer."""
    return blake2b_secret(purpose + b"\x00" + context, size=size, key=key)


RELAY_KEY_SIZE: Final = 32


def relay_seed(seed: bytes, relay_key: bytes) -> bytes:
    """Return the capability seed `seed` stands for on the relay whose static key is `relay_key`.

    A cell on several relays (docs/protocol.md §C5.2) keeps one seed per capability, as a
    cell on one relay does, and uses `KDF(seed, RELAY_CAPABILITY, relay_key, 32)` as the
    Ed25519 seed on each relay it added: two seized relay databases then hold unrelated
    public keys for the same cell. The context is the relay's key, not its address, so a
    relay that moves host keeps its keys, and a relay with another key is another relay.
    Capability seeds are not secrets of the forward-secrecy kind (they live as long as the
    mailbox), so the result is plain `bytes`.

    Raises:
        ValueError: `seed` or `relay_key` is not 32 bytes.
    """
    if len(seed) != KEY_SIZE or len(relay_key) != RELAY_KEY_SIZE:
        raise ValueError("a capability seed and a relay key are 32 bytes each")
    derived = kdf(seed, RELAY_CAPABILITY, relay_key)
    try:
        return bytes(derived)
    finally:
        zero(derived)


# The two chain steps are the per-message hot path: prebuilt inputs, no concatenation.
_MESSAGE_INPUT: Final = CHAIN_MESSAGE + b"\x00"
_NEXT_INPUT: Final = CHAIN_NEXT + b"\x00"


def message_material(chain: HashChain) -> bytes:
    """Return message key (32) || nonce (24) for the counter whose chain key `chain` holds."""
    return chain.derive(_MESSAGE_INPUT, MATERIAL_SIZE)


def step_chain(chain: HashChain) -> None:
    """Move `chain` to the chain key of the next counter, in place."""
    chain.step(_NEXT_INPUT)


def advance_chain(chain: HashChain) -> bytes:
    """Return the material of `chain`'s counter and move it to the next, in one call."""
    return chain.advance(_MESSAGE_INPUT, MATERIAL_SIZE, _NEXT_INPUT)


def aead_encrypt(
    key: XChaChaKey | bytes | bytearray, nonce: bytes, ad: Readable, plaintext: Readable
) -> bytes:
    """XChaCha20-Poly1305 under a long-lived key object or a one-off key."""
    if type(key) is XChaChaKey:
        return key.encrypt(nonce, ad, plaintext)
    return xchacha20poly1305_encrypt(key, nonce, ad, plaintext)  # type: ignore[arg-type]


def aead_decrypt(
    key: XChaChaKey | bytes | bytearray, nonce: bytes, ad: Readable, ciphertext: Readable
) -> bytes:
    """Open what `aead_encrypt` sealed (CryptoError if it does not authenticate)."""
    if type(key) is XChaChaKey:
        return key.decrypt(nonce, ad, ciphertext)
    return xchacha20poly1305_decrypt(key, nonce, ad, ciphertext)  # type: ignore[arg-type]


def _key(secret: Readable, purpose: bytes, context: bytes) -> XChaChaKey:
    derived = kdf(secret, purpose, context)
    try:
        return XChaChaKey(derived)
    finally:
        zero(derived)


@dataclass(slots=True, eq=False)
class EpochKeys:
    """The keys every member of one epoch derives from its epoch secret."""

    header: XChaChaKey = field(repr=False)
    distribution: XChaChaKey = field(repr=False)
    control_header: XChaChaKey = field(repr=False)
    control_body: XChaChaKey = field(repr=False)

    @classmethod
    def derive(cls, secret: Readable, cell_id: bytes, epoch: int) -> EpochKeys:
        """Derive the epoch's keys from its 32-byte secret."""
        context = cell_id + epoch.to_bytes(4, "big")
        return cls(
            header=_key(secret, EPOCH_HEADER, context),
            distribution=_key(secret, EPOCH_DISTRIBUTION, context),
            control_header=_key(secret, EPOCH_CONTROL_HEADER, context),
            control_body=_key(secret, EPOCH_CONTROL_BODY, context),
        )

    def clear(self) -> None:
        """Zero every key."""
        for key in (self.header, self.distribution, self.control_header, self.control_body):
            key.clear()


@dataclass(slots=True, eq=False)
class SendChain:
    """This member's own chain in one epoch: the next chain key and counter, and its signing key.

    `signing_key` is the epoch's sender signing key; its public half travels in the sender
    key distribution, not tied to the identity key (docs/protocol.md, §G16 and §G17).
    """

    chain_key: HashChain = field(repr=False)
    counter: int
    signing_key: SigningKey = field(repr=False)
    signing_public: bytes

    def step(self) -> tuple[int, bytes]:
        """Return (counter, material) for the next message and move the chain on."""
        counter = self.counter
        material = self.chain_key.advance(_MESSAGE_INPUT, MATERIAL_SIZE, _NEXT_INPUT)
        self.counter = counter + 1
        return counter, material

    def clear(self) -> None:
        """Zero the chain key and the signing key."""
        self.chain_key.clear()
        self.signing_key.clear()


@dataclass(slots=True, eq=False)
class ReceiveChain:
    """Another member's chain in one epoch, as this member has followed it so far.

    `chain_key` is the key of counter `next`; `skipped` holds the material of counters below
    `next` that have not arrived yet (bounded by the caller), oldest first, and `gaps`
    what this member knows of each (`Gap`: when it noticed it, whether it was owed and
    reported). `digests` holds a short digest of the last accepted envelopes, by counter,
    to tell a second copy from a second, different envelope (docs/protocol.md §G10.1).
    """

    signing_public: bytes
    chain_key: HashChain = field(repr=False)
    next: int
    skipped: dict[int, bytearray] = field(default_factory=dict, repr=False)
    gaps: dict[int, Gap] = field(default_factory=dict, repr=False)
    digests: dict[int, bytes] = field(default_factory=dict, repr=False)
    # Receiver-local time the chain last moved (a distribution or a message opened);
    # None after a restore. Not saved: it only ever excuses a gap (`Gap.owed`).
    last_at: float | None = field(default=None, repr=False)
    # Bumped by every change `next` and `len(skipped)` do not show (a gap reported).
    revision: int = 0
    # `write_state`'s last encoding of this chain, with the `next`, `len(skipped)` and
    # `revision` it was made at: every change of the chain changes one of the three (the
    # receiver steps the key only together with `next`, adds or drops skipped keys only
    # one way at a time, and bumps `revision` for the rest), so an equal triple means the
    # bytes are still true. Saving is once per burst of deliveries, and re-encoding 100
    # unchanged chains was most of it (bench_cells.py).
    saved: tuple[int, int, int, bytes] | None = field(default=None, repr=False)

    def drop(self, counter: int) -> None:
        """Zero and forget the skipped key of `counter` (used, evicted or past its life)."""
        zero(self.skipped.pop(counter))
        self.gaps.pop(counter, None)

    def clear(self) -> None:
        """Zero the chain key and every skipped key (and forget the saved encoding)."""
        self.chain_key.clear()
        for material in self.skipped.values():
            zero(material)
        self.skipped.clear()
        self.gaps.clear()
        self.digests.clear()
        self.saved = None


@dataclass(slots=True)
class Gap:
    """What a receiver knows of one skipped counter (docs/protocol.md §G10.2).

    `noticed_at`: receiver-local time the gap appeared (negative: unknown, from a state
    saved before gaps were timed; the receiver sets it at its next look). `owed`: the
    missing envelope was published while this member was reading the mailbox, so the
    relay should have delivered it (otherwise it may have expired on the way).
    `reported`: the application has been told it is missing.
    """

    noticed_at: float
    owed: bool = True
    reported: bool = False
