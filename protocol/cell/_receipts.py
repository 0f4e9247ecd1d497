"""Receipts at scale: who reports on an alert, when reports are sent, how the sender counts.

Theory of operation (docs/protocol.md §C1.7, docs/design.md "Receipts at scale")
---------------------------------------------------------------------------------

The relay has one way to reach members: the group mailbox, which every member reads. A
receipt per member per alert is N messages per alert, each fanned out to N members: with
1,000 members, 1,000 messages and a million deliveries to say "it arrived". So receipts
are *sampled* and *batched*, with the `Receipt` content (kind 3) as it is:

* **Sampled.** For each alert, `reporters` picks the `sample` members (32 by default) whose
  BLAKE2b(person "cellrelay-sample", key alert id, member id) is lowest, leaving out the
  alert's sender: a pure function of public values, so every member knows whether it
  reports and the sender knows exactly whom it heard from and whom not. The choice is a
  different random-looking subset for each alert, so no member reports on every alert,
  and a member cannot choose to be in the sample (the alert id is the sender's random
  choice). With `sample` or fewer other members, everyone reports and counts are exact.
* **Batched.** A reporter does not answer at once: `ReceiptBatch` collects what it has to
  say (delivered, read) and is due `delay` plus a random part of `jitter` seconds after
  its first item, so a reporter sends at most two receipts (one per state) per window,
  however many alerts came, and the sample does not answer in one burst. A read alert
  is reported as read only (read implies delivered).
* **Counted.** `ReceiptTally` keeps, for each of this member's own alerts, which reporters
  said delivered and which said read; receipts from members outside the sample are not
  counted (a member who is not asked cannot skew the estimate). `ReceiptCounts` gives the
  exact numbers for the sample and the estimate for the whole cell, delivered/sampled
  times the members.

Nothing here is secret and nothing is authenticated beyond what the group layer already
did (a receipt is a signed group message); a member can lie about itself, as before.
Pure functions and small state machines: time and randomness come in as arguments.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from .._crypto import blake2b
from ._content import MAX_RECEIPT_IDS, MessageId, ReceiptState

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "BATCH_DELAY",
    "BATCH_JITTER",
    "RECEIPT_SAMPLE",
    "ReceiptBatch",
    "ReceiptCounts",
    "ReceiptTally",
    "reporters",
]

# How many members report on one alert. The estimate of a share from a simple random
# sample of 32 has a standard error of at most 9 points (sqrt(0.25 / 32)): enough to tell
# "most got it" from "few did", which is what a dispatcher decides on; the exact list of
# who read what is not something a cell of 1,000 should fan out to 1,000 phones.
RECEIPT_SAMPLE: Final = 32
# Seconds a reporter waits after its first pending item, plus up to BATCH_JITTER more, so
# that 32 reporters do not answer in the same second and a burst of alerts shares one
# receipt. A dispatcher sees the first counts within half a minute.
BATCH_DELAY: Final = 5.0
BATCH_JITTER: Final = 10.0
_PERSON: Final = b"cellrelay-sample"  # 16 bytes: BLAKE2b personalisation


def _rank(alert_id: bytes, member_id: bytes) -> bytes:
    return blake2b(member_id, size=16, key=alert_id, person=_PERSON)


def reporters(
    alert_id: bytes,
    sender_id: bytes,
    member_ids: Iterable[bytes],
    *,
    sample: int = RECEIPT_SAMPLE,
) -> frozenset[bytes]:
    """The members that report on the alert `alert_id` sent by `sender_id` (§C1.7).

    The `sample` members other than the sender with the lowest rank
    BLAKE2b(key=alert_id, person="cellrelay-sample", member_id), 16 bytes, compared as
    bytes; every other member when there are no more than `sample`.
    """
    others = [m for m in set(member_ids) if m != sender_id]
    if len(others) <= sample:
        return frozenset(others)
    return frozenset(heapq.nsmallest(sample, others, key=lambda m: _rank(alert_id, m)))


@dataclass(slots=True)
class ReceiptBatch:
    """What one member has to report, and when it is due (see the module docstring)."""

    delay: float = BATCH_DELAY
    jitter: float = BATCH_JITTER
    due: float = float("inf")
    _delivered: dict[MessageId, None] = field(default_factory=dict)
    _read: dict[MessageId, None] = field(default_factory=dict)
    _said: dict[MessageId, ReceiptState] = field(default_factory=dict)  # sent already

    def add(self, message_id: MessageId, state: ReceiptState, *, now: float, draw: float) -> bool:
        """Queue a report; `draw` in [0, 1) picks the jitter. False if already said or queued."""
        if self._said.get(message_id) is ReceiptState.READ or message_id in self._read:
            return False
        if state is ReceiptState.DELIVERED:
            if message_id in self._delivered or message_id in self._said:
                return False
            self._delivered[message_id] = None
        else:
            self._delivered.pop(message_id, None)  # read says delivered too
            self._read[message_id] = None
        if self.due == float("inf"):
            self.due = now + self.delay + self.jitter * draw
        return True

    @property
    def pending(self) -> int:
        """How many reports are queued."""
        return len(self._delivered) + len(self._read)

    def take(self, now: float) -> list[tuple[ReceiptState, tuple[MessageId, ...]]]:
        """The receipts to send now: one per state (more past `MAX_RECEIPT_IDS` ids), or none."""
        if now < self.due or not self.pending:
            return []
        out: list[tuple[ReceiptState, tuple[MessageId, ...]]] = []
        for state, queued in ((ReceiptState.DELIVERED, self._delivered), (ReceiptState.READ, self._read)):  # fmt: skip
            ids = list(queued)
            for start in range(0, len(ids), MAX_RECEIPT_IDS):
                out.append((state, tuple(ids[start : start + MAX_RECEIPT_IDS])))
            for message_id in ids:
                self._said[message_id] = state
            queued.clear()
        self.due = float("inf")
        return out

    def said(self) -> list[MessageId]:
        """The messages reported on already (for `forget`)."""
        return list(self._said)

    def forget(self, message_ids: Iterable[MessageId]) -> None:
        """Drop what is known of these messages (they expired)."""
        for message_id in message_ids:
            self._said.pop(message_id, None)
            self._delivered.pop(message_id, None)
            self._read.pop(message_id, None)


@dataclass(frozen=True, slots=True)
class ReceiptCounts:
    """How far one alert got, as its sender counts it from the sampled reporters.

    `members`: the members it went to (the sender excluded); `sampled`: the reporters
    asked; `delivered` and `read`: how many of those said so (read counts as delivered).
    `exact` when every member reports (`sampled == members`).
    """

    members: int
    sampled: int
    delivered: int
    read: int

    @property
    def exact(self) -> bool:
        """Whether every member reports, so the counts are not estimates."""
        return self.sampled >= self.members

    def estimate(self, count: int) -> int:
        """`count` of the sample scaled to the whole cell (rounded)."""
        if self.sampled == 0:
            return 0
        return round(count * self.members / self.sampled)

    @property
    def estimated_delivered(self) -> int:
        """About how many members have the alert."""
        return self.estimate(self.delivered)

    @property
    def estimated_read(self) -> int:
        """About how many members have read it."""
        return self.estimate(self.read)


@dataclass(slots=True)
class _Tracked:
    members: int
    reporters: frozenset[bytes]
    delivered: set[bytes] = field(default_factory=set)
    read: set[bytes] = field(default_factory=set)


class ReceiptTally:
    """The sender's counts for its own alerts, from the sampled reporters' receipts."""

    def __init__(self) -> None:
        """Track nothing yet; `track` each alert this member sends."""
        self._alerts: dict[bytes, _Tracked] = {}

    def track(self, alert_id: bytes, sender_id: bytes, member_ids: Iterable[bytes], *,
              sample: int = RECEIPT_SAMPLE) -> bool:  # fmt: skip
        """Start counting for an alert this member sent to `member_ids` (itself included).

        Returns whether the alert is new here (False: it was counted for already).
        """
        if alert_id in self._alerts:
            return False
        members = [m for m in set(member_ids) if m != sender_id]
        chosen = reporters(alert_id, sender_id, members, sample=sample)
        self._alerts[alert_id] = _Tracked(members=len(members), reporters=chosen)
        return True

    def add(self, alert_id: bytes, member_id: bytes, state: ReceiptState) -> bool:
        """Count a receipt; False if the alert is not tracked or the member is not a reporter."""
        tracked = self._alerts.get(alert_id)
        if tracked is None or member_id not in tracked.reporters:
            return False
        tracked.delivered.add(member_id)
        if state is ReceiptState.READ:
            tracked.read.add(member_id)
        return True

    def counts(self, alert_id: bytes) -> ReceiptCounts | None:
        """The counts for a tracked alert, or None."""
        tracked = self._alerts.get(alert_id)
        if tracked is None:
            return None
        return ReceiptCounts(members=tracked.members, sampled=len(tracked.reporters),
                             delivered=len(tracked.delivered), read=len(tracked.read))  # fmt: skip

    def forget(self, alert_ids: Iterable[bytes]) -> None:
        """Stop counting for these alerts (they expired)."""
        for alert_id in alert_ids:
            self._alerts.pop(alert_id, None)

    def tracked(self) -> list[bytes]:
        """The alerts counted for."""
        return list(self._alerts)
