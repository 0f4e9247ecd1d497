"""`cellrelay listen`: the cells' active alerts, then a live feed, answering from the same process.

The feed subscribes to every cell *before* catching up, so nothing that arrives after it
started is missed; what the catch-up itself brought in is shown once, in the snapshot of
active alerts (events already shown there are skipped). Each answer is followed by its
alert's roll-up as it now stands, so a person watching sees the responders change.

The connection to each relay is part of the feed: a member must know when they are not
listening (issue 10: a 40 s outage printed nothing). When a connection is lost, the feed
says so, and when it will try again; when it is back and has caught up with what the relay
stored meanwhile, it says that too. With `--json` these are `connection` lines.

`listen` holds the keystore while it runs (one process per keystore, client/_keystore.py),
so `cellrelay reply` could not run beside it: on a terminal, or with `--interactive`, the
feed also reads `reply ALERT_ID STATUS [NOTE]` lines and answers from this process.
Ctrl-C or SIGTERM ends the feed with exit status 0: stopping is how a feed ends.

Receipts are not shown one by one: the sampled reporters of an alert answer over some
seconds (docs/protocol.md §C1.7), so in text mode the feed shows, for the member's own
alerts, the counts they add up to, one line per alert per `RECEIPT_LINE_DELAY` seconds of
receipts (`CountLines`). With `--json` every receipt is still a `receipt` line, and each
change of an own alert's counts a `receipts` line.
"""

from __future__ import annotations

import contextlib
import functools
import shlex
import signal
import sys
import time
from typing import TYPE_CHECKING, Final

import trio

from cellrelay.protocol import CellrelayError
from cellrelay.protocol.cell import Change, Status

from ._cell_member import CellError
from ._cli_commands import alerts_of, connected, find_alert, synced
from ._cli_output import (
    alert_headline,
    alert_json,
    clock,
    event_json,
    event_lines,
    isolate,
    receipts_json,
    receipts_line,
    rollup_lines,
    show_sent,
)
from ._events import AlertReceived, MembershipChanged, ReceiptsCounted, StatusReceived
from ._shims import subscribe

if TYPE_CHECKING:
    import argparse
    from collections.abc import Awaitable, Callable

    from cellrelay.protocol.cell import AlertRollup, ReceiptCounts

    from ._cell_admin import Cell
    from ._cli_commands import Context
    from ._events import CellEvent, Member
    from ._link import LinkStatus, RelayLink

__all__ = [
    "INTERACTIVE_HELP",
    "RECEIPT_LINE_DELAY",
    "CountLines",
    "listen",
    "show_snapshot",
    "show_status",
]

# How long the counts line of an alert waits after a receipt changed them: the reporters
# answer 5 to 15 s after the alert (§C1.7), so a burst of receipts makes one line.
RECEIPT_LINE_DELAY: Final = 2.0


class CountLines:
    """Text mode: the receipt counts of the member's own alerts, one line per alert per burst."""

    def __init__(self, ctx: Context, *, label: bool, delay: float = RECEIPT_LINE_DELAY) -> None:
        """Show on `ctx` (nothing with --json), naming the cell when `label`."""
        self._ctx = ctx
        self._label = label
        self._delay = delay
        self._pending: dict[tuple[str, bytes], ReceiptsCounted] = {}
        self._changed = trio.Event()

    def add(self, event: ReceiptsCounted) -> None:
        """Show these counts with the next line for their alert (only the latest counts)."""
        if not self._ctx.json:
            self._pending[event.cell, event.alert_id] = event
            self._changed.set()

    async def run(self) -> None:
        """Say the pending counts `delay` seconds after the first change; until cancelled."""
        try:
            while True:
                await self._changed.wait()
                await trio.sleep(self._delay)
                self._changed = trio.Event()
                self._flush()
        finally:
            self._flush()  # a feed that stops still says where its alerts got

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        for event in pending.values():
            for line in event_lines(event, self._ctx.style, cell_label=self._label):
                self._ctx.say(line)


async def listen(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay listen [CELL...]`: the cells' current alerts, then a live feed until stopped."""
    async with connected(ctx) as client:
        client.report_receipts = True  # it runs: it reports on sampled alerts (§C1.7)
        client.escalate_automatically = True  # and escalates alerts when due (§C10)
        cells = [client.cell(name) for name in args.cells] or [
            c for c in client.cells if not c.removed
        ]
        for cell in cells:
            if cell.removed:
                raise CellError(f"you were removed from {cell.name!r}")
        if not cells:
            raise CellError(
                "you are in no cell yet: nothing to listen to (cellrelay cell join LINK)"
            )
        # Subscribe before catching up, so nothing that arrives from here on is missed; the
        # catch-up's own events are then shown once, in the snapshot below.
        channels = [subscribe(cell) for cell in cells]
        links = list({id(link): link for cell in cells for link in cell.links}.values())
        statuses = [(link, link.statuses()) for link in links]
        await synced(ctx, cells)
        me = client.identity.member_id
        label = len(cells) > 1
        shown: set[bytes] = set()  # message ids the snapshot already showed
        # The first line says the feed is live: a script can act once it has read it.
        ctx.emit(
            {
                "type": "listening",
                "cells": [c.name for c in cells],
                "as": {"name": client.identity.name, "member_id": me.hex()},
            }
        )
        interactive = args.interactive or (sys.stdin.isatty() and not ctx.json)
        if not ctx.json:
            names = ", ".join(isolate(c.name) for c in cells)
            ctx.note(f"Listening to {names} as {isolate(client.identity.name)}; Ctrl-C stops.")
            if interactive:
                ctx.note(INTERACTIVE_HELP)
        for cell in cells:
            authors = alerts_of(cell)
            for rollup in cell.active_alerts():
                shown.add(rollup.alert_id)
                shown.update(s.message_id for s in rollup.responders.values())
                sender = authors[rollup.alert_id][0] if rollup.alert_id in authors else None
                counts = cell.receipts(rollup.alert_id)
                show_snapshot(ctx, cell.name, rollup, sender, counts, me=me, label=label)

        count_lines = CountLines(ctx, label=label)

        def show(event: CellEvent) -> None:
            if isinstance(event, AlertReceived) and event.alert.alert_id in shown:
                return
            if isinstance(event, StatusReceived) and event.reply.message_id in shown:
                return
            ctx.emit(event_json(event))
            if isinstance(event, ReceiptsCounted):
                count_lines.add(event)
                return
            for line in event_lines(event, ctx.style, me=me, cell_label=label):
                ctx.say(line)
            if (
                isinstance(event, MembershipChanged)
                and event.change.member_id == me
                and event.change.change is Change.REMOVED
            ):
                ctx.note(
                    f"You were removed from {isolate(event.cell)}; nothing more will come from it."
                )

        async def pump(channel: trio.MemoryReceiveChannel[CellEvent]) -> None:
            async with channel:
                async for event in channel:
                    show(event)

        async def watch_connection(
            link: RelayLink, changes: trio.MemoryReceiveChannel[LinkStatus]
        ) -> None:
            async with changes:
                async for status in changes:
                    show_status(ctx, f"{link.address.host}:{link.address.port}", status)

        async with trio.open_nursery() as nursery:
            for channel in channels:
                nursery.start_soon(pump, channel)
            for link, changes in statuses:
                nursery.start_soon(watch_connection, link, changes)
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
            nursery.start_soon(count_lines.run)
            if interactive:
                typed = functools.partial(_typed_reply, ctx, cells, me)
                nursery.start_soon(read_typed_replies, ctx, typed, (CellError, CellrelayError))
            if args.duration is not None:
                nursery.cancel_scope.deadline = trio.current_time() + args.duration


def show_status(ctx: Context, relay: str, status: LinkStatus) -> None:
    """One line (or JSON object) for a change in the connection to a relay (`host:port`)."""
    ctx.emit(
        {
            "type": "connection",
            "relay": relay,
            "state": status.state,
            "reason": status.reason or None,
            "retry_in": None if status.retry_in is None else round(status.retry_in, 1),
        }
    )
    stamp = ctx.style.dim(clock(time.time()))
    why = f" ({status.reason})" if status.reason else ""
    if status.state == "lost":
        text = ctx.style.warn(f"connection to the relay {relay} lost{why}: not listening")
    elif status.state == "retrying":
        text = f"relay {relay} unreachable{why}; trying again in {max(1, round(status.retry_in or 0))} s"
    elif status.state == "connected":
        text = f"connected to the relay {relay} again; catching up"
    else:
        text = ctx.style.bold(f"back: caught up with the relay {relay}; listening")
    ctx.say(f"{stamp} {text}")


INTERACTIVE_HELP: Final = "Answer an alert by typing: reply ALERT_ID STATUS [NOTE] (STATUS: responding, on-scene, resolved, false-alarm)."


async def read_typed_replies(
    ctx: Context,
    reply: Callable[[str, Status, str | None], Awaitable[None]],
    errors: tuple[type[Exception], ...],
) -> None:
    """Read `reply ALERT_ID STATUS [NOTE]` lines while listening, alone or through the
    daemon (`reply` sends one). A line that is wrong, or a reply that fails with one of
    `errors`, says why and reading goes on; end of input ends only this."""
    while line := await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True):
        try:
            words = shlex.split(line)
        except ValueError as exc:
            ctx.note(f"cellrelay: {exc}")
            continue
        if not words:
            continue
        if words[0] not in ("reply", "r") or len(words) < 3:
            ctx.note(INTERACTIVE_HELP)
            continue
        try:
            status = _status_of(words[2])
            await reply(words[1], status, " ".join(words[3:]) or None)
        except Exception as exc:
            if not isinstance(exc, (ValueError, *errors)):
                raise
            ctx.note(f"cellrelay: {exc}")


def _status_of(word: str) -> Status:
    try:
        return Status(word.replace("-", "_"))
    except ValueError:
        raise ValueError(
            f"{word!r} is not a status: responding, on-scene, resolved or false-alarm"
        ) from None


async def _typed_reply(
    ctx: Context, cells: list[Cell], me: bytes, prefix: str, status: Status, note: str | None
) -> None:
    """One typed reply, alone: the keystore is this process's, so a second `cellrelay
    reply` could not run until the feed stops."""
    found: list[tuple[Cell, bytes]] = []
    for cell in cells:
        with contextlib.suppress(CellError):
            found.append((cell, find_alert(cell, prefix)))
    if len(found) != 1:
        raise CellError(
            f"no current alert has an id starting with {prefix}"
            if not found
            else f"alerts in several cells start with {prefix}: give more digits"
        )
    cell, alert_id = found[0]
    with trio.move_on_after(ctx.timeout) as scope:
        answer = await cell.reply(alert_id, status, note=note)
    if scope.cancelled_caught:
        raise CellError(
            f"the relay did not store the reply within {ctx.timeout:g} s; it may still go out"
        )
    show_sent(ctx, cell.name, answer, cell.me, cell.rollup(alert_id), me=me,
              label=len(cells) > 1, json_type="reply_sent")  # fmt: skip


def show_snapshot(
    ctx: Context,
    cell: str,
    rollup: AlertRollup,
    sender: Member | None,
    counts: ReceiptCounts | None,
    *,
    me: bytes,
    label: bool,
) -> None:
    """One active alert as the feed starts, alone or through the daemon: the alert, its
    roll-up, and for our own alerts how far it got (`counts`)."""
    ctx.emit(
        {
            "type": "alert",
            "cell": cell,
            **alert_json(rollup.alert, sender, rollup),
            "receipts": None if counts is None else receipts_json(counts),
            "snapshot": True,
        }
    )
    author = "you" if rollup.author_id == me else rollup.author_name
    ctx.say(alert_headline(rollup.alert, author, ctx.style, cell=cell if label else None))
    for line in rollup_lines(rollup, ctx.style, me=me):
        ctx.say(line)
    if counts is not None:
        ctx.say(receipts_line(rollup.alert_id, counts, ctx.style))


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    """End the feed cleanly on Ctrl-C or SIGTERM (exit status 0: stopping is how it ends)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return
