"""What the daemon's API takes and gives: every request body, response and event, declared once.

client/_schema.py turns these declarations into the OpenAPI document's schemas, the
handlers' validation and the JSON on the wire; client/_api.py uses them. The library's own
types (`Member`, `Alert`, `AlertRollup`, the events of client/_events.py...) appear as they
are: the API shows what the library yields, with nothing re-declared.

Naming: request bodies are imperative (`SendAlert`), responses say what happened or what
is (`AlertSent`, `CellSummary`). Times are the protocol's integers (unix seconds, or
milliseconds where the field says `_ms`) or, for `received_at`, float unix seconds.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Annotated, Final, Literal, Union

from cellrelay.protocol.cell import (
    Alert,
    AlertRollup,
    Content,
    EscalationNote,
    MembershipChange,
    PlainMessage,
    Priority,
    Receipt,
    ReceiptCounts,
    ReceiptState,
    Status,
    StatusReply,
    Step,
    VerificationStep,
)
from cellrelay.protocol.cell._content import (
    MAX_ESCALATE_AFTER,
    MAX_ESCALATE_BELOW,
    MAX_NAME,
    MessageId,
    content_field_specs,
)

from ._cell_moves import MAX_ALERT_LIMIT
from ._events import CellEvent, CellRole, Member
from ._schema import Bounds

__all__ = [
    "API_TYPES",
    "MAX_ALERT_TTL",
    "MAX_WAIT",
    "AlertLimitSet",
    "AlertList",
    "AlertOptions",
    "AlertReceipts",
    "AlertSent",
    "BoardCode",
    "BurnCell",
    "Burned",
    "CellList",
    "CellSummary",
    "ChangeRelay",
    "CreateCell",
    "CreateInvite",
    "DaemonInfo",
    "Escalate",
    "EscalationSent",
    "EscalationSet",
    "EventTicket",
    "EventsMissed",
    "EventsQuery",
    "IdentityInfo",
    "InviteCreated",
    "JoinCell",
    "JoinList",
    "JoinStatus",
    "LeaveCell",
    "Left",
    "MarkedRead",
    "MemberDetail",
    "MemberList",
    "MessageList",
    "MessageSent",
    "MuteMember",
    "MuteResult",
    "NeighbourSet",
    "NewEpoch",
    "Problem",
    "ReceiptSent",
    "RecentMessage",
    "RelayList",
    "RelayState",
    "RelayStateChanged",
    "RelaysChanged",
    "ReplySent",
    "SendAlert",
    "SendMessage",
    "SendReceipt",
    "SendReply",
    "SendStep",
    "Session",
    "SessionRequest",
    "SetAlertLimit",
    "SetEscalation",
    "SetNeighbour",
    "SetRole",
    "SetVerifyFirst",
    "StepSent",
    "StreamEvent",
    "Verification",
    "VerifyFirstSet",
    "VerifyMember",
]


def _spec(cls: type, name: str) -> object:
    """The protocol's bound of one content field, for a request field that becomes it."""
    return dict(content_field_specs(cls))[name]


# Lifetimes a request may ask for, in seconds. The cell's relay decides the longest (its
# max TTL: 7 days by default, up to 2**32 - 1 s as an operator sets it); the daemon checks
# a request against it (`Api.check_ttl`) and not against 7 days, which refused a 10-day
# alert on a relay that keeps 30 (the command line took it).
MIN_TTL: Final = 60
MAX_ALERT_TTL: Final = 2**32 - 1
MAX_INVITE_TTL: Final = 30 * 86_400
# The longest a request may ask the daemon to wait (Prefer: wait=N, or a join's `wait`).
MAX_WAIT: Final = 600
MAX_ADDRESS: Final = 512  # a relay address: a 52-character key, a host name and a port
MAX_LINK: Final = 4096  # an invite link is about 300 characters
MAX_SECRET: Final = 256
MAX_FINGERPRINT: Final = 128
MAX_CODE: Final = 128  # one-time codes and session tokens are 43 characters
# A member id as people write it down: 32 hex digits, grouped as they like.
FINGERPRINT_PATTERN: Final = "^[ :-]*([0-9A-Fa-f][ :-]*){32}$"
MAX_SAFETY_NUMBER: Final = 240
# Digits, spaces and dashes (a simple pattern: test generators choke on counted groups);
# a text without exactly 60 digits simply does not match.
SAFETY_NUMBER_PATTERN: Final = "^[0-9 -]*$"

AlertText = Annotated[str, _spec(Alert, "text")]
Place = Annotated[str | None, _spec(Alert, "place")]
Note = Annotated[str | None, _spec(StatusReply, "note")]
MessageText = Annotated[str, _spec(PlainMessage, "text")]
AlertTtl = Annotated[int, Bounds(lo=MIN_TTL, hi=MAX_ALERT_TTL, description="seconds until it expires everywhere")]  # fmt: skip
MessageTtl = Annotated[int, Bounds(lo=MIN_TTL, hi=MAX_ALERT_TTL, description="seconds until it expires everywhere")]  # fmt: skip
CellName = Annotated[str, Bounds(lo=1, hi=MAX_NAME, one_line=True)]
RelayAddressText = Annotated[str, Bounds(lo=1, hi=MAX_ADDRESS, one_line=True, description="cellrelay://KEY@HOST:PORT")]  # fmt: skip
Code = Annotated[str, Bounds(lo=1, hi=MAX_CODE, one_line=True)]


# -- the daemon, identity and relays -----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityInfo:
    """This member: the name others see and the member id (the fingerprint of its keys)."""

    name: str
    member_id: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonInfo:
    """The daemon: whose it is, and where it listens."""

    identity: IdentityInfo
    version: str
    pid: int
    socket: str
    listen: str | None  # http://127.0.0.1:PORT when asked for, else null


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayState:
    """One relay the daemon keeps a connection to."""

    relay: str  # host:port
    address: str  # the full cellrelay:// address, with the relay's key
    connected: bool
    connections: int  # connections established since the daemon started (reconnects + 1)
    cells: list[str]
    # As in `relay_state_changed`: `caught_up` when up and caught up, `connected` while
    # catching up after a reconnect, `lost` or `retrying` (with `reason`) while down.
    state: Literal["lost", "retrying", "connected", "caught_up"]
    reason: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayList:
    """Every relay the daemon's cells live on."""

    relays: list[RelayState]


# -- cells -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CellSummary:
    """A cell this member belongs to (or was removed from)."""

    name: str
    cell_id: bytes
    relay: str  # the relay's cellrelay:// address
    role: Literal["admin", "member", "removed"]
    epoch: int
    members: int
    active_alerts: int
    join_requests: int
    connected: bool  # whether the connection to its relay is up
    alert_limit: int  # alerts per member per minute before flood control mutes its sender
    # Whether reports not yet confirmed go to verifiers only (docs/protocol.md §C2 rule 7).
    verify_first: bool
    # Your role in the cell's signed membership (null once removed): only dispatchers and
    # admins verify reports.
    cell_role: CellRole | None
    muted: list[bytes]  # ids of the members muted on this device (here, or for everyone)
    # The longest lifetime the cell's relay keeps (its Welcome.max_ttl), seconds; null
    # until the relay has been reached once. Alerts, messages and invites asking for
    # longer are refused with 422 TTL_TOO_LONG.
    max_ttl: int | None
    # The relay has no mailbox for the cell any more (`cell_gone`): nothing can arrive or
    # be sent; leaving deletes it here (docs/protocol.md §C1.6).
    gone: bool = False
    # A broadcast channel (docs/protocol.md §C11): only admins and dispatchers post; other
    # members' replies and receipts reach admins and dispatchers only. Fixed at creation.
    channel: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CellList:
    """The cells, and the ones this member asked to join that wait for an admin."""

    cells: list[CellSummary]
    waiting: list[JoinStatus]


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateCell:
    """Create a cell on a relay (or two or three); this member becomes its first admin."""

    name: CellName
    relay: Annotated[str, Bounds(lo=1, hi=MAX_ADDRESS, one_line=True, description="cellrelay://KEY@HOST:PORT")]  # fmt: skip
    creation_secret: Annotated[str | None, Bounds(lo=0, hi=MAX_SECRET, one_line=True)] = None
    # Issue 13: the cell also lives on these relays, each run by another operator.
    more_relays: Annotated[tuple[RelayAddressText, ...], Bounds(lo=0, hi=2, description="further relays of the cell (docs/protocol.md §C5.2)")] = ()  # fmt: skip
    # Issue 12: a broadcast channel (docs/protocol.md §C11), fixed for the cell's life.
    channel: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaveCell:
    """Leave a cell and delete its keys here (`force`: even as its only admin)."""

    force: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Left:
    """A cell this member left; its keys are gone from this device.

    `announced`: the relay stored the signed announcement that this member leaves, so
    an admin's client removes it from the cell (docs/protocol.md §C9); if not, ask an
    admin to.
    """

    cell: str
    cell_id: bytes
    announced: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertReceipts(ReceiptCounts):
    """How far one of your alerts got, counted from its sampled reporters (protocol §C1.7).

    The alert's `ReceiptCounts` (as `AlertList.receipts` and the stream's
    `receipts_counted` carry them) with its id: `members`: the members it went to;
    `sampled`: the reporters asked; `delivered` and `read`: how many of those said so;
    `estimated_*`: for the whole cell; `exact` when every member reports (cells of up to
    33 members).
    """

    alert_id: MessageId


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkedRead:
    """An alert marked read here; `reported`: a read receipt was queued (we are sampled)."""

    alert_id: MessageId
    reported: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class BurnCell:
    """Burn a cell: every member's client deletes it, and its mailboxes leave the relay.

    `keep`: seconds to keep the group and control mailboxes on the relay, so that members
    who are offline can still read the burn (0: delete them now).
    """

    keep: Annotated[int, Bounds(lo=0, hi=30 * 86400, description="seconds")] = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Burned:
    """A cell this member burned; it is gone from this device.

    `mailboxes_pending`: how many of its mailboxes (of every cell burned here) are still to
    be deleted on their relays: the daemon tries again every minute.
    """

    cell: str
    cell_id: bytes
    keep: int
    mailboxes_pending: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NewEpoch:
    """A cell in a new epoch: everyone has fresh keys (after `recover`, a fresh mailbox too)."""

    cell: str
    epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SetAlertLimit:
    """How many alerts a member may send per minute before every member's client mutes it."""

    limit: Annotated[int, Bounds(lo=1, hi=MAX_ALERT_LIMIT)]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeRelay:
    """A relay to put the cell on, or to take it off (docs/protocol.md §C5.2)."""

    relay: RelayAddressText


@dataclass(frozen=True, slots=True, kw_only=True)
class RelaysChanged:
    """The relays the cell lives on, for every member from the new epoch on."""

    cell: str
    relay: str  # the cell's first relay
    more_relays: list[str]  # its further relays, in order
    epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertLimitSet:
    """The cell's flood limit, in force for every member from the new epoch on."""

    cell: str
    alert_limit: int
    epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MuteMember:
    """Mute (or unmute) a member: for everyone by an admin, else on this device (`here`)."""

    here: bool = False  # on this device only, even as an admin


@dataclass(frozen=True, slots=True, kw_only=True)
class MuteResult:
    """A member muted or unmuted: for the whole cell (`everyone`), or on this device only."""

    cell: str
    member: Member
    muted: bool
    everyone: bool


# -- members, invites, joins -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberList:
    """A cell's members, admins first, then by name."""

    cell: str
    members: list[Member]


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberDetail:
    """A member, their fingerprint, and the safety number to compare with them in person."""

    cell: str
    member: Member
    fingerprint: str  # the member id in groups of four hex digits, as read aloud
    # Yours and this member's (docs/protocol.md §C8): 60 digits, the same on their device;
    # None for yourself. `verified`: you marked them verified (these very keys).
    safety_number: str | None = None
    verified: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyMember:
    """The safety number the member's own device shows for the two of you, to compare.

    `cellrelay cell verify CELL YOU` on their device shows it (docs/protocol.md §C8).
    """

    safety_number: Annotated[str, Bounds(lo=60, hi=MAX_SAFETY_NUMBER, pattern=SAFETY_NUMBER_PATTERN, description="the 60 digits; spaces and dashes between them are ignored")]  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Verification:
    """Whether the safety number given is yours and the member's, every digit of it.

    When it is, the member is marked verified on this device (a later member with their
    name and other keys then raises `verified_key_changed`); when not, nothing changes.
    """

    cell: str
    member: Member
    verified: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateInvite:
    """Create a one-time invite valid for `ttl` seconds (the relay may cap it)."""

    ttl: Annotated[int, Bounds(lo=MIN_TTL, hi=MAX_INVITE_TTL)] = 86_400


@dataclass(frozen=True, slots=True, kw_only=True)
class InviteCreated:
    """A one-time invite: the link and its QR code. As secret as the link itself."""

    cell: str
    link: str
    expires_at: int
    qr_svg: Annotated[str, Bounds(description="the QR code as an SVG document")]
    qr_png: Annotated[str, Bounds(description="the QR code as a data: URL of a PNG image")]


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinList:
    """People who asked to join a cell with one of its invites, waiting for approval."""

    cell: str
    requests: list[Member]


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinCell:
    """Ask to join the cell an invite names; wait up to `wait` seconds for the approval."""

    link: Annotated[str, Bounds(lo=1, hi=MAX_LINK, one_line=True)]
    wait: Annotated[int, Bounds(lo=0, hi=MAX_WAIT)] = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinStatus:
    """A join asked for: approved (`joined`, with the members), or still waiting."""

    cell: str
    cell_id: bytes
    joined: bool
    expires_at: int  # when the invite expires; an approval cannot come after it
    members: list[Member]


# -- alerts, replies, messages, receipts -----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SendAlert:
    """An alert to every member of the cell.

    `escalate_below` and `escalate_after` override the cell's escalation setting for this
    alert (N, 0 for never; T in seconds: docs/protocol.md §C10).
    """

    text: AlertText
    priority: Priority = Priority.URGENT
    place: Place = None
    ttl: AlertTtl = 3600
    escalate_below: Annotated[int | None, Bounds(lo=0, hi=MAX_ESCALATE_BELOW)] = None
    escalate_after: Annotated[int | None, Bounds(lo=1, hi=MAX_ESCALATE_AFTER)] = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertOptions:
    """The query of a plain-text alert (`curl -d TEXT .../alerts?priority=emergency`)."""

    priority: Priority = Priority.URGENT
    place: Annotated[str | None, Bounds(lo=1, hi=200, one_line=True)] = None
    ttl: AlertTtl = 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertSent:
    """An alert the relay has stored: every member receives it."""

    cell: str
    alert: Alert
    sender: Member
    recipients: int  # the other members


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertList:
    """A cell's active alerts with their roll-ups, most urgent first.

    `receipts`: for your own alerts among them, how far each got (protocol §C1.7), by alert
    id; the stream's `receipts_counted` events carry the changes.
    """

    cell: str
    alerts: list[AlertRollup]
    receipts: dict[MessageId, ReceiptCounts]


@dataclass(frozen=True, slots=True, kw_only=True)
class SendReply:
    """This member's answer to an alert."""

    status: Status
    note: Note = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SendStep:
    """A verifier's step on a report (dispatchers and admins; docs/workflow.md)."""

    step: Step
    note: Note = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSent:
    """A verification step the relay has stored, and the alert's roll-up with it."""

    cell: str
    step: VerificationStep
    rollup: AlertRollup | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Escalate:
    """Forward a confirmed alert to a neighbouring cell (docs/protocol.md §C10)."""

    to: Annotated[str, Bounds(lo=1, hi=MAX_NAME, one_line=True)]  # the neighbour: name or id prefix


@dataclass(frozen=True, slots=True, kw_only=True)
class EscalationSent:
    """What an escalation did: the alert's id in the neighbour, whether this call forwarded
    it (false: it had gone already, by you or another liaison), and the note sent back."""

    cell: str
    to: str
    alert_id: MessageId
    forwarded_id: MessageId
    forwarded: bool
    note: EscalationNote | None
    rollup: AlertRollup | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SetEscalation:
    """When confirmed alerts go to neighbouring cells (admins): fewer than `below` members
    answering `after` seconds after confirmation; `below` 0 turns it off."""

    below: Annotated[int, Bounds(lo=0, hi=MAX_ESCALATE_BELOW)]
    after: Annotated[int, Bounds(lo=1, hi=MAX_ESCALATE_AFTER)] = 600


@dataclass(frozen=True, slots=True, kw_only=True)
class EscalationSet:
    """The cell's escalation setting, in force for every member from the new epoch on."""

    cell: str
    below: int
    after: int
    epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SetNeighbour:
    """Name two of your cells neighbours (your own setting, never sent), or stop (`on` false).

    `label` is the name under which the cell's alerts appear in its neighbours (default:
    the cell's name)."""

    on: bool = True
    label: Annotated[str | None, Bounds(lo=1, hi=MAX_NAME, one_line=True)] = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NeighbourSet:
    """A cell's neighbours as you named them, and its label in them."""

    cell: str
    label: str
    neighbours: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class SetRole:
    """The role to give a member (admins): every member's client enforces it."""

    role: CellRole


@dataclass(frozen=True, slots=True, kw_only=True)
class SetVerifyFirst:
    """Whether reports not yet confirmed go to verifiers only (admins)."""

    verify_first: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyFirstSet:
    """The cell's verify-first setting, in force for every member from the new epoch on."""

    cell: str
    verify_first: bool
    epoch: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplySent:
    """An answer the relay has stored, and the alert's roll-up with it."""

    cell: str
    reply: StatusReply
    rollup: AlertRollup | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SendMessage:
    """An ordinary message to the cell."""

    text: MessageText
    ttl: MessageTtl = 86_400


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageSent:
    """A message the relay has stored."""

    cell: str
    message: PlainMessage


@dataclass(frozen=True, slots=True, kw_only=True)
class RecentMessage:
    """One unexpired message this member holds, with who sent it."""

    sender: Member
    content: Content


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageList:
    """The cell's recent unexpired messages, oldest first."""

    cell: str
    messages: list[RecentMessage]


@dataclass(frozen=True, slots=True, kw_only=True)
class SendReceipt:
    """Tell the cell these messages were delivered (or read) here."""

    message_ids: Annotated[tuple[MessageId, ...], _spec(Receipt, "message_ids")]
    state: ReceiptState = ReceiptState.READ


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptSent:
    """A receipt the relay has stored."""

    cell: str
    receipt: Receipt


# -- sessions for the board, and event streams ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BoardCode:
    """A one-time code that opens a board session: open `url` (or `path` on your own proxy)."""

    code: str
    path: str  # /#code=...: the code is in the fragment, which no request or Referer carries
    url: str | None  # the same on the daemon's TCP listener, when it has one
    expires_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRequest:
    """Redeem a one-time board code for a session token."""

    code: Code


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """A session token: send it as `Authorization: Bearer TOKEN` until it expires."""

    token: str
    expires_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EventTicket:
    """A one-time ticket for `GET /events?ticket=...`, for clients that cannot set headers."""

    ticket: str
    expires_at: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EventsQuery:
    """Which events a stream carries, and where it resumes."""

    cell: Annotated[str | None, Bounds(lo=1, hi=MAX_NAME, one_line=True, description="only this cell's events (name or id prefix)")] = None  # fmt: skip
    ticket: Annotated[str | None, Bounds(lo=1, hi=MAX_CODE, one_line=True, description="from POST /events/tickets, instead of a header")] = None  # fmt: skip
    last_event_id: Annotated[str | None, Bounds(lo=1, hi=64, one_line=True, description="as the Last-Event-ID header, for clients that cannot set it")] = None  # fmt: skip


# -- events that are the daemon's own -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelayStateChanged:
    """The connection to a relay came up or went down (the daemon keeps reconnecting).

    `state` says where it is: `lost` (with `reason`), `retrying` in `retry_in` seconds
    (with why the last attempt failed), `connected` again, and `caught_up` with what the
    relay stored meanwhile; between `lost` and `caught_up` this member is not listening
    (issue 10). `connected` is whether a connection is up.
    """

    relay: str  # host:port
    connected: bool
    cells: list[str]
    state: Literal["lost", "retrying", "connected", "caught_up"] = "connected"
    reason: str | None = None
    retry_in: float | None = None


@dataclass(frozen=True, slots=True)
class EventsMissed:
    """The stream could not resume where the client asked: events were missed.

    Sent first on a stream whose `Last-Event-ID` is older than the daemon's replay buffer,
    or from before the daemon restarted. Fetch the state again (alerts, requests).
    """

    reason: Literal["too_old", "daemon_restarted", "unknown_id"]


def _stream_event_types() -> tuple[type, ...]:
    """Every event the stream carries: each one the library yields, then the daemon's own."""
    return (*typing.get_args(CellEvent), RelayStateChanged, EventsMissed)


StreamEvent: object = Union[_stream_event_types()]  # noqa: UP007 - built from CellEvent
"""Every event `GET /events` carries, tagged by `type`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """An error, as RFC 9457 problem details; `code` is stable, `title` and `detail` are for people."""

    type: str  # "about:blank": the status and code say everything
    title: str
    status: int
    code: str
    detail: str | None = None
    field: str | None = None  # the request field that is wrong, for 400


# Request bodies: their schemas refuse unknown members.
RECEIVED: Final = (
    CreateCell,
    LeaveCell,
    SetAlertLimit,
    MuteMember,
    VerifyMember,
    CreateInvite,
    JoinCell,
    SendAlert,
    SendReply,
    SendStep,
    SetRole,
    SetVerifyFirst,
    Escalate,
    SetEscalation,
    SetNeighbour,
    SendMessage,
    SendReceipt,
    SessionRequest,
)

API_TYPES: Final = (
    Alert,
    StatusReply,
    VerificationStep,
    EscalationNote,
    Receipt,
    PlainMessage,
    MembershipChange,
)
"""Content classes, all tagged (as `RecentMessage.content` is a union of them)."""
