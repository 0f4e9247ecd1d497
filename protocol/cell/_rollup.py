"""The live roll-up of each alert: who is responding, who is on scene, whether it is over.

Theory of operation. A `RollupBook` takes the alerts and status replies a client decrypts,
as events `(sender id, sender name, content, received_at)`, and keeps per alert the latest
status of each member (docs/protocol.md §C2). Events arrive in any order: the relay
delivers in order per mailbox, but a client may catch up on several relays, and the group
layer may hold back an alert until its author's sender key arrives while replies to it
already decrypt. So the book is built to depend on the *set* of events it was given, not
on their order:

* Claimed times are clamped: a content's `sent_at_ms` counts as at most its receipt
  time plus `CLAIM_TOLERANCE` (docs/protocol.md §C2), so that a member claiming a time
  far in the future (up to 2^63-1 fits the field) cannot make its word outlast everyone
  else's or sort its alert first for good. An honest sender stamps the relay's time, which
  the receiver's clocks also see, so the clamp never touches its claims.
* A member's status for an alert is the greatest of the statuses it sent, by
  `(sent_at_ms, rank, message_id, encoding)`: the sender's (clamped) clock first; within the same
  millisecond the further-along status (responding < on scene < resolved < false alarm);
  then bytes, so that even two different replies under one id (a buggy or hostile sender)
  resolve the same way everywhere. Copies of the winning reply keep the earliest
  `(received_at, name)`.
* Two different alerts under one id (only a bug or a hostile member makes them: ids are
  128 random bits) resolve to the least by `(sent_at_ms, author id, encoding, received_at,
  name)`: the first one sent, usually the genuine one. The replies stay attached.
* A reply whose alert has not arrived waits in a pending pool and is attached when it
  does.
* Who may close an alert is a rule of the protocol (docs/protocol.md §C2, "Closing"),
  applied by every client alike: the alert's *author* and the cell's *admins* decide
  (their latest word among them: RESOLVED or FALSE_ALARM closes, a later RESPONDING or
  ON_SCENE reopens); any other member's RESOLVED or FALSE_ALARM is a *vote*, and
  `CLOSE_VOTES` votes from different members, later than the deciders' last word, close
  it. One member alone can therefore never close another member's alert. An alert is
  *active* until it expires or is closed. The admins are the reader's current ones
  (`set_admins`), the same for every member in the same epoch.

* Verification (docs/protocol.md §C2 rule 7): every alert is a *report*; verification
  steps (`VerificationStep`, kind 17) are kept per alert and replayed through `TRANSITIONS`
  in key order, counting only those from the reader's current verifiers (the admins and
  `set_verifiers`, the dispatchers), so the state (`ReportState`) depends on the set of
  steps and the current roles, never on arrival order. A false alarm or resolved report
  is closed whatever the votes say, and verifiers decide under the close rule too.
* Escalation (docs/protocol.md §C10): a liaison's `EscalationNote`s (kind 18) on an alert
  are kept per (sender, label), the greatest by `(sent_at_ms, message_id, encoding)`, like
  statuses; the roll-up lists those from the reader's current escalators (admins,
  dispatchers and `set_liaisons`) and counts the others as refused. An alert's
  `from_label` is shown (`escalated_from`) only when its author is an escalator.

Memory is bounded, because every event comes from some member and one member may be
hostile: at most `MAX_ALERTS` alerts and `MAX_ALERTS_PER_MEMBER` per author,
`MAX_RESPONDERS` statuses per alert (one per member, so a single member cannot grow it),
`MAX_PENDING` waiting replies in all and `MAX_PENDING_PER_MEMBER` per member. What does
not fit is dropped and counted in `dropped`; past the bounds the result may depend on
order (which events were dropped). Alerts are evicted so that a member can only ever
push out its own: an author over its share loses its own alert least worth keeping
(closed before active, then the soonest to expire, possibly the newcomer), and when the
book is full the author holding most alerts does. A member holding fewer alerts than
another therefore keeps every one of them however much the other sends.

Time is an input: `received_at` and `now` are unix seconds (float) from the caller's
clock; `prune(now)` drops expired alerts with their statuses and replies that waited
longer than `PENDING_HORIZON`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from ._content import (
    Alert,
    EscalationNote,
    MemberId,
    MessageId,
    Priority,
    Status,
    StatusReply,
    Step,
    VerificationStep,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._content import Burn, Content, Leave

__all__ = [
    "CLAIM_TOLERANCE",
    "CLOSE_VOTES",
    "MAX_ALERTS",
    "MAX_ALERTS_PER_MEMBER",
    "MAX_NOTES",
    "MAX_NOTES_PER_MEMBER",
    "MAX_PENDING",
    "MAX_PENDING_PER_MEMBER",
    "MAX_RESPONDERS",
    "MAX_STEPS",
    "MAX_STEPS_PER_MEMBER",
    "PENDING_HORIZON",
    "TRANSITIONS",
    "AlertRollup",
    "EscalationSummary",
    "MemberStatus",
    "ReportState",
    "RollupBook",
    "VerificationRecord",
]

# A cell has a handful of live alerts at a time; 512 is far beyond a real night and keeps
# a flood from one hostile member to about 5 MB (an alert is at most ~9 KB encoded).
MAX_ALERTS: Final = 512
# One author's share: a dispatcher on a very busy night stays far below it, and four
# hostile members together cannot fill the book.
MAX_ALERTS_PER_MEMBER: Final = MAX_ALERTS // 4
# One status per member per alert, so this is a cell size: ten times the 100-member cells
# the issue benchmarks. A status holds at most ~2.3 KB (a 500-char note, a 64-char name).
MAX_RESPONDERS: Final = 1_024
# Replies waiting for their alert: a normal backlog holds a few; these bound a member who
# replies to alerts that do not exist (1,024 x ~2.3 KB = ~2.4 MB at most).
MAX_PENDING: Final = 1_024
MAX_PENDING_PER_MEMBER: Final = 64
# How long a reply waits for its alert: the relay's default maximum envelope TTL (7 days,
# relay/_config.py). An alert that has not come by then is not coming.
PENDING_HORIZON: Final = 7 * 86_400.0

# How far past its receipt a claimed sent_at_ms may lie (seconds): delivery and the error
# of the clock offset measured in the relay's welcome, with room to spare (docs/protocol.md
# §C2). The receipt time is the receiver's later clock (client/_cell_member.py).
CLAIM_TOLERANCE: Final = 300.0
# Votes from members other than the author and the admins that close an alert together.
CLOSE_VOTES: Final = 2
_CLOSING: Final = frozenset({Status.RESOLVED, Status.FALSE_ALARM})

# A verifier's steps kept per alert: a report is taken, confirmed and resolved by one or
# two dispatchers, so 64 steps is far beyond a real night; a hostile verifier can fill
# only its own share of 16 (what does not fit is dropped and counted, as for statuses).
MAX_STEPS: Final = 64
MAX_STEPS_PER_MEMBER: Final = 16
# Escalation notes kept per alert, one per (liaison, neighbouring cell): a cell has a few
# neighbours and liaisons; a hostile escalator fills only its own share.
MAX_NOTES: Final = 16
MAX_NOTES_PER_MEMBER: Final = 4


class ReportState(StrEnum):
    """Where an alert stands: reported by anyone, then verified by a dispatcher (§C2)."""

    REPORTED = "reported"
    VERIFYING = "verifying"
    CONFIRMED = "confirmed"
    FALSE_ALARM = "false_alarm"
    RESOLVED = "resolved"


# The verification state machine (docs/protocol.md §C2 rule 7, "Verification"): which step each
# state accepts. A step that is not listed is ignored (and counted as not applied): a
# dispatcher may skip "verifying", correct a confirmation into a false alarm or the
# reverse, and close either; a resolved alert stays resolved (a new report is a new alert).
TRANSITIONS: Final[Mapping[ReportState, frozenset[ReportState]]] = MappingProxyType({
    ReportState.REPORTED: frozenset(
        {ReportState.VERIFYING, ReportState.CONFIRMED, ReportState.FALSE_ALARM}
    ),
    ReportState.VERIFYING: frozenset({ReportState.CONFIRMED, ReportState.FALSE_ALARM}),
    ReportState.CONFIRMED: frozenset({ReportState.FALSE_ALARM, ReportState.RESOLVED}),
    ReportState.FALSE_ALARM: frozenset({ReportState.CONFIRMED, ReportState.RESOLVED}),
    ReportState.RESOLVED: frozenset(),
})  # fmt: skip
# Within one millisecond the step further along sorts later.
_STEP_RANK: Final = {Step.VERIFYING: 0, Step.CONFIRMED: 1, Step.FALSE_ALARM: 2, Step.RESOLVED: 3}

# Within one millisecond, the status further along wins.
_RANK: Final = {Status.RESPONDING: 0, Status.ON_SCENE: 1, Status.RESOLVED: 2, Status.FALSE_ALARM: 3}
_PRIORITY_RANK: Final = {Priority.EMERGENCY: 0, Priority.URGENT: 1, Priority.INFO: 2}


@dataclass(frozen=True, slots=True, kw_only=True)
class MemberStatus:
    """One member's latest answer to an alert."""

    member_id: MemberId
    name: str = field(repr=False)
    status: Status
    note: str | None = field(repr=False)
    sent_at_ms: int  # by the member's clock, clamped to received_at + CLAIM_TOLERANCE
    received_at: float  # by ours: the first copy of this reply that arrived
    message_id: MessageId


@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationRecord:
    """One verifier's step that moved an alert's verification state: who, to what, when."""

    member_id: MemberId
    name: str = field(repr=False)
    state: ReportState
    note: str | None = field(repr=False)
    sent_at_ms: int  # by the verifier's clock, clamped to received_at + CLAIM_TOLERANCE
    received_at: float
    message_id: MessageId


@dataclass(frozen=True, slots=True, kw_only=True)
class EscalationSummary:
    """A liaison's latest word on an alert it escalated: to which cell, how it fares there."""

    member_id: MemberId  # the liaison
    name: str = field(repr=False)
    label: str = field(repr=False)  # the neighbouring cell, as the liaison names it
    responding: int  # the neighbour's members on their way
    on_scene: int
    outcome: Status | None  # the neighbour closed it: RESOLVED or FALSE_ALARM
    sent_at_ms: int  # by the liaison's clock, clamped to received_at + CLAIM_TOLERANCE
    received_at: float
    message_id: MessageId


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRollup:
    """A snapshot of one alert and everyone's latest status for it."""

    alert: Alert
    author_id: MemberId
    author_name: str = field(repr=False)
    received_at: float
    responders: Mapping[MemberId, MemberStatus]  # latest per member, in member id order
    sent_at_ms: int = 0  # the alert's claimed send time, clamped (CLAIM_TOLERANCE)
    outcome: Status | None = None  # RESOLVED or FALSE_ALARM once closed (the close rule)
    votes: int = 0  # members' votes to close that count now (CLOSE_VOTES close it)
    verification: ReportState = ReportState.REPORTED
    # The steps that made `verification`, in the order applied; the last one set it.
    steps: tuple[VerificationRecord, ...] = ()
    refused_steps: int = 0  # steps held from members who may not verify, or out of order
    # The escalators' latest notes (to which neighbouring cells it went, how it fares there),
    # by label then liaison; notes from anyone else are counted, not listed.
    escalations: tuple[EscalationSummary, ...] = ()
    refused_notes: int = 0
    # The author's label for the cell this alert was escalated from, when the author is an
    # escalator (admin, dispatcher or liaison) here; None otherwise, or for a local alert.
    escalated_from: str | None = field(default=None, repr=False)

    @property
    def verified_by(self) -> VerificationRecord | None:
        """The step that set the current verification state (None while only reported)."""
        return self.steps[-1] if self.steps else None

    @property
    def confirmed(self) -> bool:
        """Whether a verifier confirmed the alert (and nobody has closed it since)."""
        return self.verification is ReportState.CONFIRMED

    @property
    def unverified(self) -> bool:
        """Whether no verifier has said yet whether the report is real (reported, verifying)."""
        return self.verification in (ReportState.REPORTED, ReportState.VERIFYING)

    @property
    def alert_id(self) -> MessageId:
        """The alert's id."""
        return self.alert.alert_id

    def _with(self, status: Status) -> frozenset[MemberId]:
        return frozenset(m for m, s in self.responders.items() if s.status is status)

    @property
    def responding(self) -> frozenset[MemberId]:
        """Members whose latest status is RESPONDING (on their way)."""
        return self._with(Status.RESPONDING)

    @property
    def on_scene(self) -> frozenset[MemberId]:
        """Members whose latest status is ON_SCENE."""
        return self._with(Status.ON_SCENE)

    @property
    def resolved_by(self) -> frozenset[MemberId]:
        """Members whose latest status is RESOLVED."""
        return self._with(Status.RESOLVED)

    @property
    def false_alarm_by(self) -> frozenset[MemberId]:
        """Members whose latest status is FALSE_ALARM."""
        return self._with(Status.FALSE_ALARM)

    @property
    def resolved(self) -> bool:
        """Whether the alert was closed as resolved (by the close rule: module docstring)."""
        return self.outcome is Status.RESOLVED

    @property
    def false_alarm(self) -> bool:
        """Whether the alert was closed as a false alarm (by the close rule)."""
        return self.outcome is Status.FALSE_ALARM

    @property
    def closed(self) -> bool:
        """Whether the alert is resolved or a false alarm."""
        return self.outcome is not None

    @property
    def last_update_ms(self) -> int:
        """The latest (clamped) send time among the alert and the current statuses (unix ms)."""
        return max([self.sent_at_ms, *(s.sent_at_ms for s in self.responders.values())])

    def is_active(self, now: float) -> bool:
        """Whether the alert is unexpired at `now` (unix seconds) and not closed."""
        return now < self.alert.expires_at and not self.closed


# A status's precedence: greater wins. See the module docstring.
_StatusKey = tuple[int, int, bytes, bytes]
# An alert's precedence: lesser wins.
_AlertKey = tuple[int, bytes, bytes, float, str]


@dataclass(slots=True)
class _Held:
    key: _StatusKey
    status: MemberStatus

    def beaten_by(self, other: _Held) -> bool:
        if other.key != self.key:
            return other.key > self.key
        # The same reply again: keep the first arrival (and, for exact ties, the least name).
        return (other.status.received_at, other.status.name) < (
            self.status.received_at,
            self.status.name,
        )


@dataclass(slots=True)
class _StepHeld:
    key: _StatusKey
    record: VerificationRecord


@dataclass(slots=True)
class _NoteHeld:
    key: tuple[int, MessageId, bytes]
    summary: EscalationSummary

    def beaten_by(self, other: _NoteHeld) -> bool:
        if other.key != self.key:
            return other.key > self.key
        return (other.summary.received_at, other.summary.name) < (
            self.summary.received_at,
            self.summary.name,
        )


_NoteSlot = tuple[MemberId, str]


@dataclass(slots=True)
class _Entry:
    key: _AlertKey
    alert: Alert
    author_id: MemberId
    author_name: str
    received_at: float
    held: dict[MemberId, _Held]
    snapshot: AlertRollup | None = None
    steps: dict[tuple[MessageId, bytes], _StepHeld] = field(default_factory=dict)
    notes: dict[_NoteSlot, _NoteHeld] = field(default_factory=dict)

    def rollup(
        self,
        admins: frozenset[bytes] = frozenset(),
        verifiers: frozenset[bytes] = frozenset(),
        liaisons: frozenset[bytes] = frozenset(),
    ) -> AlertRollup:
        if self.snapshot is None:
            responders = {m: self.held[m].status for m in sorted(self.held)}
            state, applied, refused = self.verification(admins | verifiers)
            outcome, votes = self.outcome(admins | verifiers)
            if state is ReportState.FALSE_ALARM:
                outcome, votes = Status.FALSE_ALARM, 0
            elif state is ReportState.RESOLVED:
                outcome, votes = Status.RESOLVED, 0
            escalators = admins | verifiers | liaisons
            notes = [self.notes[s].summary for s in sorted(self.notes, key=lambda s: (s[1], s[0]))]
            listed = tuple(n for n in notes if n.member_id in escalators)
            self.snapshot = AlertRollup(
                alert=self.alert,
                author_id=self.author_id,
                author_name=self.author_name,
                received_at=self.received_at,
                responders=MappingProxyType(responders),
                sent_at_ms=self.key[0],
                outcome=outcome,
                votes=votes,
                verification=state,
                steps=applied,
                refused_steps=refused,
                escalations=listed,
                refused_notes=len(notes) - len(listed),
                escalated_from=self.alert.from_label if self.author_id in escalators else None,
            )
        return self.snapshot

    def verification(
        self, verifiers: frozenset[bytes]
    ) -> tuple[ReportState, tuple[VerificationRecord, ...], int]:
        """The verification state machine (TRANSITIONS) run over the verifiers' steps.

        The steps are replayed in the order of their keys (clamped send time, rank, id,
        encoding), which depends only on the set of steps held, never on arrival order;
        a step from someone who is not a verifier now, or one the state does not accept
        when its turn comes, is not applied (counted in the third value).
        """
        state, applied, refused = ReportState.REPORTED, [], 0
        for step in sorted(self.steps.values(), key=lambda h: h.key):
            target = ReportState(step.record.state)
            if step.record.member_id in verifiers and target in TRANSITIONS[state]:
                state = target
                applied.append(step.record)
            else:
                refused += 1
        return state, tuple(applied), refused

    def outcome(self, admins: frozenset[bytes]) -> tuple[Status | None, int]:
        """The close rule (module docstring): RESOLVED, FALSE_ALARM or None (open), and the
        votes that count now (0 when a decider closed it)."""
        deciders = [h for m, h in self.held.items() if m == self.author_id or m in admins]
        last = max(deciders, key=lambda h: h.key, default=None)
        if last is not None and last.status.status in _CLOSING:
            return last.status.status, 0
        votes = [
            h.status.status
            for m, h in self.held.items()
            if h.status.status in _CLOSING
            and m != self.author_id
            and m not in admins
            and (last is None or h.key > last.key)
        ]
        if len(votes) < CLOSE_VOTES:
            return None, len(votes)
        false_alarms = votes.count(Status.FALSE_ALARM)
        if false_alarms > len(votes) - false_alarms:
            return Status.FALSE_ALARM, len(votes)
        return Status.RESOLVED, len(votes)

    def eviction_key(self) -> tuple[bool, int, bytes]:
        # Least worth keeping first: closed ones, then the soonest to expire. (The snapshot
        # carries the book's current admins: every path that reads it set them.)
        return (not self.rollup().closed, self.alert.expires_at, self.alert.alert_id)


class RollupBook:
    """The roll-ups of a cell's alerts, fed with decrypted contents in any order."""

    def __init__(
        self,
        *,
        max_alerts: int = MAX_ALERTS,
        max_alerts_per_member: int = MAX_ALERTS_PER_MEMBER,
        max_responders: int = MAX_RESPONDERS,
        max_pending: int = MAX_PENDING,
        max_pending_per_member: int = MAX_PENDING_PER_MEMBER,
        pending_horizon: float = PENDING_HORIZON,
    ) -> None:
        self._max_alerts = max_alerts
        self._max_alerts_per_member = max_alerts_per_member
        self._max_responders = max_responders
        self._max_pending = max_pending
        self._max_pending_per_member = max_pending_per_member
        self._pending_horizon = pending_horizon
        self._admins: frozenset[bytes] = frozenset()  # set_admins
        self._verifiers: frozenset[bytes] = frozenset()  # set_verifiers
        self._liaisons: frozenset[bytes] = frozenset()  # set_liaisons
        # Escalation notes waiting for their alert (sharing the pending bounds).
        self._pending_notes: dict[MessageId, dict[_NoteSlot, _NoteHeld]] = {}
        # ReportState steps waiting for their alert, by alert id (sharing the pending bounds).
        self._pending_steps: dict[MessageId, dict[tuple[MessageId, bytes], _StepHeld]] = {}
        self._entries: dict[MessageId, _Entry] = {}
        self._by_author: dict[MemberId, int] = {}  # alerts held per author
        # Replies waiting for their alert, by alert id then member.
        self._pending: dict[MessageId, dict[MemberId, _Held]] = {}
        self._pending_total = 0
        self._pending_by_member: dict[MemberId, int] = {}
        self.dropped = 0
        """Events refused because a bound was reached (not duplicates or superseded ones)."""

    def __len__(self) -> int:
        """Return the number of alerts held."""
        return len(self._entries)

    def set_admins(self, admins: frozenset[bytes]) -> None:
        """Set who decides alongside each alert's author (the cell's current admins)."""
        admins = frozenset(admins)
        if admins != self._admins:
            self._admins = admins
            for entry in self._entries.values():
                entry.snapshot = None

    def set_verifiers(self, verifiers: frozenset[bytes]) -> None:
        """Set who may verify, besides the admins (the cell's current dispatchers).

        Verifiers also decide alongside each alert's author under the close rule.
        """
        verifiers = frozenset(verifiers)
        if verifiers != self._verifiers:
            self._verifiers = verifiers
            for entry in self._entries.values():
                entry.snapshot = None

    def set_liaisons(self, liaisons: frozenset[bytes]) -> None:
        """Set who may escalate, besides the admins and dispatchers (the cell's liaisons)."""
        liaisons = frozenset(liaisons)
        if liaisons != self._liaisons:
            self._liaisons = liaisons
            for entry in self._entries.values():
                entry.snapshot = None

    @property
    def pending(self) -> int:
        """The number of replies waiting for their alert."""
        return self._pending_total

    def add(
        self,
        sender_id: MemberId,
        sender_name: str,
        content: Content | Leave | Burn,
        received_at: float,
    ) -> AlertRollup | None:
        """Take one decrypted content from a member; return the alert's new roll-up if it changed.

        Alerts, status replies and verification steps are used; other contents are ignored
        (None). A reply or step whose alert has not arrived is kept (None now; it counts
        once the alert comes).

        Raises:
            ValueError: `received_at` is not a finite number.
        """
        if not math.isfinite(received_at):
            raise ValueError("received_at must be a finite unix time")
        if isinstance(content, Alert):
            return self._add_alert(sender_id, sender_name, content, received_at)
        if isinstance(content, StatusReply):
            return self._add_status(sender_id, sender_name, content, received_at)
        if isinstance(content, VerificationStep):
            return self._add_step(sender_id, sender_name, content, received_at)
        if isinstance(content, EscalationNote):
            return self._add_note(sender_id, sender_name, content, received_at)
        return None

    def rollup(self, alert_id: bytes) -> AlertRollup | None:
        """Return the roll-up of the alert `alert_id`, or None if the book does not hold it."""
        entry = self._entries.get(MessageId(alert_id))
        return (
            None if entry is None else entry.rollup(self._admins, self._verifiers, self._liaisons)
        )

    def all(self) -> list[AlertRollup]:
        """Return the roll-ups of every alert held, expired and closed ones included."""
        return [
            e.rollup(self._admins, self._verifiers, self._liaisons) for e in self._entries.values()
        ]

    def active(self, now: float) -> list[AlertRollup]:
        """Return the alerts unexpired at `now` and not closed: most urgent, then newest, first."""
        live = [
            e.rollup(self._admins, self._verifiers, self._liaisons) for e in self._entries.values()
        ]
        live = [r for r in live if r.is_active(now)]
        live.sort(key=lambda r: (_PRIORITY_RANK[r.alert.priority], -r.sent_at_ms, r.alert_id))
        return live

    def prune(self, now: float) -> int:
        """Drop alerts expired at `now` with their statuses, and stale pending replies.

        Returns the number of alerts dropped.
        """
        expired = [a for a, e in self._entries.items() if e.alert.expires_at <= now]
        for alert_id in expired:
            self._drop(self._entries[alert_id])
        cutoff = now - self._pending_horizon
        for alert_id in list(self._pending):
            waiting = self._pending[alert_id]
            for member in [m for m, h in waiting.items() if h.status.received_at <= cutoff]:
                del waiting[member]
                self._forget_pending(member)
            if not waiting:
                del self._pending[alert_id]
        for alert_id in list(self._pending_steps):
            steps = self._pending_steps[alert_id]
            for key in [k for k, h in steps.items() if h.record.received_at <= cutoff]:
                self._forget_pending(steps.pop(key).record.member_id)
            if not steps:
                del self._pending_steps[alert_id]
        for alert_id in list(self._pending_notes):
            notes = self._pending_notes[alert_id]
            for slot in [s for s, h in notes.items() if h.summary.received_at <= cutoff]:
                del notes[slot]
                self._forget_pending(slot[0])
            if not notes:
                del self._pending_notes[alert_id]
        return len(expired)

    # -- internals ----------------------------------------------------------------------

    def _add_alert(
        self, author_id: MemberId, author_name: str, alert: Alert, received_at: float
    ) -> AlertRollup | None:
        sent_at_ms = _clamp(alert.sent_at_ms, received_at)
        key: _AlertKey = (sent_at_ms, author_id, alert.encode(), received_at, author_name)
        entry = self._entries.get(alert.alert_id)
        if entry is not None:
            if key >= entry.key:
                return None  # a copy, or a later claim to the same id: the first stands
            self._count(entry.author_id, -1)
            self._count(author_id, +1)
            entry.key, entry.alert, entry.author_id = key, alert, author_id
            entry.author_name, entry.received_at, entry.snapshot = author_name, received_at, None
            return (
                entry.rollup(self._admins, self._verifiers, self._liaisons)
                if self._evict(author_id) is not entry
                else None
            )
        entry = _Entry(key, alert, author_id, author_name, received_at, {})
        self._entries[alert.alert_id] = entry
        self._count(author_id, +1)
        for member, held in self._pending.pop(alert.alert_id, {}).items():
            self._forget_pending(member)
            if len(entry.held) < self._max_responders:
                entry.held[member] = held
            else:  # only with max_responders below the pending bounds
                self.dropped += 1
        for step_key, step in self._pending_steps.pop(alert.alert_id, {}).items():
            self._forget_pending(step.record.member_id)
            if self._step_fits(entry, step.record.member_id):
                entry.steps[step_key] = step
            else:
                self.dropped += 1
        for slot, note in self._pending_notes.pop(alert.alert_id, {}).items():
            self._forget_pending(slot[0])
            if self._note_fits(entry, slot):
                entry.notes[slot] = note
            else:
                self.dropped += 1
        return (
            entry.rollup(self._admins, self._verifiers, self._liaisons)
            if self._evict(author_id) is not entry
            else None
        )

    def _evict(self, author_id: MemberId) -> _Entry | None:
        """Keep the alert bounds after `author_id` gained an alert; return what was dropped.

        The author over its share pays, else (the book full) the author holding most,
        preferring the newcomer's author among those tied: nobody pays for another.
        """
        held = self._by_author
        if held[author_id] > self._max_alerts_per_member:
            payer = author_id
        elif len(self._entries) > self._max_alerts:
            most = max(held.values())
            payer = (
                author_id
                if held[author_id] == most
                else min(a for a, n in held.items() if n == most)
            )
        else:
            return None
        for entry in self._entries.values():
            entry.rollup(
                self._admins, self._verifiers, self._liaisons
            )  # eviction_key reads the snapshot
        victim = min(
            (e for e in self._entries.values() if e.author_id == payer),
            key=_Entry.eviction_key,
        )
        self._drop(victim)
        self.dropped += 1
        return victim

    def _drop(self, entry: _Entry) -> None:
        del self._entries[entry.alert.alert_id]
        self._count(entry.author_id, -1)

    def _count(self, author_id: MemberId, change: int) -> None:
        left = self._by_author.get(author_id, 0) + change
        if left:
            self._by_author[author_id] = left
        else:
            del self._by_author[author_id]

    def _add_status(
        self, member: MemberId, name: str, reply: StatusReply, received_at: float
    ) -> AlertRollup | None:
        sent_at_ms = _clamp(reply.sent_at_ms, received_at)
        held = _Held(
            key=(sent_at_ms, _RANK[reply.status], reply.message_id, reply.encode()),
            status=MemberStatus(
                member_id=member,
                name=name,
                status=reply.status,
                note=reply.note,
                sent_at_ms=sent_at_ms,
                received_at=received_at,
                message_id=reply.message_id,
            ),
        )
        entry = self._entries.get(reply.alert_id)
        if entry is not None:
            current = entry.held.get(member)
            if current is None and len(entry.held) >= self._max_responders:
                self.dropped += 1
                return None
            if current is not None and not current.beaten_by(held):
                return None
            entry.held[member] = held
            entry.snapshot = None
            return entry.rollup(self._admins, self._verifiers, self._liaisons)
        waiting = self._pending.get(reply.alert_id)
        current = None if waiting is None else waiting.get(member)
        if current is not None:
            if current.beaten_by(held):
                current.key, current.status = held.key, held.status
            return None
        if self._take_pending_slot(member):
            self._pending.setdefault(reply.alert_id, {})[member] = held
        return None

    def _take_pending_slot(self, member: MemberId) -> bool:
        """Count one more held-before-its-alert item of `member`, if the bounds allow it.

        Replies and verification steps share the bounds (in total and per member); one
        that does not fit is dropped and counted in `dropped`.
        """
        if (
            self._pending_total >= self._max_pending
            or self._pending_by_member.get(member, 0) >= self._max_pending_per_member
        ):
            self.dropped += 1
            return False
        self._pending_total += 1
        self._pending_by_member[member] = self._pending_by_member.get(member, 0) + 1
        return True

    def _add_step(
        self, member: MemberId, name: str, step: VerificationStep, received_at: float
    ) -> AlertRollup | None:
        sent_at_ms = _clamp(step.sent_at_ms, received_at)
        encoding = step.encode()
        held = _StepHeld(
            key=(sent_at_ms, _STEP_RANK[step.step], step.message_id, encoding),
            record=VerificationRecord(
                member_id=member,
                name=name,
                state=ReportState(step.step.value),
                note=step.note,
                sent_at_ms=sent_at_ms,
                received_at=received_at,
                message_id=step.message_id,
            ),
        )
        step_key = (step.message_id, encoding)
        entry = self._entries.get(step.alert_id)
        if entry is not None:
            if step_key in entry.steps:
                return None  # a copy (the first arrival stands)
            if not self._step_fits(entry, member):
                self.dropped += 1
                return None
            entry.steps[step_key] = held
            entry.snapshot = None
            return entry.rollup(self._admins, self._verifiers, self._liaisons)
        waiting = self._pending_steps.get(step.alert_id)
        if waiting is not None and step_key in waiting:
            return None
        if self._take_pending_slot(member):
            self._pending_steps.setdefault(step.alert_id, {})[step_key] = held
        return None

    @staticmethod
    def _step_fits(entry: _Entry, member: MemberId) -> bool:
        if len(entry.steps) >= MAX_STEPS:
            return False
        return (
            sum(h.record.member_id == member for h in entry.steps.values()) < MAX_STEPS_PER_MEMBER
        )

    def _add_note(
        self, member: MemberId, name: str, note: EscalationNote, received_at: float
    ) -> AlertRollup | None:
        sent_at_ms = _clamp(note.sent_at_ms, received_at)
        held = _NoteHeld(
            key=(sent_at_ms, note.message_id, note.encode()),
            summary=EscalationSummary(
                member_id=member,
                name=name,
                label=note.label,
                responding=note.responding,
                on_scene=note.on_scene,
                outcome=note.outcome,
                sent_at_ms=sent_at_ms,
                received_at=received_at,
                message_id=note.message_id,
            ),
        )
        slot: _NoteSlot = (member, note.label)
        entry = self._entries.get(note.alert_id)
        if entry is not None:
            current = entry.notes.get(slot)
            if current is None and not self._note_fits(entry, slot):
                self.dropped += 1
                return None
            if current is not None and not current.beaten_by(held):
                return None
            entry.notes[slot] = held
            entry.snapshot = None
            return entry.rollup(self._admins, self._verifiers, self._liaisons)
        waiting = self._pending_notes.get(note.alert_id)
        current = None if waiting is None else waiting.get(slot)
        if current is not None:
            if current.beaten_by(held):
                current.key, current.summary = held.key, held.summary
            return None
        if self._take_pending_slot(member):
            self._pending_notes.setdefault(note.alert_id, {})[slot] = held
        return None

    @staticmethod
    def _note_fits(entry: _Entry, slot: _NoteSlot) -> bool:
        if slot in entry.notes:
            return True
        if len(entry.notes) >= MAX_NOTES:
            return False
        return sum(s[0] == slot[0] for s in entry.notes) < MAX_NOTES_PER_MEMBER

    def _forget_pending(self, member: MemberId) -> None:
        self._pending_total -= 1
        left = self._pending_by_member[member] - 1
        if left:
            self._pending_by_member[member] = left
        else:
            del self._pending_by_member[member]


def _clamp(sent_at_ms: int, received_at: float) -> int:
    """A claimed send time, at most CLAIM_TOLERANCE past its receipt (module docstring)."""
    return min(sent_at_ms, int((received_at + CLAIM_TOLERANCE) * 1000))
