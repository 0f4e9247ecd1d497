"""A cell of real `CellCrypto` members joined by two in-memory mailboxes, for the group tests.

The mailboxes are append-only lists, as the relay keeps them (one order per mailbox, none
between the two). `sync` lets every member catch up the way the client library does:
the control mailbox first, then the group mailbox, publishing the sender key distribution
each epoch change hands it. Nothing here is a stand-in for a part under test: every
envelope is sealed and opened by the code under test.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from cellrelay.protocol._crypto import random_bytes
from cellrelay.protocol.cell._envelope import Kind
from cellrelay.protocol.cell._errors import GroupError, StaleControlError
from cellrelay.protocol.cell._group import CellCrypto
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._invite import Invite
from cellrelay.protocol.cell._membership import Role
from cellrelay.protocol.cell._outcomes import EpochUpdate, Opened, Own, Pending
from cellrelay.protocol.wire._address import RelayAddress
from cellrelay.protocol.wire._messages import MailboxId

if TYPE_CHECKING:
    from cellrelay.protocol.cell._identity import Rng
    from cellrelay.protocol.cell._outcomes import Outcome

NOW: Final = 1_700_000_000.0
TTL: Final = 3600
GROUP_KEYS: Final = (b"r" * 32, b"w" * 32)
CONTROL_READ_KEY: Final = b"c" * 32


def new_keys(n: int) -> tuple[bytes, bytes]:
    """Return a distinct pair of group mailbox key seeds."""
    return bytes([n]) * 32, bytes([n + 1]) * 32


@dataclass
class Member:
    """One member: its identity, its state, how far it has read, and what it got."""

    identity: Identity
    cell: CellCrypto
    control_cursor: int
    group_cursor: int
    results: list[Outcome | GroupError] = field(default_factory=list)
    updates: list[EpochUpdate | GroupError] = field(default_factory=list)

    def opened(self) -> list[Opened]:
        """Every message (not distribution) this member opened, in order, released included."""
        return [
            r for r in _flatten(self.results) if isinstance(r, Opened) and r.kind != Kind.SENDER_KEY
        ]

    def texts(self) -> list[bytes]:
        """The plaintexts of `opened()`."""
        return [r.plaintext for r in self.opened()]

    def errors(self) -> list[GroupError]:
        """Every refusal this member saw on the group mailbox."""
        return [r for r in _flatten(self.results) if isinstance(r, GroupError)]


def _flatten(results: list[Outcome | GroupError]) -> list[Outcome | GroupError]:
    out: list[Outcome | GroupError] = []
    for result in results:
        if isinstance(result, Opened) and result.released:
            out.append(dataclasses.replace(result, released=()))
            out.extend(_flatten(list(result.released)))
        else:
            out.append(result)
    return out


class Cell:
    """A cell with a creator called "admin"; members join by name."""

    def __init__(self, *, rng: Rng | None = None) -> None:
        """Create the cell (epoch 1) with its admin."""
        self.now = NOW
        self.control: list[bytes] = []
        self.group: list[bytes] = []
        self.rng: Rng = random_bytes if rng is None else rng
        admin = Identity.generate("admin", rng=self.rng)
        cell = CellCrypto.create(
            admin,
            now=self.now,
            group_keys=GROUP_KEYS,
            control_read_key=CONTROL_READ_KEY,
            admin_secrets=b"admin-secrets",
            name="test cell",
            rng=self.rng,
        )
        self.members = {"admin": Member(admin, cell, 0, 0)}

    def __getitem__(self, name: str) -> CellCrypto:
        """Return a member's state."""
        return self.members[name].cell

    def post_control(self, envelope: bytes) -> None:
        """Append an epoch change to the control mailbox."""
        self.control.append(envelope)

    def invite(self, by: str = "admin") -> Invite:
        """The invite `by` answers with its welcomes (one per cell here: pinned secret)."""
        return invite_of(self[by], now=self.now)

    def join(self, name: str, *, by: str = "admin", role: Role = Role.MEMBER) -> Member:
        """Add a member through `by`'s epoch change and welcome, then sync everyone."""
        identity = Identity.generate(name, rng=self.rng)
        group_cursor = len(self.group)
        self.post_control(self[by].add_member(identity.info, now=self.now, role=role))
        self.sync()
        invite = invite_of(self[by], now=self.now)
        welcome = self[by].welcome_for(identity.member_id, now=self.now, invite=invite)
        cell, distribution = CellCrypto.from_welcome(
            identity, welcome, now=self.now, invite=invite, rng=self.rng
        )
        member = Member(identity, cell, len(self.control), group_cursor)
        self.members[name] = member
        self.group.append(distribution)
        self.sync()
        return member

    def remove(self, name: str, *, by: str = "admin", keys: int = 7) -> None:
        """Remove a member (rotating the group keys) and sync everyone."""
        member_id = self.members[name].identity.member_id
        envelope = self[by].remove_member(member_id, now=self.now, new_group_keys=new_keys(keys))
        self.post_control(envelope)
        self.sync()

    def send(self, name: str, text: bytes, *, kind: int = Kind.ALERT, ttl: int = TTL) -> bytes:
        """Seal a message from `name`, post it to the group mailbox, and return it."""
        envelope = self[name].seal(kind, text, expires_at=int(self.now) + ttl, now=self.now)
        self.group.append(envelope)
        return envelope

    def sync(self, names: list[str] | None = None) -> None:
        """Let members catch up (control mailbox first) until nothing new is posted."""
        progress = True
        while progress:
            progress = False
            for name in names or list(self.members):
                progress |= self._catch_up(self.members[name])

    def _catch_up(self, member: Member) -> bool:
        moved = False
        while member.control_cursor < len(self.control) and not member.cell.removed:
            envelope = self.control[member.control_cursor]
            member.control_cursor += 1
            moved = True
            try:
                update = member.cell.open_control(envelope, now=self.now)
            except StaleControlError:
                continue
            except GroupError as exc:
                member.updates.append(exc)
                continue
            member.updates.append(update)
            if update.distribution is not None:
                self.group.append(update.distribution)
            member.results.extend(update.released)
        while member.group_cursor < len(self.group):
            envelope = self.group[member.group_cursor]
            member.group_cursor += 1
            moved = True
            try:
                member.results.append(member.cell.open(envelope, now=self.now))
            except GroupError as exc:
                member.results.append(exc)
        return moved


def outcome_types(results: list[Outcome | GroupError]) -> list[str]:
    """Return the class names of `results`, for compact assertions."""
    return [type(r).__name__ for r in results]


__all__ = [
    "NOW",
    "TTL",
    "Cell",
    "Member",
    "Opened",
    "Own",
    "Pending",
    "invite_of",
    "new_keys",
    "outcome_types",
]


def invite_of(
    admin: CellCrypto, *, now: float, ttl: int = 86_400, secret: bytes | None = None
) -> Invite:
    """An invite to `admin`'s cell, as its client would make one (a welcome answers one)."""
    return Invite(
        relay=RelayAddress("127.0.0.1", 7446, bytes(range(32))),
        cell_id=admin.cell_id,
        cell_name=admin.name,
        join_mailbox=MailboxId(bytes(16)),
        admin_sign_key=admin.me.sign_pub,
        admin_box_key=admin.me.dh_pub,
        expires_at=int(now) + ttl,
        secret=bytes(32) if secret is None else secret,
    )
