"""Escalation on the command line (docs/protocol.md §C10, docs/workflow.md "Calling a neighbouring cell").

* `cellrelay escalate CELL ALERT_ID --to NEIGHBOUR`: forward a confirmed alert to a
  neighbouring cell (a liaison, dispatcher or admin of both); run again, it reports the
  neighbour's answers back.
* `cellrelay cell neighbour CELL NEIGHBOUR [--off] [--label TEXT]`: name two of your cells
  neighbours (your own setting, never sent); the daemon then escalates between them.
* `cellrelay cell escalation CELL N [--after DURATION]`: when confirmed alerts go to
  neighbours by themselves (admins): fewer than N answering after DURATION; N = 0 is off.

One module for both ways a command runs (directly, and through a running daemon), as
client/_cli_verify.py: `_cli.COMMANDS` and `_cli_daemon._COMMANDS` each name it once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cellrelay.protocol.cell._content import MAX_ESCALATE_AFTER, MessageId

from ._api_types import EscalationSent, EscalationSet, NeighbourSet
from ._cell_member import CellError
from ._cli_commands import connected, find_alert, synced, the_cell
from ._cli_daemon import _alert_problems, _check_alert_prefix, _no_cell, _not_admin, _path
from ._cli_output import (
    duration_text,
    escalation_text,
    isolate,
    parse_duration,
    rollup_json,
    short_id,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from cellrelay.protocol.cell import EscalationNote

    from ._cli_commands import Context
    from ._cli_daemon import Api

__all__ = [
    "add_parsers",
    "after_duration",
    "cell_escalation",
    "cell_escalation_daemon",
    "cell_neighbour",
    "cell_neighbour_daemon",
    "escalate",
    "escalate_daemon",
]


def after_duration(text: str) -> int:
    import argparse

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not 1 <= seconds <= MAX_ESCALATE_AFTER:
        raise argparse.ArgumentTypeError("between 1s and 24h")
    return seconds


def add_parsers(
    commands: argparse._SubParsersAction[Any],
    cell: argparse._SubParsersAction[Any],
    common: Sequence[argparse.ArgumentParser],
) -> None:
    """Add `escalate`, `cell neighbour` and `cell escalation`."""
    text = "forward a confirmed alert to a neighbouring cell; again: report its answers back (liaisons)"
    escalate = commands.add_parser("escalate", help=text, description=text, parents=list(common))
    escalate.add_argument("cell", metavar="CELL", help="the alert's cell")
    escalate.add_argument("alert_id", metavar="ALERT_ID",
                          help="the alert's id or a prefix, as listen and alerts show it")  # fmt: skip
    escalate.add_argument("--to", required=True, metavar="NEIGHBOUR",
                          help="the neighbouring cell (you must be in it)")  # fmt: skip
    text = "name two of your cells neighbours: your daemon escalates alerts between them"
    neighbour = cell.add_parser("neighbour", help=text, description=text, parents=list(common))
    neighbour.add_argument("cell", metavar="CELL")
    neighbour.add_argument("neighbour", metavar="NEIGHBOUR")
    neighbour.add_argument("--off", action="store_true", help="they are no longer neighbours")
    neighbour.add_argument("--label", metavar="TEXT",
                           help="how CELL's alerts are labelled in its neighbours (default: its name)")  # fmt: skip
    text = "when confirmed alerts go to neighbouring cells by themselves (admins)"
    setting = cell.add_parser("escalation", help=text, description=text, parents=list(common))
    setting.add_argument("cell", metavar="CELL")
    setting.add_argument("below", metavar="N", type=int,
                         help="escalate while fewer than N members answer (0: never)")  # fmt: skip
    setting.add_argument("--after", type=after_duration, default=600, metavar="DURATION",
                         help="how long after confirmation (default 10m)")  # fmt: skip


# -- what the commands say, alone and through the daemon alike -----------------------------


def _say_escalated(ctx: Context, sent: EscalationSent, *, me: bytes) -> None:
    note = sent.note
    ctx.emit({"cell": sent.cell, "to": sent.to, "alert_id": sent.alert_id.hex(),
              "forwarded_id": sent.forwarded_id.hex(), "forwarded": sent.forwarded,
              "note": None if note is None else _note_json(note),
              "rollup": None if sent.rollup is None else rollup_json(sent.rollup)})  # fmt: skip
    alert, copy, cell, to = (short_id(sent.alert_id), short_id(sent.forwarded_id),
                             isolate(sent.cell), isolate(sent.to))  # fmt: skip
    if sent.forwarded:
        ctx.say(f"Escalated {alert} from {cell} to {to}, where it is alert {copy}.")
    else:
        ctx.say(f"{alert} has already gone to {to} (alert {copy} there).")
    mine = [e for e in (sent.rollup.escalations if sent.rollup else ()) if e.member_id == me]
    if note is not None and mine:
        ctx.say(f"Told {cell}: {escalation_text(mine[-1], ctx.style, me=me)}")
    elif note is None:
        ctx.say(f"Nothing new from {to} since you last told {cell}.")
    ctx.note(
        "Run the same command again to report new answers, or keep `cellrelay daemon` running"
        " to report them as they come."
    )


def _note_json(note: EscalationNote) -> dict[str, object]:
    return {"message_id": note.message_id.hex(), "label": note.label,
            "responding": note.responding, "on_scene": note.on_scene,
            "outcome": None if note.outcome is None else str(note.outcome)}  # fmt: skip


def _say_neighbours(ctx: Context, done: NeighbourSet, other: str, *, on: bool) -> None:
    ctx.emit({"cell": done.cell, "label": done.label, "neighbours": done.neighbours})
    if on:
        ctx.say(
            f"{isolate(done.cell)} and {isolate(other)} are neighbours: as a liaison you"
            f" escalate alerts of one to the other, where {isolate(done.cell)}'s show as"
            f" from {isolate(done.label)!r}."
        )
    else:
        ctx.say(f"{isolate(done.cell)} and {isolate(other)} are no longer neighbours.")


def _say_setting(ctx: Context, done: EscalationSet) -> None:
    ctx.emit({"cell": done.cell, "below": done.below, "after": done.after, "epoch": done.epoch})
    if done.below == 0:
        ctx.say(
            f"In {isolate(done.cell)}, alerts no longer go to neighbouring cells by themselves."
        )
        return
    ctx.say(
        f"In {isolate(done.cell)}, a confirmed alert that fewer than {done.below} members answer"
        f" within {duration_text(done.after)} of its confirmation now goes to the neighbouring"
        " cells, through a liaison."
    )


# -- alone -----------------------------------------------------------------------------------


async def escalate(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay escalate CELL ALERT_ID --to NEIGHBOUR`."""
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        neighbour = client.cell(args.to)
        await synced(ctx, [neighbour])
        alert_id = find_alert(cell, args.alert_id)
        ctx.bound("the relay did not store the escalation")
        done = await client.escalate(cell, alert_id, neighbour)
        ctx.unbound()
        sent = EscalationSent(cell=cell.name, to=neighbour.name, alert_id=MessageId(alert_id),
                              forwarded_id=done.forwarded_id, forwarded=done.forwarded is not None,
                              note=done.note, rollup=cell.rollup(alert_id))  # fmt: skip
        _say_escalated(ctx, sent, me=client.identity.member_id)


async def cell_neighbour(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell neighbour CELL NEIGHBOUR [--off] [--label TEXT]`."""
    from ._api import neighbours_of_cell

    async with connected(ctx) as client:
        cell, neighbour = client.cell(args.cell), client.cell(args.neighbour)
        client.set_neighbour(cell, neighbour, on=not args.off)
        if args.label is not None:
            _check_label(args.label)
            cell.record.label = args.label
        await client.save()
        _say_neighbours(ctx, neighbours_of_cell(client, cell), neighbour.name, on=not args.off)


def _check_label(label: str) -> None:
    if not 1 <= len(label) <= 64 or any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in label):
        raise CellError("a label is one line of 1 to 64 characters")


async def cell_escalation(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell escalation CELL N [--after DURATION]` (admins)."""
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        ctx.bound("the relay did not confirm the new epoch")
        await cell.set_escalation(args.below, args.after)
        ctx.unbound()
        record = cell.record
        _say_setting(ctx, EscalationSet(cell=cell.name, below=record.escalate_below,
                                        after=record.escalate_after, epoch=cell.crypto.epoch))  # fmt: skip


# -- through the daemon ---------------------------------------------------------------------


async def escalate_daemon(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay escalate` through the daemon (`/cells/{cell}/alerts/{alert}/escalate`)."""
    from ._cli_daemon import _me

    prefix = _check_alert_prefix(args.alert_id)
    sent: EscalationSent = await api.call(
        "POST", _path("cells", args.cell, "alerts", prefix, "escalate"), EscalationSent,
        body={"to": args.to}, problems={**_alert_problems(args.cell, prefix)},
    )  # fmt: skip
    _say_escalated(api.ctx, sent, me=await _me(api))


async def cell_neighbour_daemon(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell neighbour` through the daemon."""
    if args.label is not None:
        _check_label(args.label)
    done: NeighbourSet = await api.call(
        "PUT", _path("cells", args.cell, "neighbours", args.neighbour), NeighbourSet,
        body={"on": not args.off, "label": args.label},
        problems={**_no_cell(args.cell), **_no_cell(args.neighbour)},
    )  # fmt: skip
    _say_neighbours(
        api.ctx, done, args.neighbour if args.off else _other(done, args), on=not args.off
    )


def _other(done: NeighbourSet, args: argparse.Namespace) -> str:
    wanted = args.neighbour.casefold()
    return next((n for n in done.neighbours if n.casefold() == wanted), args.neighbour)


async def cell_escalation_daemon(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell escalation` through the daemon."""
    done: EscalationSet = await api.call(
        "PUT", _path("cells", args.cell, "escalation"), EscalationSet,
        body={"below": args.below, "after": args.after},
        problems={**_no_cell(args.cell), **_not_admin(args.cell, "can set when alerts escalate")},
    )  # fmt: skip
    _say_setting(api.ctx, done)
