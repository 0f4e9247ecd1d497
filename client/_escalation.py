"""Escalation to a neighbouring cell: forward a confirmed alert, report back (docs/protocol.md §C10).

Theory of operation
-------------------

A *liaison* is a person in two cells (a member with the role liaison, dispatcher or admin
in both). Which of its cells neighbour which is its own choice, kept in its state and
never sent (`CellRecord.neighbours`), as is the label it gives a cell in its neighbours
(`CellRecord.label`, the cell's name by default): the relay sees two unrelated cells, and
each cell learns of the other only that label.

`escalate` forwards one alert of cell O to neighbour M: a new alert in M (sealed in M's
group, so nothing of O's keys or members goes with it) carrying O's label and
`escalation_ref(alert id)`, unless M already holds an alert with that ref (another liaison
was first: this one follows that alert instead, so each neighbour gets one forward per
alert, or at worst one per liaison when two race). It then reports in O with an
`EscalationNote`, and keeps an `EscalationRecord` in O's state.

`report` sends a new note in O for each kept record whose neighbour's answers changed
since the last note (M's members responding and on scene, and M's close), summing over
every copy of the alert in M in case two liaisons raced.

`due` picks the alerts to escalate by themselves: confirmed, not expired or closed, with
fewer than N members of O responding or on scene T seconds after the confirming step
(the alert's own N and T, else the cell's setting), for each neighbour not yet reached.
`run_once` does both; `Client` runs it every `ESCALATION_INTERVAL` seconds while
`Client.escalate_automatically` is on (the daemon turns it on; `cellrelay escalate` is the
one-off command).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from cellrelay.protocol import CellrelayError
from cellrelay.protocol.cell._content import (
    MAX_NAME,
    Alert,
    EscalationNote,
    MemberId,
    MessageId,
    Status,
    escalation_ref,
)
from cellrelay.protocol.cell._rollup import AlertRollup, ReportState

from ._cell_member import CellError, MemberCell
from ._log import library_logger
from ._state import MAX_NEIGHBOURS, EscalationRecord

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["ESCALATION_INTERVAL", "Escalated", "due", "escalate", "report", "run_once"]

log = library_logger("cellrelay.client")

# How often a running client checks for alerts due to escalate and answers to report:
# T is minutes in practice, and a summary a second late is no loss.
ESCALATION_INTERVAL: Final = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Escalated:
    """What `escalate` did: the alert forwarded (None when another liaison had already
    forwarded it and this one follows that copy), and the note sent back (None when
    nothing had changed since the last)."""

    origin: str
    neighbour: str
    alert_id: MessageId
    forwarded_id: MessageId
    forwarded: Alert | None
    note: EscalationNote | None


def label_of(cell: MemberCell) -> str:
    """The label this member gives `cell` in its neighbours (its choice, else the name)."""
    return (cell.record.label or cell.name)[:MAX_NAME]


def neighbours_of(cell: MemberCell, cells: Sequence[MemberCell]) -> list[MemberCell]:
    """The cells this member named as `cell`'s neighbours and still holds."""
    return [c for c in cells if c.cell_id in cell.record.neighbours and c is not cell]


def set_neighbour(cell: MemberCell, neighbour: MemberCell, *, on: bool = True) -> bool:
    """Name `neighbour` a neighbour of `cell`, both ways (or stop); return whether it changed.

    Raises:
        CellError: the same cell, or more than MAX_NEIGHBOURS neighbours.
    """
    if cell is neighbour or cell.cell_id == neighbour.cell_id:
        raise CellError("a cell cannot neighbour itself")
    changed = False
    for one, other in ((cell, neighbour), (neighbour, cell)):
        named = one.record.neighbours
        if on and other.cell_id not in named:
            if len(named) >= MAX_NEIGHBOURS:
                raise CellError(f"{one.name!r} has {MAX_NEIGHBOURS} neighbours already")
            named.append(other.cell_id)
            changed = True
        elif not on and other.cell_id in named:
            named.remove(other.cell_id)
            changed = True
    return changed


def _confirmed_at(rollup: AlertRollup) -> float | None:
    """When the step that confirmed the alert was sent (unix seconds, clamped), if confirmed."""
    if rollup.verification is not ReportState.CONFIRMED or rollup.verified_by is None:
        return None
    return rollup.verified_by.sent_at_ms / 1000


def _answers(copies: Sequence[AlertRollup]) -> tuple[int, int, str]:
    """(responding, on scene, outcome) over every copy of an escalated alert."""
    latest: dict[MemberId, Status] = {}
    for copy in copies:
        for member, status in copy.responders.items():
            latest[member] = status.status
    outcome = next((str(c.outcome) for c in copies if c.outcome is not None), "")
    counts = list(latest.values())
    return counts.count(Status.RESPONDING), counts.count(Status.ON_SCENE), outcome


async def escalate(origin: MemberCell, neighbour: MemberCell, alert_id: bytes) -> Escalated:
    """Forward the confirmed alert `alert_id` of `origin` to `neighbour`, and report back.

    Raises:
        CellError: the same cell; this member may not escalate in one of them; no such
            alert in `origin`; the alert is not confirmed (or is closed, or expired).
        CellrelayError: a relay refused or could not be reached.
    """
    if origin is neighbour or origin.cell_id == neighbour.cell_id:
        raise CellError("an alert is escalated to another cell")
    for cell in (origin, neighbour):
        if not cell.may_escalate:
            raise CellError(
                f"only a liaison, a dispatcher or an admin of both cells can escalate:"
                f" you are a {cell.role.value} in {cell.name!r}"
            )
    rollup = origin.rollup(alert_id)
    if rollup is None:
        raise CellError(f"no alert {bytes(alert_id).hex()[:8]} in {origin.name!r}")
    if rollup.verification is not ReportState.CONFIRMED:
        raise CellError(
            f"only a confirmed alert goes to a neighbouring cell; this one is"
            f" {rollup.verification.value.replace('_', ' ')}"
        )
    kept = _record(origin, alert_id, neighbour.cell_id)
    forwarded: Alert | None = None
    if kept is None:
        ref = escalation_ref(alert_id)
        copies = sorted(neighbour.escalated_copies(ref), key=lambda r: (r.sent_at_ms, r.alert_id))
        if copies:  # another liaison was first: follow its copy
            forwarded_id = copies[0].alert_id
        else:
            forwarded = await neighbour.forward(rollup.alert, label=label_of(origin), ref=ref)
            forwarded_id = forwarded.message_id
        kept = EscalationRecord(alert_id=bytes(alert_id), neighbour=neighbour.cell_id,
                                forwarded_id=forwarded_id, expires_at=rollup.alert.expires_at)  # fmt: skip
        origin.record.escalations.append(kept)
        log.info("alert_escalated", followed=forwarded is None)
    note = await _report_one(origin, neighbour, kept)
    return Escalated(origin=origin.name, neighbour=neighbour.name, alert_id=MessageId(alert_id),
                     forwarded_id=MessageId(kept.forwarded_id), forwarded=forwarded, note=note)  # fmt: skip


def _record(origin: MemberCell, alert_id: bytes, neighbour_id: bytes) -> EscalationRecord | None:
    return next(
        (
            e
            for e in origin.record.escalations
            if e.alert_id == alert_id and e.neighbour == neighbour_id
        ),
        None,
    )


async def _report_one(
    origin: MemberCell, neighbour: MemberCell, kept: EscalationRecord
) -> EscalationNote | None:
    """Send a note in `origin` if the neighbour's answers changed since the last one."""
    copies = neighbour.escalated_copies(escalation_ref(kept.alert_id))
    own = neighbour.rollup(kept.forwarded_id)
    if own is not None and own not in copies:
        copies.append(own)
    if not copies or origin.rollup(kept.alert_id) is None:
        return None  # expired on one side (the record goes at the next prune): nothing to say
    now = _answers(copies)
    if now == kept.reported:
        return None
    responding, on_scene, outcome = now
    note = await origin.send_escalation_note(
        kept.alert_id, label=label_of(neighbour), responding=responding, on_scene=on_scene,
        outcome=Status(outcome) if outcome else None,
    )  # fmt: skip
    kept.reported = now
    return note


def due(
    origin: MemberCell, cells: Sequence[MemberCell], now: float
) -> list[tuple[bytes, MemberCell]]:
    """The (alert id, neighbour) pairs of `origin` due to escalate at `now` (module docstring)."""
    if not origin.may_escalate or origin.gone or not origin.started:
        return []
    neighbours = [n for n in neighbours_of(origin, cells) if n.may_escalate and not n.gone]
    if not neighbours:
        return []
    found = []
    for rollup in origin.active_alerts(include_muted=True):
        below, after = origin.escalation_policy(rollup.alert)
        confirmed_at = _confirmed_at(rollup)
        if below == 0 or confirmed_at is None or now < confirmed_at + after:
            continue
        if len(rollup.responding) + len(rollup.on_scene) >= below:
            continue
        found += [
            (bytes(rollup.alert_id), n)
            for n in neighbours
            if _record(origin, rollup.alert_id, n.cell_id) is None
        ]
    return found


async def report(origin: MemberCell, cells: Sequence[MemberCell]) -> int:
    """Send the notes due in `origin` (answers changed in a neighbour); return how many."""
    if origin.gone or not origin.started or origin.crypto.removed:
        return 0
    sent = 0
    for kept in list(origin.record.escalations):
        neighbour = next((c for c in cells if c.cell_id == kept.neighbour), None)
        if neighbour is None or not origin.may_escalate:
            continue
        if await _report_one(origin, neighbour, kept) is not None:
            sent += 1
    return sent


async def run_once(cells: Sequence[MemberCell]) -> int:
    """Escalate what is due and report what changed, in every cell; return the messages sent.

    A cell whose relay refuses is skipped (logged) and tried again next time.
    """
    sent = 0
    for origin in cells:
        try:
            for alert_id, neighbour in due(origin, cells, origin.clock()):
                done = await escalate(origin, neighbour, alert_id)
                sent += (done.forwarded is not None) + (done.note is not None)
            sent += await report(origin, cells)
        except (CellError, CellrelayError) as exc:
            log.info("escalation_deferred", error=type(exc).__name__)
    return sent
