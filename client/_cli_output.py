"""What the command line prints: lines for people (coloured on a terminal) and JSON for scripts.

Everything a member wrote (alert text, places, notes, names, cell names) reaches a screen
only through `isolate`: the content layer already refuses control characters, so no
escape sequence can arrive, and isolating each field with U+2068 ... U+2069 keeps
right-to-left text from reordering the words around it (docs/protocol-content.md §1.3).

The JSON forms are the stable interface for scripts: ids are full lowercase hex, times are
the protocol's integers (`sent_at_ms` in unix milliseconds, `expires_at` in unix
seconds), enumerations their wire strings (`"urgent"`, `"on_scene"`).
"""

from __future__ import annotations

import datetime
import re
import time
from typing import TYPE_CHECKING, Final

from cellrelay.protocol.cell import (
    Alert,
    Change,
    EscalationNote,
    Priority,
    Status,
    StatusReply,
    VerificationStep,
    WireContent,
)
from cellrelay.protocol.cell._rollup import CLOSE_VOTES, EscalationSummary, ReportState

from ._events import (
    AlertReceived,
    CellBurned,
    CellGone,
    ClockWarning,
    EpochStale,
    EquivocationDetected,
    EscalationReceived,
    FloodDetected,
    JoinRequested,
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
    SendFailed,
    Sent,
    StatusReceived,
    VerificationReceived,
    VerifiedKeyChanged,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from cellrelay.protocol.cell import AlertRollup, MessageId, ReceiptCounts, VerificationRecord

    from ._cli_commands import Context
    from ._events import CellEvent

__all__ = [
    "SHORT_ID",
    "Style",
    "alert_json",
    "alerts_listing",
    "clock",
    "duration_text",
    "event_json",
    "event_lines",
    "isolate",
    "member_json",
    "pad",
    "parse_duration",
    "plural",
    "receipts_json",
    "receipts_line",
    "rollup_json",
    "rollup_lines",
    "short_id",
    "show_sent",
    "until",
]

# Hex digits shown for alert, member and cell ids: 32 bits tell apart the handful of alerts
# or members a cell has (commands accept any unique prefix, and --json gives full ids).
SHORT_ID: Final = 8

_RESET: Final = "\033[0m"
_PRIORITY_COLOUR: Final = {
    Priority.EMERGENCY: "\033[1;97;41m",  # bold white on red: cannot be missed
    Priority.URGENT: "\033[1;33m",  # bold yellow
    Priority.INFO: "\033[36m",  # cyan
}
_STATUS_COLOUR: Final = {
    Status.RESPONDING: "\033[33m",
    Status.ON_SCENE: "\033[1;32m",
    Status.RESOLVED: "\033[32m",
    Status.FALSE_ALARM: "\033[35m",
}
_DIM: Final = "\033[2m"
_BOLD: Final = "\033[1m"
_WARN: Final = "\033[1;31m"

# How a report's verification state reads (docs/workflow.md): unverified ones stand out.
REPORT_WORDS: Final = {
    ReportState.REPORTED: "UNVERIFIED",
    ReportState.VERIFYING: "VERIFYING",
    ReportState.CONFIRMED: "CONFIRMED",
    ReportState.FALSE_ALARM: "FALSE ALARM",
    ReportState.RESOLVED: "RESOLVED",
}

STATUS_WORDS: Final = {
    Status.RESPONDING: "responding",
    Status.ON_SCENE: "on scene",
    Status.RESOLVED: "resolved",
    Status.FALSE_ALARM: "false alarm",
}

_DURATION: Final = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNIT_SECONDS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


class Style:
    """ANSI colours when writing to a terminal, plain text otherwise."""

    def __init__(self, *, colour: bool) -> None:
        """Colour the output or not (the caller checks isatty, NO_COLOR and TERM)."""
        self.colour = colour

    def _wrap(self, code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if self.colour else text

    def priority(self, priority: Priority, text: str) -> str:
        """Colour `text` by an alert's priority."""
        return self._wrap(_PRIORITY_COLOUR[priority], text)

    def status(self, status: Status, text: str) -> str:
        """Colour `text` by a status."""
        return self._wrap(_STATUS_COLOUR[status], text)

    def dim(self, text: str) -> str:
        """Show `text` faintly (times, ids)."""
        return self._wrap(_DIM, text)

    def bold(self, text: str) -> str:
        """Show `text` in bold."""
        return self._wrap(_BOLD, text)

    def warn(self, text: str) -> str:
        """Show `text` as a warning."""
        return self._wrap(_WARN, text)


def isolate(text: str) -> str:
    """Return a field ready to print next to others: bidirectionally isolated if not ASCII.

    ASCII holds no right-to-left letters and no bidirectional controls, so it cannot
    reorder its neighbours and is left alone; anything else gets FSI ... PDI.
    """
    return text if text.isascii() else f"\u2068{text}\u2069"


def pad(text: str, width: int) -> str:
    """An isolated field followed by spaces up to `width` characters (for columns)."""
    return isolate(text) + " " * max(0, width - len(text))


def plural(count: int, noun: str) -> str:
    """`1 member`, `3 members`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def short_id(value: bytes) -> str:
    """The first `SHORT_ID` hex digits of an id."""
    return value.hex()[:SHORT_ID]


def clock(unix_seconds: float) -> str:
    """Local wall-clock time, HH:MM:SS."""
    return datetime.datetime.fromtimestamp(unix_seconds).strftime("%H:%M:%S")


def when(unix_seconds: float) -> str:
    """Local date and time, YYYY-MM-DD HH:MM."""
    return datetime.datetime.fromtimestamp(unix_seconds).strftime("%Y-%m-%d %H:%M")


def until(unix_seconds: float, now: float | None = None) -> str:
    """When something ends: HH:MM:SS if that is today (local time), else with its date.

    An alert that lives past midnight showed `(until 09:00:00)`, which reads as this
    morning (issue 10).
    """
    end = datetime.datetime.fromtimestamp(unix_seconds)
    today = datetime.datetime.fromtimestamp(time.time() if now is None else now).date()
    return end.strftime("%H:%M:%S") if end.date() == today else end.strftime("%Y-%m-%d %H:%M")


def duration_text(seconds: int) -> str:
    """A duration the way `parse_duration` reads it, in its largest exact unit: `7d`, `90m`."""
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_duration(text: str) -> int:
    """Parse a duration such as `90`, `90s`, `30m`, `2h` or `1d` into seconds.

    Raises:
        ValueError: not a positive whole number with an optional unit.
    """
    match = _DURATION.match(text)
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(
            f"not a duration: {text!r} (a whole number of seconds, or with a unit: s, m, h or d;"
            " for example 90s, 30m, 2h, 7d)"
        )
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]


# -- JSON ----------------------------------------------------------------------------------


def member_json(member: Member, *, me: bytes | None = None) -> dict[str, object]:
    """A member as JSON: name, full id, admin flag (and whether it is us)."""
    out: dict[str, object] = {
        "name": member.name,
        "member_id": member.member_id.hex(),
        "admin": member.is_admin,
        "role": str(member.role),
    }
    if me is not None:
        out["you"] = member.member_id == me
    return out


def rollup_json(rollup: AlertRollup) -> dict[str, object]:
    """An alert's roll-up as JSON: every member's latest status, and whether it is over."""
    return {
        "alert_id": rollup.alert_id.hex(),
        "resolved": rollup.resolved,
        "false_alarm": rollup.false_alarm,
        "closed": rollup.closed,
        "votes": rollup.votes,
        "verification": str(rollup.verification),
        "verified_by": None if rollup.verified_by is None else _step_json(rollup.verified_by),
        "steps": [_step_json(r) for r in rollup.steps],
        "responders": [
            {
                "name": s.name,
                "member_id": s.member_id.hex(),
                "status": str(s.status),
                "note": s.note,
                "sent_at_ms": s.sent_at_ms,
            }
            for s in rollup.responders.values()
        ],
        "escalated_from": rollup.escalated_from,
        "escalations": [_escalation_json(e) for e in rollup.escalations],
    }


def _escalation_json(summary: EscalationSummary) -> dict[str, object]:
    return {
        "label": summary.label,
        "name": summary.name,
        "member_id": summary.member_id.hex(),
        "responding": summary.responding,
        "on_scene": summary.on_scene,
        "outcome": None if summary.outcome is None else str(summary.outcome),
        "sent_at_ms": summary.sent_at_ms,
    }


def _step_json(record: VerificationRecord) -> dict[str, object]:
    return {
        "state": str(record.state),
        "name": record.name,
        "member_id": record.member_id.hex(),
        "sent_at_ms": record.sent_at_ms,
        "note": record.note,
    }


def alert_json(
    alert: Alert, sender: Member | None, rollup: AlertRollup | None
) -> dict[str, object]:
    """An alert (with its sender and roll-up, when known) as JSON."""
    return {
        "alert_id": alert.alert_id.hex(),
        "from": None if sender is None else member_json(sender),
        "text": alert.text,
        "priority": str(alert.priority),
        "place": alert.place,
        "sent_at_ms": alert.sent_at_ms,
        "expires_at": alert.expires_at,
        "rollup": None if rollup is None else rollup_json(rollup),
    }


def receipts_json(counts: ReceiptCounts) -> dict[str, object]:
    """How far one of our alerts got (docs/protocol.md §C1.7), as JSON."""
    return {
        "members": counts.members,
        "sampled": counts.sampled,
        "delivered": counts.delivered,
        "read": counts.read,
        "estimated_delivered": counts.estimated_delivered,
        "estimated_read": counts.estimated_read,
        "exact": counts.exact,
    }


def receipts_text(counts: ReceiptCounts) -> str:
    """Counts as people read them: "delivered to 3 of 3 · read by 1" ("~" when estimated)."""
    about = "" if counts.exact else "~"
    text = (
        f"delivered to {about}{counts.estimated_delivered} of {counts.members}"
        f" \u00b7 read by {about}{counts.estimated_read}"
    )
    if counts.exact:
        return text
    return (
        f"{text} (estimated: {counts.delivered} delivered and {counts.read} read"
        f" of {counts.sampled} sampled members)"
    )


def receipts_line(alert_id: bytes, counts: ReceiptCounts, style: Style, *, tag: str = "") -> str:
    """One of our alerts' receipt counts as an indented line under it."""
    return f"    \u21b3 {tag}{short_id(alert_id)} {style.dim(receipts_text(counts))}"


def alerts_listing(
    ctx: Context,
    cell: str,
    active: list[AlertRollup],
    authors: Mapping[bytes, Member],
    receipts: Mapping[MessageId, ReceiptCounts],
    *,
    me: bytes,
) -> None:
    """What `cellrelay alerts` shows, alone or through the daemon: each active alert, its
    roll-up, and for our own alerts how far they got (`receipts`, by alert id)."""

    def counts_json(alert_id: MessageId) -> dict[str, object] | None:
        counts = receipts.get(alert_id)
        return None if counts is None else receipts_json(counts)

    ctx.emit([{**alert_json(r.alert, authors.get(r.alert_id), r), "receipts": counts_json(r.alert_id)}
              for r in active])  # fmt: skip
    if not active:
        ctx.say(f"No active alerts in {isolate(cell)}.")
    for rollup in active:
        author = "you" if rollup.author_id == me else rollup.author_name
        ctx.say(alert_headline(rollup.alert, author, ctx.style))
        for line in rollup_lines(rollup, ctx.style, me=me):
            ctx.say(line)
        counts = receipts.get(rollup.alert_id)
        if counts is not None:
            ctx.say(receipts_line(rollup.alert_id, counts, ctx.style))


def show_sent(
    ctx: Context,
    cell: str,
    sent: StatusReply | VerificationStep,
    sender: Member,
    rollup: AlertRollup | None,
    *,
    me: bytes,
    label: bool = False,
    json_type: str | None = None,
) -> None:
    """What `reply` and `mark` print once the relay stored what they sent (alone, through
    the daemon, or typed into `listen`): the answer as JSON, or as the event others see."""
    event: CellEvent
    if isinstance(sent, StatusReply):
        what: dict[str, object] = {"status": str(sent.status)}
        event = StatusReceived(cell=cell, sender=sender, reply=sent, rollup=rollup)
    else:
        what = {"step": str(sent.step)}
        event = VerificationReceived(cell=cell, sender=sender, step=sent, rollup=rollup)
    ctx.emit({**({} if json_type is None else {"type": json_type}), "cell": cell,
              "alert_id": sent.alert_id.hex(), "message_id": sent.message_id.hex(), **what,
              "rollup": None if rollup is None else rollup_json(rollup)})  # fmt: skip
    for line in event_lines(event, ctx.style, me=me, cell_label=label):
        ctx.say(line)


def event_json(event: CellEvent) -> dict[str, object]:
    """A cell event as one JSON object with a `type` field."""
    if isinstance(event, AlertReceived):
        return {
            "type": "alert",
            "cell": event.cell,
            **alert_json(event.alert, event.sender, event.rollup),
            "late": event.late,
        }
    if isinstance(event, StatusReceived):
        reply = event.reply
        return _on_alert_json(
            "status", event, reply, {"status": str(reply.status), "note": reply.note}
        )
    if isinstance(event, VerificationReceived):
        step = event.step
        return _on_alert_json(
            "verification", event, step, {"step": str(step.step), "note": step.note}
        )
    if isinstance(event, EscalationReceived):
        note = event.note
        return _on_alert_json("escalation", event, note, {
            "label": note.label, "responding": note.responding, "on_scene": note.on_scene,
            "outcome": None if note.outcome is None else str(note.outcome)})  # fmt: skip
    if isinstance(event, RoleChanged):
        return {"type": "role", "cell": event.cell, "member": member_json(event.member),
                "role": str(event.role), "by": member_json(event.by)}  # fmt: skip
    if isinstance(event, ReceiptReceived):
        return {
            "type": "receipt",
            "cell": event.cell,
            "from": member_json(event.sender),
            "state": str(event.receipt.state),
            "message_ids": [m.hex() for m in event.receipt.message_ids],
        }
    if isinstance(event, ReceiptsCounted):
        return {"type": "receipts", "cell": event.cell, "alert_id": event.alert_id.hex(),
                "receipts": receipts_json(event.counts)}  # fmt: skip
    if isinstance(event, MessageReceived):
        return {
            "type": "message",
            "cell": event.cell,
            "from": member_json(event.sender),
            "message_id": event.message.message_id.hex(),
            "text": event.message.text,
            "sent_at_ms": event.message.sent_at_ms,
        }
    if isinstance(event, MembershipChanged):
        change = event.change
        return {
            "type": "membership",
            "cell": event.cell,
            "change": str(change.change),
            "member": {"name": change.member_name, "member_id": change.member_id.hex()},
            "by": {"name": change.by_name, "member_id": change.by_id.hex()},
            "sent_at_ms": change.sent_at_ms,
        }
    if isinstance(event, JoinRequested):
        return {"type": "join_request", "cell": event.cell, "member": member_json(event.member)}
    if isinstance(event, MutedAlertReceived):
        return {
            "type": "muted_alert",
            "cell": event.cell,
            **alert_json(event.alert, event.sender, event.rollup),
            "late": event.late,
        }
    if isinstance(event, FloodDetected):
        return {"type": "flood", "cell": event.cell, "member": member_json(event.member),
                "alerts": event.alerts, "limit": event.limit}  # fmt: skip
    if isinstance(event, MuteChanged):
        return {"type": "mute", "cell": event.cell, "member": member_json(event.member),
                "muted": event.muted, "everyone": event.everyone,
                "by": None if event.by is None else member_json(event.by)}  # fmt: skip
    if isinstance(event, SendFailed):
        return send_failed_json(event)
    if isinstance(event, Sent):
        rollup = None if event.rollup is None else rollup_json(event.rollup)
        return _own_json("sent", event.cell, event.content, rollup=rollup)
    if isinstance(event, VerifiedKeyChanged):
        return {"type": "verified_key_changed", "cell": event.cell,
                "member": member_json(event.member), "verified_id": event.verified_id.hex()}  # fmt: skip
    if isinstance(event, MessagesMissing | MessagesRecovered):
        kind = "missing" if isinstance(event, MessagesMissing) else "recovered"
        return {"type": kind, "cell": event.cell, "from": member_json(event.sender),
                "count": event.count}  # fmt: skip
    if isinstance(event, EquivocationDetected):
        return {"type": "equivocation", "cell": event.cell, "member": member_json(event.member),
                "epoch": event.epoch, "counter": event.counter}  # fmt: skip
    if isinstance(event, EpochStale):
        return {"type": "epoch_stale", "cell": event.cell, "epoch": event.epoch,
                "newer": event.newer, "age": event.age}  # fmt: skip
    if isinstance(event, ClockWarning):
        return {"type": "clock_warning", "cell": event.cell, "offset": round(event.offset, 3),
                "tolerance": event.tolerance}  # fmt: skip
    if isinstance(event, CellBurned):
        return {"type": "burned", "cell": event.cell, "by": member_json(event.by)}
    if isinstance(event, CellGone):
        return {"type": "gone", "cell": event.cell, "code": event.code}
    return {
        "type": "security_warning",
        "cell": event.cell,
        "reason": event.reason,
        "detail": event.detail,
    }


def _sent_text(content: object) -> str | None:
    if isinstance(content, Alert):
        return content.text
    text = getattr(content, "text", None)
    return text if isinstance(text, str) else None


def _on_alert_json(
    kind: str,
    event: StatusReceived | VerificationReceived | EscalationReceived,
    content: StatusReply | VerificationStep | EscalationNote,
    fields: dict[str, object],
) -> dict[str, object]:
    """A message on an alert (a status, a step, an escalation note) as JSON: who sent what
    on which alert, its own `fields`, when, and the alert's roll-up."""
    return {
        "type": kind,
        "cell": event.cell,
        "from": member_json(event.sender),
        "message_id": content.message_id.hex(),
        "alert_id": content.alert_id.hex(),
        **fields,
        "sent_at_ms": content.sent_at_ms,
        "rollup": None if event.rollup is None else rollup_json(event.rollup),
    }


def send_failed_json(event: SendFailed) -> dict[str, object]:
    """A send that was finally not stored by the relay (issue 9, finding 10)."""
    return _own_json("send_failed", event.cell, event.content, reason=event.reason)


def _own_json(kind: str, cell: str, content: WireContent, **fields: object) -> dict[str, object]:
    """What became of something this member sent: `sent` or `send_failed`."""
    return {
        "type": kind,
        "cell": cell,
        "kind": type(content).__name__,
        "message_id": content.message_id.hex(),
        "text": _sent_text(content),
        **fields,
    }


def verified_key_changed_lines(
    event: VerifiedKeyChanged, style: Style, *, tag: str = ""
) -> list[str]:
    """The loud lines for a member who has a verified member's name but other keys."""
    name = isolate(event.member.name)
    return [
        style.warn(
            f"{tag}SECURITY: {name} ({event.member.short_id}) has other keys than the {name}"
            f" you verified ({short_id(event.verified_id)}): a new phone, or an impostor."
        ),
        f"    Do not trust them until you compare safety numbers in person:"
        f" cellrelay cell verify {_quote(event.cell)} {event.member.short_id}",
    ]


def name_tag_note(cell: str, member: Member) -> str:
    """After an approval: the 8 digits shown are a name tag; safety numbers are the check."""
    return (
        f"The short id {member.short_id} is a name tag, not a check (anyone can make keys whose"
        f" id starts the same): compare safety numbers in person with"
        f" cellrelay cell verify {_quote(cell)} {member.short_id}"
    )


def send_failed_lines(event: SendFailed, style: Style, *, tag: str = "") -> list[str]:
    """The loud line for a send that failed: it was NOT sent."""
    text = _sent_text(event.content)
    what = f"{type(event.content).__name__.lower()} {short_id(event.content.message_id)}"
    quoted = f": {isolate(text)}" if text is not None else ""
    return [
        style.warn(f"{tag}NOT SENT ({what}){quoted}"),
        f"    {isolate(event.reason)}",
    ]


# -- lines for people -------------------------------------------------------------------------


def _indent(text: str, prefix: str) -> str:
    """Continue a multi-line text under its first line."""
    return text.replace("\n", "\n" + prefix)


def alert_headline(alert: Alert, author: str, style: Style, *, cell: str | None = None) -> str:
    """One alert as a line: time, priority, id, (cell,) author, text, place, expiry."""
    label = style.priority(alert.priority, f" {alert.priority.upper()} ")
    where = f" @ {isolate(alert.place)}" if alert.place else ""
    in_cell = f"[{isolate(cell)}] " if cell is not None else ""
    head = f"{style.dim(clock(alert.sent_at_ms / 1000))} {label} {style.bold(short_id(alert.alert_id))} {in_cell}"
    body = f"{isolate(author)}: {_indent(isolate(alert.text), '    ')}{where}"
    return f"{head}{body} {style.dim('(until ' + until(alert.expires_at) + ')')}"


def rollup_lines(rollup: AlertRollup, style: Style, *, me: bytes | None = None) -> list[str]:
    """The roll-up of an alert, as indented lines: state, then who answered what."""
    verification = report_state_text(rollup, style, me=me)
    if rollup.false_alarm:
        state = style.status(Status.FALSE_ALARM, "FALSE ALARM")
    elif rollup.resolved:
        state = style.status(Status.RESOLVED, "RESOLVED")
    else:
        state = style.bold("open")
        if rollup.votes:  # a member's "resolved" alone does not close it (protocol §C2)
            state += f" ({rollup.votes} of {CLOSE_VOTES} votes to close)"
    groups: list[str] = []
    for status in (Status.ON_SCENE, Status.RESPONDING, Status.RESOLVED, Status.FALSE_ALARM):
        people = [s for s in rollup.responders.values() if s.status is status]
        if people:
            names = ", ".join(
                ("you" if s.member_id == me else isolate(s.name))
                + (f' ("{isolate(s.note)}")' if s.note else "")
                for s in people
            )
            groups.append(f"{style.status(status, STATUS_WORDS[status])}: {names}")
    answers = "; ".join(groups) if groups else style.dim("no answers yet")
    origin = (
        f" {style.warn('escalated from ' + isolate(rollup.escalated_from))},"
        if rollup.escalated_from
        else ""
    )
    lines = [f"    \u21b3 {short_id(rollup.alert_id)}{origin} {verification}, {state} - {answers}"]
    lines += [f"      {escalation_text(e, style, me=me)}" for e in rollup.escalations]
    return lines


def escalation_text(summary: EscalationSummary, style: Style, *, me: bytes | None = None) -> str:
    """A liaison's latest word on an escalation: "escalated to Westside (via Lee): 2 responding"."""
    who = "you" if summary.member_id == me else isolate(summary.name)
    if summary.outcome is not None:
        answers = style.status(summary.outcome, STATUS_WORDS[summary.outcome])
    elif summary.responding or summary.on_scene:
        answers = f"{summary.on_scene} on scene, {summary.responding} responding"
    else:
        answers = style.dim("no answers yet")
    return f"escalated to {isolate(summary.label)} (via {who}): {answers}"


def report_state_text(rollup: AlertRollup, style: Style, *, me: bytes | None = None) -> str:
    """Where a report stands and who set it: "UNVERIFIED", "CONFIRMED by Dana 21:04"."""
    word = REPORT_WORDS[rollup.verification]
    text = style.warn(word) if rollup.unverified else style.bold(word)
    by = rollup.verified_by
    if by is None:
        return text
    who = "you" if by.member_id == me else isolate(by.name)
    note = f' "{isolate(by.note)}"' if by.note else ""
    return f"{text} by {who} {clock(by.sent_at_ms / 1000)}{note}"


def event_lines(
    event: CellEvent, style: Style, *, me: bytes | None = None, cell_label: bool = True
) -> list[str]:
    """A cell event as lines for people (a status also re-renders its alert's roll-up)."""
    cell = isolate(event.cell)
    tag = f"[{cell}] " if cell_label else ""
    if isinstance(event, AlertReceived):
        head = alert_headline(
            event.alert, event.sender.name, style, cell=event.cell if cell_label else None
        )
        lines = [style.warn("(late) ") + head if event.late else head]
        if event.rollup is not None:
            lines += rollup_lines(event.rollup, style, me=me)
        return lines
    if isinstance(event, StatusReceived):
        reply = event.reply
        note = f' "{_indent(isolate(reply.note), "    ")}"' if reply.note else ""
        who = "you" if event.sender.member_id == me else isolate(event.sender.name)
        word = style.status(reply.status, STATUS_WORDS[reply.status])
        line = f"{style.dim(clock(reply.sent_at_ms / 1000))} {tag}{who}: {word} to {short_id(reply.alert_id)}{note}"
        return [
            line,
            *(rollup_lines(event.rollup, style, me=me) if event.rollup is not None else []),
        ]
    if isinstance(event, VerificationReceived):
        step = event.step
        who = "you" if event.sender.member_id == me else isolate(event.sender.name)
        word = REPORT_WORDS[ReportState(step.step.value)]
        note = f' "{_indent(isolate(step.note), "    ")}"' if step.note else ""
        line = f"{style.dim(clock(step.sent_at_ms / 1000))} {tag}{who}: {style.bold(word)} {short_id(step.alert_id)}{note}"
        return [
            line,
            *(rollup_lines(event.rollup, style, me=me) if event.rollup is not None else []),
        ]
    if isinstance(event, EscalationReceived):
        line = f"{style.dim(clock(event.note.sent_at_ms / 1000))} {tag}{short_id(event.note.alert_id)} {escalation_text(_summary_of(event), style, me=me)}"
        return [line]
    if isinstance(event, RoleChanged):
        subject = "you" if event.member.member_id == me else isolate(event.member.name)
        return [style.bold(f"{tag}{subject} now {event.role} (by {isolate(event.by.name)})")]
    if isinstance(event, ReceiptReceived):
        # Not shown one by one: at scale that is noise (§C1.7); what they add up to for
        # our own alerts comes as `ReceiptsCounted`.
        return []
    if isinstance(event, ReceiptsCounted):
        return [receipts_line(event.alert_id, event.counts, style, tag=tag)]
    if isinstance(event, MessageReceived):
        when_ = style.dim(clock(event.message.sent_at_ms / 1000))
        return [
            f"{when_} {tag}{isolate(event.sender.name)}: {_indent(isolate(event.message.text), '    ')}"
        ]
    if isinstance(event, MembershipChanged):
        change = event.change
        subject = "you" if change.member_id == me else isolate(change.member_name)
        if change.change is Change.LEFT:  # by themselves: a signed leave (docs/protocol.md §C9)
            return [style.bold(f"{tag}{subject} left")]
        return [style.bold(f"{tag}{subject} {change.change} by {isolate(change.by_name)}")]
    if isinstance(event, JoinRequested):
        member = event.member
        return [
            style.bold(f"{tag}{isolate(member.name)} ({member.short_id}) asks to join")
            + f": cellrelay cell approve {_quote(event.cell)} {member.short_id}",
            f"    compare safety numbers with them first: cellrelay cell verify {_quote(event.cell)} {member.short_id}",
        ]
    if isinstance(event, MutedAlertReceived):  # shown, never rung
        head = alert_headline(
            event.alert, event.sender.name, style, cell=event.cell if cell_label else None
        )
        return [style.dim(f"(muted) {'(late) ' if event.late else ''}{head}")]
    if isinstance(event, FloodDetected):
        member = event.member
        return [
            style.warn(
                f"{tag}security: {isolate(member.name)} ({member.short_id}) sent {event.alerts} alerts"
                f" within a minute (the cell allows {event.limit}): muted on this device."
            ),
            f"    admins: cellrelay cell mute {_quote(event.cell)} {member.short_id}  (for everyone)"
            f"  or  cellrelay cell remove {_quote(event.cell)} {member.short_id}",
        ]
    if isinstance(event, MuteChanged):
        subject = "you" if event.member.member_id == me else isolate(event.member.name)
        done = "muted" if event.muted else "unmuted"
        if event.everyone and event.by is not None:
            return [style.bold(f"{tag}{subject} {done} for everyone by {isolate(event.by.name)}")]
        why = "" if event.by is not None else " (flood control)"
        return [style.bold(f"{tag}{subject} {done} on this device{why}")]
    if isinstance(event, SendFailed):
        return send_failed_lines(event, style, tag=tag)
    if isinstance(event, Sent):
        return []  # the command that sent it said so; the roll-ups it moves show as they change
    if isinstance(event, VerifiedKeyChanged):
        return verified_key_changed_lines(event, style, tag=tag)
    if isinstance(event, MessagesMissing | MessagesRecovered | EquivocationDetected | EpochStale):
        return _notice_lines(event, style, tag)
    if isinstance(event, ClockWarning):
        return [style.warn(f"{tag}warning: {clock_warning_text(event.offset)}")]
    if isinstance(event, CellBurned):
        by = f"{isolate(event.by.name)} ({event.by.short_id})"
        return [
            style.warn(
                f"{tag}{cell} was burned by {by}: it is deleted from this device, keys and history."
            )
        ]
    if isinstance(event, CellGone):
        return [
            style.warn(
                f"{tag}{cell} is gone from its relay ({event.code}): an admin burned it while"
                " this device was away, or the relay lost it. Nothing more can arrive."
            ),
            f"    to delete it from this device: cellrelay cell leave {_quote(event.cell)} --yes",
        ]
    detail = f" ({event.detail})" if event.detail else ""
    return [style.warn(f"{tag}security warning: refused a message: {event.reason}{detail}")]


def _notice_lines(
    event: MessagesMissing | MessagesRecovered | EquivocationDetected | EpochStale,
    style: Style,
    tag: str,
) -> list[str]:
    """What should have arrived and has not, or what was signed twice (issue 9), as lines."""
    if isinstance(event, MessagesMissing):
        who = f"{isolate(event.sender.name)} ({event.sender.short_id})"
        plural = "message is" if event.count == 1 else "messages are"
        return [
            style.warn(f"{tag}security: {event.count} {plural} missing from {who}."),
            "    Later ones arrived: the relay may be withholding them from this device,"
            " or the sender could not publish them. Ask them what they sent.",
        ]
    if isinstance(event, MessagesRecovered):
        plural = "message" if event.count == 1 else "messages"
        return [style.bold(f"{tag}{event.count} missing {plural} from"
                           f" {isolate(event.sender.name)} arrived after all")]  # fmt: skip
    if isinstance(event, EquivocationDetected):
        who = f"{isolate(event.member.name)} ({event.member.short_id})"
        return [
            style.warn(f"{tag}security: {who} signed two different messages as one."),
            "    Their device may be compromised or restored from a backup, or they are not who"
            " they seem: check with them in person; an admin can remove them.",
        ]
    if event.newer:
        return [
            style.warn(f"{tag}security: messages of a newer epoch ({event.newer}) arrive that this"
                       f" device cannot open (it is in epoch {event.epoch})."),
            "    The relay may be withholding a membership change from you: a removed member"
            " could still be reading. Ask an admin.",
        ]  # fmt: skip
    hours = event.age // 3600
    return [
        style.warn(f"{tag}security: no new epoch for {hours} hours (epoch {event.epoch})."),
        "    Either no admin has been online, or the relay is withholding membership changes"
        " from you. Ask an admin.",
    ]


def clock_warning_text(offset: float) -> str:
    """What a ClockWarning says to people: how far apart the clocks are, and what to do."""
    minutes = round(abs(offset) / 60)
    span = f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"
    ahead = "ahead of" if offset > 0 else "behind"
    return (
        f"the relay's clock is {span} {ahead} this device's: one of them is wrong."
        " Alerts still arrive, but some may show as (late) or stay after they expired;"
        " set this device's time right (or tell the relay's operator)."
    )


def _quote(text: str) -> str:
    """Quote a cell name for a command a person may copy (only when it needs quoting)."""
    return text if re.fullmatch(r"[\w.@%+=:,/-]+", text) else "'" + text.replace("'", "'\\''") + "'"


def command_arg(text: str) -> str:
    """A name as it would be typed in a shell command."""
    return _quote(text)


def _summary_of(event: EscalationReceived) -> EscalationSummary:
    note = event.note
    return EscalationSummary(member_id=event.sender.member_id, name=event.sender.name,  # type: ignore[arg-type]
                             label=note.label, responding=note.responding, on_scene=note.on_scene,
                             outcome=note.outcome, sent_at_ms=note.sent_at_ms, received_at=0.0,
                             message_id=note.message_id)  # fmt: skip
