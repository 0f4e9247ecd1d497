"""What the client keeps between runs, inside the encrypted keystore.

`ClientState` is the keystore's payload: the identity, every cell this member belongs to
(its group-layer state, mailboxes, cursors, recent history and the message ids already
handed to the application), invites it issued, join requests waiting for approval and
joins it is waiting on. It is encoded with the protocol's msgpack doorway
(`cellrelay.protocol.wire._codec.encode_map` / `decode_map`); nested records are encoded maps inside
bin fields, so each level is validated by the same strict decoder.

Expired history and seen-ids are pruned at load and on every save (`prune`), so a message
is gone from the device once it is gone from the cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

from cellrelay.protocol import CellrelayError, RemoteProtocolError
from cellrelay.protocol.wire import MailboxId
from cellrelay.protocol.wire._codec import decode_map, encode_map

__all__ = [
    "DEFAULT_ESCALATE_AFTER",
    "OUTBOX_SAVED",
    "OUTBOX_SAVED_BYTES",
    "BurnRecord",
    "CellRecord",
    "ClientState",
    "EscalationRecord",
    "HistoryItem",
    "InviteRecord",
    "JoinRecord",
    "LeaveRecord",
    "RelayRecord",
    "RequestRecord",
    "RetiredMailbox",
    "StateError",
    "saved_outbox",
]

STATE_VERSION: Final = 1
# Recent messages kept per cell for `Cell.recent()`: a busy cell's day of alerts and
# replies; older ones fall off even before they expire. One sender may hold a quarter of
# them, and when they are full the sender holding most loses its oldest: a flood from one
# member (up to 1,000 messages in a burst, within the relay's rate limits) pushes out only
# its own, never another member's message (docs/threat-model.md §3.6).
MAX_HISTORY: Final = 1000
MAX_HISTORY_PER_SENDER: Final = MAX_HISTORY // 4
MAX_SEEN: Final = 20_000
# A cell's escalation delay T until its admins set one (docs/protocol.md §C10): ten
# minutes is how long a dispatcher waits for answers before calling a neighbour.
DEFAULT_ESCALATE_AFTER: Final = 600
# Alerts this member escalated (or follows) from one cell: a busy night has a few.
MAX_ESCALATIONS: Final = 256
# Neighbouring cells this member names for one cell: it can be in only so many.
MAX_NEIGHBOURS: Final = 16
SEEN_SLACK: Final = 2_000  # see CellRecord.prune


class StateError(CellrelayError):
    """The saved client state cannot be read (damaged, or from a newer version)."""


def _bytes(fields: dict[str, object], name: str) -> bytes:
    value = fields.get(name)
    if type(value) is not bytes:
        raise StateError(f"saved state: {name} is missing or not bytes")
    return value


def _int(fields: dict[str, object], name: str) -> int:
    value = fields.get(name)
    if type(value) is not int:
        raise StateError(f"saved state: {name} is missing or not an integer")
    return value


def _str(fields: dict[str, object], name: str) -> str:
    value = fields.get(name)
    if type(value) is not str:
        raise StateError(f"saved state: {name} is missing or not text")
    return value


def _float(fields: dict[str, object], name: str) -> float:
    value = fields.get(name)
    if type(value) not in (int, float):
        raise StateError(f"saved state: {name} is missing or not a number")
    return float(value)  # type: ignore[arg-type]


def _list(fields: dict[str, object], name: str) -> tuple[bytes, ...]:
    value = fields.get(name, ())
    if type(value) is not tuple or not all(type(v) is bytes for v in value):
        raise StateError(f"saved state: {name} is not a list of records")
    return value


def _ids(fields: dict[str, object], name: str) -> list[bytes]:
    raw = _bytes(fields, name)
    if len(raw) % 16:
        raise StateError(f"saved state: {name} is damaged")
    return [raw[i : i + 16] for i in range(0, len(raw), 16)]


def _decode(data: bytes) -> dict[str, object]:
    try:
        return decode_map(data)
    except RemoteProtocolError as exc:
        raise StateError(f"saved state is damaged ({exc.code.name})") from None


def _verified(f: dict[str, object]) -> dict[bytes, str]:
    out: dict[bytes, str] = {}
    for entry in _list(f, "verified"):
        if type(entry) is not bytes or len(entry) < 16:
            raise StateError("saved state is damaged (verified members)")
        try:
            out[entry[:16]] = entry[16:].decode()
        except UnicodeDecodeError:
            raise StateError("saved state is damaged (verified members)") from None
    return out


SENT: Final = "sent"
SENDING: Final = "sending"
FAILED: Final = "failed"
SEND_STATUSES: Final = (SENT, SENDING, FAILED)


def _status(f: dict[str, object]) -> str:
    status = f.get("status", SENT)
    if status not in SEND_STATUSES:
        raise StateError("saved state is damaged (a message's send status)")
    return str(status)


@dataclass(slots=True, kw_only=True)
class HistoryItem:
    """One message kept for `Cell.recent()` until it expires."""

    kind: int
    content: bytes = field(repr=False)  # the encoded content
    sender_id: bytes
    sender_name: str
    received_at: float
    expires_at: int
    # This member's own sends: "sending" until the relay acknowledged the envelope (never
    # shown as sent before), "failed" when it finally was not stored; received: "sent".
    status: str = SENT
    # Items never change once made, and every save writes the whole history: encode once.
    # (Re-encoding a thousand items per save was most of a member's CPU per alert.)
    _encoded: bytes = field(default=b"", repr=False, compare=False)

    def encode(self) -> bytes:
        if not self._encoded:
            fields: dict[str, object] = {"kind": self.kind, "content": self.content, "sender_id": self.sender_id,
                 "sender_name": self.sender_name, "received_at": self.received_at, "expires_at": self.expires_at}  # fmt: skip
            if self.status != SENT:  # absent when sent: older records read as sent
                fields["status"] = self.status
            self._encoded = encode_map(fields)
        return self._encoded

    @classmethod
    def decode(cls, data: bytes) -> HistoryItem:
        f = _decode(data)
        return cls(kind=_int(f, "kind"), content=_bytes(f, "content"), sender_id=_bytes(f, "sender_id"),
                   sender_name=_str(f, "sender_name"), received_at=_float(f, "received_at"),
                   expires_at=_int(f, "expires_at"), status=_status(f), _encoded=data)  # fmt: skip


@dataclass(slots=True, kw_only=True)
class InviteRecord:
    """An invite this admin issued: its one-time join mailbox, until used or expired."""

    join_mailbox: MailboxId = field(repr=False)
    secret: bytes = field(repr=False)  # the invite's secret, from which the join keys derive
    admin_seed: bytes = field(repr=False)  # the join mailbox's admin key, to delete it later
    expires_at: int
    cursor: int = 0
    used: bool = False
    # The member admitted with it (set by `approve`), so that their first message in the
    # group, which proves they read the welcome, lets the admin delete the join mailbox.
    member_id: bytes = field(default=b"", repr=False)
    # A cell on several relays (issue 13): the join mailbox on each further relay that
    # had one made, as [relay address, mailbox id, cursor], in the cell's order.
    more_join: list[list[object]] = field(default_factory=list, repr=False)

    def encode(self) -> bytes:
        fields: dict[str, object] = {
            "join_mailbox": self.join_mailbox, "secret": self.secret, "admin_seed": self.admin_seed,
            "expires_at": self.expires_at, "cursor": self.cursor, "used": int(self.used),
            "member_id": self.member_id}  # fmt: skip
        if self.more_join:
            fields["more_join"] = self.more_join
        return encode_map(fields)

    @classmethod
    def decode(cls, data: bytes) -> InviteRecord:
        f = _decode(data)
        f.setdefault("member_id", b"")  # saved before the field existed
        more: list[list[object]] = []
        entries = f.get("more_join", ())
        if type(entries) is not tuple:
            raise StateError("saved state is damaged (an invite's relays)")
        for entry in entries:
            if (
                type(entry) is not tuple
                or len(entry) != 3
                or type(entry[0]) is not str
                or type(entry[1]) is not bytes
                or len(entry[1]) != 16
                or type(entry[2]) is not int
            ):
                raise StateError("saved state is damaged (an invite's relays)")
            more.append(list(entry))
        return cls(join_mailbox=MailboxId(_bytes(f, "join_mailbox")), secret=_bytes(f, "secret"),
                   admin_seed=_bytes(f, "admin_seed"), expires_at=_int(f, "expires_at"),
                   cursor=_int(f, "cursor"), used=bool(_int(f, "used")),
                   member_id=_bytes(f, "member_id"), more_join=more)  # fmt: skip


@dataclass(slots=True, kw_only=True)
class RequestRecord:
    """A join request waiting for an admin's decision."""

    member: bytes  # MemberInfo.to_bytes()
    join_mailbox: MailboxId = field(repr=False)
    received_at: float

    def encode(self) -> bytes:
        return encode_map(
            {
                "member": self.member,
                "join_mailbox": self.join_mailbox,
                "received_at": self.received_at,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> RequestRecord:
        f = _decode(data)
        return cls(member=_bytes(f, "member"), join_mailbox=MailboxId(_bytes(f, "join_mailbox")),
                   received_at=_float(f, "received_at"))  # fmt: skip


@dataclass(slots=True, kw_only=True)
class RetiredMailbox:
    """A group mailbox the cell moved away from (client/_cell_moves.py), until it is gone.

    Every member reads it to its end once, with its read key, which the move kept: what
    was sealed there before the move and not read yet must not be lost. Admins keep the
    record after that, to delete the mailbox on the relay once nobody needs it.
    """

    mailbox: MailboxId = field(repr=False)
    read_seed: bytes = field(repr=False)
    cursor: int  # processed up to this seq (as `CellRecord.group_cursor` was for it)
    moved_at: float  # device time this member applied the move
    generation: int  # the `CellRecord.group_generation` it had while it was current
    drained: bool = False  # this member read it to its end (or it is gone)

    def encode(self) -> bytes:
        return encode_map(
            {"mailbox": self.mailbox, "read_seed": self.read_seed, "cursor": self.cursor,
             "moved_at": self.moved_at, "generation": self.generation, "drained": int(self.drained)}
        )  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> RetiredMailbox:
        f = _decode(data)
        return cls(mailbox=MailboxId(_bytes(f, "mailbox")), read_seed=_bytes(f, "read_seed"),
                   cursor=_int(f, "cursor"), moved_at=_float(f, "moved_at"),
                   generation=_int(f, "generation"), drained=bool(_int(f, "drained")))  # fmt: skip


@dataclass(slots=True, kw_only=True)
class LeaveRecord:
    """A member's announcement that it leaves (a `Leave`), kept until it is removed.

    Every member keeps it, not only admins: one promoted later takes over the removal.
    `epoch` is the epoch the leave was sealed in: a leave from before the member's latest
    admission is spent and never counts (`CellRecord.admitted`, docs/protocol.md §C9).
    """

    member_id: bytes = field(repr=False)
    epoch: int
    sent_at_ms: int  # the sender's claim; due times use the earlier of it and `received_at`
    received_at: float  # device time it was opened here

    def encode(self) -> bytes:
        return encode_map({"member_id": self.member_id, "epoch": self.epoch,
                           "sent_at_ms": self.sent_at_ms, "received_at": self.received_at})  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> LeaveRecord:
        f = _decode(data)
        member_id = _bytes(f, "member_id")
        if len(member_id) != 16:
            raise StateError("saved state is damaged (a member's leave)")
        return cls(member_id=member_id, epoch=_int(f, "epoch"), sent_at_ms=_int(f, "sent_at_ms"),
                   received_at=_float(f, "received_at"))  # fmt: skip


@dataclass(slots=True, kw_only=True)
class EscalationRecord:
    """An alert of this cell that this member escalated to a neighbouring cell (§C10).

    `forwarded_id` is the alert's id in the neighbour (`neighbour` is that cell's id);
    `reported` what this member last said of it here, as (responding, on scene, outcome
    or ""), so a summary is sent only when something changed.
    """

    alert_id: bytes = field(repr=False)
    neighbour: bytes = field(repr=False)
    forwarded_id: bytes = field(repr=False)
    expires_at: int
    reported: tuple[int, int, str] = (-1, -1, "")

    def encode(self) -> list[object]:
        return [self.alert_id, self.neighbour, self.forwarded_id, self.expires_at,
                list(self.reported)]  # fmt: skip

    @classmethod
    def decode(cls, f: object) -> EscalationRecord:
        if type(f) is not tuple or len(f) != 5 or type(f[4]) is not tuple or len(f[4]) != 3:
            raise StateError("saved state is damaged (an escalation)")
        alert_id, neighbour, forwarded_id, expires_at = f[0], f[1], f[2], f[3]
        resp, scene, outcome = f[4]
        if not (
            type(alert_id) is bytes
            and type(neighbour) is bytes
            and type(forwarded_id) is bytes
            and type(expires_at) is int
            and type(resp) is int
            and type(scene) is int
            and type(outcome) is str
        ):
            raise StateError("saved state is damaged (an escalation)")
        return cls(alert_id=alert_id, neighbour=neighbour, forwarded_id=forwarded_id,
                   expires_at=expires_at, reported=(resp, scene, outcome))  # fmt: skip


def _admitted(f: dict[str, object]) -> dict[bytes, int]:
    raw = _bytes(f, "admitted")
    if len(raw) % 20:
        raise StateError("saved state is damaged (admissions)")
    return {
        raw[i : i + 16]: int.from_bytes(raw[i + 16 : i + 20], "big") for i in range(0, len(raw), 20)
    }


@dataclass(slots=True, kw_only=True)
class RelayRecord:
    """One relay of a cell: its address and, on it, the cell's mailboxes and cursors.

    Issue 13 (docs/design.md, "A cell on several relays"): mailbox ids and seqs are each
    relay's own, so each relay of a cell has its own mailboxes and cursors.
    """

    relay: str  # the relay address text
    group_mailbox: MailboxId = field(repr=False)
    control_mailbox: MailboxId = field(repr=False)
    group_cursor: int = 0
    control_cursor: int = 0
    # Group envelopes kept for this relay while its group keys are behind, oldest first, as
    # (envelope, expires_at): published once it takes the current keys (client/_cell_relays.py,
    # `FurtherRelay.backlog`, which is this list). Saved, within OUTBOX_SAVED and
    # OUTBOX_SAVED_BYTES (the newest), so that a restart loses none of them.
    outbox: list[tuple[bytes, int]] = field(default_factory=list, repr=False)

    def encode(self) -> bytes:
        return encode_map({"relay": self.relay, "group_mailbox": self.group_mailbox,
                           "control_mailbox": self.control_mailbox,
                           "group_cursor": self.group_cursor,
                           "control_cursor": self.control_cursor,
                           "outbox": tuple(saved_outbox(self.outbox))})  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> RelayRecord:
        f = _decode(data)
        group, control = _bytes(f, "group_mailbox"), _bytes(f, "control_mailbox")
        if len(group) != 16 or len(control) != 16:
            raise StateError("saved state is damaged (a relay's mailboxes)")
        outbox = []
        for item in _list(f, "outbox"):  # absent: saved before the outbox was
            if len(item) < _EXPIRY_BYTES:
                raise StateError("saved state is damaged (a relay's outbox)")
            expires_at = int.from_bytes(item[:_EXPIRY_BYTES], "big")
            outbox.append((item[_EXPIRY_BYTES:], expires_at))
        return cls(relay=_str(f, "relay"), group_mailbox=MailboxId(group),
                   control_mailbox=MailboxId(control), group_cursor=_int(f, "group_cursor"),
                   control_cursor=_int(f, "control_cursor"), outbox=outbox)  # fmt: skip


# A relay's outbox as saved: at most this many envelopes and this many bytes, the newest (the
# oldest are the likeliest to be on the cell's other relays already, or to expire first).
# Every save rewrites the cell's record, so the bound keeps a relay that stays behind from
# making each save large; the outbox in memory holds more (`MAX_BACKLOG`).
OUTBOX_SAVED: Final = 256
OUTBOX_SAVED_BYTES: Final = 1 << 20
_EXPIRY_BYTES: Final = 8  # each saved item: expires_at (uint64, big-endian), then the envelope


def saved_outbox(outbox: list[tuple[bytes, int]]) -> list[bytes]:
    """The items of `outbox` that are saved, oldest first (see OUTBOX_SAVED)."""
    kept: list[bytes] = []
    size = 0
    for envelope, expires_at in reversed(outbox):
        size += len(envelope) + _EXPIRY_BYTES
        if len(kept) >= OUTBOX_SAVED or size > OUTBOX_SAVED_BYTES:
            break
        kept.append(expires_at.to_bytes(_EXPIRY_BYTES, "big") + envelope)
    kept.reverse()
    return kept


@dataclass(slots=True, kw_only=True)
class CellRecord:
    """One cell as this member keeps it.

    `relay` and the mailbox and cursor fields beside it are the cell's first relay; a cell
    on several relays (issue 13, not in use yet) keeps the others in `more_relays`, and
    `relays` lists them all. The first stays in the flat fields, in memory and on disk, so
    that nothing that uses one relay changes and an older cellrelay still reads the state
    of a one-relay cell; a state saved before `more_relays` existed reads as one relay.
    """

    crypto: bytes = field(repr=False)  # CellCrypto.to_bytes()
    relay: str  # the relay address text
    group_mailbox: MailboxId = field(repr=False)
    control_mailbox: MailboxId = field(repr=False)
    group_cursor: int = 0
    control_cursor: int = 0
    distribution_pending: bytes = field(default=b"", repr=False)  # to publish before sealing
    # This member entered the current epoch and has not announced in it yet: the next send
    # makes the announcement and publishes it first (lazy, docs/protocol.md §C6 item 2).
    announce_owed: bool = False
    # This member's key update (docs/protocol.md §G6.5) until the relay stored it: saved with
    # the pending receive key before it is sealed, so a restart posts it again.
    key_update_pending: bytes = field(default=b"", repr=False)
    pending_change: bytes = field(default=b"", repr=False)  # our epoch change, until published
    # The group key seeds the pending change rotates to (read || write), or empty.
    pending_keys: bytes = field(default=b"", repr=False)
    # When the pending change moves the cell to a new group mailbox: its id, and the write
    # key seed the old mailbox is rotated to (which nobody keeps), else both empty.
    pending_move: bytes = field(default=b"", repr=False)
    pending_retire: bytes = field(default=b"", repr=False)
    # How many times the cell moved to a new group mailbox; tells apart the relay seqs of
    # the mailboxes this member read (the refs of parked envelopes, `Refetch`).
    group_generation: int = 0
    retired: list[RetiredMailbox] = field(default_factory=list)
    # The lowest seq of the group mailbox parked or refused for room (0: none): a start
    # resumes from it, since parked envelopes are not saved (client/_cell_refetch.py).
    group_refetch: int = 0
    # Flood control (client/_flood.py): the cell's limit of alerts per member per minute
    # (0: the default), the members admins muted for everyone, and those muted here only.
    alert_limit: int = 0
    muted_everyone: list[bytes] = field(default_factory=list)
    muted_here: list[bytes] = field(default_factory=list)
    # The cell's verify-first setting (docs/protocol.md §C2 rule 7): reports not yet
    # confirmed are shown to verifiers only.
    verify_first: bool = False
    # A broadcast channel (docs/protocol.md §C11): only admins and dispatchers post; what
    # anyone else sends is sealed to them. Fixed when the cell is created.
    channel: bool = False
    # The cell's escalation setting (docs/protocol.md §C10): a confirmed alert with fewer
    # than `escalate_below` members responding `escalate_after` seconds after it was
    # confirmed goes to the neighbouring cells (0: off, unless an alert asks for it).
    escalate_below: int = 0
    escalate_after: int = DEFAULT_ESCALATE_AFTER
    # This member's own choice, never sent: the ids of its other cells that neighbour this
    # one (it escalates there), the label it gives this cell in them ("": the cell's name),
    # and the alerts it escalated from this cell.
    neighbours: list[bytes] = field(default_factory=list)
    label: str = ""
    escalations: list[EscalationRecord] = field(default_factory=list)
    epoch_started_at: float = 0.0  # when this member entered the current epoch (device clock)
    # Counters reserved for sealing, made durable before any of them is used: the next
    # run skips to `send_reserved` in epoch `send_reserved_epoch` (0: none), because the
    # state on disk may be behind what was published (Cell._send, §C6 item 3).
    send_reserved_epoch: int = 0
    send_reserved: int = 0
    invites: list[InviteRecord] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    history: list[HistoryItem] = field(default_factory=list)
    seen: dict[bytes, int] = field(default_factory=dict)  # message id -> expires_at
    # Members this member's person verified in person (safety numbers, docs/protocol.md
    # §C8): member id -> the name it had then. A member id is a hash of the keys, so a
    # verified id never changes keys; a new id under a verified name is the warning.
    verified: dict[bytes, str] = field(default_factory=dict)
    more_relays: list[RelayRecord] = field(default_factory=list)  # the relays after `relay`
    # Members who announced they leave, until they are removed (docs/protocol.md §C9): at
    # most one per member (the latest), so at most MAX_MEMBERS.
    leaves: list[LeaveRecord] = field(default_factory=list)
    # Member id -> the epoch of the log entry that last added it, for the members added
    # while this member was in the cell: a leave sealed in an earlier epoch is spent (it
    # was sent before a removal and re-admission) and never counts. Members already in
    # when this member joined are absent (0): nothing it can open is older than its join.
    admitted: dict[bytes, int] = field(default_factory=dict)
    # The relay's maximum TTL as its last welcome said (0: never connected). Skipped keys
    # live that long (§G10.2): a client that starts offline must not fall back to the
    # default 7 days and delete keys a relay that keeps 30 days can still need.
    relay_max_ttl: int = 0
    # The relay has no mailbox for the cell any more (burned by an admin while this member
    # was away, or lost by the relay): nothing can arrive, nothing is retried (§C1.6).
    gone: bool = False
    # Not saved; they keep a save cheap when the record is large (1,000 kept messages and
    # 20,000 seen ids took 5.6 ms per save, and a client saves after every burst of
    # deliveries). `_earliest` is at most the soonest expiry in `history` and `seen`, so
    # `prune` has nothing to do before then; `_seen_wire` is the saved form of `seen`.
    # Both stay true only if additions go through `remember`.
    _earliest: float = field(default=0.0, repr=False, compare=False)
    _seen_wire: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def relays(self) -> list[RelayRecord]:
        """Every relay of the cell, the first first; the first is a copy of the flat fields."""
        first = RelayRecord(relay=self.relay, group_mailbox=self.group_mailbox,
                            control_mailbox=self.control_mailbox, group_cursor=self.group_cursor,
                            control_cursor=self.control_cursor)  # fmt: skip
        return [first, *self.more_relays]

    def remember(self, message_id: bytes, item: HistoryItem) -> None:
        """Keep a received or sent message, and its id as seen (until it expires)."""
        self.see(message_id, item.expires_at)
        self.history.append(item)

    def see(self, message_id: bytes, expires_at: int) -> None:
        """Keep a message id as seen until it expires, without keeping the message."""
        if message_id in self.seen:
            self._seen_wire = None
        elif self._seen_wire is not None:
            self._seen_wire += message_id + expires_at.to_bytes(8, "big")
        self.seen[message_id] = expires_at
        self._earliest = min(self._earliest, expires_at)

    def encode(self) -> bytes:
        seen = self._seen_wire
        if seen is None:
            seen = b"".join(mid + exp.to_bytes(8, "big") for mid, exp in self.seen.items())
            self._seen_wire = seen
        return encode_map(
            {
                "crypto": self.crypto,
                "relay": self.relay,
                "group_mailbox": self.group_mailbox,
                "control_mailbox": self.control_mailbox,
                "group_cursor": self.group_cursor,
                "control_cursor": self.control_cursor,
                "distribution_pending": self.distribution_pending,
                "announce_owed": int(self.announce_owed),
                "key_update_pending": self.key_update_pending,
                "pending_change": self.pending_change,
                "pending_keys": self.pending_keys,
                "pending_move": self.pending_move,
                "pending_retire": self.pending_retire,
                "group_generation": self.group_generation,
                "group_refetch": self.group_refetch,
                "alert_limit": self.alert_limit,
                "muted_everyone": b"".join(self.muted_everyone),
                "muted_here": b"".join(self.muted_here),
                "verify_first": int(self.verify_first),
                "channel": int(self.channel),
                "retired": [r.encode() for r in self.retired],
                "epoch_started_at": self.epoch_started_at,
                "send_reserved_epoch": self.send_reserved_epoch,
                "send_reserved": self.send_reserved,
                "invites": [i.encode() for i in self.invites],
                "requests": [r.encode() for r in self.requests],
                "history": [h.encode() for h in self.history],
                "seen": seen,
                "verified": [mid + name.encode() for mid, name in self.verified.items()],
                "more_relays": [r.encode() for r in self.more_relays],
                "leaves": [r.encode() for r in self.leaves],
                "admitted": b"".join(m + e.to_bytes(4, "big") for m, e in self.admitted.items()),
                "relay_max_ttl": self.relay_max_ttl,
                "gone": int(self.gone),
                # Absent until used, so that a cell without escalation saves as before.
                **self._escalation_fields(),
            }
        )

    def _escalation_fields(self) -> dict[str, object]:
        fields: dict[str, object] = {}
        if self.escalate_below or self.escalate_after != DEFAULT_ESCALATE_AFTER:
            fields["escalate"] = [self.escalate_below, self.escalate_after]
        if self.neighbours:
            fields["neighbours"] = list(self.neighbours)
        if self.label:
            fields["label"] = self.label
        if self.escalations:
            fields["escalations"] = [e.encode() for e in self.escalations]
        return fields

    @classmethod
    def decode(cls, data: bytes) -> CellRecord:
        f = _decode(data)
        f.setdefault("send_reserved_epoch", 0)  # saved before reservations existed
        f.setdefault("send_reserved", 0)
        for name, default in (
            ("pending_move", b""),
            ("pending_retire", b""),
            ("group_generation", 0),
            ("group_refetch", 0),
            ("alert_limit", 0),
            ("muted_everyone", b""),
            ("muted_here", b""),
            ("verify_first", 0),  # saved before reports could be held for verifiers
            ("channel", 0),  # saved before cells could be channels
            ("verified", ()),
            ("more_relays", ()),  # saved before cells could have several relays
            ("leaves", ()),  # saved before members could announce leaving
            ("admitted", b""),
            ("relay_max_ttl", 0),  # saved before the relay's maximum TTL was kept
            ("gone", 0),  # saved before cells could be burned
            ("announce_owed", 0),  # saved when every epoch change was announced at once
            ("key_update_pending", b""),  # saved before members posted key updates
        ):
            f.setdefault(name, default)  # saved before cells could move
        raw_seen = _bytes(f, "seen")
        if len(raw_seen) % 24:
            raise StateError("saved state: seen ids are damaged")
        seen = {
            raw_seen[i : i + 16]: int.from_bytes(raw_seen[i + 16 : i + 24], "big")
            for i in range(0, len(raw_seen), 24)
        }
        escalate = f.get("escalate", (0, DEFAULT_ESCALATE_AFTER))
        neighbours, escalations = f.get("neighbours", ()), f.get("escalations", ())
        label = f.get("label", "")
        if (
            type(label) is not str
            or type(escalate) is not tuple
            or len(escalate) != 2
            or not all(type(v) is int for v in escalate)
            or type(neighbours) is not tuple
            or not all(type(n) is bytes for n in neighbours)
            or type(escalations) is not tuple
        ):
            raise StateError("saved state is damaged (escalation)")
        return cls(
            escalate_below=escalate[0],
            escalate_after=escalate[1],
            neighbours=list(neighbours),
            label=label,
            escalations=[EscalationRecord.decode(e) for e in escalations],
            crypto=_bytes(f, "crypto"),
            relay=_str(f, "relay"),
            group_mailbox=MailboxId(_bytes(f, "group_mailbox")),
            control_mailbox=MailboxId(_bytes(f, "control_mailbox")),
            group_cursor=_int(f, "group_cursor"),
            control_cursor=_int(f, "control_cursor"),
            distribution_pending=_bytes(f, "distribution_pending"),
            announce_owed=bool(_int(f, "announce_owed")),
            key_update_pending=_bytes(f, "key_update_pending"),
            pending_change=_bytes(f, "pending_change"),
            pending_keys=_bytes(f, "pending_keys"),
            pending_move=_bytes(f, "pending_move"),
            pending_retire=_bytes(f, "pending_retire"),
            group_generation=_int(f, "group_generation"),
            group_refetch=_int(f, "group_refetch"),
            alert_limit=_int(f, "alert_limit"),
            muted_everyone=_ids(f, "muted_everyone"),
            muted_here=_ids(f, "muted_here"),
            verify_first=bool(_int(f, "verify_first")),
            channel=bool(_int(f, "channel")),
            retired=[RetiredMailbox.decode(b) for b in _list(f, "retired")],
            epoch_started_at=_float(f, "epoch_started_at"),
            send_reserved_epoch=_int(f, "send_reserved_epoch"),
            send_reserved=_int(f, "send_reserved"),
            invites=[InviteRecord.decode(b) for b in _list(f, "invites")],
            requests=[RequestRecord.decode(b) for b in _list(f, "requests")],
            history=[HistoryItem.decode(b) for b in _list(f, "history")],
            seen=seen,
            verified=_verified(f),
            more_relays=[RelayRecord.decode(b) for b in _list(f, "more_relays")],
            leaves=[LeaveRecord.decode(b) for b in _list(f, "leaves")],
            admitted=_admitted(f),
            relay_max_ttl=_int(f, "relay_max_ttl"),
            gone=bool(_int(f, "gone")),
        )

    def _bound_history(self) -> None:
        """Drop the oldest messages of whoever holds too many (see MAX_HISTORY)."""
        history = self.history
        if len(history) <= MAX_HISTORY_PER_SENDER:
            return
        counts: dict[bytes, int] = {}
        for item in history:
            counts[item.sender_id] = counts.get(item.sender_id, 0) + 1
        over = {
            s: n - MAX_HISTORY_PER_SENDER for s, n in counts.items() if n > MAX_HISTORY_PER_SENDER
        }
        total = len(history) - sum(over.values())
        while total > MAX_HISTORY:  # the sender holding most gives up its oldest, in turn
            most = max(counts[s] - over.get(s, 0) for s in counts)
            payer = min(s for s in counts if counts[s] - over.get(s, 0) == most)
            over[payer] = over.get(payer, 0) + 1
            total -= 1
        if not over:
            return
        kept = []
        for item in history:  # oldest first: each payer's first `over` items go
            drop = over.get(item.sender_id, 0)
            if drop:
                over[item.sender_id] = drop - 1
            else:
                kept.append(item)
        self.history = kept

    def next_expiry(self) -> float:
        """No later than the soonest expiry of a kept message or seen id (inf: none)."""
        return self._earliest

    def prune(self, now: float) -> None:
        """Drop expired history and seen ids, and the oldest over the bounds.

        The device forgets what expired. Cheap when nothing has expired: the record
        knows the soonest expiry. Over the bounds, the oldest history goes at once, but
        the seen ids are cut back only once they are `SEEN_SLACK` over `MAX_SEEN` (a
        sort of 20,000 ids at every save of a busy cell would cost more than the save).
        """
        if now >= self._earliest:
            self.history = [h for h in self.history if h.expires_at > now]
            self.seen = {mid: exp for mid, exp in self.seen.items() if exp > now}
            self._seen_wire = None
            self._earliest = min(
                min((h.expires_at for h in self.history), default=math.inf),
                min(self.seen.values(), default=math.inf),
            )
        self._bound_history()
        if len(self.seen) > MAX_SEEN + SEEN_SLACK:  # keep the ones that expire last
            self.seen = dict(sorted(self.seen.items(), key=lambda kv: kv[1])[-MAX_SEEN:])
            self._seen_wire = None
        # Invites stay until the cell deletes their join mailboxes (Cell._reap_invites).
        if self.escalations:
            self.escalations = [e for e in self.escalations if e.expires_at > now]
            del self.escalations[:-MAX_ESCALATIONS]


@dataclass(slots=True, kw_only=True)
class JoinRecord:
    """A join this member asked for and is waiting to be approved."""

    invite: bytes = field(repr=False)  # Invite.to_bytes()
    cursor: int = 0
    requested_at: float = 0.0
    # The cursors of the join mailboxes on the invite's further relays, in its order.
    more_cursors: list[int] = field(default_factory=list)

    def encode(self) -> bytes:
        fields: dict[str, object] = {
            "invite": self.invite, "cursor": self.cursor, "requested_at": self.requested_at}  # fmt: skip
        if self.more_cursors:
            fields["more_cursors"] = self.more_cursors
        return encode_map(fields)

    @classmethod
    def decode(cls, data: bytes) -> JoinRecord:
        f = _decode(data)
        more = f.get("more_cursors", ())
        if type(more) is not tuple or not all(type(c) is int and c >= 0 for c in more):
            raise StateError("saved state is damaged (a join's cursors)")
        return cls(
            invite=_bytes(f, "invite"),
            cursor=_int(f, "cursor"),
            requested_at=_float(f, "requested_at"),
            more_cursors=[c for c in more if type(c) is int],
        )


@dataclass(slots=True, kw_only=True)
class BurnRecord:
    """What an admin's client keeps of a cell it burned: the mailboxes still to delete.

    Nothing else of the cell: no keys but the mailboxes' admin keys, no history, no name
    (docs/protocol.md §C1.6). `mailboxes` pairs each mailbox id with its admin key seed;
    they are deleted on the relay from `delete_at` (unix seconds, device clock) on, and
    the record is forgotten once the relay confirmed each deletion.
    """

    relay: str
    delete_at: float
    mailboxes: list[tuple[bytes, bytes]] = field(default_factory=list, repr=False)

    def encode(self) -> bytes:
        return encode_map(
            {
                "relay": self.relay,
                "delete_at": self.delete_at,
                "mailboxes": [m + seed for m, seed in self.mailboxes],
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> BurnRecord:
        f = _decode(data)
        pairs = []
        for raw in _list(f, "mailboxes"):
            if len(raw) != 48:
                raise StateError("saved state: a burned cell's mailbox is damaged")
            pairs.append((raw[:16], raw[16:]))
        return cls(relay=_str(f, "relay"), delete_at=_float(f, "delete_at"), mailboxes=pairs)


@dataclass(slots=True, kw_only=True)
class ClientState:
    """The keystore's payload (see the module docstring)."""

    identity: bytes = field(repr=False)  # Identity.to_bytes()
    cells: list[CellRecord] = field(default_factory=list)
    joins: list[JoinRecord] = field(default_factory=list)
    creation_secrets: dict[str, bytes] = field(default_factory=dict, repr=False)  # relay -> secret
    burning: list[BurnRecord] = field(default_factory=list)  # burned here, mailboxes to delete

    def encode(self) -> bytes:
        """Return the payload bytes."""
        return encode_map(
            {
                "v": STATE_VERSION,
                "identity": self.identity,
                "cells": [c.encode() for c in self.cells],
                "joins": [j.encode() for j in self.joins],
                "creation_secrets": [
                    encode_map({"relay": r, "secret": s}) for r, s in self.creation_secrets.items()
                ],
                "burning": [b.encode() for b in self.burning],
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> ClientState:
        """Read a payload.

        Raises:
            StateError: damaged, or written by a newer version of cellrelay.
        """
        f = _decode(data)
        f.setdefault("burning", ())  # saved before cells could be burned
        version = _int(f, "v")
        if version != STATE_VERSION:
            raise StateError(
                f"the saved state is version {version}; this cellrelay reads {STATE_VERSION}: upgrade it"
            )
        secrets: dict[str, bytes] = {}
        for raw in _list(f, "creation_secrets"):
            record = _decode(raw)
            secrets[_str(record, "relay")] = _bytes(record, "secret")
        return cls(
            identity=_bytes(f, "identity"),
            cells=[CellRecord.decode(b) for b in _list(f, "cells")],
            joins=[JoinRecord.decode(b) for b in _list(f, "joins")],
            creation_secrets=secrets,
            burning=[BurnRecord.decode(b) for b in _list(f, "burning")],
        )
