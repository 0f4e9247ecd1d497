"""The membership log: an append-only, hash-chained list of entries signed by the cell's admins.

docs/protocol.md, Part 2, "Membership log". Theory of operation:

* Entry 0 is a `GENESIS` by the creator, about itself, as admin, starting epoch 1.
* Every later entry names its index, the hash of the entry before it and the epoch it
  starts, and is signed by a member who was an admin in the state *before* the entry. So
  a verifier that holds the state after entry n accepts entry n+1 only if it chains onto
  entry n exactly: reordered, replayed, dropped or forked entries all break the chain.
* Epochs strictly increase from entry to entry (each epoch change carries at most one
  entry, and rotations start epochs without entries).
* A cell always keeps at least one admin, and at most `MAX_MEMBERS` members.

A `Membership` is the state after some entry: who is a member, who is an admin, and the
head of the chain. Members do not keep the whole log: they keep the state and verify each
new entry against it. Joiners receive the state in their welcome, signed by the admin who
welcomes them (they must trust that admin anyway: it chose the keys they will use).
`Membership.from_log` verifies a whole log from its genesis, for audits and tests.

Entries are signed with the admins' identity keys, so they are non-repudiable on purpose:
any member can prove which admin added or removed whom.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Final

from .._crypto import ED25519_SIGNATURE_SIZE, blake2b, ed25519_verify
from .._errors import CryptoError
from ._binary import Reader, Writer
from ._errors import MalformedError, MembershipError
from ._identity import MEMBER_ID_SIZE, MemberInfo

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._identity import Identity

__all__ = [
    "CELL_ID_SIZE",
    "HASH_SIZE",
    "MAX_MEMBERS",
    "PLAIN_ROLES",
    "LogEntry",
    "Membership",
    "Op",
    "Role",
    "sign_entry",
]

CELL_ID_SIZE: Final = 16
HASH_SIZE: Final = 32
# The largest cell. Bounded by what must fit in one default relay envelope (16,384 bytes,
# docs/protocol.md §9): an epoch change carries one 48-byte box per member slot (6,144
# bytes for 128) and a welcome lists every member (at most 98 bytes each with a 32-byte
# name). Cells are small by design (DESIGN.md: "community groups organised in small cells").
MAX_MEMBERS: Final = 128
_ENTRY_VERSION: Final = 1
_SIGN_DOMAIN: Final = b"cellrelay/1 log-entry\x00"
_HASH_DOMAIN: Final = b"cellrelay/1 log-entry-hash\x00"


class Role(IntEnum):
    """A member's role: admins sign log entries and epoch changes.

    The others say what a member may do with alerts, which every member's client enforces
    (docs/protocol.md §C2, "Verification"): a dispatcher verifies, confirms and resolves
    reports; responders and legal observers answer alerts like members. The relay knows
    nothing of any of them.
    """

    MEMBER = 0
    ADMIN = 1
    DISPATCHER = 2
    RESPONDER = 3
    OBSERVER = 4  # a legal observer
    LIAISON = 5  # belongs to a neighbouring cell too: may escalate alerts (§C10)


# The roles SET_ROLE may give: every role but admin (PROMOTE and DEMOTE move admins).
PLAIN_ROLES: Final = frozenset(
    {Role.MEMBER, Role.DISPATCHER, Role.RESPONDER, Role.OBSERVER, Role.LIAISON}
)


class Op(IntEnum):
    """What a log entry does."""

    GENESIS = 0
    ADD = 1
    REMOVE = 2
    PROMOTE = 3
    DEMOTE = 4
    SET_ROLE = 5  # give a member who is not an admin another role that is not admin


# The role field each operation must carry (ADD carries the new member's role).
_FIXED_ROLE: Final = {
    Op.GENESIS: Role.ADMIN,
    Op.REMOVE: Role.MEMBER,
    Op.PROMOTE: Role.ADMIN,
    Op.DEMOTE: Role.MEMBER,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class LogEntry:
    """One signed membership change."""

    op: Op
    index: int
    prev_hash: bytes
    epoch: int
    timestamp_ms: int
    cell_id: bytes
    signer: bytes
    subject: MemberInfo
    role: Role
    signature: bytes

    def signed_part(self) -> bytes:
        """Return the entry's fields in wire order, without the signature."""
        writer = Writer().u8(_ENTRY_VERSION).u8(self.op).u32(self.index).raw(self.prev_hash)
        writer.u32(self.epoch).u64(self.timestamp_ms).raw(self.cell_id).raw(self.signer)
        self.subject.write(writer)
        return writer.u8(self.role).bytes()

    def to_bytes(self) -> bytes:
        """Return the entry's wire form: the signed part, then the 64-byte signature."""
        return self.signed_part() + self.signature

    @property
    def hash(self) -> bytes:
        """BLAKE2b-256 of the domain label and the whole entry (the next entry's prev_hash)."""
        return blake2b(_HASH_DOMAIN + self.to_bytes(), size=HASH_SIZE)

    @classmethod
    def read(cls, reader: Reader) -> LogEntry:
        """Read one entry (structure only: `Membership.apply` verifies it).

        Raises:
            MalformedError: not an entry of this version.
        """
        if reader.u8() != _ENTRY_VERSION:
            raise MalformedError("unknown log entry version")
        try:
            op = Op(reader.u8())
            index, prev_hash, epoch = reader.u32(), reader.take(HASH_SIZE), reader.u32()
            timestamp_ms, cell_id = reader.u64(), reader.take(CELL_ID_SIZE)
            signer, subject = reader.take(MEMBER_ID_SIZE), MemberInfo.read(reader)
            role = Role(reader.u8())
        except ValueError as exc:  # an unknown op or role number
            raise MalformedError("bad log entry") from exc
        return cls(
            op=op,
            index=index,
            prev_hash=prev_hash,
            epoch=epoch,
            timestamp_ms=timestamp_ms,
            cell_id=cell_id,
            signer=signer,
            subject=subject,
            role=role,
            signature=reader.take(ED25519_SIGNATURE_SIZE),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> LogEntry:
        """Parse one entry that fills `data` exactly."""
        reader = Reader(data)
        entry = cls.read(reader)
        reader.end()
        return entry


def sign_entry(
    identity: Identity,
    *,
    op: Op,
    index: int,
    prev_hash: bytes,
    epoch: int,
    timestamp_ms: int,
    cell_id: bytes,
    subject: MemberInfo,
    role: Role,
) -> LogEntry:
    """Return an entry with these fields, signed by `identity`."""
    unsigned = LogEntry(
        op=op,
        index=index,
        prev_hash=prev_hash,
        epoch=epoch,
        timestamp_ms=timestamp_ms,
        cell_id=cell_id,
        signer=identity.member_id,
        subject=subject,
        role=role,
        signature=bytes(ED25519_SIGNATURE_SIZE),
    )
    signature = identity.sign(_SIGN_DOMAIN + unsigned.signed_part())
    return dataclasses.replace(unsigned, signature=signature)


def _check_signature(entry: LogEntry, signer: MemberInfo) -> None:
    try:
        ed25519_verify(signer.sign_pub, _SIGN_DOMAIN + entry.signed_part(), entry.signature)
    except CryptoError as exc:
        raise MembershipError("log entry signature does not verify") from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class Membership:
    """The cell's membership after some log entry: members, admins and the chain's head.

    `members` maps member id to info in ascending id order; treat it as read-only.
    `roles` holds the members whose role is neither member nor admin (dispatcher,
    responder, observer); admins are in `admins`, everyone else is a plain member.
    """

    cell_id: bytes
    members: dict[bytes, MemberInfo]
    admins: frozenset[bytes]
    head_index: int
    head_hash: bytes
    head_epoch: int
    roles: dict[bytes, Role] = dataclasses.field(default_factory=dict)

    @classmethod
    def genesis(cls, entry: LogEntry) -> Membership:
        """Return the state after a verified genesis entry.

        Raises:
            MembershipError: not a valid genesis (index 0, zero prev hash, epoch 1,
                self-signed by its subject as admin).
        """
        valid = (
            entry.op is Op.GENESIS
            and entry.index == 0
            and entry.prev_hash == bytes(HASH_SIZE)
            and entry.epoch == 1
            and entry.role is Role.ADMIN
            and entry.signer == entry.subject.member_id
            and len(entry.cell_id) == CELL_ID_SIZE
        )
        if not valid:
            raise MembershipError("not a valid genesis entry")
        _check_signature(entry, entry.subject)
        subject = entry.subject
        return cls(
            cell_id=entry.cell_id,
            members={subject.member_id: subject},
            admins=frozenset({subject.member_id}),
            head_index=0,
            head_hash=entry.hash,
            head_epoch=1,
        )

    @classmethod
    def from_log(cls, entries: Iterable[LogEntry]) -> Membership:
        """Verify a whole log from its genesis and return the final state.

        Raises:
            MembershipError: any entry does not verify, or the log is empty.
        """
        state: Membership | None = None
        for entry in entries:
            state = cls.genesis(entry) if state is None else state.apply(entry)
        if state is None:
            raise MembershipError("empty log")
        return state

    @classmethod
    def snapshot(
        cls,
        *,
        cell_id: bytes,
        members: Iterable[tuple[MemberInfo, Role]],
        head_index: int,
        head_hash: bytes,
        head_epoch: int,
    ) -> Membership:
        """Return a state built from a member list (a welcome's), checking it is coherent.

        Raises:
            MembershipError: duplicate members, no admin, or too many members.
        """
        listed = sorted(members, key=lambda pair: pair[0].member_id)
        by_id = {info.member_id: info for info, _ in listed}
        admins = frozenset(info.member_id for info, role in listed if role is Role.ADMIN)
        if len(by_id) != len(listed) or not admins or len(by_id) > MAX_MEMBERS:
            raise MembershipError("incoherent member list")
        roles = {
            info.member_id: Role(role)
            for info, role in listed
            if role is not Role.ADMIN and role is not Role.MEMBER
        }
        return cls(
            cell_id=cell_id,
            members=by_id,
            admins=admins,
            head_index=head_index,
            head_hash=head_hash,
            head_epoch=head_epoch,
            roles=roles,
        )

    def role_of(self, member_id: bytes) -> Role | None:
        """Return the member's role, or None if it is not a member."""
        if member_id not in self.members:
            return None
        if member_id in self.admins:
            return Role.ADMIN
        return self.roles.get(member_id, Role.MEMBER)

    def with_role(self, role: Role) -> frozenset[bytes]:
        """Return the ids of the members who hold `role`."""
        if role is Role.ADMIN:
            return self.admins
        if role is Role.MEMBER:
            return frozenset(
                m for m in self.members if m not in self.admins and m not in self.roles
            )
        return frozenset(m for m, r in self.roles.items() if r is role)

    def apply(self, entry: LogEntry) -> Membership:
        """Verify `entry` as the next entry of this log and return the state after it.

        Raises:
            MembershipError: it does not chain onto this state, its signer was not an admin,
                its signature does not verify, or the change is not allowed.
        """
        if (
            entry.cell_id != self.cell_id
            or entry.index != self.head_index + 1
            or entry.prev_hash != self.head_hash
            or entry.epoch <= self.head_epoch
        ):
            raise MembershipError("log entry does not chain onto the log")
        if entry.signer not in self.admins:
            raise MembershipError("log entry not signed by an admin")
        _check_signature(entry, self.members[entry.signer])
        members = dict(self.members)
        admins = set(self.admins)
        roles = dict(self.roles)
        subject = entry.subject
        sid = subject.member_id
        current = self.members.get(sid)
        op = entry.op
        if op is Op.ADD:
            if current is not None or len(members) >= MAX_MEMBERS:
                raise MembershipError("cannot add this member")
            members[sid] = subject
        elif op is Op.SET_ROLE:
            if (
                current != subject
                or sid in admins
                or entry.role not in PLAIN_ROLES
                or entry.role is self.role_of(sid)
            ):
                raise MembershipError("log entry does not apply to this member")
        elif (
            op is Op.GENESIS
            or current != subject
            or entry.role is not _FIXED_ROLE[op]
            or (op is Op.PROMOTE and sid in admins)
            or (op is Op.DEMOTE and sid not in admins)
        ):
            raise MembershipError("log entry does not apply to this member")
        elif op is Op.REMOVE:
            del members[sid]
        # The subject's role afterwards is the entry's role (0 for a removal: gone anyway).
        admins.discard(sid)
        roles.pop(sid, None)
        if sid in members:
            if entry.role is Role.ADMIN:
                admins.add(sid)
            elif entry.role is not Role.MEMBER:
                roles[sid] = entry.role
        if not admins:
            raise MembershipError("a cell must keep an admin")
        return Membership(
            cell_id=self.cell_id,
            members=dict(sorted(members.items())),
            admins=frozenset(admins),
            head_index=entry.index,
            head_hash=entry.hash,
            head_epoch=entry.epoch,
            roles=dict(sorted(roles.items())),
        )
