"""Receipt counts on the command line (docs/protocol.md §C1.7; issue 14 item 6).

The sender sees how far its alerts got without one line per receipt: `cellrelay alerts`
shows a counts line (and a `receipts` object with --json) under its own alerts, and
`cellrelay listen` shows the counts as they change, coalesced, in place of the receipts.
Real `cellrelay` processes for the sender (alone, then through its daemon) against a real
relay; the other members are library clients in the test's process that report (§C1.7).
"""

from __future__ import annotations

import io
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from cellrelay.client._cell_admin import Cell
from cellrelay.client._cli_commands import Context
from cellrelay.client._cli_listen import CountLines
from cellrelay.client._cli_output import Style, receipts_text
from cellrelay.client._client import open_client
from cellrelay.client._events import ReceiptsCounted
from cellrelay.protocol.cell import ReceiptCounts
from cellrelay.protocol.cell._content import MessageId
from cellrelay.protocol.cell._receipts import ReceiptBatch

from ..relay.process import reap
from .cells import admit
from .conftest import RunningRelay
from .test_cells import address_of
from .test_cli import CELLRELAY, COMMAND_TIMEOUT, PASSPHRASE, Feed, cli, environment, identity
from .test_cli_daemon import start_daemon_process

TEST_TIMEOUT = 240


class TextFeed:
    """A `cellrelay listen` process (text mode) whose output lines are read as they come."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._buffer = b""

    async def read_until(self, wanted: str) -> str:
        """Read lines until one holds `wanted`; return it."""
        assert self.process.stdout is not None
        with trio.fail_after(COMMAND_TIMEOUT):
            while True:
                for line in self.lines:
                    if wanted in line:
                        return line
                data = await self.process.stdout.receive_some(65536)
                assert data, f"listen ended early; it said: {self.lines}"
                self._buffer += data
                *complete, self._buffer = self._buffer.split(b"\n")
                self.lines += [c.decode() for c in complete]


async def _listen(home: Path, *flags: str, passphrase: str | None = PASSPHRASE) -> trio.Process:
    return await trio.lowlevel.open_process(
        [CELLRELAY, "listen", *flags, "--home", str(home)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(passphrase),
    )


async def _stop(process: trio.Process) -> None:
    process.send_signal(signal.SIGINT)  # Ctrl-C is how a feed ends: exit status 0
    with trio.fail_after(COMMAND_TIMEOUT):
        assert await process.wait() == 0


@asynccontextmanager
async def _reporters(homes: list[Path]) -> AsyncIterator[list[Cell]]:
    """The other members online, reporting on every alert that arrives from now on.

    A batch is due 5 s after its first item: the sender's `send` process has long exited,
    so the receipts reach the sender's `listen`, live or in its catch-up.
    """
    async with (
        open_client(PASSPHRASE, home=homes[0]) as first,
        open_client(PASSPHRASE, home=homes[1]) as second,
    ):
        cells = []
        for client in (first, second):
            client.report_receipts = True
            cell = client.cell("Eastside")
            cell.receipt_batch = ReceiptBatch(delay=5.0, jitter=0.5)
            await cell.wait_synced()
            cells.append(cell)
        yield cells


async def _alert_held(cell: Cell, alert_id: bytes) -> None:
    with trio.fail_after(COMMAND_TIMEOUT):
        while cell.rollup(alert_id) is None:
            await trio.sleep(0.05)


async def test_the_sender_sees_counts_not_receipts(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    lead, ana, ben = (identity(tmp_path, name) for name in ("lead", "ana", "ben"))
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            open_client(PASSPHRASE, home=lead) as lead_client,
            open_client(PASSPHRASE, home=ana) as ana_client,
            open_client(PASSPHRASE, home=ben) as ben_client,
        ):
            cell = await lead_client.create_cell("Eastside", address_of(running_relay))
            await admit(cell, ana_client)
            await admit(cell, ben_client)

        # Text mode: the counts, as they change, and no line per receipt.
        async with _reporters([ana, ben]) as (ana_cell, _):
            sent = (await cli("send", "Eastside", "vans on 5th", "--json", home=lead)).json()
            alert_id = bytes.fromhex(sent["alert_id"])
            process = await _listen(lead)
            feed = TextFeed(process)
            try:
                await feed.read_until("delivered to 2 of 2 \u00b7 read by 0")
                await _alert_held(ana_cell, alert_id)
                assert await ana_cell.mark_read(alert_id)
                line = await feed.read_until("delivered to 2 of 2 \u00b7 read by 1")
                assert line.strip().startswith(f"\u21b3 {sent['alert_id'][:8]}")
                await _stop(process)
            finally:
                await reap(process)
        counted = [line for line in feed.lines if "delivered to" in line]
        assert len(counted) <= 3, counted  # at most one per change, coalesced when close
        assert not [line for line in feed.lines if "ana" in line or "ben" in line], feed.lines

        # `alerts`: the same counts under the sender's own alert, and as JSON.
        shown = (await cli("alerts", "Eastside", home=lead)).stdout
        assert "delivered to 2 of 2 \u00b7 read by 1" in shown
        listed = (await cli("alerts", "Eastside", "--json", home=lead)).json()
        assert [a["receipts"] for a in listed] == [
            {"members": 2, "sampled": 2, "delivered": 2, "read": 1,
             "estimated_delivered": 2, "estimated_read": 1, "exact": True}
        ]  # fmt: skip
        # Another member's view of the same alert has no counts: only the sender counts.
        theirs = (await cli("alerts", "Eastside", "--json", home=ana)).json()
        assert [a["receipts"] for a in theirs] == [None]
        assert "delivered to" not in (await cli("alerts", "Eastside", home=ana)).stdout

        # Through a running daemon (no passphrase: every command goes through it), and in
        # JSON mode: every receipt is still a line, and each change of the counts too.
        daemon = await start_daemon_process(lead, nursery)
        try:
            via = (await cli("alerts", "Eastside", "--json", home=lead, passphrase=None)).json()
            assert [a["receipts"] for a in via] == [a["receipts"] for a in listed]
            via_text = (await cli("alerts", "Eastside", home=lead, passphrase=None)).stdout
            assert "delivered to 2 of 2 \u00b7 read by 1" in via_text
            await _daemon_listens_in_json(lead, ana, ben, nursery)
        finally:
            daemon.process.send_signal(signal.SIGTERM)
            with trio.fail_after(COMMAND_TIMEOUT):
                await daemon.process.wait()


async def _daemon_listens_in_json(lead: Path, ana: Path, ben: Path, nursery: trio.Nursery) -> None:
    """Through the daemon the feed holds no keystore: it listens first, then the lead sends."""
    async with _reporters([ana, ben]):
        process = await _listen(lead, "--json", passphrase=None)
        feed = Feed(process)
        nursery.start_soon(feed.pump_stderr)
        try:
            await feed.read_until(lambda line: line["type"] == "listening")
            second = (
                await cli("send", "Eastside", "second van", "--json", home=lead, passphrase=None)
            ).json()
            counts = await feed.read_until(
                lambda line: (
                    line["type"] == "receipts"
                    and line["alert_id"] == second["alert_id"]
                    and line["receipts"]["delivered"] == 2
                )
            )
            assert counts["receipts"]["exact"] is True
            raw = await feed.read_until(
                lambda line: line["type"] == "receipt" and second["alert_id"] in line["message_ids"]
            )
            assert raw["state"] == "delivered"
            await _stop(process)
        finally:
            await reap(process)


async def test_counts_lines_coalesce_and_say_how_counted() -> None:
    """One line per alert per burst, with the latest counts; "~" and the sample when estimated."""
    out = io.StringIO()
    ctx = Context(home=Path("unused"), passphrase="", json=False, timeout=COMMAND_TIMEOUT,
                  style=Style(colour=False), out=out, err=io.StringIO())  # fmt: skip
    lines = CountLines(ctx, label=False, delay=0.2)
    alert = MessageId(bytes(range(16)))
    with trio.fail_after(COMMAND_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lines.run)
            for delivered in (1, 2, 3):
                counts = ReceiptCounts(members=3, sampled=3, delivered=delivered, read=0)
                lines.add(ReceiptsCounted(cell="Eastside", alert_id=alert, counts=counts))
            while not out.getvalue():
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert out.getvalue().splitlines() == [
        "    \u21b3 00010203 delivered to 3 of 3 \u00b7 read by 0"
    ]

    estimated = ReceiptCounts(members=40, sampled=32, delivered=10, read=4)
    assert receipts_text(estimated) == (
        "delivered to ~12 of 40 \u00b7 read by ~5"
        " (estimated: 10 delivered and 4 read of 32 sampled members)"
    )
