"""The pieces of a member's cell state, and their saved form (`CellCrypto.to_bytes`).

The saved form is for the client's encrypted keystore only: it holds every secret the
member has (epoch secret, chain keys, skipped message keys, sender signing key). It holds
nothing the member has already used: opened messages' keys are gone from it, which is what
tests/protocol/test_group_messages.py's forward secrecy test checks by restoring from it.

Layout (version 2): see `write_state`; every field is fixed-size or length-prefixed, read
back by `read_state` with the same bounds the protocol has, so a corrupted or hostile file
gives `MalformedError`, never a state that breaks an invariant.

Version 6 (issue 12, cells of 1,000) saves each epoch's member list as its difference from
the cell's current member list, saved just before the epochs: the ids of current members
the epoch lacks (or holds with other public info), then the infos of the epoch's members
that are not current members (docs/protocol.md §G11). An admin admitting members one by
one keeps up to 64 old epochs, each with nearly the whole list: at 1,000 members that was
4.6 MiB saved in full, 425 KiB as differences (bench_schedule.py --admin-state). Versions 1 to 5 (every list in full)
are still read, and the next save writes version 6.

Version 5 (issue 12, post-compromise security) adds, at the end, the receive keys
(docs/protocol.md §G6.5): this member's committed receive key (generation and private key;
generation 0 is its identity key, saved as none), the keys of its updates not yet
committed, when its receive key was last replaced, the latest committed receive public key
of every member who has updated, and an admin's verified updates waiting to be committed. A
state of version 4 or older has none: every member's receive key is its identity key.

Version 4 (issue 12) adds, at the end, the bucket keys of epoch change version 3
(docs/protocol.md §G6.2): this member's bucket private key, the 64 bucket public keys as
last changed, and an admin's join boxes for members it may still welcome (§G7). A state
of version 3 or older has none: its cell migrates at the next change (every bucket is
keyed afresh, as the admin who makes it has no bucket keys either).

Version 3 (issue 12) adds, per epoch, its sender tree (docs/protocol.md §G8.1): the bucket
nodes not yet used and the first chain keys derived and not yet taken; and the current
epoch's init secret (§G6.2), which an older state derives from the epoch secret it kept. An epoch saved by
version 2 has none: its chains came in distributions, and it keeps them that way.

Version 2 (issue 9) adds, per skipped key, when its gap was noticed and whether it was
owed and reported, and per sender chain the digests of its last accepted envelopes.
`read_state` still reads version 1: its skipped keys get an unknown time (the receiver
dates them at its next look, so they live a full key lifetime from the upgrade) and count
as reported (an old gap is not news), and its chains start with no digests.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from .._crypto import (
    ED25519_PUBLIC_KEY_SIZE,
    ED25519_SEED_SIZE,
    HashChain,
    SigningKey,
    XChaChaKey,
    zero,
)
from ._binary import Reader, Writer
from ._control import GROUP_KEY_SIZE, JOIN_BOX_SIZE, MAX_ADMIN_SECRETS, MAX_EXTRA, SECRET_SIZE
from ._errors import MalformedError, MembershipError
from ._identity import MAX_NAME_BYTES, MEMBER_ID_SIZE, MemberInfo, check_name
from ._keys import MATERIAL_SIZE, EpochKeys, Gap, ReceiveChain, SendChain
from ._membership import CELL_ID_SIZE, HASH_SIZE, MAX_MEMBERS, Membership, Role
from ._schedule import BUCKETS, KEY_UPDATE_SIZE, SenderTree, bucket_of, init_secret

__all__ = ["Epoch", "Parked", "SavedState", "read_state", "write_state"]

STATE_VERSION: Final = 6
# Join boxes an admin keeps for members it may still welcome: one per member added and not
# yet heard from (its first sender key drops it), the oldest dropped past this.
MAX_JOIN_BOXES: Final = MAX_MEMBERS
# Updates of this member's own not yet committed (each a receive key it keeps until a
# change commits it or a newer one); the oldest is dropped past this.
MAX_PENDING_RECEIVE: Final = 4
_OLDEST_VERSION: Final = 1  # still read (see the module docstring)
_KEY: Final = 32
_DOUBLE: Final = struct.Struct(">d")
# A bound for reading a saved state back: well above what the code keeps (MAX_SKIPPED_TOTAL
# in _group), so a valid state always loads and a corrupt one cannot make the reader
# allocate without end. Every other count is a u8 or u16 read from the data.
_MAX_SAVED_SKIPPED: Final = 65_535
_DIGEST_SIZE: Final = 16  # _receiver's digest of an accepted envelope


@dataclass(slots=True, eq=False)
class Epoch:
    """One epoch as this member holds it: keys, members, its own chain and the others'."""

    number: int
    keys: EpochKeys
    members: dict[bytes, MemberInfo]
    own_public: bytes  # this member's signing key in the epoch (to recognise its own echoes)
    own: SendChain | None = None  # None once the epoch is superseded: no more sending in it
    secret: bytearray | None = field(default=None, repr=False)  # an admin's current epoch only
    # init(E) (§G6.2): the next epoch's secret is derived under it; current epoch only.
    init: bytearray | None = field(default=None, repr=False)
    # When an admin deletes `secret` (its welcome window ends), on the caller's clock.
    secret_until: float = float("inf")
    chains: dict[bytes, ReceiveChain] = field(default_factory=dict)
    superseded_at: float | None = None  # local time the next epoch was applied
    # `write_state`'s encoding of `members` (version 6: its difference from the cell's
    # current member list), with the Membership it was made against: an epoch's member
    # list never changes (a membership change starts a new epoch), but the current one does.
    members_wire: tuple[Membership, bytes] | None = field(default=None, repr=False)
    # The epoch's sender tree (§G8.1); None for an epoch entered before version 3, whose
    # chains come in distributions.
    tree: SenderTree | None = field(default=None, repr=False)
    # Members by bucket, computed at the first use (not saved: it follows from `members`).
    by_bucket: dict[int, list[bytes]] | None = field(default=None, repr=False)
    # One member's position in `members` (this member's: `index_of`), found at the first use.
    position: tuple[bytes, int | None] | None = field(default=None, repr=False)

    def index_of(self, member_id: bytes) -> int | None:
        """`member_id`'s position among the epoch's members, ascending (None: not one).

        Kept for the last member asked about, which is this member: a receiver looks for
        its own MAC in every announcement of the epoch.
        """
        if self.position is None or self.position[0] != member_id:
            index = None
            if member_id in self.members:
                index = next(i for i, m in enumerate(self.members) if m == member_id)
            self.position = (member_id, index)
        return self.position[1]

    def buckets(self, cell_id: bytes) -> dict[int, list[bytes]]:
        """The members of the epoch by bucket (non-empty buckets only), each ascending.

        The caller must not change it: it is cached for the epoch.
        """
        if self.by_bucket is None:
            by_bucket: dict[int, list[bytes]] = {}
            for mid in sorted(self.members):
                by_bucket.setdefault(bucket_of(cell_id, mid), []).append(mid)
            self.by_bucket = by_bucket
        return self.by_bucket

    def bucket_members(self, cell_id: bytes, member_id: bytes) -> list[bytes]:
        """The members of the epoch in `member_id`'s bucket, ascending."""
        return self.buckets(cell_id).get(bucket_of(cell_id, member_id), [])

    def clear(self) -> None:
        """Zero every key of the epoch."""
        self.keys.clear()
        if self.tree is not None:
            self.tree.clear()
        if self.own is not None:
            self.own.clear()
        if self.secret is not None:
            zero(self.secret)
        if self.init is not None:
            zero(self.init)
        for chain in self.chains.values():
            chain.clear()


@dataclass(frozen=True, slots=True)
class Parked:
    """An envelope waiting for its epoch (sender None) or its sender's key distribution.

    `ref` is the caller's name for it (the client's: the relay's seq); it is not saved.
    """

    envelope: bytes = field(repr=False)
    epoch: int
    sender: bytes | None
    received_at: float
    ref: int = 0


@dataclass(slots=True, eq=False, kw_only=True)
class SavedState:
    """Everything `CellCrypto` keeps besides its identity and random source."""

    member_id: bytes
    cell_id: bytes
    name: str
    group_keys: tuple[bytes, bytes] = field(repr=False)
    control_read_key: bytes = field(repr=False)
    admin_secrets: bytes = field(repr=False)
    extra: bytes = field(repr=False)
    removed: bool
    grace_period: float
    joined_epoch: int
    current: int
    membership: Membership
    epochs: dict[int, Epoch]
    parked: list[Parked]
    proposals: list[bytes]
    # `write_state`'s encoding of `membership`'s member list, with the Membership it was
    # made from: a Membership is frozen, and a change replaces it with a new one.
    membership_wire: tuple[Membership, bytes] | None = field(default=None, repr=False)
    # Epoch change version 3's bucket keys (§G6.2): this member's bucket private key, the
    # public key of each non-empty bucket (empty: the cell has not migrated yet), and, for
    # an admin, the join box of each member added lately (by member id, oldest first).
    bucket_private: bytearray | None = field(default=None, repr=False)
    bucket_publics: dict[int, bytes] = field(default_factory=dict)
    join_boxes: dict[bytes, bytes] = field(default_factory=dict, repr=False)
    # Receive keys (§G6.5): this member's committed generation and private key (None:
    # generation 0, its identity key), the private keys of its updates not yet committed
    # (by generation), when its receive key was last replaced (its own clock), each other
    # member's latest committed (generation, public key), and an admin's verified updates
    # waiting to be committed (by member id, wire form).
    receive_generation: int = 0
    receive_private: bytearray | None = field(default=None, repr=False)
    pending_receive: dict[int, bytearray] = field(default_factory=dict, repr=False)
    receive_at: float = 0.0
    receive_publics: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)
    key_updates: dict[bytes, bytes] = field(default_factory=dict, repr=False)

    def forget_buckets(self) -> None:
        """Drop every bucket key (a change of version 1 or 2: the cell migrates again)."""
        if self.bucket_private is not None:
            zero(self.bucket_private)
        self.bucket_private = None
        self.bucket_publics = {}
        self.join_boxes = {}


def write_state(
    state: SavedState, *, cached: bool = True, parked: bool = True, version: int = STATE_VERSION
) -> bytes:
    """Return the saved form of `state`.

    The parts that rarely change between two saves (member lists, other members' chains)
    are encoded once and reused while they stay the same (`SavedState.membership_wire`,
    `Epoch.members_wire`, `ReceiveChain.saved`); `cached=False` encodes everything
    afresh, which tests compare against. `parked=False` leaves the parked envelopes out
    (saved as none), for a caller that can fetch them again (`CellCrypto.to_bytes`).
    `version=5` writes every epoch's member list in full, as version 5 did (for tests of
    reading older states; nothing else of version 5 differs).
    """
    if version not in (5, STATE_VERSION):
        raise ValueError("only versions 5 and 6 are written")
    w = Writer().u8(version).raw(state.member_id).raw(state.cell_id)
    w.short(state.name.encode()).raw(state.group_keys[0]).raw(state.group_keys[1])
    w.raw(state.control_read_key).long(state.admin_secrets).long(state.extra)
    w.u8(state.removed).raw(_DOUBLE.pack(state.grace_period))
    w.u32(state.joined_epoch).u32(state.current)
    m = state.membership
    w.u32(m.head_index).raw(m.head_hash).u32(m.head_epoch).u16(len(m.members))
    w.raw(_membership_block(state) if cached else _write_membership(m))
    w.u8(len(state.epochs))
    for epoch in state.epochs.values():
        w.u32(epoch.number)
        keys = epoch.keys
        for key in (keys.header, keys.distribution, keys.control_header, keys.control_body):
            w.raw(key.export())
        w.u16(len(epoch.members))
        if version < 6:
            w.raw(_write_members(epoch.members))
        elif cached:
            w.raw(_members_block(epoch, m))
        else:
            w.raw(_write_members_diff(epoch.members, m))
        w.raw(epoch.own_public).u8(epoch.own is not None)
        if epoch.own is not None:
            own = epoch.own
            w.raw(own.chain_key.export()).u32(own.counter).raw(own.signing_key.seed())
        w.u8(epoch.secret is not None)
        if epoch.secret is not None:
            w.raw(epoch.secret)
        w.u8(epoch.superseded_at is not None)
        if epoch.superseded_at is not None:
            w.raw(_DOUBLE.pack(epoch.superseded_at))
        w.u16(len(epoch.chains))
        for sender, chain in epoch.chains.items():
            w.raw(_chain_block(sender, chain) if cached else _write_chain(sender, chain))
        _write_tree(w, epoch.tree, cached=cached)
        w.u8(epoch.init is not None)
        if epoch.init is not None:
            w.raw(epoch.init)
        if epoch.secret is not None:
            w.raw(_DOUBLE.pack(epoch.secret_until))
    kept = state.parked if parked else []
    w.u16(len(kept))
    for item in kept:
        w.u32(item.epoch).u8(item.sender is not None)
        if item.sender is not None:
            w.raw(item.sender)
        w.raw(_DOUBLE.pack(item.received_at)).long(item.envelope)
    w.u8(len(state.proposals))
    for digest in state.proposals:
        w.raw(digest)
    w.u8(state.bucket_private is not None)
    if state.bucket_private is not None:
        w.raw(state.bucket_private)
    w.u8(len(state.bucket_publics))
    for bucket, public in sorted(state.bucket_publics.items()):
        w.u8(bucket).raw(public)
    w.u16(len(state.join_boxes))
    for member_id, box in state.join_boxes.items():
        w.raw(member_id).raw(box)
    w.u32(state.receive_generation).u8(state.receive_private is not None)
    if state.receive_private is not None:
        w.raw(state.receive_private)
    w.u8(len(state.pending_receive))
    for generation, private in state.pending_receive.items():
        w.u32(generation).raw(private)
    w.raw(_DOUBLE.pack(state.receive_at)).u16(len(state.receive_publics))
    for member_id, (generation, public) in state.receive_publics.items():
        w.raw(member_id).u32(generation).raw(public)
    w.u16(len(state.key_updates))
    for update in state.key_updates.values():
        w.raw(update)
    return w.bytes()


_GAP_OWED: Final = 1
_GAP_REPORTED: Final = 2
_UNKNOWN_GAP: Final = Gap(-1.0, owed=False, reported=True)


def _write_tree(w: Writer, tree: SenderTree | None, *, cached: bool) -> None:
    w.u8(tree is not None)
    if tree is None:
        return
    counts = (len(tree.nodes), len(tree.roots))
    if cached and tree.saved is not None and tree.saved[0] == counts:
        w.raw(tree.saved[1])
        return
    block = Writer().u8(len(tree.nodes))
    for bucket, node in tree.nodes.items():
        block.u8(bucket).raw(node)
    block.u16(len(tree.roots))
    for member_id, chain in tree.roots.items():
        block.raw(member_id).raw(chain.export())
    encoded = block.bytes()
    tree.saved = (counts, encoded)
    w.raw(encoded)


def _read_tree(reader: Reader, cell_id: bytes, number: int) -> SenderTree | None:
    if not reader.flag():
        return None
    tree = SenderTree(cell_id=cell_id, epoch=number, nodes={})
    count = reader.u8()
    if count > BUCKETS:
        raise MalformedError("too many sender tree nodes")
    for _ in range(count):
        bucket = reader.u8()
        if bucket >= BUCKETS or bucket in tree.nodes:
            raise MalformedError("bad sender tree node")
        tree.nodes[bucket] = _read_secret(reader)
    count = reader.u16()
    if count > MAX_MEMBERS:
        raise MalformedError("too many sender tree roots")
    for _ in range(count):
        member_id = reader.take(MEMBER_ID_SIZE)
        tree.roots[member_id] = HashChain(reader.take(_KEY))
    return tree


def _write_chain(sender: bytes, chain: ReceiveChain) -> bytes:
    w = Writer().raw(sender).raw(chain.signing_public).raw(chain.chain_key.export())
    w.u32(chain.next).u16(len(chain.skipped))
    for counter, material in chain.skipped.items():
        gap = chain.gaps.get(counter, _UNKNOWN_GAP)
        flags = (_GAP_OWED if gap.owed else 0) | (_GAP_REPORTED if gap.reported else 0)
        w.u32(counter).raw(material).raw(_DOUBLE.pack(gap.noticed_at)).u8(flags)
    w.u8(len(chain.digests))
    for counter, digest in chain.digests.items():
        w.u32(counter).raw(digest)
    return w.bytes()


def _write_membership(m: Membership) -> bytes:
    w = Writer()
    for member_id, info in m.members.items():
        info.write(w)
        w.u8(m.role_of(member_id) or 0)  # 0 member, 1 admin, 2.. (Role): one byte, as before
    return w.bytes()


def _write_members(members: dict[bytes, MemberInfo]) -> bytes:
    w = Writer()
    for info in members.values():
        info.write(w)
    return w.bytes()


def _write_members_diff(members: dict[bytes, MemberInfo], current: Membership) -> bytes:
    """An epoch's member list as its difference from the current one (version 6).

    u16 count, then the ids of the current members that `members` lacks or holds with
    other public info; u16 count, then the infos of `members` not among the current ones
    as they are; each part in ascending member id order (one encoding per list). The
    epoch's own count precedes it (`write_state`).
    """
    now = current.members
    absent = sorted(mid for mid, info in now.items() if members.get(mid) != info)
    extra = [members[mid] for mid in sorted(members) if now.get(mid) != members[mid]]
    w = Writer().u16(len(absent))
    for mid in absent:
        w.raw(mid)
    w.u16(len(extra))
    for info in extra:
        info.write(w)
    return w.bytes()


# The reused encodings (see `write_state`). Each is kept with what tells whether it is
# still true: the Membership object, nothing for an epoch's never-changing member list,
# and a chain's `next` and number of skipped keys.


def _membership_block(state: SavedState) -> bytes:
    m, cached = state.membership, state.membership_wire
    if cached is None or cached[0] is not m:
        cached = state.membership_wire = (m, _write_membership(m))
    return cached[1]


def _members_block(epoch: Epoch, current: Membership) -> bytes:
    cached = epoch.members_wire
    if cached is None or cached[0] is not current:
        cached = epoch.members_wire = (current, _write_members_diff(epoch.members, current))
    return cached[1]


def _chain_block(sender: bytes, chain: ReceiveChain) -> bytes:
    saved = chain.saved
    if (
        saved is None
        or saved[0] != chain.next
        or saved[1] != len(chain.skipped)
        or saved[2] != chain.revision
    ):
        block = _write_chain(sender, chain)
        saved = chain.saved = (chain.next, len(chain.skipped), chain.revision, block)
    return saved[3]


def _read_double(reader: Reader) -> float:
    value: float = _DOUBLE.unpack(reader.take(8))[0]
    if value != value or value in (float("inf"), float("-inf")):  # NaN or infinite
        raise MalformedError("bad time")
    return value


def _read_secret(reader: Reader, size: int = _KEY) -> bytearray:
    return bytearray(reader.take(size))


def _read_members(reader: Reader, count: int) -> dict[bytes, MemberInfo]:
    if count > MAX_MEMBERS:
        raise MalformedError("too many members")
    members = {}
    for _ in range(count):
        info = MemberInfo.read(reader)
        members[info.member_id] = info
    return dict(sorted(members.items()))


def _read_members_diff(reader: Reader, count: int, current: Membership) -> dict[bytes, MemberInfo]:
    """Read what `_write_members_diff` wrote: an epoch of `count` members (version 6).

    The infos shared with the current list are the same objects (one copy in memory too).
    """
    if count > MAX_MEMBERS:
        raise MalformedError("too many members")
    now = current.members
    absent = set()
    last = b""
    for _ in range(reader.u16()):
        mid = reader.take(MEMBER_ID_SIZE)
        if mid not in now or mid <= last:
            raise MalformedError("bad member list difference")
        absent.add(mid)
        last = mid
    members = {mid: info for mid, info in now.items() if mid not in absent}
    extra = reader.u16()
    if len(members) + extra != count:
        raise MalformedError("bad member list difference")
    last = b""
    for _ in range(extra):
        info = MemberInfo.read(reader)
        if info.member_id <= last or info.member_id in members or now.get(info.member_id) == info:
            raise MalformedError("bad member list difference")
        members[info.member_id] = info
        last = info.member_id
    return dict(sorted(members.items()))


def _read_epoch(reader: Reader, version: int, cell_id: bytes, current: Membership) -> Epoch:
    number = reader.u32()
    keys = EpochKeys(
        header=XChaChaKey(reader.take(_KEY)),
        distribution=XChaChaKey(reader.take(_KEY)),
        control_header=XChaChaKey(reader.take(_KEY)),
        control_body=XChaChaKey(reader.take(_KEY)),
    )
    count = reader.u16()
    if version >= 6:
        members = _read_members_diff(reader, count, current)
    else:
        members = _read_members(reader, count)
    own_public = reader.take(ED25519_PUBLIC_KEY_SIZE)
    own = None
    if reader.flag():
        chain_key, counter = HashChain(reader.take(_KEY)), reader.u32()
        seed = _read_secret(reader, ED25519_SEED_SIZE)
        signing_key = SigningKey(seed)
        zero(seed)
        if signing_key.public != own_public:
            raise MalformedError("signing key does not match")
        own = SendChain(chain_key, counter, signing_key, own_public)
    secret_key = _read_secret(reader, SECRET_SIZE) if reader.flag() else None
    superseded_at = _read_double(reader) if reader.flag() else None
    chains = {}
    skipped_total = 0
    for _ in range(reader.u16()):
        sender, public_key = reader.take(MEMBER_ID_SIZE), reader.take(ED25519_PUBLIC_KEY_SIZE)
        chain = ReceiveChain(public_key, HashChain(reader.take(_KEY)), reader.u32())
        count = reader.u16()
        skipped_total += count
        if skipped_total > _MAX_SAVED_SKIPPED:
            raise MalformedError("too many skipped keys")
        for _ in range(count):
            counter = reader.u32()
            chain.skipped[counter] = _read_secret(reader, MATERIAL_SIZE)
            if version == 1:
                chain.gaps[counter] = Gap(-1.0, owed=False, reported=True)
            else:
                noticed_at, flags = _read_double(reader), reader.u8()
                if flags & ~(_GAP_OWED | _GAP_REPORTED):
                    raise MalformedError("bad gap flags")
                chain.gaps[counter] = Gap(
                    noticed_at, owed=bool(flags & _GAP_OWED), reported=bool(flags & _GAP_REPORTED)
                )
        if version > 1:
            for _ in range(reader.u8()):
                counter = reader.u32()
                chain.digests[counter] = reader.take(_DIGEST_SIZE)
        chains[sender] = chain
    secret_until = float("inf")
    if version >= 3:
        tree = _read_tree(reader, cell_id, number)
        init = _read_secret(reader) if reader.flag() else None
        if secret_key is not None:
            secret_until = _read_double(reader)
    else:  # every member kept the current epoch's secret then
        tree = None
        init = None if secret_key is None else init_secret(secret_key, cell_id, number)
    return Epoch(
        number=number,
        keys=keys,
        members=members,
        own_public=own_public,
        own=own,
        secret=secret_key,
        chains=chains,
        superseded_at=superseded_at,
        tree=tree,
        init=init,
        secret_until=secret_until,
    )


def read_state(data: bytes, member_id: bytes) -> SavedState:
    """Parse `write_state` output saved by the member `member_id`.

    Raises:
        MalformedError: not a saved state of this version, or saved by another identity.
    """
    r = Reader(data)
    version = r.u8()
    if not _OLDEST_VERSION <= version <= STATE_VERSION:
        raise MalformedError("unknown state version")
    if r.take(MEMBER_ID_SIZE) != member_id:
        raise MalformedError("state belongs to another identity")
    cell_id = r.take(CELL_ID_SIZE)
    try:
        name = r.short(MAX_NAME_BYTES).decode("utf-8", "strict")
        check_name(name)
    except ValueError as exc:
        raise MalformedError("bad cell name") from exc
    group_keys = (r.take(GROUP_KEY_SIZE), r.take(GROUP_KEY_SIZE))
    control_read_key = r.take(GROUP_KEY_SIZE)
    admin_secrets, extra = r.long(MAX_ADMIN_SECRETS), r.long(MAX_EXTRA)
    removed, grace = r.flag(), _read_double(r)
    joined_epoch, current = r.u32(), r.u32()
    head_index, head_hash, head_epoch = r.u32(), r.take(HASH_SIZE), r.u32()
    listed = []
    count = r.u16()
    if count > MAX_MEMBERS:
        raise MalformedError("too many members")
    for _ in range(count):
        info = MemberInfo.read(r)
        role = r.u8()  # a flag (0/1) before roles: the same bytes for members and admins
        if role > max(Role):
            raise MalformedError("bad role")
        listed.append((info, Role(role)))
    try:
        membership = Membership.snapshot(
            cell_id=cell_id,
            members=listed,
            head_index=head_index,
            head_hash=head_hash,
            head_epoch=head_epoch,
        )
    except MembershipError as exc:
        raise MalformedError("bad membership") from exc
    epochs = {}
    for _ in range(r.u8()):
        epoch = _read_epoch(r, version, cell_id, membership)
        epochs[epoch.number] = epoch
    parked = []
    for _ in range(r.u16()):
        epoch_number = r.u32()
        sender = r.take(MEMBER_ID_SIZE) if r.flag() else None
        received_at = _read_double(r)
        parked.append(Parked(r.long(), epoch_number, sender, received_at))
    proposals = [r.take(HASH_SIZE) for _ in range(r.u8())]
    bucket_private = None
    publics: dict[int, bytes] = {}
    join_boxes: dict[bytes, bytes] = {}
    if version >= 4:
        bucket_private = _read_secret(r) if r.flag() else None
        count = r.u8()
        if count > BUCKETS:
            raise MalformedError("too many bucket keys")
        for _ in range(count):
            bucket = r.u8()
            if bucket >= BUCKETS or bucket in publics:
                raise MalformedError("bad bucket key")
            publics[bucket] = r.take(_KEY)
        count = r.u16()
        if count > MAX_JOIN_BOXES:
            raise MalformedError("too many join boxes")
        for _ in range(count):
            joiner = r.take(MEMBER_ID_SIZE)
            join_boxes[joiner] = r.take(JOIN_BOX_SIZE)
    receive = _read_receive(r) if version >= 5 else _Receive()
    r.end()
    # Older states kept the epoch secret for every member; a member needs only the init
    # secret derived from it (`_read_epoch`): forward secrecy inside the epoch, §G8.1.
    kept = epochs.get(current)
    old_member = version < 3 and member_id not in membership.admins
    if old_member and kept is not None and kept.secret is not None:
        zero(kept.secret)
        kept.secret = None
    if current not in epochs and not removed:
        raise MalformedError("no current epoch")
    return SavedState(
        member_id=member_id,
        cell_id=cell_id,
        name=name,
        group_keys=group_keys,
        control_read_key=control_read_key,
        admin_secrets=admin_secrets,
        extra=extra,
        removed=removed,
        grace_period=grace,
        joined_epoch=joined_epoch,
        current=current,
        membership=membership,
        epochs=epochs,
        parked=parked,
        proposals=proposals,
        bucket_private=bucket_private,
        bucket_publics=publics,
        join_boxes=join_boxes,
        receive_generation=receive.generation,
        receive_private=receive.private,
        pending_receive=receive.pending,
        receive_at=receive.at,
        receive_publics=receive.publics,
        key_updates=receive.updates,
    )


@dataclass(slots=True)
class _Receive:
    generation: int = 0
    private: bytearray | None = None
    pending: dict[int, bytearray] = field(default_factory=dict)
    at: float = 0.0
    publics: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)
    updates: dict[bytes, bytes] = field(default_factory=dict)


def _read_receive(r: Reader) -> _Receive:
    """The receive keys of a version 5 state (see the module docstring)."""
    out = _Receive(generation=r.u32())
    out.private = _read_secret(r) if r.flag() else None
    if (out.private is None) != (out.generation == 0):
        raise MalformedError("a receive key without its generation")
    count = r.u8()
    if count > MAX_PENDING_RECEIVE:
        raise MalformedError("too many pending receive keys")
    for _ in range(count):
        generation = r.u32()
        if generation <= out.generation or generation in out.pending:
            raise MalformedError("a pending receive key of an old generation")
        out.pending[generation] = _read_secret(r)
    out.at = _read_double(r)
    count = r.u16()
    if count > MAX_MEMBERS:
        raise MalformedError("too many receive keys")
    for _ in range(count):
        member_id, generation = r.take(MEMBER_ID_SIZE), r.u32()
        if member_id in out.publics or generation == 0:
            raise MalformedError("bad receive key")
        out.publics[member_id] = (generation, r.take(_KEY))
    count = r.u16()
    if count > MAX_MEMBERS:
        raise MalformedError("too many key updates")
    for _ in range(count):
        update = r.take(KEY_UPDATE_SIZE)
        member_id = update[1 + CELL_ID_SIZE : 1 + CELL_ID_SIZE + MEMBER_ID_SIZE]
        if member_id in out.updates:
            raise MalformedError("two key updates of one member")
        out.updates[member_id] = update
    return out
