"""A member's cell at run time: the group layer driven over a relay link, with the app's events.

Theory of operation
-------------------

A cell lives in three kinds of mailbox on one relay (docs/protocol.md, Parts 2 and 3):
the *group* mailbox (messages and sender key distributions; the cell moves to a fresh one
when a member is removed: client/_cell_moves.py), the *control* mailbox (epoch changes; only admins write it, every member can
always read it) and, for admins with open invites and members waiting to be admitted,
one-time *join* mailboxes. The client's router hands this object every delivery from its
mailboxes, one at a time and in seq order per mailbox (`on_delivery`), and this object
drives the sans-IO group layer (`CellCrypto`) with it:

* group envelope -> `CellCrypto.open` -> content -> de-duplicated by message id, kept
  in history until it expires, folded into the alert roll-up, handed to the app;
* control envelope -> `open_control` -> new epoch: owe this member's sender key
  announcement (published before its next send), follow rotated group keys or a move to a new group mailbox (whose old
  one `upkeep` then reads to its end in the background), report the membership change,
  and (for the admin that proposed the change) finish the operation it belongs to;
* join envelope -> a request to record (admin) or the welcome that makes us a member.

Rules that keep keys safe:

* **Write-ahead.** The state is saved durably *before* an envelope sealed from it is
  published, with the next `SEND_RESERVATION` counters reserved (`_ready_to_seal`), so
  a crash can never make the next run reuse a message key: it skips what was reserved.
* **Announcement first.** In a new epoch nothing is sealed before this member's sender
  key announcement has been published (`_ready_to_seal`). It is made lazily, before the
  member's first envelope of the epoch, not on entering it: it costs a MAC per member,
  and in a cell of 1,000 most members never send in most epochs.
* **Persist before the app sees it.** A delivery is applied, the state (cursor, seen
  ids, ratcheted chains) saved, and only then is the event handed on: after a crash the
  app may miss an event, which `recent()` still holds, but never gets one twice, and no
  message key survives on disk after its message was read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import secrets
import time
from functools import partial
from typing import TYPE_CHECKING, Final, Protocol

import trio

from cellrelay.protocol._errors import CellrelayError, ErrorCode
from cellrelay.protocol.cell._content import (
    Alert,
    Burn,
    Change,
    Content,
    ContentError,
    EscalationNote,
    Leave,
    MembershipChange,
    MessageId,
    PlainMessage,
    Priority,
    Receipt,
    ReceiptState,
    Status,
    StatusReply,
    Step,
    VerificationStep,
    WireContent,
    decode_content,
)
from cellrelay.protocol.cell._dispatch import (
    ANSWER_KINDS,
    DISPATCH_KIND,
    MAX_RECIPIENTS,
    NotForMeError,
    open_for_dispatch,
    seal_for_dispatch,
)
from cellrelay.protocol.cell._errors import (
    EpochGapError,
    EquivocationError,
    ExpiredError,
    ForkedEpochError,
    GroupError,
    PendingOverflowError,
    RemovedError,
    ReplayError,
    StaleControlError,
    StaleEpochError,
    UnknownEpochError,
)
from cellrelay.protocol.cell._group import GRACE_PERIOD, CellCrypto, EpochUpdate, Opened, Outcome
from cellrelay.protocol.cell._identity import Identity, MemberInfo
from cellrelay.protocol.cell._membership import LogEntry, Op, Role
from cellrelay.protocol.cell._outcomes import Behind, Missing, Own
from cellrelay.protocol.cell._receipts import (
    RECEIPT_SAMPLE,
    ReceiptBatch,
    ReceiptCounts,
    ReceiptTally,
    reporters,
)
from cellrelay.protocol.cell._rollup import AlertRollup, ReportState, RollupBook
from cellrelay.protocol.cell._safety import safety_number
from cellrelay.protocol.cell._schedule import KeyUpdate
from cellrelay.protocol.wire import (
    AddressError,
    CapabilityKey,
    Fetch,
    MailboxId,
    Page,
    RelayAddress,
)
from cellrelay.protocol.wire._codec import decode_map, encode_map

from ._cell_moves import ChangeExtra, ChangeExtraError, Moves, check_escalate
from ._cell_refetch import Refetch, make_ref
from ._cell_relays import (
    MAILBOX_GONE,
    ControlCopier,
    Copier,
    FurtherRelay,
    Presence,
    first_done,
    publish_everywhere,
)
from ._events import (
    AlertReceived,
    CellBurned,
    CellEvent,
    CellGone,
    CellRole,
    ClockWarning,
    EpochStale,
    EquivocationDetected,
    EscalationReceived,
    Member,
    MembershipChanged,
    MessageReceived,
    MessagesMissing,
    MessagesRecovered,
    MuteChanged,
    MutedAlertReceived,
    ReceiptReceived,
    ReceiptsCounted,
    RoleChanged,
    SecurityWarning,
    SendFailed,
    Sent,
    StatusReceived,
    VerificationReceived,
    VerifiedKeyChanged,
)
from ._flood import FloodControl
from ._link import (
    MAX_RELAY_SKEW,
    Delivery,
    LinkClosedError,
    RelayLink,
    RelayRefusedError,
    Revocation,
)
from ._log import library_logger
from ._state import (
    DEFAULT_ESCALATE_AFTER,
    FAILED,
    SENDING,
    SENT,
    CellRecord,
    HistoryItem,
    LeaveRecord,
    RelayRecord,
    RequestRecord,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from ._cell_relays import RelayTarget

__all__ = [
    "CellError",
    "CellInfo",
    "ChannelError",
    "MailboxFullError",
    "MemberCell",
    "RelayInfo",
    "Saver",
    "TooManyReadersError",
]

log = library_logger("cellrelay.client")

KIND_SENDER_KEY: Final = 5
KIND_KEY_UPDATE: Final = 8  # a member's key update: for admins' clients, never the app (§G6.5)
# An admin's client commits members' waiting key updates in a rotation (docs/design.md, "Key
# updates in the client"): the admin first by member id once the oldest update it holds has
# waited COMMIT_UPDATES_AFTER, each next admin COMMIT_STAGGER later, so one change usually
# commits them all and admins rarely rotate twice for the same updates. Five minutes batches
# the updates that come together (a cell's members mostly update after the same restart or
# upgrade) and is short next to the week between a member's updates.
COMMIT_UPDATES_AFTER: Final = 300.0
COMMIT_STAGGER: Final = 120.0
# Group envelopes remembered as settled, to drop other relays' copies unopened: far more
# than arrive while one relay lags another (a burst of alerts and a round of distributions).
MAX_TAKEN: Final = 4096
MAX_MORE_RELAYS: Final = 2  # a cell lives on one to three relays (docs/protocol.md §C5.2)
# The signed membership's roles (protocol) as the app sees them.
_CELL_ROLES: Final = {Role.ADMIN: CellRole.ADMIN, Role.DISPATCHER: CellRole.DISPATCHER,
                      Role.RESPONDER: CellRole.RESPONDER, Role.OBSERVER: CellRole.OBSERVER,
                      Role.LIAISON: CellRole.LIAISON, Role.MEMBER: CellRole.MEMBER}  # fmt: skip
DEFAULT_ALERT_TTL: Final = 3600  # an alert that nobody resolves stops mattering in an hour
DEFAULT_MESSAGE_TTL: Final = 24 * 3600
# Message counters reserved by one durable save (Cell._ready_to_seal): one send in this
# many waits for the fsyncs; a crash wastes at most this many, which receivers skip over.
SEND_RESERVATION: Final = 32
EVENT_BUFFER: Final = 10_000  # events an app has not taken; a listener further behind is closed
APPLY_TIMEOUT: Final = 30.0  # seconds to wait for our own epoch change to come back
# Refusals that are expected in normal operation and say nothing hostile: a message sealed
# in an epoch before we joined, one that waited too long, one that expired on the way, and
# a second copy of one already processed. The last is how a publish whose acknowledgement
# was lost looks (the link publishes it again: stored twice, docs/protocol.md §7), and
# §G13 says it needs no alarm; a relay replaying an envelope under a new seq looks exactly
# the same and is as harmless, since nothing reaches the app twice. Warning about it made
# every reconnect at the wrong moment a security alarm (tests/client/test_hostile_relay.py).
QUIET_REFUSALS: Final = (UnknownEpochError, StaleEpochError, ExpiredError, ReplayError)
# Clocks (docs/protocol.md §C7, issue 9 finding 1). A member has two: its device's, and the
# relay's as its link believes it (within MAX_RELAY_SKEW of the device's: client/_link.py).
# Senders stamp expires_at by the relay's clock, which every member shares; what has
# expired is decided by the *earlier* of the two (`clock`), so a phone running hours fast,
# or a relay (and a sender's phone) running hours slow, never makes a live alert look
# expired. An envelope expired by that clock still opens for LATE_WINDOW more and is shown
# marked late; one expired longer ago is dropped. The price: a relay that lies about its
# clock can present an alert up to MAX_RELAY_SKEW past its expiry, which then shows marked
# late, with a ClockWarning (docs/threat-model.md §3.3).
# Beyond this disagreement between the two clocks the member is warned (ClockWarning):
# five minutes is Kerberos's default maximum clock skew; phones and relays keep time far
# better when they are set right.
CLOCK_TOLERANCE: Final = 300.0
# How long past its expiry (by the earlier clock) an envelope is still shown, marked late:
# a phone that was off for a few minutes still shows the alert that came meanwhile.
LATE_WINDOW: Final = 900.0
# wait_synced asks the relay again after this long when an envelope it listed has not come
# (it may have expired on the way, and an expired envelope is never delivered).
SYNC_RECHECK: Final = 1.0
# Leaving stops watching a further relay's mailboxes for at most this long each: a relay
# that is down has no subscription to end.
LEAVE_WAIT: Final = 5.0
# A send refused because a key rotation raced it (the relay revoked the write key before
# this member read the epoch change) is sealed again in the new epoch: at most this many
# attempts in all, each waiting at most RACE_WAIT seconds for the epoch change to come.
# The admin publishes the change right after the relay's rotation (one round trip).
SEND_ATTEMPTS: Final = 3
RACE_WAIT: Final = 30.0
RACED_ROTATION: Final = frozenset({ErrorCode.REVOKED, ErrorCode.UNAUTHORIZED, ErrorCode.BAD_PROOF})
# An epoch older than this (by this device's clock) is reported (`EpochStale`): an admin's
# client rotates every ROTATE_AFTER (a day, client/_client.py), and two hours is the margin
# for admins' devices being offline or asleep.
EPOCH_STALE_AFTER: Final = 26 * 3600.0
# How long `leave` tries to announce the leave (a `Leave`, docs/protocol.md §C9) before it
# forgets the cell anyway: a publish is one round trip, and a relay that does not answer
# in this long must not keep a person who wants out waiting.
LEAVE_TIMEOUT: Final = 15.0


def code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


class Saver(Protocol):
    """How a cell saves the client's state (`Client.save`): durably unless told otherwise."""

    def __call__(self, *, durable: bool = True) -> Awaitable[None]: ...


class CellError(Exception):
    """An operation on a cell cannot be done; the message says why and what to do."""


class ChannelError(CellError):
    """This member may not post to everyone in a broadcast channel (docs/protocol.md §C11)."""


class TooManyReadersError(CellError):
    """A role change would give a broadcast channel more readers than an answer is sealed to.

    A channel's answers are sealed to each of its admins and dispatchers, at most
    `MAX_RECIPIENTS` (255) of them (docs/protocol.md §C11). Make one of them a responder
    or a member first, then give the role.
    """


class MailboxFullError(CellError):
    """The relay refused a message because the cell's mailbox is full: it was not sent.

    A member is most likely flooding the cell. An admin removes that member, or runs
    `cellrelay cell recover` (`Cell.recover`) when it is not clear who it is; either moves
    the cell to a fresh mailbox within seconds. Then send again.
    """


@dataclasses.dataclass(slots=True, kw_only=True)
class RelayInfo:
    """One further relay of a cell, as a welcome tells a joiner (docs/protocol.md §C5.2)."""

    relay: str
    group: MailboxId
    control: MailboxId
    group_from: int = 0
    control_from: int = 0

    def encode(self) -> list[object]:
        # An array, not a map: the codec takes no nested maps (protocol/wire/_codec.py).
        return [self.relay, self.group, self.control, self.group_from, self.control_from]

    @classmethod
    def decode(cls, f: object) -> RelayInfo:
        if type(f) is not tuple or len(f) != 5:
            raise CellError("the cell's relay list is damaged")
        relay, group, control, group_from, control_from = f
        if type(relay) is not str or type(group) is not bytes or type(control) is not bytes:
            raise CellError("the cell's relay list is damaged")
        if len(group) != 16 or len(control) != 16:
            raise CellError("the cell's relay list is damaged")
        if type(group_from) is not int or type(control_from) is not int:
            raise CellError("the cell's relay list is damaged")
        if group_from < 0 or control_from < 0:
            raise CellError("the cell's relay list is damaged")
        try:
            RelayAddress.parse(relay)
        except AddressError:
            raise CellError("the cell's relay list is damaged") from None
        return cls(relay=relay, group=MailboxId(group), control=MailboxId(control),
                   group_from=group_from, control_from=control_from)  # fmt: skip


class CellInfo:
    """The client data a welcome carries to a joiner (`CellCrypto.extra`).

    `relay` and the fields beside it are the cell's first relay; `more_relays` the others
    of a cell on several (at most two, docs/protocol.md §C5.2).
    """

    def __init__(
        self,
        *,
        relay: str,
        group: bytes,
        control: bytes,
        group_from: int = 0,
        control_from: int = 0,
        alert_limit: int = 0,
        muted: tuple[bytes, ...] = (),
        more_relays: tuple[RelayInfo, ...] = (),
        verify_first: bool = False,
        escalate: tuple[int, int] = (0, DEFAULT_ESCALATE_AFTER),
        channel: bool = False,
    ) -> None:
        self.relay = relay
        self.more_relays = more_relays
        self.group = MailboxId(group)
        self.control = MailboxId(control)
        self.group_from = group_from
        self.control_from = control_from
        self.alert_limit = alert_limit  # the cell's flood limit (0: the default)
        self.muted = muted  # members admins muted for everyone
        self.verify_first = verify_first  # reports go to verifiers first (§C2 rule 7)
        self.escalate = escalate  # (N, T): when alerts go to neighbouring cells (§C10)
        self.channel = channel  # a broadcast channel, fixed at creation (§C11)

    def encode(self) -> bytes:
        fields: dict[str, object] = {
            "relay": self.relay, "group": self.group, "control": self.control,
            "group_from": self.group_from, "control_from": self.control_from,
            "alert_limit": self.alert_limit, "muted": list(self.muted),
            "verify_first": int(self.verify_first)}  # fmt: skip
        if self.escalate[0]:  # absent while escalation is off: the extra is as before
            fields["escalate"] = list(self.escalate)
        if self.more_relays:  # absent for a cell on one relay: its extra is as before
            fields["more_relays"] = [r.encode() for r in self.more_relays]
        if self.channel:  # absent for an ordinary cell: its extra is as before
            fields["channel"] = 1
        return encode_map(fields)

    @classmethod
    def decode(cls, data: bytes) -> CellInfo:
        f = decode_map(data)
        relay, group, control = f.get("relay"), f.get("group"), f.get("control")
        group_from, control_from = f.get("group_from", 0), f.get("control_from", 0)
        alert_limit, muted = f.get("alert_limit", 0), f.get("muted", ())
        verify_first, channel = f.get("verify_first", 0), f.get("channel", 0)
        if type(relay) is not str or type(group) is not bytes or type(control) is not bytes:
            raise CellError("the cell's mailbox information is damaged")
        if type(group_from) is not int or type(control_from) is not int:
            raise CellError("the cell's mailbox information is damaged")
        if type(alert_limit) is not int or type(muted) is not tuple:
            raise CellError("the cell's settings are damaged")
        if not all(type(m) is bytes and len(m) == 16 for m in muted):
            raise CellError("the cell's settings are damaged")
        if type(verify_first) is not int or verify_first not in (0, 1):
            raise CellError("the cell's settings are damaged")
        if type(channel) is not int or channel not in (0, 1):
            raise CellError("the cell's settings are damaged")
        escalate = f.get("escalate", (0, DEFAULT_ESCALATE_AFTER))
        try:
            if type(escalate) is not tuple or len(escalate) != 2:
                raise ChangeExtraError("escalate: not a pair")
            check_escalate(escalate)
        except (ChangeExtraError, TypeError):
            raise CellError("the cell's settings are damaged") from None
        more = f.get("more_relays", ())
        if type(more) is not tuple or len(more) > MAX_MORE_RELAYS:
            raise CellError("the cell's relay list is damaged")
        more_relays = tuple(RelayInfo.decode(r) for r in more)
        if len({r.relay for r in more_relays} | {relay}) != len(more_relays) + 1:
            raise CellError("the cell's relay list is damaged")
        return cls(
            relay=relay,
            group=group,
            control=control,
            group_from=group_from,
            control_from=control_from,
            alert_limit=alert_limit,
            muted=muted,
            more_relays=more_relays,
            verify_first=bool(verify_first),
            escalate=escalate,
            channel=bool(channel),
        )


class MemberCell:
    """What every member of a cell does: read, send, follow epochs (module docstring).

    `Cell` (client/_cell_admin.py) adds an admin's duties; the client always builds a
    `Cell`, whose admin methods refuse unless this member is an admin.
    """

    def __init__(
        self,
        *,
        identity: Identity,
        record: CellRecord,
        crypto: CellCrypto,
        link: RelayLink,
        save: Saver,
        route: Callable[[MailboxId, Callable[[Delivery | Revocation], Awaitable[None]]], None],
        unroute: Callable[[MailboxId], None],
        further_links: Sequence[RelayLink] = (),
        spawn: Callable[[Callable[[], Awaitable[None]]], None] | None = None,
        forget: Callable[[MemberCell], Awaitable[None]] | None = None,
        link_for: Callable[[RelayAddress], RelayLink] | None = None,
        release_link: Callable[[RelayLink], None] | None = None,
    ) -> None:
        """Wrap a cell's state; the client creates cells (`Client.create_cell`, `join`).

        `further_links` are the links to `record.more_relays`, in order; `spawn` starts a
        task in the client's nursery (work on a relay that must not hold up the caller);
        `link_for` gives the link to a relay an admin adds to the cell, `release_link`
        lets the client close one the cell no longer uses (`_apply_relays`).
        """
        self._link_for = link_for
        self._release_link = release_link
        # Links an operation uses before they are the cell's (an admin's `add_relay`):
        # the client must not close them, as a drop of the same relay just before would.
        self.borrowed_links: list[RelayLink] = []
        self._identity = identity
        self._forget = forget  # the client's `forget`: delete this cell's state (`leave`)
        self.record = record
        self.crypto = crypto
        self.link = link
        self._save = save
        self._route = route
        self._unroute = unroute
        self._book = RollupBook()
        self._spawn = spawn
        self.further = [
            FurtherRelay(self, relay, further_link, index)
            for index, (relay, further_link) in enumerate(
                zip(record.more_relays, further_links, strict=True), start=1
            )
        ]
        self._next_further_index = len(self.further) + 1  # for a relay added later
        self._control_lock = trio.Lock()  # one epoch change at a time, from any relay
        self._copier = Copier(self)  # copies envelopes to the relays that lack them
        self._control_copier = ControlCopier(self)  # and epoch changes (admins)
        # Digests of group envelopes settled here (opened, ours, or a replay), oldest first:
        # further copies from other relays are dropped unopened (`_take`).
        self._taken: dict[bytes, None] = {}
        self._listeners: list[trio.MemorySendChannel[CellEvent]] = []
        self._send_lock = trio.Lock()
        self._epoch_changed = trio.Event()
        # The epoch whose change is applied here and saved (`_propose` waits for this, not
        # for the change to open: what opens in memory is not yet applied or saved).
        self._applied_epoch = crypto.epoch
        self._started = False
        self._ready = trio.Event()  # set when start() has watched the mailboxes
        # Set when `start` has ended on the first relay, `_first_failed` if it raised (a
        # cell on several relays is ready earlier, once a further relay is watched).
        self._first_started = trio.Event()
        self._first_failed: Exception | None = None
        self._lost_race = False  # our last epoch change lost to another admin's
        # The cell settings before the last change applied, while a competing change may
        # still replace it (issue 13, the hash rule; `_on_control_locked`).
        self._settings_before: tuple[object, ...] | None = None
        self._heads: dict[MailboxId, int] = {}  # relay heads when watched, for wait_synced
        self._progress = trio.Event()  # set after each processed delivery
        self._dirty = False  # the group layer's state changed since the record was written
        self._queued: list[CellEvent] = []  # events of applied deliveries, emitted after the save
        # How many of `_queued` the last save covered: another relay's router that finds
        # only those (its burst was second copies) has nothing to save (`changed_since_save`).
        self._saved_queued = 0
        self._moves = Moves(self)  # moves to a fresh group mailbox (client/_cell_moves.py)
        self._refetch = Refetch(self)  # parked envelopes, fetched again (client/_cell_refetch.py)
        self._flood = FloodControl(self)  # mutes a member who floods (client/_flood.py)
        self._live = False  # the envelope being opened came live, not in a catch-up
        # Since when this member has read the cell without a break, on any of its relays
        # (client/_cell_relays.py); `EpochStale` already said for this epoch.
        self._presence = Presence()
        self._stale_reported = 0
        self._upkeeping = False  # `upkeep` is running
        self._posting_update = False  # `post_key_update` is running
        # Since when (this device's clock) members' key updates wait here for a change to
        # commit them (admins; `key_updates_due`). In memory: after a restart, from the start.
        self._updates_waiting_since: float | None = None
        self._clock_checked = 0  # the link connection whose clock offset was checked
        self._clock_warning: ClockWarning | None = None  # raised for that connection
        # The admin whose burn was opened here (docs/protocol.md §C1.6): from then on the
        # cell takes nothing more, and the client deletes it (`on_burned`).
        self.burned_by: Member | None = None
        # Set by the client: called once when an admin's burn has been opened here.
        self.on_burned: Callable[[MemberCell], None] | None = None
        # Receipts at scale (protocol/cell/_receipts.py): what this member reports on
        # others' alerts when it is in their sample, and the counts for its own alerts.
        self.receipt_sample = RECEIPT_SAMPLE
        self.report_receipts = False  # send delivered receipts by itself (`Client.report_receipts`)
        self.receipt_batch = ReceiptBatch()
        self._tally = ReceiptTally()
        # Set by the client: called when the receipt batch gets its first item.
        self.on_receipt_queued: Callable[[], None] | None = None
        crypto.lateness = LATE_WINDOW
        if record.relay_max_ttl:  # known before the relay says it again (offline start)
            crypto.set_max_ttl(record.relay_max_ttl)
        for item in record.history:
            self._fold(item)
        # The last run may have published counters its last saves did not reach the disk
        # with (a crash, a power cut): skip past everything it reserved (see `_send`).
        skipped = crypto.skip_sending_to(record.send_reserved_epoch, record.send_reserved)
        if skipped:
            self._dirty = True
            log.info("send_counters_skipped", count=skipped)
            # Say so to the others (docs/protocol.md §G8.2): the distribution again, from
            # the counter we skipped to, so their chains move on and the counters we never
            # used are not reported missing (`MessagesMissing`). Published before the next
            # message, as any pending distribution (`_flush_distribution`).
            record.distribution_pending = crypto.distribution(now=time.time())

    def __repr__(self) -> str:
        return f"<Cell {self.name!r} epoch={self.crypto.epoch}>"

    # -- what the cell looks like ----------------------------------------------------------

    @property
    def name(self) -> str:
        """The cell's display name."""
        return self.crypto.name

    @property
    def cell_id(self) -> bytes:
        """The cell's 16-byte id."""
        return self.crypto.cell_id

    @property
    def is_admin(self) -> bool:
        """Whether this member may invite, approve and remove."""
        return self.crypto.is_admin

    @property
    def removed(self) -> bool:
        """Whether this member was removed from the cell."""
        return self.crypto.removed

    @property
    def gone(self) -> bool:
        """Whether the relay has no mailbox for this cell any more (see `CellGone`)."""
        return self.record.gone

    @property
    def me(self) -> Member:
        """This member."""
        return self._member(self.crypto.me)

    def members(self) -> list[Member]:
        """The current members, admins first, then by name."""
        members = [self._member(info) for info in self.crypto.members]
        return sorted(members, key=lambda m: (not m.is_admin, m.name.casefold(), m.member_id))

    def _member(self, info: MemberInfo) -> Member:
        return Member(
            member_id=info.member_id,
            name=info.name,
            is_admin=info.member_id in self.crypto.admins,
            role=self._role(info.member_id),
        )

    # -- roles (docs/protocol.md §G5) and verification (§C2 rule 7) --------------------------

    def _role(self, member_id: bytes) -> CellRole:
        return _CELL_ROLES[self.crypto.role_of(member_id) or Role.MEMBER]

    def role_of(self, member: Member) -> CellRole:
        """A member's role in the cell's current signed membership."""
        return self._role(member.member_id)

    @property
    def role(self) -> CellRole:
        """This member's role."""
        return self._role(self.crypto.me.member_id)

    @property
    def is_verifier(self) -> bool:
        """Whether this member may verify reports (a dispatcher or an admin)."""
        return not self.crypto.removed and self.role.verifies

    @property
    def verify_first(self) -> bool:
        """Whether reports not yet confirmed go to verifiers only (a cell setting, by admins)."""
        return self.record.verify_first

    # -- broadcast channels (docs/protocol.md §C11) -----------------------------------------

    @property
    def channel(self) -> bool:
        """Whether the cell is a broadcast channel (set when it was created, never changed)."""
        return self.record.channel

    def _posts(self, member_id: bytes) -> bool:
        """Whether this member may post to everyone: in a channel admins and dispatchers only."""
        return not self.record.channel or self._role(member_id).verifies

    @property
    def may_post(self) -> bool:
        """Whether this member may send alerts and messages to the whole cell."""
        return self._posts(self.crypto.me.member_id)

    def _readers(self) -> list[MemberInfo]:
        """The channel's readers of an answer: its admins and dispatchers, ascending id."""
        return [m for m in self.crypto.members if self._role(m.member_id).verifies]

    def _wire_form(self, content: WireContent | Leave | Burn) -> tuple[int, bytes]:
        """Return the kind and plaintext `content` travels as (sealed to the readers in a
        channel when this member does not post; `_send` refused what it may not send)."""
        if self.may_post:
            return content.KIND, content.encode()
        readers = self._readers()[:MAX_RECIPIENTS]
        return DISPATCH_KIND, seal_for_dispatch(
            cell_id=self.cell_id, sender_id=self.crypto.me.member_id, recipients=readers,
            kind=content.KIND, plaintext=content.encode())  # fmt: skip

    def _check_may_send(self, content: WireContent | Leave | Burn) -> None:
        if self.may_post or content.KIND in ANSWER_KINDS:
            return
        raise ChannelError(
            f"{self.name!r} is a broadcast channel: only its admins and dispatchers post"
            f" there, and you are a {self.role.value}; you can answer alerts (reply,"
            " receipts), which only the admins and dispatchers read"
        )

    def _undispatch(self, opened: Opened) -> Opened | list[CellEvent]:
        """Open a dispatch-sealed answer (kind 19) if this member is one of its readers.

        Returns the answer as if it had come unsealed, or the events to report instead:
        none when it is for the other readers (a responder sees its fellows' answers as
        ciphertext only), a `SecurityWarning` when it is damaged or not in a channel.
        """
        sender = opened.sender
        if not self.record.channel:
            return [SecurityWarning(cell=self.name, reason="ChannelRefused",
                                    detail=f"from {sender.name}: a sealed answer outside a"
                                    " channel")]  # fmt: skip
        try:
            kind, plaintext = open_for_dispatch(
                opened.plaintext, cell_id=self.cell_id, sender_id=sender.member_id,
                me=self._identity)  # fmt: skip
        except NotForMeError:
            return []
        except GroupError as exc:
            return [SecurityWarning(cell=self.name, reason=type(exc).__name__,
                                    detail=f"from {sender.name}: a damaged sealed answer")]  # fmt: skip
        return dataclasses.replace(opened, kind=kind, plaintext=plaintext)

    # -- escalation to neighbouring cells (docs/protocol.md §C10) ----------------------------

    @property
    def may_escalate(self) -> bool:
        """Whether this member may escalate this cell's alerts (an admin, dispatcher or liaison)."""
        return not self.crypto.removed and self.role.escalates

    def escalation_policy(self, alert: Alert) -> tuple[int, int]:
        """The alert's (N, T): its own where it sets them, else the cell's (§C10)."""
        below, after = alert.escalate_below, alert.escalate_after
        return (
            self.record.escalate_below if below is None else below,
            self.record.escalate_after if after is None else after,
        )

    def escalated_copies(self, ref: bytes) -> list[AlertRollup]:
        """The alerts held here that were escalated from the alert whose ref is `ref`."""
        return [r for r in self._rollups.all() if r.alert.from_ref == ref]

    async def forward(self, alert: Alert, *, label: str, ref: bytes) -> Alert:
        """Send `alert` of another cell here, escalated from the cell this member calls `label`.

        The copy has a fresh id, the same text, priority, place and expiry, and says where
        it came from (§C10); use `Client.escalate`, which also reports back.

        Raises:
            CellError: this member may not escalate here, or the alert has expired.
        """
        if not self.may_escalate:
            raise CellError(
                f"only an admin, a dispatcher or a liaison of {self.name!r} can escalate to it"
            )
        now_ms = self._now_ms()
        if alert.expires_at * 1000 <= now_ms:
            raise CellError("the alert has expired: there is nothing to escalate")
        copy = Alert(sent_at_ms=now_ms, text=alert.text, priority=alert.priority, place=alert.place,
                     expires_at=alert.expires_at, from_label=label, from_ref=ref)  # fmt: skip
        await self._send(copy, copy.expires_at)
        return copy

    async def send_escalation_note(
        self,
        alert_id: bytes,
        *,
        label: str,
        responding: int = 0,
        on_scene: int = 0,
        outcome: Status | None = None,
    ) -> EscalationNote:
        """Report on the alert `alert_id` escalated to the neighbouring cell `label` (§C10).

        Raises:
            CellError: this member may not escalate here.
        """
        if not self.may_escalate:
            raise CellError(
                f"only an admin, a dispatcher or a liaison of {self.name!r} can report on an"
                " escalation"
            )
        note = EscalationNote(sent_at_ms=self._now_ms(), alert_id=MessageId(alert_id),
                              label=label, responding=responding, on_scene=on_scene,
                              outcome=outcome)  # fmt: skip
        await self._send(note, self._expiry_of(alert_id))
        return note

    def _expiry_of(self, alert_id: bytes) -> int:
        """When what is said about the alert `alert_id` expires: with it, and in a minute at least."""
        rollup = self._rollups.rollup(alert_id)
        now = self._now_ms() // 1000
        return max(rollup.alert.expires_at if rollup is not None else now + DEFAULT_ALERT_TTL,
                   now + 60)  # fmt: skip

    def _note_received(
        self, opened: Opened, sender: Member, note: EscalationNote
    ) -> list[CellEvent]:
        """A liaison's note: counted, and shown, only from an escalator (§C10)."""
        rollup = self._remember(opened.sender, note, opened.expires_at)
        if not sender.role.escalates:
            log.warning("escalation_refused", role=sender.role.value)
            return [
                SecurityWarning(
                    cell=self.name,
                    reason="EscalationRefused",
                    detail=f"{sender.name} ({sender.role.value}) may not report on an escalation",
                )
            ]
        if self._held(rollup):
            return []
        return [EscalationReceived(cell=self.name, sender=sender, note=note, rollup=rollup)]

    def _held(self, rollup: AlertRollup | None) -> bool:
        """Whether this device holds the alert back: verify-first, never confirmed, and this
        member neither a verifier nor the report's author (who knows what it sent).

        Never confirmed, not only unverified: a report a dispatcher called a false alarm
        (or resolved) without confirming it is never shown here (§C2 rule 7).
        """
        return (
            rollup is not None
            and self.record.verify_first
            and not any(s.state is ReportState.CONFIRMED for s in rollup.steps)
            and not self.is_verifier
            and rollup.author_id != self.crypto.me.member_id
        )

    async def verify(
        self, alert_id: bytes, step: Step | str, *, note: str | None = None
    ) -> VerificationStep:
        """Take a verifier's step on a report: verifying, confirmed, false_alarm, resolved.

        Lives as long as the alert. Every member's client counts it only if this member
        is a dispatcher or an admin, and only if the report's state accepts it
        (docs/protocol.md §C2 rule 7); the returned step says what was sent, and
        `rollup(alert_id).verification` where the report stands.

        Raises:
            CellError: this member is not a dispatcher or an admin.
        """
        step = Step(step)
        if not self.is_verifier:
            raise CellError(
                f"only a dispatcher or an admin of {self.name!r} can mark a report"
                f" {step.value.replace('_', ' ')}"
            )
        rollup = self._rollups.rollup(alert_id)
        expires_at = (
            rollup.alert.expires_at
            if rollup is not None
            else self._now_ms() // 1000 + DEFAULT_ALERT_TTL
        )
        content = VerificationStep(
            sent_at_ms=self._now_ms(), alert_id=MessageId(alert_id), step=step, note=note
        )
        await self._send(content, max(expires_at, self._now_ms() // 1000 + 60))
        return content

    def find_member(self, text: str) -> Member:
        """Find a member by name (case-insensitive) or by a prefix of its hex id.

        Raises:
            CellError: no such member, or several match.
        """
        wanted = text.casefold()
        found = [
            m
            for m in self.members()
            if m.name.casefold() == wanted or m.member_id.hex().startswith(wanted)
        ]
        if len(found) != 1:
            raise CellError(
                f"{'no' if not found else 'more than one'} member matches {text!r}; see `cellrelay cell members`"
            )
        return found[0]

    @property
    def _rollups(self) -> RollupBook:
        """The roll-ups, deciding with the current admins and dispatchers (§C2 rules 4, 7)."""
        self._book.set_admins(self.crypto.admins)
        self._book.set_verifiers(self.crypto.membership.with_role(Role.DISPATCHER))
        self._book.set_liaisons(self.crypto.membership.with_role(Role.LIAISON))
        return self._book

    def rollup(self, alert_id: bytes) -> AlertRollup | None:
        """The live roll-up of an alert: who responds, who is on scene, is it over."""
        return self._rollups.rollup(alert_id)

    def active_alerts(self, *, include_muted: bool = False) -> list[AlertRollup]:
        """Unexpired, unresolved alerts, most urgent first (not muted members' unless asked).

        In a verify-first cell a member who is not a verifier sees a report only once a
        verifier confirmed it (docs/protocol.md §C2 rule 7).
        """
        active = [r for r in self._rollups.active(self.clock()) if not self._held(r)]
        if include_muted:
            return active
        return [r for r in active if not self._flood.is_muted(r.author_id)]

    @property
    def alert_limit(self) -> int:
        """Alerts per member per minute before flood control mutes it (set by admins)."""
        return self._flood.limit

    def muted(self) -> list[Member]:
        """The members muted on this device (by it, by flood control, or by admins for all)."""
        return [m for m in self.members() if self._flood.is_muted(m.member_id)]

    async def mute(self, member: Member, *, everyone: bool | None = None) -> bool:
        """Mute a member on this device: its alerts are kept but do not ring (`MutedAlertReceived`).

        `everyone` (an admin's default) mutes it for the whole cell instead: an epoch
        change that every member's client applies (`Cell.mute`). Returns whether it did.

        Raises:
            CellError: `everyone` asked by a member who is not an admin, or the member is you.
        """
        if everyone:
            raise CellError(f"only an admin of {self.name!r} can mute someone for everyone")
        if member.member_id == self.crypto.me.member_id:
            raise CellError("you cannot mute yourself")
        if member.member_id not in self.record.muted_here:
            self.record.muted_here.append(member.member_id)
            await self._save()  # saved before the app hears of it
            self._emit(
                MuteChanged(cell=self.name, member=member, muted=True, everyone=False, by=self.me)
            )
        return False

    async def unmute(self, member: Member, *, everyone: bool | None = None) -> bool:
        """Unmute a member on this device (and, for an admin, for everyone); see `mute`."""
        if everyone:
            raise CellError(f"only an admin of {self.name!r} can unmute someone for everyone")
        if member.member_id in self.record.muted_here:
            self.record.muted_here.remove(member.member_id)
            await self._save()  # saved before the app hears of it
            self._emit(
                MuteChanged(cell=self.name, member=member, muted=False, everyone=False, by=self.me)
            )
        return False

    def recent(self) -> list[tuple[Member, Content]]:
        """Recent unexpired messages (what `events()` showed, and what a crash may have hidden)."""
        out: list[tuple[Member, Content]] = []
        now = self.clock()
        for item in self.record.history:
            if item.expires_at > now and item.status == SENT:  # never what was not sent
                with contextlib.suppress(ContentError):
                    content = decode_content(item.kind, item.content, allow_local=True)
                    if not isinstance(
                        content, Leave | Burn
                    ):  # never kept: `_on_leave`, `_burn_from`
                        info = Member(member_id=item.sender_id, name=item.sender_name)
                        out.append((info, content))
        return out

    @property
    def join_requests(self) -> list[Member]:
        """People who asked to join with one of our invites, waiting for approval."""
        return [self._member_of_request(r) for r in self.record.requests]

    @staticmethod
    def _member_of_request(request: RequestRecord) -> Member:
        info = MemberInfo.from_bytes(request.member)
        return Member(member_id=info.member_id, name=info.name)

    # -- safety numbers (docs/protocol.md §C8) ------------------------------------------------

    def _info(self, member: Member) -> MemberInfo:
        """The keys of a member, or of someone waiting to join (CellError if neither)."""
        for info in self.crypto.members:
            if info.member_id == member.member_id:
                return info
        for request in self.record.requests:
            info = MemberInfo.from_bytes(request.member)
            if info.member_id == member.member_id:
                return info
        raise CellError(f"{member.name!r} is not a member of {self.name!r}, nor waiting to join")

    def safety_number(self, member: Member) -> str:
        """The 60-digit safety number of this member and `member`: compare it in person.

        Both devices show the same digits (`cellrelay cell verify`); a member waiting to
        join has one too, for the admin to compare before approving. The short id is only
        a name tag: only this tells that the keys are the person's.
        """
        return safety_number(self.crypto.me, self._info(member))

    def is_verified(self, member: Member) -> bool:
        """Whether this member's person marked `member` verified (these very keys)."""
        return member.member_id in self.record.verified

    def verified(self) -> list[Member]:
        """The current members marked verified here."""
        return [m for m in self.members() if m.member_id in self.record.verified]

    async def mark_verified(self, member: Member) -> None:
        """Record that the safety numbers matched, compared in person (kept in the keystore)."""
        info = self._info(member)
        if info.member_id == self.crypto.me.member_id:
            raise CellError("you cannot verify yourself: compare with another member")
        self.record.verified[info.member_id] = info.name
        await self._save()

    async def unmark_verified(self, member: Member) -> None:
        """Forget that `member` was verified."""
        if self.record.verified.pop(member.member_id, None) is not None:
            await self._save()

    def _check_verified_name(self, change: MembershipChange) -> list[CellEvent]:
        """A member added under the name of a verified member, with other keys: say so, loudly."""
        verified = self.record.verified
        if change.change is not Change.ADDED or change.member_id in verified:
            return []
        wanted = change.member_name.casefold()
        out: list[CellEvent] = []
        for member_id, name in verified.items():
            if name.casefold() == wanted:
                member = next(
                    (m for m in self.members() if m.member_id == change.member_id),
                    Member(member_id=change.member_id, name=change.member_name),
                )
                log.warning("verified_key_changed")
                out.append(VerifiedKeyChanged(cell=self.name, member=member, verified_id=member_id))
        return out

    # -- events ----------------------------------------------------------------------------

    def subscribe(self) -> trio.MemoryReceiveChannel[CellEvent]:
        """Register for every event from this moment on; close the channel to stop.

        A listener more than `EVENT_BUFFER` events behind is closed (the app can catch up
        from `recent()`), so a forgotten channel cannot stall the cell. A `ClockWarning`
        standing for the current connection comes first: it was raised once, perhaps
        before the app listened, and still holds.
        """
        send, receive = trio.open_memory_channel[CellEvent](EVENT_BUFFER)
        if self._clock_warning is not None and self._clock_checked == self.link.connections:
            send.send_nowait(self._clock_warning)
        self._listeners.append(send)
        return receive

    async def events(self) -> AsyncIterator[CellEvent]:
        """Yield every event from the first iteration on, in order, until the cell is closed.

        Registration happens at the first step; use `subscribe` to register at once.
        """
        async with self.subscribe() as receive:
            async for event in receive:
                yield event

    def _emit(self, event: CellEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                # Hopelessly behind (or gone): close it rather than block the cell; the app
                # can catch up from recent().
                listener.close()
                self._listeners.remove(listener)

    def close(self) -> None:
        """End every `events()` iterator."""
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()

    # -- starting --------------------------------------------------------------------------

    async def start(self) -> None:
        """Watch the cell's mailboxes from their cursors and publish what is pending.

        Waits for the relay; the client runs it in the background for every cell, so one
        unreachable relay delays only its own cells (`wait_ready`).
        """
        if self._started:
            return
        self._started = True
        try:
            await self._start()
        except Exception as exc:
            self._first_failed = exc
            raise
        finally:
            self._ready.set()
            self._first_started.set()

    def _background(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` in the client's nursery (awaited here when there is none)."""
        if self._spawn is None:  # pragma: no cover - the client always gives one
            raise CellError("this cell was built without a nursery for its relays")
        self._spawn(work)

    def _further_ready(self) -> None:
        """A further relay is watched: the cell can send and receive through it already."""
        self._ready.set()

    @property
    def links(self) -> list[RelayLink]:
        """The links to every relay of the cell, the first first."""
        return [self.link, *(further.link for further in self.further)]

    def _control_write_seed(self) -> bytes:
        """The control mailbox's write key seed (admins only; `Cell` knows the secrets)."""
        return b""

    @property
    def started(self) -> bool:
        """Whether `start` has finished watching the cell's mailboxes."""
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        """Wait until `start` has watched the cell's mailboxes (bound it with a deadline)."""
        await self._ready.wait()

    async def _start(self) -> None:
        record, crypto = self.record, self.crypto
        if record.gone:
            return  # nothing to watch, and nothing to retry (§C1.6)
        # Further relays first, each in the background: a first relay that is down or
        # replaced must not keep the cell from the others (docs/protocol.md §C5.2).
        for further in self.further:
            self._background(further.start)
        self._route(record.control_mailbox, self._on_control)
        try:
            self._heads[record.control_mailbox] = await self.link.watch(
                record.control_mailbox,
                CapabilityKey.from_seed(crypto.control_read_key),
                record.control_cursor,
            )
        except RelayRefusedError as exc:
            if exc.code not in MAILBOX_GONE:
                raise
            await self._mark_gone(exc.code)
            return
        self._check_clock()  # connected now: the welcome told the relay's time
        if crypto.removed:
            return
        await self._rewatch_group()
        if self.is_admin:
            await self._take_up_admin_duties()
        try:
            await self._flush_distribution()
        except CellrelayError as exc:  # the group mailbox moved meanwhile: the next send does it
            log.info("distribution_deferred", error=type(exc).__name__)

    async def _rewatch_group(self) -> None:
        """Watch the group mailbox, unless its keys have changed again on the relay since.

        That happens to a member catching up through several changes (a removal rotated
        or moved the group mailbox while it was away): the control mailbox, watched first,
        brings the change that says what next, or, for the admin who made it, its pending
        proposal.
        """
        try:
            await self._watch_group()
        except RelayRefusedError as exc:
            log.info("group_not_watched", code=code_name(exc.code))
        except LinkClosedError:
            # On a cell on several relays this runs in the background, and the first
            # relay's link may be closed for good (the client's other relays carry on):
            # an error here would end the client's nursery, and every cell with it.
            if not self.further or not self.link.closed:
                raise
            log.info("group_not_watched", code="link closed")

    async def _watch_group(self) -> None:
        # The mailbox and keys as they are now: an epoch change applied while this waits
        # (a start races the control mailbox's deliveries) watches its own, and the key
        # refused here must not make the link forget the one that change proved.
        mailbox = self.record.group_mailbox
        read_seed, write_seed = self.crypto.group_keys
        write = CapabilityKey.from_seed(write_seed)
        self._route(mailbox, self._on_group)
        try:
            await self.link.authorize_writer(mailbox, write)
        except RelayRefusedError:
            self.link.forget_writer(mailbox, write)  # or every reconnect proves it again
            raise
        self._heads[mailbox] = await self.link.watch(
            mailbox, CapabilityKey.from_seed(read_seed), self._refetch.resume_after()
        )

    # -- sending ---------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.link.relay_time() * 1000)

    def clock(self) -> float:
        """Now, for deciding what has expired: the earlier of the device's and the relay's clock.

        The relay's as believed, within MAX_RELAY_SKEW of the device's (docs/protocol.md §C7).
        """
        return min(self.link.device_time(), self.link.relay_time())

    def _later_clock(self) -> float:
        """The later of the two clocks: a receipt time no honest claim can be later than."""
        return max(self.link.device_time(), self.link.relay_time())

    def _check_clock(self) -> None:
        """Warn once per connection when the device's and the relay's clocks disagree."""
        link = self.link
        if link.connections == self._clock_checked or link.welcome is None:
            return
        self._clock_checked = link.connections
        self.crypto.set_max_ttl(link.welcome.max_ttl)
        self.record.relay_max_ttl = link.welcome.max_ttl  # for a start without the relay
        offset = link.clock_offset
        self._clock_warning = None
        if abs(offset) > CLOCK_TOLERANCE:
            log.warning("clock_disagrees", offset_s=round(offset))
            self._clock_warning = ClockWarning(cell=self.name, offset=offset, tolerance=CLOCK_TOLERANCE)  # fmt: skip
            self._emit(self._clock_warning)

    def prune(self) -> None:
        """Forget expired messages, seen ids and invites (the client does before every save).

        Before the relay's clock is known (no welcome yet in this run), only what is expired
        by the earliest clock it could have (MAX_RELAY_SKEW behind ours): never delete what
        may still be live (docs/protocol.md §C7).
        """
        now = self.clock() if self.link.welcome is not None else self.clock() - MAX_RELAY_SKEW
        self.record.prune(now)
        self._forget_receipts()

    async def send_alert(
        self,
        text: str,
        *,
        priority: Priority | str = Priority.URGENT,
        place: str | None = None,
        ttl: int = DEFAULT_ALERT_TTL,
        escalate_below: int | None = None,
        escalate_after: int | None = None,
    ) -> Alert:
        """Send an alert to every member; it expires (everywhere) after `ttl` seconds.

        `escalate_below` and `escalate_after` override the cell's escalation setting for
        this alert (docs/protocol.md §C10: N, 0 for never; T in seconds).
        """
        now_ms = self._now_ms()
        alert = Alert(
            sent_at_ms=now_ms,
            text=text,
            priority=Priority(priority),
            place=place,
            expires_at=now_ms // 1000 + ttl,
            escalate_below=escalate_below,
            escalate_after=escalate_after,
        )
        await self._send(alert, alert.expires_at)
        return alert

    async def reply(
        self, alert_id: bytes, status: Status | str, *, note: str | None = None
    ) -> StatusReply:
        """Answer an alert (responding, on_scene, resolved, false_alarm); lives as long as it."""
        rollup = self._rollups.rollup(alert_id)
        expires_at = (
            rollup.alert.expires_at
            if rollup is not None
            else self._now_ms() // 1000 + DEFAULT_ALERT_TTL
        )
        reply = StatusReply(
            sent_at_ms=self._now_ms(),
            alert_id=MessageId(alert_id),
            status=Status(status),
            note=note,
        )
        await self._send(reply, max(expires_at, self._now_ms() // 1000 + 60))
        return reply

    async def send_receipt(
        self,
        message_ids: list[bytes],
        state: ReceiptState | str = ReceiptState.READ,
        *,
        ttl: int = DEFAULT_ALERT_TTL,
    ) -> Receipt:
        """Tell the cell these messages were delivered (or read) here."""
        receipt = Receipt(
            sent_at_ms=self._now_ms(),
            message_ids=tuple(MessageId(m) for m in message_ids),
            state=ReceiptState(state),
        )
        await self._send(receipt, self._now_ms() // 1000 + ttl)
        return receipt

    async def send_message(self, text: str, *, ttl: int = DEFAULT_MESSAGE_TTL) -> PlainMessage:
        """Send an ordinary message to the cell."""
        message = PlainMessage(sent_at_ms=self._now_ms(), text=text)
        await self._send(message, self._now_ms() // 1000 + ttl)
        return message

    async def _send(self, content: WireContent | Leave | Burn, expires_at: int) -> None:
        """Seal and publish `content`; return once the relay acknowledged it.

        It is kept in history as "sending" before it leaves (a crash never loses it) and
        shown as sent only once the relay acknowledged it. A publish refused because a
        key rotation raced it (the relay revoked the write key before this member read
        the epoch change: threat model §3.5) is sealed again in the new epoch once this
        member has caught up, automatically; a send that finally fails is marked failed
        in history, reported as `SendFailed`, and raised (issue 9, finding 10).
        """
        await self.wait_ready()
        self._check_clock()
        if self.crypto.removed:
            raise CellError(f"you were removed from {self.name!r}")
        self._check_may_send(content)
        if self.record.gone or self.burned_by is not None:
            raise CellError(
                f"{self.name!r} is gone from its relay (burned by an admin, or deleted there):"
                f" nothing can be sent; `cellrelay cell leave {self.name}` deletes it here"
            )
        max_ttl = self.link.welcome.max_ttl if self.link.welcome is not None else None
        if max_ttl is not None:
            expires_at = min(expires_at, int(self.link.relay_time()) + max_ttl)
        item: HistoryItem | None = None
        try:
            for attempt in range(1, SEND_ATTEMPTS + 1):
                async with self._send_lock:
                    if self.crypto.removed:
                        raise CellError(
                            f"you were removed from {self.name!r} as you sent this; it was not sent"
                        )
                    if item is None and not isinstance(content, Leave | Burn):
                        item = self._remember_sending(content, expires_at)
                    epoch = self.crypto.epoch
                    if await self._ready_to_seal(attempt):  # else it raced a rotation: wait
                        epoch = self.crypto.epoch
                        kind, plaintext = self._wire_form(content)
                        envelope = self.crypto.seal(
                            kind,
                            plaintext,
                            expires_at=expires_at,
                            now=self.link.relay_time(),
                        )
                        self.record.crypto = self._state_bytes()
                        # Saved before the envelope leaves, so that a crash of the process never
                        # loses it from history; not fsync'd: the reservation covers its counter.
                        await self._save(durable=False)
                        try:
                            await self._publish_group(envelope, expires_at)
                        except RelayRefusedError as exc:
                            if exc.code == ErrorCode.MAILBOX_FULL:
                                log.warning("send_refused_mailbox_full")
                                raise MailboxFullError(
                                    f"the relay refused the message: the mailbox of {self.name!r}"
                                    " is full (a member may be flooding it). It was not sent: an"
                                    " admin can remove the flooder or run `cellrelay cell"
                                    " recover`; then send it again"
                                ) from None
                            if exc.code not in RACED_ROTATION:
                                raise
                            log.info(
                                "send_raced_rotation", attempt=attempt, code=code_name(exc.code)
                            )
                        else:
                            if item is not None and not isinstance(content, Leave | Burn):
                                self._mark_sent(item, content)
                            return
                # Not under the send lock: a send waiting for it must not hold up others.
                if not await self._caught_up_after(epoch):
                    break
            raise CellError(
                f"the relay refused the message because the keys of {self.name!r} changed,"
                " and this device could not catch up with the change; it was not sent:"
                " send it again"
            )
        except Exception as exc:
            if item is not None and not isinstance(content, Leave | Burn):
                self._mark_failed(item, content, str(exc) or type(exc).__name__)
            raise

    async def _publish_group(self, envelope: bytes, expires_at: int) -> None:
        """Publish to the group mailbox of every relay; return once one has stored it.

        The others go on in the background (client/_cell_relays.py); with one relay this
        is that relay's publish, and its refusal is raised as it was.
        """
        targets: list[tuple[str, Callable[[], Awaitable[int]]]] = [
            (
                self.link.address.host,
                partial(self.link.publish, self.record.group_mailbox, envelope, expires_at),
            )
        ]
        targets += [
            (further.name, partial(further.publish_group, envelope, expires_at))
            for further in self.further
        ]
        if len(targets) == 1:
            await targets[0][1]()
            return
        assert self._spawn is not None  # noqa: S101 - a cell on several relays has one
        await publish_everywhere(targets, self._spawn)

    async def _caught_up_after(self, epoch: int) -> bool:
        """Wait (bounded) until this member has applied an epoch after `epoch`, or was removed."""
        with trio.move_on_after(RACE_WAIT):
            while self.crypto.epoch == epoch and not self.crypto.removed:
                await self._epoch_changed.wait()
        return self.crypto.epoch != epoch or self.crypto.removed

    def _remember_sending(self, content: WireContent, expires_at: int) -> HistoryItem:
        """Keep our own message in history, marked as sending (not in the roll-ups yet)."""
        me = self.crypto.me
        item = HistoryItem(kind=content.KIND, content=content.encode(), sender_id=me.member_id,
                           sender_name=me.name, received_at=time.time(), expires_at=expires_at,
                           status=SENDING)  # fmt: skip
        self.record.remember(content.message_id, item)
        return item

    def _restatus(self, item: HistoryItem, status: str) -> HistoryItem | None:
        """Replace `item` in history with a copy of another status (None if it is gone)."""
        history = self.record.history
        for index in range(len(history) - 1, -1, -1):
            if history[index] is item:
                history[index] = changed = dataclasses.replace(item, status=status, _encoded=b"")
                return changed
        return None  # expired, or bounded out, meanwhile

    def _mark_sent(self, item: HistoryItem, content: WireContent) -> None:
        for event in self._receipts_counted(self._count_receipts(item.sender_id, content)):
            self._emit(event)  # "0 of N": an app shows how far the alert got from the start
        changed = self._restatus(item, SENT)
        if changed is not None:
            self._book.add(changed.sender_id, changed.sender_name, content, changed.received_at)  # type: ignore[arg-type]
        if not isinstance(content, Receipt):
            about = None if isinstance(content, PlainMessage) else content.alert_id
            rollup = None if about is None else self.rollup(about)
            self._emit(Sent(cell=self.name, content=content, rollup=rollup))

    def _mark_failed(self, item: HistoryItem, content: WireContent, reason: str) -> None:
        self._restatus(item, FAILED)
        log.warning("send_failed")
        self._emit(SendFailed(cell=self.name, content=content, reason=reason))

    def send_status(self, message_id: bytes) -> str | None:
        """Where a message this member sent stands: "sending", "sent" or "failed".

        None for a message that is not ours, or no longer kept (expired). "sent" means
        the relay acknowledged it; a message still "sending" after a restart is one whose
        acknowledgement never came before the process stopped: it may or may not have
        been stored, and is not shown as sent.
        """
        me = self.crypto.me.member_id
        for item in self.record.history:
            if item.sender_id != me:
                continue
            with contextlib.suppress(ContentError):
                if (
                    decode_content(item.kind, item.content, allow_local=True).message_id
                    == message_id
                ):
                    return item.status
        return None

    def unsent(self) -> list[tuple[Content, str]]:
        """This member's own messages not acknowledged by the relay, with "sending" or "failed"."""
        out: list[tuple[Content, str]] = []
        me = self.crypto.me.member_id
        for item in self.record.history:
            if item.sender_id == me and item.status != SENT:
                with contextlib.suppress(ContentError):
                    content = decode_content(item.kind, item.content, allow_local=True)
                    if not isinstance(content, Leave | Burn):  # never kept: `leave`, `burn`
                        out.append((content, item.status))
        return out

    async def _ready_to_seal(self, attempt: int = 1) -> bool:
        """Publish this epoch's announcement if not yet out; reserve the next counter (§C6).

        The announcement is made here, before this member's first envelope of an epoch,
        and not when the epoch changed (`announce_owed`): lazy, as §C6 item 2 allows.

        Returns with no await after its last check, so the caller seals at once in the
        epoch it checked. Both steps await (the relay, the disk), and an epoch change may
        apply meanwhile: sealing then in the new epoch before its announcement is out left
        the message unreadable for everyone until this device came back (a `send` that
        exits at once: its receivers parked it for good), and sealing with a counter of the
        new epoch that no durable save reserved could reuse a message key after a crash.
        So each await starts the checks again. Called with the send lock held.

        Write-ahead by reservation: every `SEND_RESERVATION` messages, the state is saved
        durably with the counters up to `send_reserved` marked as possibly used, and the
        next run skips past them (`__init__`). Any version of the file a crash or power
        cut can leave is therefore ahead of every counter already published, and a
        message key is never used twice, while only one send in `SEND_RESERVATION` waits
        for the fsyncs (several milliseconds on this machine's disk, on the alert's path).
        """
        record = self.record
        while True:
            if record.distribution_pending or record.announce_owed:
                try:
                    await self._flush_distribution_locked(owed=True)
                except RelayRefusedError as exc:
                    # It raced a key rotation, as a message can (§C6 item 12): the caller
                    # waits for the epoch change and tries again.
                    if exc.code not in RACED_ROTATION:
                        raise
                    log.info("announce_raced_rotation", attempt=attempt, code=code_name(exc.code))
                    return False
                continue
            epoch, counter = self.crypto.send_position()
            if record.send_reserved_epoch == epoch and counter < record.send_reserved:
                return True
            record.send_reserved_epoch, record.send_reserved = epoch, counter + SEND_RESERVATION
            await self._save()  # durable

    def settle(self) -> bool:
        """Give back the counters reserved but not used, for a clean close; True if it did.

        The client then saves durably, so the next run skips nothing. Skipped when a send
        is in progress: the reservation stays, which is always safe.
        """
        try:
            self._send_lock.acquire_nowait()
        except trio.WouldBlock:
            return False
        try:
            epoch, counter = self.crypto.send_position()
            record = self.record
            if record.send_reserved_epoch != epoch or record.send_reserved <= counter:
                return False
            record.send_reserved = counter
            return True
        finally:
            self._send_lock.release()

    async def _flush_distribution(self, *, owed: bool = False) -> None:
        async with self._send_lock:
            await self._flush_distribution_locked(owed=owed)

    async def _flush_distribution_locked(self, *, owed: bool = False) -> None:
        """Publish the pending announcement; with `owed`, also the one the epoch is owed."""
        record = self.record
        if owed and record.announce_owed and not self.crypto.removed:
            # Made only now, not when the epoch changed: it costs a MAC per member, and in
            # a large cell most members never send in most epochs (§C6 item 2).
            record.distribution_pending = self.crypto.announcement(now=self.link.relay_time())
            record.announce_owed = False
        pending = record.distribution_pending
        if not pending:
            return
        expires_at = int(self.link.relay_time()) + (
            self.link.welcome.max_ttl if self.link.welcome else 86400
        )
        await self._publish_group(pending, expires_at)
        self.record.distribution_pending = b""
        await self._save()

    # -- receiving -------------------------------------------------------------------------

    async def _on_group(self, event: Delivery | Revocation) -> None:
        if self.burned_by is not None:
            return  # burned: the client is deleting the cell; nothing more is taken
        if isinstance(event, Revocation):
            log.info("group_keys_revoked", code=event.code)  # the control mailbox says what next
            return
        # Live: past the head when the mailbox was watched (not a catch-up); flood control.
        live = event.seq > self._heads.get(self.record.group_mailbox, 0)
        self._note_presence(event.seq)
        self._take(event.envelope, make_ref(self.record.group_generation, event.seq), live=live,
                   relay=(0, event.expires_at) if self.further else None)  # fmt: skip
        # max: envelopes fetched again (client/_cell_refetch.py) may come after later ones.
        self.record.group_cursor = max(self.record.group_cursor, event.seq)
        self._refetch.delivered(event.seq)

    def _note_presence(self, seq: int) -> None:
        """Follow since when this member reads the cell live (docs/protocol.md §G10.2).

        The first relay's part of `Presence` (client/_cell_relays.py): each relay's
        presence starts with the first delivery past the head the relay reported when the
        mailbox was watched on that connection, once the catch-up is over, and ends after
        a break longer than PRESENCE_GAP. Gaps in what a sender sent while this member was
        away from every relay are not reported: those messages may have expired there.
        """
        mailbox = self.record.group_mailbox
        head = self.link.watch_head(mailbox)
        if head is None:
            head = self._heads.get(mailbox, 0)
        self._presence.note(0, self.link, head, seq, self.clock())

    def _take(
        self,
        envelope: bytes,
        ref: int,
        *,
        live: bool = False,
        relay: tuple[int, int] | None = None,
    ) -> None:
        """Open one group envelope (`ref`: its mailbox and seq) and queue what it means.

        `relay`: on a cell on several relays, which relay delivered it (0: the first) and
        the expiry it had there, for copying it to relays that lack it (`Copier`).
        """
        digest = b""
        if relay is not None:
            # A second copy from another relay (issue 13): known by its digest, dropped
            # before the group layer, which would refuse it as a replay anyway. Opening
            # every envelope twice doubled a member's CPU per alert at 100 members
            # (bench_cells.py --relays 2); nothing is queued or saved for it.
            digest = hashlib.blake2b(envelope, digest_size=16).digest()
            if digest in self._taken:
                self._copier.seen(relay[0], envelope, relay[1], opened=False, digest=digest)
                return
        self._check_clock()
        now = self.clock()
        try:
            outcome: Outcome | GroupError = self.crypto.open(
                envelope, now=now, ref=ref, present_since=self._presence.since()
            )
        except GroupError as exc:
            outcome = exc
        self._live = live
        if relay is not None:
            index, expires_at = relay
            if isinstance(outcome, Opened):
                expires_at = min(expires_at, outcome.expires_at)
            self._copier.seen(index, envelope, expires_at, opened=isinstance(outcome, Opened),
                              digest=digest)  # fmt: skip
            # Only what is settled: a parked or refused envelope must still be taken from
            # the next relay that brings it.
            if isinstance(outcome, Opened | Own | ReplayError):
                self._taken[digest] = None
                if len(self._taken) > MAX_TAKEN:
                    del self._taken[next(iter(self._taken))]
        if isinstance(outcome, Opened) and outcome.kind == KIND_SENDER_KEY:
            self._refetch.released()
        # Applied, not yet saved: the client saves once after the burst of deliveries it
        # took together and only then calls `flush`, which hands these events on. With
        # 100 members each saving (state encoding, SecretBox, fsync) after every delivery,
        # saving was three quarters of a member's CPU per alert (bench/bench_cells.py).
        self._queued.extend(self._outcome(outcome))
        self._queued.extend(self._notices(now))
        self._dirty = True

    def check_notices(self) -> bool:
        """Queue what should have arrived and has not; True if there is something to save.

        The client calls it every minute, then saves and calls `flush`: a gap is reported
        (`MessagesMissing`) once it is `GAP_GRACE` old even when nothing else arrives, and
        an epoch that has not changed for too long (`EpochStale`) is reported once.
        """
        if not self.started or self.crypto.removed or self.record.gone:
            return False
        wiped = self.crypto.wiped
        events = self._notices(self.clock())
        if self.crypto.wiped != wiped:  # skipped keys past their life: off the disk now
            self._dirty = True
        age = self.epoch_age()
        epoch = self.crypto.epoch
        if age > EPOCH_STALE_AFTER and self._stale_reported != epoch and self._control_caught_up():
            self._stale_reported = epoch
            log.warning("epoch_stale", age=int(age))
            events.append(EpochStale(cell=self.name, epoch=epoch, newer=0, age=int(age)))
        if events:
            self._queued.extend(events)
            self._dirty = True
        return self._dirty

    def _control_caught_up(self) -> bool:
        """Whether some relay is connected and its control mailbox read to its head: then
        an old epoch is no relay's delay (a further relay counts when the first is down)."""
        if self.link.connected and self._processed(self.record.control_mailbox) >= self._heads.get(
            self.record.control_mailbox, 0
        ):
            return True
        return any(
            f.started
            and f.link.connected
            and f.record.control_cursor >= f.heads.get(f.record.control_mailbox, 0)
            for f in self.further
        )

    def _notices(self, now: float) -> list[CellEvent]:
        """The group layer's notices (`CellCrypto.check`) as events."""
        if self.link.welcome is not None:
            self.crypto.set_max_ttl(self.link.welcome.max_ttl)
            self.record.relay_max_ttl = self.link.welcome.max_ttl
        events: list[CellEvent] = []
        for notice in self.crypto.check(now):
            if isinstance(notice, Missing):
                log.warning("messages_missing", count=notice.count)
                events.append(MessagesMissing(cell=self.name, sender=self._member(notice.sender),
                                              count=notice.count))  # fmt: skip
            elif isinstance(notice, Behind):
                log.warning("epoch_behind", epoch=notice.epoch, newer=notice.newer)
                events.append(EpochStale(cell=self.name, epoch=notice.epoch, newer=notice.newer,
                                         age=int(self.epoch_age())))  # fmt: skip
        return events

    @property
    def changed_since_save(self) -> bool:
        """Whether deliveries changed this cell since the last save (or it has events to hand
        on, which go out only after a save). Deliveries that change nothing are the second
        copies of a cell on several relays."""
        return self._dirty or len(self._queued) > self._saved_queued or not self.further

    def sync_record(self) -> None:
        """Copy the group layer's state into the record, if it changed (before a save)."""
        self._saved_queued = len(self._queued)  # saved with what is applied now
        if self._dirty:
            self.record.crypto = self._state_bytes()
            self._refetch.note()
            self._dirty = False

    def _state_bytes(self) -> bytes:
        """The group layer's state to save: without parked envelopes, which are fetched again."""
        return self.crypto.to_bytes(parked=False)

    def flush(self) -> None:
        """Hand on the events of deliveries that are now saved (the client calls this)."""
        queued, self._queued = self._queued, []
        self._saved_queued = 0
        for event in queued:
            self._emit(event)
        self._advanced()

    def _outcome(self, outcome: Outcome | GroupError) -> list[CellEvent]:
        """Turn what the group layer said into app events (recursively for released ones)."""
        if isinstance(outcome, GroupError):
            if isinstance(outcome, PendingOverflowError):  # not lost: fetched again later
                self._refetch.refused(outcome.ref)
                return []
            if isinstance(outcome, EquivocationError):
                log.warning("equivocation", counter=outcome.counter)
                return [EquivocationDetected(cell=self.name, member=self._member(outcome.sender),
                                             epoch=outcome.epoch, counter=outcome.counter)]  # fmt: skip
            if isinstance(outcome, QUIET_REFUSALS):
                # Nothing for the app, but a steady stream of these is worth a look.
                log.debug("envelope_dropped", reason=type(outcome).__name__)
                return []
            log.warning("envelope_refused", reason=type(outcome).__name__)
            return [SecurityWarning(cell=self.name, reason=type(outcome).__name__)]
        out: list[CellEvent] = []
        if isinstance(outcome, Opened):
            if self.record.invites:
                self._note_joined(outcome.sender)
            if outcome.kind == KIND_KEY_UPDATE:
                out.extend(self._key_update_received(outcome))
            elif outcome.kind != KIND_SENDER_KEY:
                out.extend(self._content(outcome))
            if outcome.recovered:
                out.append(MessagesRecovered(cell=self.name, sender=self._member(outcome.sender),
                                             count=1))  # fmt: skip
            for released in outcome.released:
                out.extend(self._outcome(released))
        return out

    def _key_update_received(self, opened: Opened) -> list[CellEvent]:
        """A member's key update (§G6.5): an admin keeps it for its next change; a member
        who is not an admin has no use for it and ignores it."""
        if not self.crypto.is_admin:
            return []
        try:
            taken = self.crypto.take_key_update(opened)
        except GroupError as exc:
            # Sealed by the sender's own chain, so the sender made it: a forged signature,
            # another member's update, or an old one posted again. Nothing is kept.
            log.warning("key_update_refused", reason=type(exc).__name__)
            return [SecurityWarning(cell=self.name, reason=type(exc).__name__)]
        if taken:
            log.info("key_update_taken", waiting=self.crypto.waiting_key_updates)
            if self._updates_waiting_since is None:
                self._updates_waiting_since = time.time()
        return []

    def key_updates_due(self) -> bool:
        """Whether this admin should rotate now to commit members' waiting key updates.

        The admin first by member id rotates once the oldest update it holds has waited
        COMMIT_UPDATES_AFTER, each next admin COMMIT_STAGGER later: whoever rotates first
        commits what it holds (up to what fits in one change, at most 16), and the others'
        copies of those updates go when they apply the change.
        """
        crypto = self.crypto
        if crypto.removed or not crypto.is_admin or self.record.gone:
            return False
        if not crypto.waiting_key_updates:
            self._updates_waiting_since = None
            return False
        now = time.time()
        if self._updates_waiting_since is None:  # held since before a restart
            self._updates_waiting_since = now
        rank = sorted(crypto.admins).index(crypto.me.member_id)
        return now - self._updates_waiting_since >= COMMIT_UPDATES_AFTER + rank * COMMIT_STAGGER

    @property
    def key_update_owed(self) -> bool:
        """Whether this member should post a key update (`post_key_update`): one is saved
        and not yet stored by the relay, or KEY_UPDATE_PERIOD has passed since its last.
        An admin's client posts none: its every change commits a fresh key of its own."""
        crypto = self.crypto
        if self._posting_update or crypto.removed or crypto.is_admin or self.record.gone:
            return False
        return bool(self.record.key_update_pending) or crypto.key_update_due(self.clock())

    async def post_key_update(self) -> bool:
        """Make a key update if one is due, and post it in the group mailbox (§G6.5).

        The update and its private key are saved durably before the envelope is sealed,
        so a crash or restart posts the same update again (`key_update_owed`). Sealed on
        this member's chain like a message, after its announcement. Returns True once the
        relay stored it; False if there was nothing to post, or the keys changed under it
        too often (it stays saved, and the next maintenance posts it).
        """
        if self._posting_update:
            return False
        self._posting_update = True
        try:
            await self.wait_ready()
            return await self._post_key_update()
        finally:
            self._posting_update = False

    async def _post_key_update(self) -> bool:
        record, crypto = self.record, self.crypto
        for attempt in range(1, SEND_ATTEMPTS + 1):
            async with self._send_lock:
                if crypto.removed or crypto.is_admin or record.gone:
                    return False
                now = self.link.relay_time()
                pending = record.key_update_pending
                if pending and KeyUpdate.from_bytes(pending).generation <= (
                    crypto.receive_generation
                ):
                    pending = record.key_update_pending = b""  # committed meanwhile
                if not pending:
                    if not crypto.key_update_due(now):
                        return False
                    record.key_update_pending = crypto.key_update(now=now)
                    record.crypto = self._state_bytes()
                    await self._save()  # durable: the new private key with its update
                    log.info("key_update_made", generation=crypto.receive_generation + 1)
                epoch = crypto.epoch
                if await self._ready_to_seal(attempt):
                    epoch = crypto.epoch
                    now = self.link.relay_time()
                    max_ttl = self.link.welcome.max_ttl if self.link.welcome else 86400
                    expires_at = int(now) + max_ttl
                    envelope = crypto.seal_key_update(
                        record.key_update_pending, expires_at=expires_at, now=now
                    )
                    record.crypto = self._state_bytes()
                    await self._save(durable=False)  # the reservation covers the counter
                    try:
                        await self._publish_group(envelope, expires_at)
                    except RelayRefusedError as exc:
                        if exc.code not in RACED_ROTATION:
                            raise
                        log.info("key_update_raced_rotation", attempt=attempt)
                    else:
                        record.key_update_pending = b""
                        await self._save()
                        return True
            if not await self._caught_up_after(epoch):
                break
        return False

    def _content(self, opened: Opened) -> list[CellEvent]:
        if opened.kind == DISPATCH_KIND:
            undispatched = self._undispatch(opened)
            if isinstance(undispatched, list):
                return undispatched
            opened = undispatched
        elif not self._posts(opened.sender.member_id):
            # A channel's responder posts nothing unsealed: not even an answer (§C11).
            log.warning("channel_refused", kind=opened.kind)
            return [SecurityWarning(cell=self.name, reason="ChannelRefused",
                                    detail=f"{opened.sender.name} may not post to everyone in"
                                    " this broadcast channel; refused")]  # fmt: skip
        try:
            content = decode_content(opened.kind, opened.plaintext)
        except ContentError as exc:
            return [
                SecurityWarning(
                    cell=self.name,
                    reason="ContentError",
                    detail=f"from {opened.sender.name}: {exc.code.name}",
                )
            ]
        if content.message_id in self.record.seen:
            return []  # delivered before (at least once from the relay, exactly once from here)
        if isinstance(content, Leave):
            return self._on_leave(opened, content)
        sender = self._member(opened.sender)
        if isinstance(content, Burn):
            return self._burn_from(sender)
        if isinstance(content, VerificationStep):
            return self._step_received(opened, sender, content)
        if isinstance(content, EscalationNote):
            return self._note_received(opened, sender, content)
        rollup = self._remember(opened.sender, content, opened.expires_at)
        if isinstance(content, Alert):
            # Expired by either of this device's clocks: shown, marked late (§C7).
            late = opened.expires_at <= self._later_clock()
            events = self._flood.count(sender, content, received_at=time.time(), live=self._live)
            if content.from_label is not None and not sender.role.escalates:
                # Anyone may alert; only an escalator may say a neighbour sent it (§C10).
                log.warning("escalation_refused", role=sender.role.value)
                events.append(SecurityWarning(cell=self.name, reason="EscalationRefused",
                                              detail=f"{sender.name} ({sender.role.value}) may"
                                              " not send an alert as escalated from another"
                                              " cell; shown as an ordinary alert"))  # fmt: skip
            if self._held(rollup):  # verify-first: rung once a verifier confirms it
                return events
            if self._flood.is_muted(sender.member_id):  # kept, shown, not rung
                # Nor reported on: receipts for a flood would multiply it (§C1.7).
                self._count_receipts(sender.member_id, content, report=False)
                events.append(MutedAlertReceived(cell=self.name, sender=sender, alert=content, rollup=rollup, late=late))  # fmt: skip
            else:
                self._count_receipts(sender.member_id, content)
                events.append(AlertReceived(cell=self.name, sender=sender, alert=content, rollup=rollup, late=late))  # fmt: skip
            return events
        counted = self._count_receipts(sender.member_id, content)
        if isinstance(content, StatusReply):
            if self._held(self._rollups.rollup(content.alert_id)):
                return []  # about a report held here (verify-first): said once it is confirmed
            return [
                StatusReceived(
                    cell=self.name,
                    sender=sender,
                    reply=content,
                    rollup=self._rollups.rollup(content.alert_id),
                )
            ]
        if isinstance(content, Receipt):
            return [
                ReceiptReceived(cell=self.name, sender=sender, receipt=content),
                *self._receipts_counted(counted),
            ]
        if isinstance(content, PlainMessage):
            return [MessageReceived(cell=self.name, sender=sender, message=content)]
        return []  # pragma: no cover - kind 0 is refused from the wire by decode_content

    # -- receipts at scale (docs/protocol.md §C1.7) -----------------------------------------

    def _count_receipts(
        self, sender_id: bytes, content: Content | Leave | Burn, *, report: bool = True
    ) -> list[MessageId]:
        """Follow receipts: track our own alerts, report on sampled ones, count what comes.

        `report=False` when the history is loaded: what arrived in an earlier run was
        reported then (or the run ended before its batch was due; receipts are a best effort).
        Returns our own alerts whose counts changed: a receipt counted, or one just sent (0 of N).
        """
        me = self.crypto.me.member_id
        if isinstance(content, Alert):
            # The member ids only when they are used: a member that does not report
            # receipts (the default) and receives another's alert needs none, and listing a
            # 1,000-member cell for every alert was O(n) for nothing.
            members = self.crypto.membership.members.keys()
            if sender_id == me:
                # New here: its counts start at "0 of N", which the app shows at once.
                if self._tally.track(content.message_id, me, members, sample=self.receipt_sample):
                    return [content.message_id]
            elif (
                report
                and self.report_receipts
                and me
                in reporters(content.message_id, sender_id, members, sample=self.receipt_sample)
            ):
                self._queue_receipt(content.message_id, ReceiptState.DELIVERED)
        elif isinstance(content, Receipt) and sender_id != me:
            changed = []
            for message_id in content.message_ids:
                before = self._tally.counts(message_id)
                if (
                    self._tally.add(message_id, sender_id, content.state)
                    and self._tally.counts(message_id) != before
                ):
                    changed.append(message_id)
            return changed
        return []

    def _receipts_counted(self, alert_ids: list[MessageId]) -> list[CellEvent]:
        return [
            ReceiptsCounted(cell=self.name, alert_id=alert_id, counts=counts)
            for alert_id in alert_ids
            if (counts := self._tally.counts(alert_id)) is not None
        ]

    def _queue_receipt(self, message_id: MessageId, state: ReceiptState) -> None:
        first = self.receipt_batch.pending == 0
        draw = secrets.randbelow(1 << 20) / (1 << 20)
        queued = self.receipt_batch.add(message_id, state, now=time.time(), draw=draw)
        if queued and first and self.on_receipt_queued is not None:
            self.on_receipt_queued()

    def receipts(self, alert_id: bytes) -> ReceiptCounts | None:
        """How far one of this member's own alerts got: delivered and read, sampled (§C1.7).

        None for an alert this member did not send (or that expired). Counts come from the
        alert's sampled reporters (every member in a cell of up to `receipt_sample` others),
        so `ReceiptCounts.estimated_delivered` and `estimated_read` are estimates in larger
        cells, exact in smaller ones (`exact`).
        """
        return self._tally.counts(alert_id)

    async def mark_read(self, alert_id: bytes) -> bool:
        """Say that this member has read an alert (its sender counts it if we are sampled).

        Returns whether a read receipt was queued: only a sampled reporter sends one, in
        the next batch (within `BATCH_DELAY` + `BATCH_JITTER` seconds; the client sends it).
        """
        rollup = self._rollups.rollup(alert_id)
        if rollup is None or rollup.author_id == self.crypto.me.member_id:
            return False
        members = [info.member_id for info in self.crypto.members]
        if self.crypto.me.member_id not in reporters(
            alert_id, rollup.author_id, members, sample=self.receipt_sample
        ):
            return False
        self._queue_receipt(MessageId(alert_id), ReceiptState.READ)
        return True

    async def send_receipts(self) -> int:
        """Send the batched receipts if they are due; return how many receipts were sent.

        Receipts are a best effort: one the relay refuses is dropped, not retried.
        """
        if self.crypto.removed or self.record.gone or self.burned_by is not None:
            return 0
        sent = 0
        for state, ids in self.receipt_batch.take(time.time()):
            receipt = Receipt(sent_at_ms=self._now_ms(), message_ids=ids, state=state)
            try:
                await self._send(receipt, self._now_ms() // 1000 + DEFAULT_ALERT_TTL)
            except (CellrelayError, CellError) as exc:
                log.info("receipt_not_sent", error=type(exc).__name__)
                continue
            sent += 1
        return sent

    def _forget_receipts(self) -> None:
        """Stop counting for alerts no longer kept (expired, or pushed out)."""
        gone = [a for a in self._tally.tracked() if self._rollups.rollup(a) is None]
        self._tally.forget(gone)
        self.receipt_batch.forget(
            [m for m in self.receipt_batch.said() if self._rollups.rollup(m) is None]
        )

    def _burn_from(self, sender: Member) -> list[CellEvent]:
        """An opened `Burn`: act on it if an admin sent it, else refuse it (§C1.6).

        Never kept in history: an admin's burn deletes the history, and anyone else's
        is not a message.
        """
        if self.crypto.role_of(sender.member_id) != Role.ADMIN:
            log.warning("burn_refused")
            return [
                SecurityWarning(
                    cell=self.name,
                    reason="BurnRefused",
                    detail=f"{sender.name} ({sender.short_id}) tried to burn the cell but is not an admin",
                )
            ]
        if self.burned_by is None:
            log.warning("cell_burned")
            self.burned_by = sender
            if self.on_burned is not None:
                self.on_burned(self)
        return [CellBurned(cell=self.name, by=sender)]

    async def _mark_gone(self, code: int) -> None:
        """The relay has no mailbox for the cell: say so once, keep it so, retry nothing."""
        if self.record.gone:
            return
        log.warning("cell_gone", code=code_name(code))
        self.record.gone = True
        for mailbox in self.mailboxes():
            self._unroute(mailbox)
            self.link.forget_writer(mailbox)
            with contextlib.suppress(CellrelayError):
                await self.link.unwatch(mailbox)
        await self._save()
        self._emit(CellGone(cell=self.name, code=code_name(code)))

    def _on_leave(self, opened: Opened, leave: Leave) -> list[CellEvent]:
        """A member announced it leaves (docs/protocol.md §C9): keep it until it is removed.

        Not kept in history: the leave is kept in `record.leaves` instead, which no flood
        pushes out and no expiry prunes, until the leaver is removed (`_apply`), by this
        member's client if it is the admin whose turn it is (`Cell.remove_leavers`). A
        leave sealed before the sender's latest admission is spent: a relay replaying it,
        or a member reading an old mailbox late, must never remove a re-admitted member.
        """
        sender = opened.sender
        sid = sender.member_id
        record = self.record
        record.see(leave.message_id, opened.expires_at)
        if (
            sid == self.crypto.me.member_id
            or self.crypto.role_of(sid) is None
            or opened.epoch < record.admitted.get(sid, 0)
        ):
            log.info("leave_spent")  # from a member removed since, perhaps re-admitted
            return []
        record.leaves = [r for r in record.leaves if r.member_id != sid]
        record.leaves.append(
            LeaveRecord(
                member_id=sid,
                epoch=opened.epoch,
                sent_at_ms=leave.sent_at_ms,
                received_at=time.time(),
            )
        )
        log.info("member_left")
        change = MembershipChange(
            message_id=leave.message_id, sent_at_ms=leave.sent_at_ms, change=Change.LEFT,
            member_id=sid, member_name=sender.name, by_id=sid, by_name=sender.name,  # type: ignore[arg-type]
        )  # fmt: skip
        return [MembershipChanged(cell=self.name, change=change)]

    def _step_received(
        self, opened: Opened, sender: Member, step: VerificationStep
    ) -> list[CellEvent]:
        """A verifier's step: counted, and a held report rung once confirmed; anyone else's
        is kept (a later promotion may make it count) but reported as a security event."""
        before = self._rollups.rollup(step.alert_id)
        rollup = self._remember(opened.sender, step, opened.expires_at)
        if not sender.role.verifies:
            log.warning("verification_refused", role=sender.role.value)
            what = step.step.value.replace("_", " ")
            return [
                SecurityWarning(
                    cell=self.name,
                    reason="RoleRefused",
                    detail=f"{sender.name} ({sender.role.value}) may not mark a report {what}",
                )
            ]
        if self._held(rollup):
            return []  # a step on a report held here (verify-first): nothing to show yet
        events: list[CellEvent] = [
            VerificationReceived(cell=self.name, sender=sender, step=step, rollup=rollup)
        ]
        if self._held(before) and rollup is not None:  # confirmed just now
            # Held here until now (verify-first): ring for it now, with its priority, as if
            # it had just come (a muted author's is shown, not rung, as always).
            author = self._author(rollup)
            late = rollup.alert.expires_at <= self._later_clock()
            kind = MutedAlertReceived if self._flood.is_muted(author.member_id) else AlertReceived
            events.append(kind(cell=self.name, sender=author, alert=rollup.alert, rollup=rollup, late=late))  # fmt: skip
        return events

    def _author(self, rollup: AlertRollup) -> Member:
        info = self.crypto.membership.members.get(rollup.author_id)
        if info is not None:
            return self._member(info)
        return Member(member_id=rollup.author_id, name=rollup.author_name)

    def _remember(
        self, sender: MemberInfo, content: Content, expires_at: int
    ) -> AlertRollup | None:
        # Received at the later clock: the claim clamp (§C2 rule 0) never cuts an honest claim.
        item = HistoryItem(kind=content.KIND, content=content.encode(), sender_id=sender.member_id,
                           sender_name=sender.name, received_at=self._later_clock(), expires_at=expires_at)  # fmt: skip
        self.record.remember(content.message_id, item)
        return self._rollups.add(item.sender_id, item.sender_name, content, item.received_at)  # type: ignore[arg-type]

    def _fold(self, item: HistoryItem) -> AlertRollup | None:
        """Add a kept message to the roll-ups (when the cell is loaded)."""
        if item.status != SENT:
            return None  # our own, never acknowledged: not in any roll-up
        with contextlib.suppress(ContentError):
            content = decode_content(item.kind, item.content, allow_local=True)
            self._count_receipts(item.sender_id, content, report=False)
            return self._rollups.add(item.sender_id, item.sender_name, content, item.received_at)  # type: ignore[arg-type]
        return None

    async def _on_control(
        self, event: Delivery | Revocation, *, further: FurtherRelay | None = None
    ) -> None:
        """An epoch change from the control mailbox of the first relay, or of `further`.

        One at a time: two relays' routers may bring the same change, or the next one,
        at once, and applying it awaits the relay (watching the group mailbox again).
        """
        if self.burned_by is not None:
            return  # burned: the client is deleting the cell
        if isinstance(event, Revocation):
            # The control read key never rotates: a revocation means the mailbox is gone
            # (DELETED by an admin's burn while subscribed, or BAD_PROOF after a reconnect).
            log.warning("control_revoked", code=event.code)
            # Only the first relay's word marks the cell gone: on a further relay it means
            # that relay lost the cell (replaced, or its data gone), which the others outlive.
            if event.code in MAILBOX_GONE and further is None:
                await self._mark_gone(event.code)
            elif event.code in MAILBOX_GONE and further is not None:
                further.lost_cell(event.code)
            return
        async with self._control_lock:
            await self._on_control_locked(event, further)

    async def _on_control_locked(self, event: Delivery, further: FurtherRelay | None) -> None:
        now = self.clock()
        relay = 0 if further is None else further.index
        self._control_copier.seen(relay, event.envelope)
        events: list[CellEvent] = []
        update: EpochUpdate | None = None
        self._live = False  # what an epoch change releases counts as a catch-up (_flood.py)
        # The hash rule decides between competing changes on several relays (docs/design.md);
        # on one, the relay's order does.
        self.crypto.settle_window = GRACE_PERIOD if self.further else 0.0
        settings = self._settings()
        try:
            update = self.crypto.open_control(event.envelope, now=now, announce=False)
        except ForkedEpochError as exc:
            log.warning("epoch_change_forked", ours=exc.ours)
            events.append(
                SecurityWarning(
                    cell=self.name,
                    reason="ForkedEpochError",
                    detail="two admins changed the cell while cut off from each other's relays"
                    " for longer than the settle window: members on the other side must be"
                    " invited again",
                )
            )
        except StaleControlError as exc:
            if exc.ours:
                log.warning("epoch_change_lost_race")
                self._lost_race = True
                self._epoch_changed.set()
                self._epoch_changed = trio.Event()
        except (RemovedError, EpochGapError) as exc:
            # A further relay that lacks a change (down when it was posted, its copy still
            # on the way) is not a missed epoch: another relay brings the change.
            if isinstance(exc, EpochGapError) and further is None:
                events.append(
                    SecurityWarning(
                        cell=self.name,
                        reason="EpochGapError",
                        detail="missed epochs: ask an admin to add you again",
                    )
                )
        except GroupError as exc:
            events.append(
                SecurityWarning(
                    cell=self.name, reason=type(exc).__name__, detail="in the control mailbox"
                )
            )
        try:
            if update is not None:
                self.record.epoch_started_at = time.time()
                self._refetch.released()
                if update.superseded is None:
                    self._settings_before = settings
                else:
                    events.extend(self._superseded(update))
                events.extend(await self._apply(update))
                if self.further:  # an admin copies it to the relays that lack it
                    self._control_copier.applied(
                        relay, event.envelope, event.expires_at, update.group_keys
                    )
        finally:
            # Processed only once applied: `wait_synced` (and so every command) waits for
            # the relay's watches of a change's mailboxes, not only for its keys.
            if further is None:
                self.record.control_cursor = event.seq
            else:
                further.record.control_cursor = event.seq
            # The group state changed when the change opened, applied in full or not: the
            # cursor must never be saved past a change without the change itself. (A move
            # cut short by a close once saved exactly that, and the lead counted a removed
            # member for good: tests/client/test_admin.py.)
            self._dirty = True
        # Saved at once, not at the end of the burst: the cursor must not run ahead of the
        # applied change (above), and the announcement it owes must be on disk with it.
        await self._save()
        self._applied_epoch = self.crypto.epoch
        if update is not None:
            self._epoch_changed.set()
            self._epoch_changed = trio.Event()
        if further is not None and further.group_stale and not self.crypto.removed:
            # This relay has the change now, so the admin rotated its keys before: the
            # group mailbox there takes the new keys (client/_cell_relays.py).
            self._background(further.rewatch_group)
        self._queued.extend(events)
        self.flush()

    def _settings(self) -> tuple[object, ...]:
        """The cell settings epoch changes set (§C5.1), to restore for a competing change."""
        r = self.record
        return (
            r.alert_limit,
            r.verify_first,
            r.escalate_below,
            r.escalate_after,
            list(r.muted_everyone),
        )

    def _superseded(self, update: EpochUpdate) -> list[CellEvent]:
        """A competing change for the epoch replaced the one applied (the hash rule).

        The crypto state went back to the epoch before and applied `update`; the settings
        go back too, before `_apply` takes up the winner's. The members had been told of
        the loser's change; they are told it was replaced. A loser that was ours: our
        operation is undone, and an admin redoes it (`_lost_race` for one still waiting).
        """
        if self._settings_before is not None:
            r = self.record
            (r.alert_limit, r.verify_first, r.escalate_below, r.escalate_after,
             r.muted_everyone) = self._settings_before  # type: ignore[assignment]  # fmt: skip
        log.warning("epoch_change_replaced", ours=update.lost_ours)
        if update.lost_ours:
            self._lost_race = True
        return [
            SecurityWarning(
                cell=self.name,
                reason="EpochChangeReplaced",
                detail=("your change" if update.lost_ours else "an admin's change")
                + " was replaced by another admin's, made at the same moment on another relay;"
                " look again and redo it if it is still needed",
            )
        ]

    async def _apply(self, update: EpochUpdate) -> list[CellEvent]:
        """Act on an applied epoch change: keys, distribution, relay rotation, events."""
        events: list[CellEvent] = []
        extra = self._change_extra(update, events)
        if not update.removed_self:
            # Announced lazily, before this member's first envelope of the epoch
            # (`_ready_to_seal`); a pending one of an earlier epoch is of no use any more.
            self.record.distribution_pending = b""
            self.record.announce_owed = True
        if update.entry is not None:
            self._note_admission(update.entry)
        if update.entry is not None and update.entry.op is Op.SET_ROLE:
            subject = self._member(update.entry.subject)
            events.append(RoleChanged(cell=self.name, member=subject, role=subject.role,
                                      by=self._member(update.signer)))  # fmt: skip
        elif update.entry is not None:
            change = self._change_of(update)
            events.append(MembershipChanged(cell=self.name, change=change))
            events.extend(self._check_verified_name(change))
        elif update.removed_self:  # we cannot read the new epoch's log entry: say what we know
            me = self.crypto.me
            events.append(MembershipChanged(cell=self.name, change=MembershipChange(
                sent_at_ms=self._now_ms(), change=Change.REMOVED, member_id=me.member_id,  # type: ignore[arg-type]
                member_name=me.name, by_id=update.signer.member_id, by_name=update.signer.name)))  # type: ignore[arg-type]  # fmt: skip
        if update.removed_self:
            for further in self.further:
                self._background(further.stop_group)
            self.link.forget_writer(self.record.group_mailbox)
            await self.link.unwatch(self.record.group_mailbox)
            self._unroute(self.record.group_mailbox)
            return events
        if update.group_keys is not None and extra.group is not None and extra.drain_read:
            # The proposing admin created the new mailbox and closed the old one to
            # writers before publishing the change (client/_cell_moves.py).
            keep_from = self._refetch.resume_after()  # parked ones are read again there
            self._refetch.moved()
            await self._moves.move(extra.group, extra.drain_read, keep_from)
        elif update.group_keys is not None:
            # The proposing admin rotated the relay's keys before publishing the change
            # (`_propose`), so the relay already accepts the new keys; it revoked our old
            # watch then, on this same connection, before this delivery. Further relays
            # in the background: this handler must not wait for another relay.
            for further in self.further:
                self._background(further.rewatch_group)
            await self.link.unwatch(self.record.group_mailbox)
            self.link.forget_writer(self.record.group_mailbox)
            if self.further:  # the first relay may be the one that is down
                self._background(self._rewatch_group)
            else:
                await self._rewatch_group()
        events.extend(self._apply_settings(extra, update.signer))
        self._apply_relays(extra)
        if update.admin_secrets and self.further:  # just promoted; no relay may hold it up
            self._background(self._take_up_admin_duties)
            for further in self.further:
                self._background(partial(further.take_up_admin_duties, self._control_write_seed()))
        elif update.admin_secrets:  # just promoted
            await self._take_up_admin_duties()
        for released in update.released:
            events.extend(self._outcome(released))
        return events

    def _note_admission(self, entry: LogEntry) -> None:
        """Follow admissions and removals for leaves (docs/protocol.md §C9).

        A removal spends the member's leave; an admission starts the epochs from which a
        leave of theirs counts (`_on_leave`).
        """
        record = self.record
        sid = entry.subject.member_id
        if entry.op in (Op.ADD, Op.REMOVE):
            record.leaves = [r for r in record.leaves if r.member_id != sid]
        if entry.op is Op.ADD:
            record.admitted[sid] = entry.epoch
        elif entry.op is Op.REMOVE:
            record.admitted.pop(sid, None)

    def _apply_settings(self, extra: ChangeExtra, signer: MemberInfo) -> list[CellEvent]:
        """Take up the cell settings an admin's epoch change carries (§C5.1)."""
        record = self.record
        events: list[CellEvent] = []
        if extra.alert_limit is not None:
            record.alert_limit = extra.alert_limit
        if extra.verify_first is not None:
            record.verify_first = extra.verify_first
        if extra.escalate is not None:
            record.escalate_below, record.escalate_after = extra.escalate
        if extra.muted is not None:
            before, after = set(record.muted_everyone), set(extra.muted)
            record.muted_everyone = list(extra.muted)
            by = self._member(signer)
            for info in self.crypto.members:
                if (info.member_id in before) != (info.member_id in after):
                    events.append(MuteChanged(cell=self.name, member=self._member(info),
                                              muted=info.member_id in after, everyone=True, by=by))  # fmt: skip
        return events

    def _apply_relays(self, extra: ChangeExtra) -> None:
        """Follow a relay an admin added to the cell or dropped from it (§C5.1, §C5.2).

        Idempotent: a relay already followed is not added twice, one not followed is not
        dropped. Nothing here waits for a relay (this runs in a delivery handler): a new
        relay is watched, and a dropped one left, in the background.
        """
        if extra.relay_drop is not None:
            dropped = next((f for f in self.further if f.record.relay == extra.relay_drop), None)
            if dropped is not None:
                self.further.remove(dropped)
                self._presence.forget(dropped.index)
                self.record.more_relays.remove(dropped.record)
                self._dirty = True
                log.info("relay_dropped", relay=dropped.index)
                self._background(partial(self._leave_further, dropped))
        if extra.relay_add is not None:
            address, group, control = extra.relay_add
            known = {self.record.relay, *(f.record.relay for f in self.further)}
            if address in known or len(self.further) >= MAX_MORE_RELAYS:
                return
            if self._link_for is None:  # a cell built without a client (never in use)
                log.warning("relay_not_added", reason="no client")
                return
            record = RelayRecord(relay=address, group_mailbox=group, control_mailbox=control)
            index = 1 + max((f.index for f in self.further), default=0)
            # Indexes tag parking refs and copies: never one a dropped relay had this run.
            index = max(index, self._next_further_index)
            self._next_further_index = index + 1
            further = FurtherRelay(self, record, self._link_for(RelayAddress.parse(address)), index)
            self.further.append(further)
            self.record.more_relays.append(record)
            self._dirty = True
            log.info("relay_added", relay=index)
            self._background(further.start)

    async def _leave_further(self, further: FurtherRelay) -> None:
        """Stop reading and writing a relay the cell dropped, then let its link go."""
        link = further.link
        await self._retire_further(further)
        for mailbox in (further.record.group_mailbox, further.record.control_mailbox):
            link.forget_writer(mailbox)
            self._unroute(mailbox)
        with trio.move_on_after(LEAVE_WAIT):
            for mailbox in (further.record.group_mailbox, further.record.control_mailbox):
                try:
                    await link.unwatch(mailbox)
                except (CellrelayError, OSError) as exc:
                    log.info("further_not_unwatched", relay=further.index, error=type(exc).__name__)
        if self._release_link is not None:
            self._release_link(link)

    def _relay_target(self, index: int) -> RelayTarget | None:
        """Where an admin copies an epoch change to relay `index` (`Cell`; None: nowhere)."""
        return None

    async def _retire_further(self, further: FurtherRelay) -> None:
        """A relay the cell dropped: an admin deletes the cell's mailboxes there (`Cell`)."""

    def _change_extra(self, update: EpochUpdate, events: list[CellEvent]) -> ChangeExtra:
        """The change's client data (§C5.1); a damaged one is reported and ignored."""
        if update.extra is None:
            return ChangeExtra()
        try:
            extra = ChangeExtra.decode(update.extra)
        except ChangeExtraError as exc:
            log.warning("change_extra_refused", error=str(exc))
            events.append(SecurityWarning(cell=self.name, reason="ChangeExtraError",
                                          detail=f"in an epoch change by {update.signer.name}"))  # fmt: skip
            return ChangeExtra()
        if extra.group is not None and update.group_keys is None:  # a move needs its keys
            events.append(SecurityWarning(cell=self.name, reason="ChangeExtraError",
                                          detail=f"a move without keys by {update.signer.name}"))  # fmt: skip
            return dataclasses.replace(extra, group=None, drain_read=None)  # no move
        return extra

    def _change_of(self, update: EpochUpdate) -> MembershipChange:
        entry = update.entry
        assert entry is not None  # noqa: S101 - checked by the caller
        change = {Op.ADD: Change.ADDED, Op.REMOVE: Change.REMOVED, Op.PROMOTE: Change.PROMOTED,
                  Op.DEMOTE: Change.DEMOTED, Op.GENESIS: Change.ADDED}[entry.op]  # fmt: skip
        return MembershipChange(
            message_id=MessageId(entry.signature[:16]),
            sent_at_ms=entry.timestamp_ms,
            change=change,
            member_id=entry.subject.member_id,  # type: ignore[arg-type]
            member_name=entry.subject.name,
            by_id=update.signer.member_id,  # type: ignore[arg-type]
            by_name=update.signer.name,
        )

    # -- epochs, leaving and catching up ---------------------------------------------------

    def epoch_age(self) -> float:
        """Seconds since this member entered the current epoch (by the device clock)."""
        return time.time() - self.record.epoch_started_at

    async def leave(self, *, timeout: float = LEAVE_TIMEOUT, force: bool = False) -> bool:  # noqa: ASYNC109 - bounds the announcement only: the cell is forgotten either way
        """Leave the cell: announce it, then delete the cell's keys and history here.

        The announcement is a signed `Leave` to every member (docs/protocol.md §C9): each
        shows that this member left, and an admin's client removes it, which moves the cell
        to a new epoch this device's keys (or a copy of them) cannot read. This device
        does not remove itself, even as an admin: the admin who removes someone makes the
        new epoch's keys, and a copy of a leaver's keystore must not hold them. Returns
        whether the relay stored the announcement within `timeout` seconds; the cell is
        forgotten either way (if not, ask an admin to remove you).

        Raises:
            CellError: this member is the cell's only admin and others remain, so nobody
                could add or remove members after it (`force=True` leaves anyway).
        """
        if (
            not force
            and not self.crypto.removed
            and self.is_admin
            and len(self.crypto.admins) == 1
            and len(self.crypto.members) > 1
        ):
            raise CellError(
                f"you are the only admin of {self.name!r}: nobody could add or remove members"
                " after you leave (force=True leaves anyway)"
            )
        announced = False
        if not self.crypto.removed:
            with trio.move_on_after(timeout):
                try:
                    await self._send(Leave(sent_at_ms=self._now_ms()), self._leave_expiry())
                    announced = True
                except (CellrelayError, CellError) as exc:
                    log.warning("leave_not_announced", error=type(exc).__name__)
        for mailbox in self.mailboxes():
            self._unroute(mailbox)
        with contextlib.suppress(Exception):
            await self.link.unwatch(self.record.group_mailbox)
            await self.link.unwatch(self.record.control_mailbox)
        for further in self.further:
            with contextlib.suppress(Exception), trio.move_on_after(LEAVE_WAIT):
                await further.link.unwatch(further.record.group_mailbox)
                await further.link.unwatch(further.record.control_mailbox)
        self.close()
        if self._forget is not None:
            await self._forget(self)
        return announced

    def _leave_expiry(self) -> int:
        """A leave lives as long as the relay keeps anything: admins offline for long read it."""
        max_ttl = (
            self.link.welcome.max_ttl if self.link.welcome is not None else DEFAULT_MESSAGE_TTL
        )
        return int(self.link.relay_time()) + max_ttl

    async def wait_synced(self) -> None:
        """Wait until the group and control mailboxes are processed up to the relay's head
        as it was when they were watched (callers bound the wait with trio.move_on_after).

        An admin's open invites count too, so join requests are in `join_requests` after it.
        """
        await self.wait_ready()
        if not self.further:
            for mailbox in list(self._heads):  # a failed start: what was watched, as before
                await self._wait_processed(mailbox)
            return
        # On a cell on several relays, any one relay caught up will do: the first relay
        # may be the one that is down (issue 13).
        await first_done([self._wait_first_synced, *(f.wait_synced for f in self.further)])

    async def wait_connected(self) -> None:
        """Wait until the link to one of the cell's relays is up.

        Raises:
            RelayKeyMismatchError: every relay refused the handshake for its key (the first
                relay's error), at once rather than after a timeout.
        """
        await first_done([link.wait_connected for link in self.links])

    async def _wait_first_synced(self) -> None:
        await self._first_started.wait()
        if self._first_failed is not None:
            raise self._first_failed
        for mailbox in list(self._heads):
            await self._wait_processed(mailbox)

    async def _wait_processed(
        self,
        mailbox: MailboxId,
        *,
        link: RelayLink | None = None,
        heads: dict[MailboxId, int] | None = None,
    ) -> None:
        """Wait until one mailbox is processed up to its head when watched (see wait_synced).

        `link` and `heads`: a further relay's, for its mailboxes (the first relay's else).
        """
        link = self.link if link is None else link
        head = (self._heads if heads is None else heads).get(mailbox, 0)
        while self._processed(mailbox) < head and link.cursor(mailbox) is not None:
            # The head counts envelopes that expired, and those are never delivered: waiting
            # for the cursor to reach it waited forever once the newest envelopes of a
            # mailbox had expired, so every CLI command failed with "could not catch up"
            # (tests/client/test_expiry.py). Ask the relay for the next envelope it still
            # holds, and wait for that one.
            try:
                page = await link.request(
                    Fetch(id=0, mailbox=mailbox, after=self._processed(mailbox), limit=1)
                )
            except RelayRefusedError:  # no longer readable (keys rotated): nothing to wait for
                return
            due = (
                [item.seq for item in page.items if item.seq <= head]
                if isinstance(page, Page)
                else []
            )
            if not due:
                return
            with trio.move_on_after(SYNC_RECHECK):
                while self._processed(mailbox) < due[0]:
                    await self._progress.wait()

    def _processed(self, mailbox: MailboxId) -> int:
        """The seq up to which one of this cell's mailboxes was processed (and saved)."""
        record = self.record
        if mailbox == record.group_mailbox:
            return record.group_cursor
        if mailbox == record.control_mailbox:
            return record.control_cursor
        for further in self.further:
            if mailbox == further.record.group_mailbox:
                return further.record.group_cursor
            if mailbox == further.record.control_mailbox:
                return further.record.control_cursor
        invite = next((i for i in record.invites if i.join_mailbox == mailbox), None)
        return invite.cursor if invite is not None else 2**63

    def _advanced(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    def mailboxes(self) -> list[MailboxId]:
        """The mailboxes this cell's deliveries come from (not an admin's join mailboxes)."""
        further = [
            m for f in self.further for m in (f.record.group_mailbox, f.record.control_mailbox)
        ]
        return [self.record.group_mailbox, self.record.control_mailbox, *further]

    # -- upkeep in the background -----------------------------------------------------------

    @property
    def upkeep_due(self) -> bool:
        """Whether `upkeep` has work: envelopes to fetch again, a retired mailbox to read."""
        if self._upkeeping:
            return False
        return self._refetch.due or self._moves.due or any(r.drained for r in self.record.retired)

    async def upkeep(self) -> None:
        """Do background work (the client runs it after deliveries and every minute).

        Fetches again the envelopes the parking buffer had no room for, reads retired
        group mailboxes to their end and forgets them (an admin deletes them on the
        relay once nobody needs them). It waits for the relay, so it never runs in
        a delivery handler, which would hold up every other delivery.
        """
        if self._upkeeping:  # the client starts it after bursts and every minute: once at a time
            return
        self._upkeeping = True
        try:
            await self.wait_ready()
            await self._refetch.fetch_again()
            await self._moves.drain()
            await self._forget_retired()
        finally:
            self._upkeeping = False

    async def _forget_retired(self) -> None:
        """Forget the retired mailboxes read to their end (an admin deletes them first)."""
        record = self.record
        if any(r.drained for r in record.retired):
            record.retired = [r for r in record.retired if not r.drained]
            await self._save()

    # -- hooks for the admin's duties (`Cell`, client/_cell_admin.py) ------------------------

    async def _take_up_admin_duties(self) -> None:
        """Start what an admin does besides being a member: at start, and when promoted."""

    def _note_joined(self, sender: MemberInfo) -> None:
        """A member's message was opened; an admin releases the invite it joined with."""
