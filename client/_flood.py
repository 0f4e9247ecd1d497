"""Flood control: a member who sends too many alerts is muted on every device, on its own.

Theory of operation
-------------------

Until an admin acts, a planted member's alerts would ring every phone in the cell, and
the sender of an alert is authenticated (docs/protocol.md §G9), so every client can count
alerts per member itself, with nobody to ask:

* The cell sets a limit of alerts per member per minute (`CellRecord.alert_limit`; the
  admins change it with an epoch change, docs/protocol.md §C5.1; `DEFAULT_ALERT_LIMIT`
  until they do). A member whose alerts within a minute exceed it is **muted here**: its
  alerts are still kept (in `recent()`, in their roll-ups, within the per-sender bounds
  every sender has) but handed to the app as `MutedAlertReceived`, which apps show without
  ringing, and left out of `active_alerts()`. `FloodDetected` names the member once, a
  security event the app shows its admins; `MuteChanged` says the mute started.
* What counts is when an alert reaches this device, which no sender can forge, for live
  deliveries; for what a catch-up brings (envelopes older than the subscription), the
  sender's own send time, clamped into the last hour before it arrived: a member coming
  back online after missing a dispatcher's busy hour then does not mute the dispatcher,
  while a flood stamped with the time it was sent is still counted as one.
* Muting is sticky: it lasts until the person unmutes (`MemberCell.unmute`). Admins can
  mute for everyone (an epoch change naming the member, which every client applies), and
  remove; either is one command.

Memory is bounded: per member, the times of its last `limit` + 1 alerts.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

from ._events import FloodDetected, MuteChanged
from ._log import library_logger

if TYPE_CHECKING:
    from cellrelay.protocol.cell._content import Alert

    from ._cell_member import MemberCell
    from ._events import CellEvent, Member

__all__ = ["DEFAULT_ALERT_LIMIT", "WINDOW", "FloodControl"]

log = library_logger("cellrelay.client")

# A busy dispatcher sends a few alerts in a minute during a large raid; ten leaves room
# for that and still mutes a flood after its tenth alert. Admins can set another.
DEFAULT_ALERT_LIMIT: Final = 10
WINDOW: Final = 60.0  # seconds: the limit is per minute
# How far back a catch-up's alerts are counted by their own send time (see the docstring).
CATCH_UP_HORIZON: Final = 3600.0


class FloodControl:
    """One cell's flood control (see the module docstring)."""

    def __init__(self, cell: MemberCell) -> None:
        """Serve `cell` (which owns this object)."""
        self._cell = cell
        self._times: dict[bytes, deque[float]] = {}

    @property
    def limit(self) -> int:
        """Alerts per member per minute before it is muted."""
        return self._cell.record.alert_limit or DEFAULT_ALERT_LIMIT

    def is_muted(self, member_id: bytes) -> bool:
        """Whether this device mutes the member (here, or for everyone by an admin)."""
        record = self._cell.record
        return member_id in record.muted_here or member_id in record.muted_everyone

    def count(
        self, sender: Member, alert: Alert, *, received_at: float, live: bool
    ) -> list[CellEvent]:
        """Count an alert from `sender`; return the events of muting it, if it floods."""
        if self.is_muted(sender.member_id) or sender.member_id == self._cell.crypto.me.member_id:
            return []
        at = received_at
        if not live:  # a catch-up: by its own clock, within the hour before it came
            at = min(received_at, max(alert.sent_at_ms / 1000, received_at - CATCH_UP_HORIZON))
        limit = self.limit
        times = self._times.setdefault(sender.member_id, deque(maxlen=limit + 1))
        times.append(at)
        recent = sum(1 for t in times if at - WINDOW < t <= at)
        if recent <= limit:
            return []
        # One alert more than the limit within a minute: muted from this one on, so the
        # alert that crosses the line is the first that does not ring.
        self._times.pop(sender.member_id, None)
        self._cell.record.muted_here.append(sender.member_id)
        log.warning("member_muted", reason="flood", alerts=recent, limit=limit)
        return [
            FloodDetected(cell=self._cell.name, member=sender, alerts=recent, limit=limit),
            MuteChanged(cell=self._cell.name, member=sender, muted=True, everyone=False, by=None),
        ]
