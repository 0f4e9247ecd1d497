"""The building blocks of the key schedule's second version: buckets, key updates, the tree.

docs/design.md, "The key schedule, second version (issue 12)". Not yet on the wire: the
epoch change of docs/protocol.md §G6 still uses version 1; this module is what version 2
will compose, tested and measured on its own first (`bench/bench_schedule.py`).

Theory of operation, in four parts, each standing in for one mechanism of MLS (RFC 9420):

* **Receive keys and key updates** (MLS's leaf keys and Update proposals). A member's
  receive key is an X25519 key pair used only to receive key material in epoch changes;
  generation 0 is its identity X25519 key, and each `KeyUpdate` (signed by the identity
  key) replaces it with a fresh one. A change that boxes to the new key heals the member.

* **Buckets** (MLS's ratchet tree, here of depth two). A cell's members fall into 64
  buckets by a hash of their id (`bucket_of`). Each non-empty bucket has an X25519 key
  pair: the private half known to exactly its members, the public half to admins. An
  epoch change has one ephemeral key `e` and a random change secret:

      for each refreshed bucket b (in ascending order):
          b (u8) || new bucket public key (32) || count (u16)
          || count x receive box                ascending member id among b's members
      then 64 bucket boxes, one per bucket      random bytes for an empty bucket

      receive box = AEAD(KDF(X25519(e, receive key of m), RECEIVE_BOX, e_pub || receive
                         public || m), nonce, ad = section AD || m, bucket private key)
      bucket box  = AEAD(KDF(X25519(e, bucket public of b), BUCKET_BOX, e_pub || bucket
                         public || b), nonce, ad = section AD || b, change secret)

  48 bytes each (32 + the tag). The recipient's id or bucket is in every box key's
  context, so no two boxes share a key even if two members publish one receive key.
  A member finds its boxes by position (its bucket; its rank in that bucket's section),
  never by trial, so opening costs one X25519 and one AEAD, or two of each when its own
  bucket was refreshed.

* **The epoch secret chain** (MLS's init secret). `epoch_secret(E+1) = KDF(init(E),
  EPOCH_SECRET, cell id || E+1 || change secret)` and `init(E) = KDF(epoch_secret(E),
  INIT_SECRET, cell id || E)`. A member deletes init(E) on entering E+1, so a receive or
  bucket key seized later reopens an old change's box but gets no old epoch secret from it.

* **The sender tree** (MLS's secret tree, §9). `SenderTree.enter` turns the epoch secret
  into 64 bucket nodes and forgets the rest; `SenderTree.take` derives every first chain
  key of one bucket from its node and deletes the node. So a saved state holds, for each
  sender, at most the chain key past what it has read: a seized state reopens nothing read.

Every key is `_keys.kdf` with a purpose of its own (the `cellrelay/2` labels below).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from .._crypto import (
    AEAD_TAG_SIZE,
    ED25519_SIGNATURE_SIZE,
    X25519_KEY_SIZE,
    HashChain,
    blake2b,
    ed25519_verify,
    random_bytes,
    x25519,
    x25519_public_from_private,
    xchacha20poly1305_decrypt,
    xchacha20poly1305_encrypt,
    zero,
)
from .._errors import CryptoError
from ._binary import Reader, Writer
from ._errors import BadSignatureError, MalformedError, MembershipError, TamperedError
from ._identity import MEMBER_ID_SIZE
from ._keys import kdf
from ._membership import CELL_ID_SIZE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from .._crypto import Readable
    from ._identity import Identity, MemberInfo, Rng

__all__ = [
    "BOX_SIZE",
    "BUCKETS",
    "BUCKET_BOX",
    "EPOCH_SECRET",
    "INIT_SECRET",
    "KEY_UPDATE_SIZE",
    "MAX_BUCKET",
    "PURPOSES",
    "RECEIVE_BOX",
    "SENDER_NODE",
    "SENDER_ROOT",
    "SENDER_SECRET",
    "KeyUpdate",
    "OpenedKeys",
    "SenderTree",
    "bucket_of",
    "init_secret",
    "next_epoch_secret",
    "open_keys",
    "open_receive_box",
    "parse_section",
    "receive_dh",
    "seal_keys",
    "section_size",
    "sign_key_update",
]

BUCKETS: Final = 64
# The most members one bucket may hold, so that refreshing one bucket (a box per member,
# 48 bytes) plus the 64 bucket boxes fits a default 16,384-byte envelope with room for the
# rest of the change: 160 x 48 + 64 x 48 = 10,752 bytes. At 5,000 members the fullest of 64
# hashed buckets holds about 100 (mean 78, standard deviation about 9).
MAX_BUCKET: Final = 160
SECRET_SIZE: Final = 32
BOX_SIZE: Final = SECRET_SIZE + AEAD_TAG_SIZE
NONCE_SIZE: Final = 24
_UPDATE_VERSION: Final = 2

RECEIVE_BOX: Final = b"cellrelay/2 receive box"
BUCKET_BOX: Final = b"cellrelay/2 bucket box"
EPOCH_SECRET: Final = b"cellrelay/2 epoch secret"
INIT_SECRET: Final = b"cellrelay/2 init secret"
SENDER_SECRET: Final = b"cellrelay/2 sender secret"
SENDER_NODE: Final = b"cellrelay/2 sender node"
SENDER_ROOT: Final = b"cellrelay/2 sender root"
PURPOSES: Final = (
    RECEIVE_BOX,
    BUCKET_BOX,
    EPOCH_SECRET,
    INIT_SECRET,
    SENDER_SECRET,
    SENDER_NODE,
    SENDER_ROOT,
)
"""Every KDF purpose of this module; with `_keys.PURPOSES`, none is a prefix of another."""

_BUCKET_OF: Final = b"cellrelay/2 bucket-of\x00"
_UPDATE_SIGN: Final = b"cellrelay/2 key-update\x00"
_RECEIVE_AD: Final = b"cellrelay/2 receive-box\x00"
_BUCKET_AD: Final = b"cellrelay/2 bucket-box\x00"
_REFRESH_HEAD: Final = 1 + X25519_KEY_SIZE + 2
KEY_UPDATE_SIZE: Final = (
    1 + CELL_ID_SIZE + MEMBER_ID_SIZE + 4 + X25519_KEY_SIZE + ED25519_SIGNATURE_SIZE
)


def bucket_of(cell_id: bytes, member_id: bytes) -> int:
    """Return the bucket (0..63) of `member_id` in the cell: a hash, so anyone can compute it."""
    return blake2b(_BUCKET_OF + cell_id + member_id, size=1)[0] % BUCKETS


def init_secret(epoch_secret: Readable, cell_id: bytes, epoch: int) -> bytearray:
    """Return init(E), the key the next epoch secret is derived under (delete it on E+1)."""
    return kdf(epoch_secret, INIT_SECRET, cell_id + epoch.to_bytes(4, "big"))


def next_epoch_secret(
    init: Readable, change_secret: Readable, cell_id: bytes, epoch: int
) -> bytearray:
    """Return the secret of epoch `epoch` from init(`epoch` - 1) and that change's secret."""
    return kdf(init, EPOCH_SECRET, cell_id + epoch.to_bytes(4, "big") + bytes(change_secret))


# -- key updates -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyUpdate:
    """A member's new receive key, signed by its identity key.

    Wire form (133 bytes): version (2) || cell id (16) || member id (16) || generation (u32)
    || receive public key (32) || signature (64) over "cellrelay/2 key-update" || 0x00 ||
    the 69 bytes before it.
    """

    cell_id: bytes
    member_id: bytes
    generation: int
    receive_pub: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    def signed_part(self) -> bytes:
        """The fields the signature covers, in wire order."""
        writer = Writer().u8(_UPDATE_VERSION).raw(self.cell_id).raw(self.member_id)
        return writer.u32(self.generation).raw(self.receive_pub).bytes()

    def to_bytes(self) -> bytes:
        """The wire form."""
        return self.signed_part() + self.signature

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyUpdate:
        """Parse an update (structure only: `verify` checks it).

        Raises:
            MalformedError: not 133 bytes of version 2.
        """
        reader = Reader(data)
        if reader.u8() != _UPDATE_VERSION:
            raise MalformedError("unknown key update version")
        update = cls(
            cell_id=reader.take(CELL_ID_SIZE),
            member_id=reader.take(MEMBER_ID_SIZE),
            generation=reader.u32(),
            receive_pub=reader.take(X25519_KEY_SIZE),
            signature=reader.take(ED25519_SIGNATURE_SIZE),
        )
        reader.end()
        return update

    def verify(self, cell_id: bytes, member: MemberInfo, after: int) -> None:
        """Check the update is `member`'s for this cell, newer than generation `after`.

        Raises:
            MembershipError: another cell or member, or not a newer generation.
            BadSignatureError: the signature does not verify.
            MalformedError: the key is low-order (no box could ever be made to it).
        """
        if self.cell_id != cell_id or self.member_id != member.member_id:
            raise MembershipError("key update for another cell or member")
        if self.generation <= after:
            raise MembershipError("key update not newer than the committed one")
        try:
            ed25519_verify(member.sign_pub, _UPDATE_SIGN + self.signed_part(), self.signature)
        except CryptoError as exc:
            raise BadSignatureError("key update signature does not verify") from exc
        probe = bytearray(random_bytes(X25519_KEY_SIZE))
        try:
            zero(x25519(probe, self.receive_pub))
        except CryptoError as exc:
            raise MalformedError("key update with an unusable key") from exc
        finally:
            zero(probe)


def sign_key_update(
    identity: Identity, cell_id: bytes, generation: int, receive_private: bytearray
) -> KeyUpdate:
    """Return the update announcing the receive key with this private half."""
    unsigned = KeyUpdate(
        cell_id=cell_id,
        member_id=identity.member_id,
        generation=generation,
        receive_pub=x25519_public_from_private(receive_private),
        signature=bytes(ED25519_SIGNATURE_SIZE),
    )
    signature = identity.sign(_UPDATE_SIGN + unsigned.signed_part())
    return dataclasses.replace(unsigned, signature=signature)


# -- the bucket tree -----------------------------------------------------------------------------


def _box_key(shared: bytearray, purpose: bytes, context: bytes) -> bytearray:
    try:
        return kdf(shared, purpose, context)
    finally:
        zero(shared)


def section_size(refreshed: Mapping[int, int]) -> int:
    """Bytes of a key section whose refreshed buckets have these member counts."""
    return (
        X25519_KEY_SIZE
        + 1
        + sum(_REFRESH_HEAD + count * BOX_SIZE for count in refreshed.values())
        + BUCKETS * BOX_SIZE
    )


def seal_keys(
    *,
    cell_id: bytes,
    ad: bytes,
    nonce: bytes,
    change_secret: Readable,
    buckets: Mapping[int, Sequence[tuple[bytes, bytes]]],
    bucket_publics: Mapping[int, bytes],
    refresh: Iterable[int],
    rng: Rng = random_bytes,
) -> tuple[bytes, dict[int, bytes]]:
    """Return a change's key section and the bucket public keys after it.

    `buckets` maps each non-empty bucket to its members as (member id, receive public key),
    ascending by id; `bucket_publics` holds the current public key of each bucket that has
    one; `refresh` names the buckets to give new key pairs (a bucket with members and no key
    is refreshed anyway). `ad` binds the boxes to the change (its header, once on the wire).

    Raises:
        MembershipError: a refreshed bucket holds more than `MAX_BUCKET` members.
    """
    if len(nonce) != NONCE_SIZE:
        raise ValueError("a nonce is 24 bytes")
    eph = bytearray(rng(X25519_KEY_SIZE))
    try:
        e_pub = x25519_public_from_private(eph)
        todo = {b for b in refresh if buckets.get(b)}
        todo |= {b for b, members in buckets.items() if members and b not in bucket_publics}
        publics = {b: pub for b, pub in bucket_publics.items() if buckets.get(b)}
        out = Writer().raw(e_pub).u8(len(todo))
        for b in sorted(todo):
            members = buckets[b]
            if len(members) > MAX_BUCKET:
                raise MembershipError("a bucket of the cell is full")
            private = bytearray(rng(X25519_KEY_SIZE))
            try:
                publics[b] = x25519_public_from_private(private)
                out.u8(b).raw(publics[b]).u16(len(members))
                for member_id, receive_pub in members:
                    key = _box_key(
                        x25519(eph, receive_pub), RECEIVE_BOX, e_pub + receive_pub + member_id
                    )
                    try:
                        out.raw(
                            xchacha20poly1305_encrypt(
                                key, nonce, _RECEIVE_AD + ad + member_id, private
                            )
                        )
                    finally:
                        zero(key)
            finally:
                zero(private)
        for b in range(BUCKETS):
            public = publics.get(b)
            if public is None:
                out.raw(rng(BOX_SIZE))
                continue
            key = _box_key(x25519(eph, public), BUCKET_BOX, e_pub + public + bytes([b]))
            try:
                out.raw(
                    xchacha20poly1305_encrypt(
                        key, nonce, _BUCKET_AD + ad + bytes([b]), change_secret
                    )
                )
            finally:
                zero(key)
        return out.bytes(), publics
    finally:
        zero(eph)


@dataclass(slots=True, eq=False, kw_only=True)
class OpenedKeys:
    """What a member took from a key section: the change secret, and its bucket's new key."""

    change_secret: bytearray = field(repr=False)
    bucket_private: bytearray | None = field(default=None, repr=False)
    bucket_public: bytes | None = None

    def clear(self) -> None:
        """Zero the secrets."""
        zero(self.change_secret)
        if self.bucket_private is not None:
            zero(self.bucket_private)


def parse_section(section: bytes) -> tuple[bytes, dict[int, tuple[bytes, int, int]], int, int]:
    """Parse a key section's layout, which may be followed by other bytes.

    Returns (e_pub, {bucket: (new public key, member count, offset of its receive boxes)},
    offset of the 64 bucket boxes, offset just past them).

    Raises:
        MalformedError: the layout does not parse (buckets out of order, sizes out of range,
            too short).
    """
    reader = Reader(section)
    e_pub = reader.take(X25519_KEY_SIZE)
    count = reader.u8()
    refreshed: dict[int, tuple[bytes, int, int]] = {}
    offset = X25519_KEY_SIZE + 1
    last = -1
    for _ in range(count):
        b = reader.u8()
        if b >= BUCKETS or b <= last:
            raise MalformedError("refreshed buckets out of order")
        last = b
        public = reader.take(X25519_KEY_SIZE)
        members = reader.u16()
        if not 1 <= members <= MAX_BUCKET:
            raise MalformedError("a refreshed bucket's size is out of range")
        offset += _REFRESH_HEAD
        refreshed[b] = (public, members, offset)
        reader.take(members * BOX_SIZE)
        offset += members * BOX_SIZE
    reader.take(BUCKETS * BOX_SIZE)
    return e_pub, refreshed, offset, offset + BUCKETS * BOX_SIZE


def open_receive_box(
    box: bytes,
    *,
    e_pub: bytes,
    ad: bytes,
    nonce: bytes,
    me: bytes,
    dh: Callable[[bytes], bytearray],
    receive_pub: bytes,
    bucket_public: bytes | None,
) -> bytearray:
    """Open this member's receive box: the new private key of its bucket.

    `dh(public)` is X25519 with this member's receive private key (generation 0: its
    identity key), `receive_pub` its public half. `bucket_public`, if given, is what the
    key must match (a joiner that is not an admin knows no bucket public key: the box's
    authentication is what it relies on).

    Raises:
        TamperedError: the box does not open, or its key does not match `bucket_public`.
    """
    try:
        shared = dh(e_pub)
    except CryptoError as exc:
        raise TamperedError("a key box does not open") from exc
    key = _box_key(shared, RECEIVE_BOX, e_pub + receive_pub + me)
    try:
        private = _open(key, nonce, _RECEIVE_AD + ad + me, box)
    finally:
        zero(key)
    if bucket_public is not None and x25519_public_from_private(private) != bucket_public:
        zero(private)
        raise TamperedError("a bucket key that does not match its public key")
    return private


def receive_dh(private: bytearray) -> Callable[[bytes], bytearray]:
    """Return `dh` for `open_keys` from a receive private key held in memory."""
    return lambda public: x25519(private, public)


def open_keys(
    section: bytes,
    *,
    cell_id: bytes,
    ad: bytes,
    nonce: bytes,
    me: bytes,
    bucket_members: Sequence[bytes],
    dh: Callable[[bytes], bytearray],
    receive_pub: bytes,
    bucket_private: bytearray | None,
) -> OpenedKeys:
    """Open this member's boxes in a key section (which may be followed by other bytes).

    `bucket_members` lists the ids of this member's bucket after the change, ascending;
    `dh` and `receive_pub` are as for `open_receive_box`; `bucket_private` is the bucket's
    current private key (None if this member has none yet, as in a cell migrating from
    the first layout, whose first change refreshes every bucket).

    Raises:
        MalformedError: the section does not parse, or this member's bucket has no box for it.
        TamperedError: a box does not open (wrong key: this member was removed, or its
            receive key or bucket key is not the one the admin used).
    """
    e_pub, refreshed, bucket_offset, _ = parse_section(section)
    b = bucket_of(cell_id, me)
    new_private: bytearray | None = None
    new_public: bytes | None = None
    try:
        if b in refreshed:
            new_public, count, offset = refreshed[b]
            if count != len(bucket_members) or me not in bucket_members:
                raise MalformedError("this member's bucket has no box for it")
            at = offset + bucket_members.index(me) * BOX_SIZE
            new_private = open_receive_box(
                section[at : at + BOX_SIZE],
                e_pub=e_pub,
                ad=ad,
                nonce=nonce,
                me=me,
                dh=dh,
                receive_pub=receive_pub,
                bucket_public=new_public,
            )
            bucket_private = new_private
        if bucket_private is None:
            raise MalformedError("no bucket key to open the change with")
        public = new_public or x25519_public_from_private(bucket_private)
        at = bucket_offset + b * BOX_SIZE
        try:
            shared = x25519(bucket_private, e_pub)
        except CryptoError as exc:  # a low-order e_pub: no box was made with it
            raise TamperedError("a key box does not open") from exc
        key = _box_key(shared, BUCKET_BOX, e_pub + public + bytes([b]))
        try:
            secret = _open(key, nonce, _BUCKET_AD + ad + bytes([b]), section[at : at + BOX_SIZE])
        finally:
            zero(key)
    except BaseException:
        if new_private is not None:
            zero(new_private)
        raise
    return OpenedKeys(change_secret=secret, bucket_private=new_private, bucket_public=new_public)


def _open(key: bytearray, nonce: bytes, ad: bytes, box: bytes) -> bytearray:
    try:
        return bytearray(xchacha20poly1305_decrypt(key, nonce, ad, box))
    except CryptoError as exc:
        raise TamperedError("a key box does not open") from exc


# -- the sender tree ---------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class SenderTree:
    """One epoch's sender chains, derived on demand and forgotten once derived.

    `nodes` holds the 64 bucket nodes not yet used; `roots` the first chain keys derived
    from used nodes and not yet taken. Taking a chain removes it: the caller owns it.
    """

    cell_id: bytes
    epoch: int
    nodes: dict[int, bytearray] = field(repr=False)
    roots: dict[bytes, HashChain] = field(default_factory=dict, repr=False)
    # `_state.write_state`'s last encoding of the tree, with the (node, root) counts it was
    # made at: every change of the tree changes a count (`take` pops a node or a root), so
    # equal counts mean the bytes are still true. Saving is once per burst of deliveries.
    saved: tuple[tuple[int, int], bytes] | None = field(default=None, repr=False)

    @classmethod
    def enter(cls, epoch_secret: Readable, cell_id: bytes, epoch: int) -> SenderTree:
        """Derive the 64 bucket nodes of the epoch; the sender secret is zeroed before return.

        The caller zeroes `epoch_secret` once it has derived its other keys from it.
        """
        context = cell_id + epoch.to_bytes(4, "big")
        sender = kdf(epoch_secret, SENDER_SECRET, context)
        try:
            nodes = {b: kdf(sender, SENDER_NODE, context + bytes([b])) for b in range(BUCKETS)}
        finally:
            zero(sender)
        return cls(cell_id=cell_id, epoch=epoch, nodes=nodes)

    def take(self, member_id: bytes, bucket_members: Iterable[bytes]) -> HashChain:
        """Return `member_id`'s first chain key (once: a second call raises KeyError).

        `bucket_members` is every member of the epoch in `member_id`'s bucket; the first take
        from a bucket derives all their roots and zeroes the bucket's node.
        """
        chain = self.roots.pop(member_id, None)
        if chain is not None:
            self.saved = None  # it holds the root
            return chain
        b = bucket_of(self.cell_id, member_id)
        node = self.nodes.pop(b)
        self.saved = None  # it holds the node: drop it now, not at the next save
        try:
            for other in bucket_members:
                if bucket_of(self.cell_id, other) != b:
                    raise ValueError("a member of another bucket")
                root = kdf(node, SENDER_ROOT, other)
                try:
                    self.roots[other] = HashChain(root)
                finally:
                    zero(root)
        finally:
            zero(node)
        return self.roots.pop(member_id)

    def secrets(self) -> list[bytes]:
        """Every secret the tree still holds (what a seized state would hold), for tests."""
        return [bytes(node) for node in self.nodes.values()] + [
            chain.export() for chain in self.roots.values()
        ]

    def clear(self) -> None:
        """Zero every node and root."""
        for node in self.nodes.values():
            zero(node)
        for chain in self.roots.values():
            chain.clear()
        self.nodes.clear()
        self.roots.clear()
        self.saved = None
