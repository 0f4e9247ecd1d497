"""The typed events a cell hands the application (`async for event in cell.events()`).

Apps see decoded, verified objects, never raw bytes: every message event carries the
content (protocol/cell/_content.py) and the `Member` who sent it, as the group layer verified
it. `SecurityWarning` reports what the group layer refused (tampering, forgery, replay),
so an app can tell its user that something hostile is going on without ever seeing the
forged content.

Flood control (client/_flood.py): a member who sends more alerts in a minute than the
cell allows is muted on this device; its alerts still arrive, as `MutedAlertReceived`,
which an app shows but does not ring for, and `FloodDetected` names it once. Every field
is a plain value, a `Member`, or a content or roll-up of the protocol package, so the
events serialise as they are (the daemon's API does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cellrelay.protocol.cell._content import (
        Alert,
        EscalationNote,
        MembershipChange,
        MessageId,
        PlainMessage,
        Receipt,
        StatusReply,
        VerificationStep,
        WireContent,
    )
    from cellrelay.protocol.cell._receipts import ReceiptCounts
    from cellrelay.protocol.cell._rollup import AlertRollup

__all__ = [
    "AlertReceived",
    "CellBurned",
    "CellEvent",
    "CellGone",
    "CellRole",
    "ClockWarning",
    "EpochStale",
    "EquivocationDetected",
    "EscalationReceived",
    "FloodDetected",
    "JoinRequested",
    "Member",
    "MembershipChanged",
    "MessageReceived",
    "MessagesMissing",
    "MessagesRecovered",
    "MuteChanged",
    "MutedAlertReceived",
    "ReceiptReceived",
    "ReceiptsCounted",
    "RoleChanged",
    "SecurityWarning",
    "SendFailed",
    "Sent",
    "StatusReceived",
    "VerificationReceived",
    "VerifiedKeyChanged",
]


class CellRole(StrEnum):
    """A member's role in the cell's signed membership (docs/protocol.md §G5).

    Admins manage the cell; dispatchers verify, confirm and resolve reports (admins may
    too); responders and legal observers answer alerts like members.
    """

    ADMIN = "admin"
    DISPATCHER = "dispatcher"
    RESPONDER = "responder"
    OBSERVER = "observer"  # a legal observer
    LIAISON = "liaison"  # also in a neighbouring cell: escalates alerts there (§C10)
    MEMBER = "member"

    @property
    def verifies(self) -> bool:
        """Whether this role may verify reports (docs/protocol.md §C2 rule 7)."""
        return self in (CellRole.ADMIN, CellRole.DISPATCHER)

    @property
    def escalates(self) -> bool:
        """Whether this role may escalate alerts to a neighbouring cell (§C10)."""
        return self in (CellRole.ADMIN, CellRole.DISPATCHER, CellRole.LIAISON)


@dataclass(frozen=True, slots=True)
class Member:
    """A member of a cell as the app sees it (`role` as of the cell's current epoch)."""

    member_id: bytes
    name: str
    is_admin: bool = False
    role: CellRole = CellRole.MEMBER

    @property
    def short_id(self) -> str:
        """The first 8 hex digits of the member id: a name tag, not a security check.

        Anyone can make keys whose id starts with chosen 8 digits (about 2^32 tries);
        compare safety numbers (`Cell.safety_number`) to know who someone is.
        """
        return self.member_id.hex()[:8]


@dataclass(frozen=True, slots=True)
class AlertReceived:
    """An alert arrived (from another member, or our own sent from another device).

    `late`: it had already expired by one of this device's clocks when it arrived (it came
    late, or the clocks disagree: see `ClockWarning`). Show it, marked late; it stays in
    `active_alerts()` as long as it is live by the earlier clock (docs/protocol.md §C7).
    """

    cell: str
    sender: Member
    alert: Alert
    rollup: AlertRollup | None
    late: bool = False


@dataclass(frozen=True, slots=True)
class StatusReceived:
    """A member answered an alert; `rollup` is the alert's roll-up after this answer."""

    cell: str
    sender: Member
    reply: StatusReply
    rollup: AlertRollup | None


@dataclass(frozen=True, slots=True)
class VerificationReceived:
    """A dispatcher or an admin took a step on a report; `rollup` is its roll-up after it.

    The step is verifying, confirmed, false alarm or resolved; the roll-up's
    `verification` says where the report stands now, and `verified_by` who set that.

    A step from a member who may not verify never comes as this: it is a `SecurityWarning`
    with reason "RoleRefused".
    """

    cell: str
    sender: Member
    step: VerificationStep
    rollup: AlertRollup | None


@dataclass(frozen=True, slots=True)
class EscalationReceived:
    """A liaison reports on an alert it escalated to a neighbouring cell (docs/protocol.md §C10).

    `note.label` names the neighbour (as the liaison calls it); `note.responding` and
    `note.on_scene` count its members answering there, `note.outcome` says whether it
    closed the alert there. `rollup.escalations` holds every liaison's latest note.

    A note from a member who may not escalate never comes as this: it is a
    `SecurityWarning` with reason "EscalationRefused".
    """

    cell: str
    sender: Member
    note: EscalationNote
    rollup: AlertRollup | None


@dataclass(frozen=True, slots=True)
class ReceiptReceived:
    """A member received or read messages."""

    cell: str
    sender: Member
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class ReceiptsCounted:
    """The counts of one of your own alerts changed: it was sent, or a sampled reporter's receipt came (§C1.7).

    One when the relay took the alert ("0 of N"), then one per alert a `Receipt` moved
    forward, right after its `ReceiptReceived`; the same counts as `Cell.receipts(alert_id)`.
    A receipt from a member who is not a reporter, or one that says again what its sender
    said, changes nothing and makes none.
    """

    cell: str
    alert_id: MessageId
    counts: ReceiptCounts


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """An ordinary message to the cell."""

    cell: str
    sender: Member
    message: PlainMessage


@dataclass(frozen=True, slots=True)
class MembershipChanged:
    """Somebody joined, left, was removed, promoted or demoted (signed by an admin, or by the member who left)."""

    cell: str
    change: MembershipChange


@dataclass(frozen=True, slots=True)
class RoleChanged:
    """An admin gave `member` the role `role` (a signed membership entry, §G5); `by` is the admin."""

    cell: str
    member: Member
    role: CellRole
    by: Member


@dataclass(frozen=True, slots=True)
class JoinRequested:
    """Somebody holding an invite asks to join; an admin approves with `cell.approve`."""

    cell: str
    member: Member


@dataclass(frozen=True, slots=True)
class SecurityWarning:
    """The group layer refused an envelope: `reason` names the check that failed.

    Nothing from the refused envelope reaches the app. A steady stream of these means a
    hostile relay or a member's compromised device; one now and then may be a bug.
    """

    cell: str
    reason: str
    detail: str = field(default="")


@dataclass(frozen=True, slots=True)
class MutedAlertReceived:
    """An alert from a muted member: kept (in `recent()`, and its roll-up), not to ring for.

    It is not in `active_alerts()` unless asked for (`include_muted=True`).
    """

    cell: str
    sender: Member
    alert: Alert
    rollup: AlertRollup | None
    late: bool = False  # as AlertReceived.late


@dataclass(frozen=True, slots=True)
class FloodDetected:
    """A security event: `member` sent `alerts` alerts within a minute, over the cell's `limit`.

    This device has muted them (`MuteChanged` follows); an admin can mute them for
    everyone or remove them (`cellrelay cell mute` / `remove`). Raised once per mute.
    """

    cell: str
    member: Member
    alerts: int
    limit: int


@dataclass(frozen=True, slots=True)
class MuteChanged:
    """A member was muted or unmuted on this device.

    `everyone`: by an admin, for the whole cell (`by` names the admin); else here only,
    by flood control (`by` is None) or by this device's user (`by` is this member).
    """

    cell: str
    member: Member
    muted: bool
    everyone: bool
    by: Member | None


# -- what should have arrived and has not, and what was signed twice (issue 9) ------------


@dataclass(frozen=True, slots=True)
class MessagesMissing:
    """A security event: `count` message(s) from `sender` are missing (docs/protocol.md §G10.2).

    Later messages of `sender` arrived, these did not, for five minutes (`GAP_GRACE`)
    while this device was following the cell: the relay withheld them from this device
    (perhaps from it alone), or `sender`'s device sealed them and could not publish them
    (a crash, a refused send). Reported once; one that comes after all is shown as usual,
    with `MessagesRecovered`. Ask `sender` what it sent, by another channel if it matters.
    """

    cell: str
    sender: Member
    count: int


@dataclass(frozen=True, slots=True)
class MessagesRecovered:
    """A message reported missing (`MessagesMissing`) came after all, and was shown."""

    cell: str
    sender: Member
    count: int


@dataclass(frozen=True, slots=True)
class EquivocationDetected:
    """A security event: `member` signed two different messages as its message `counter`.

    The relay cannot do this (it cannot sign): `member`'s device is compromised, was
    restored from a backup and reused its keys, or `member` is not who they seem. The
    first message was shown; the second reached nobody. Check with `member` in person;
    an admin removes it if in doubt (docs/protocol.md §G10.1).
    """

    cell: str
    member: Member
    epoch: int
    counter: int


@dataclass(frozen=True, slots=True)
class EpochStale:
    """A security event: this device may be kept from the cell's current epoch.

    `newer` > 0: envelopes of epoch `newer` keep arriving that this device cannot open,
    because the epoch change that leads there never reached it: the relay withholds it
    (or makes those envelopes up). `newer` == 0: no epoch change for `age` seconds, more
    than admins' devices let an epoch last (a day) plus a margin: no admin has been
    online, or the relay withholds the changes. Either way a removed member may still be
    reading and writing with this device: treat what comes with care, and ask an admin
    (docs/protocol.md §G10.3).
    """

    cell: str
    epoch: int
    newer: int
    age: int


@dataclass(frozen=True, slots=True)
class ClockWarning:
    """This device's clock and the relay's disagree by more than `tolerance` seconds.

    `offset` is the relay's clock minus the device's, in seconds (positive: the relay is
    ahead), as measured when the connection was made; raised once per connection. One of
    the two is wrong (a phone in the wrong time zone, a relay without NTP, or a relay lying):
    alerts still arrive, but some may show marked late, or stay a while after they expired
    (docs/protocol.md §C7). Set the device's clock right; if it is right, tell the relay's
    operator.
    """

    cell: str
    offset: float
    tolerance: float


@dataclass(frozen=True, slots=True)
class SendFailed:
    """Something this member sent was finally not stored by the relay: it was NOT sent.

    The send raised too; this event is for the screens that showed it as sending. It is
    kept in history marked failed (`Cell.send_status`), not among sent messages. A send
    refused because a key rotation raced it is sealed again in the new epoch first, so
    this comes only when that, too, failed (this member was removed, say). `reason` is a
    line a person can read.
    """

    cell: str
    content: WireContent
    reason: str


@dataclass(frozen=True, slots=True)
class Sent:
    """Something this member sent was stored by the relay: it is sent.

    For every screen that shows this member's own messages, whatever sent them: this app,
    another program through the same daemon, or the client by itself (an escalation, §C10).
    `rollup` is the alert's roll-up with it counted (None for a message about no alert).
    Receipts, which the client sends by itself in batches, make none.
    """

    cell: str
    content: WireContent
    rollup: AlertRollup | None


@dataclass(frozen=True, slots=True)
class VerifiedKeyChanged:
    """A security event: `member` has the name of someone you verified, but other keys.

    You compared safety numbers with the member `verified_id` (docs/protocol.md §C8);
    `member` is not them: a new phone, a reinstalled app, or an impostor. Nothing of the
    verification carries over: compare the new safety number in person before trusting
    them (`cellrelay cell verify`, `Cell.safety_number`).
    """

    cell: str
    member: Member
    verified_id: bytes


@dataclass(frozen=True, slots=True)
class CellBurned:
    """An admin burned the cell: it is deleted from this device, keys, history and all.

    The last event of the cell: its `events()` end after it, and it is gone from the
    client's `cells` (docs/protocol.md §C1.6). `by` is the admin who burned it, as the
    signed membership names them; a burn from anyone else is refused (a `SecurityWarning`
    with reason `BurnRefused`) and changes nothing.
    """

    cell: str
    by: Member


@dataclass(frozen=True, slots=True)
class CellGone:
    """The relay has no mailbox for this cell any more: nothing can arrive or be sent.

    An admin burned the cell while this device was away (so its burn could not be read
    here), or the relay lost or deleted the mailboxes; nothing tells the two apart, and the
    relay's word alone deletes nothing here. The cell stays, marked `gone`, and nothing is
    retried; leaving it (`cellrelay cell leave`, `Cell.leave` then `Client.forget`)
    deletes it from this device. `code` is the relay's answer (`NO_SUCH_MAILBOX`,
    `DELETED`).
    """

    cell: str
    code: str


CellEvent = (
    AlertReceived
    | MutedAlertReceived
    | StatusReceived
    | VerificationReceived
    | EscalationReceived
    | ReceiptReceived
    | ReceiptsCounted
    | MessageReceived
    | MembershipChanged
    | RoleChanged
    | JoinRequested
    | SecurityWarning
    | FloodDetected
    | MuteChanged
    | MessagesMissing
    | MessagesRecovered
    | EquivocationDetected
    | EpochStale
    | ClockWarning
    | SendFailed
    | Sent
    | VerifiedKeyChanged
    | CellBurned
    | CellGone
)
