"""`cellrelay cell burn` through the installed console script, alone and through a daemon.

The cell is built in this process (the library), then the members' homes are driven by
`cellrelay` processes: refusals (no --yes, not an admin), a burn through the lead's
daemon that Ana's `listen --json` reports as `burned`, after which her `cell list` is
empty and the relay's store no longer holds the cell's mailboxes.
"""

from __future__ import annotations

import signal
import subprocess
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from cellrelay.client._cli_output import Style, event_json, event_lines, member_json
from cellrelay.client._client import open_client
from cellrelay.client._events import CellBurned, CellGone, Member
from cellrelay.protocol.wire import RelayAddress

from ..relay.process import reap
from .cells import admit
from .conftest import RunningRelay
from .test_cli import (
    CELLRELAY,
    COMMAND_TIMEOUT,
    PASSPHRASE,
    Feed,
    cli,
    environment,
    identity,
    one_line_error,
)
from .test_cli_daemon import start_daemon_process


async def _eastside(relay: RunningRelay, tmp_path: Path) -> tuple[Path, Path, list[bytes]]:
    """Lead (admin) and Ana in "Eastside"; their homes and the cell's mailboxes."""
    address = str(RelayAddress("127.0.0.1", relay.port, relay.public_key))
    lead_home, ana_home = identity(tmp_path, "lead"), identity(tmp_path, "ana")
    async with AsyncExitStack() as stack:
        lead_client = await stack.enter_async_context(open_client(PASSPHRASE, home=lead_home))
        ana_client = await stack.enter_async_context(open_client(PASSPHRASE, home=ana_home))
        lead = await lead_client.create_cell("Eastside", address)
        await admit(lead, ana_client)
        mailboxes = [bytes(lead.record.group_mailbox), bytes(lead.record.control_mailbox)]
    return lead_home, ana_home, mailboxes


async def test_burn_asks_for_yes_and_an_admin(running_relay: RunningRelay, tmp_path: Path) -> None:
    lead, ana, _ = await _eastside(running_relay, tmp_path)
    unconfirmed = await cli("cell", "burn", "Eastside", home=lead, expect=1)
    assert "cannot be undone: add --yes" in one_line_error(unconfirmed)
    member = await cli("cell", "burn", "Eastside", "--yes", home=ana, expect=1)
    assert "only an admin of 'Eastside' can burn it" in one_line_error(member)
    for home in (lead, ana):
        cells = (await cli("cell", "list", "--json", home=home)).json()["cells"]
        assert [(c["name"], c["gone"]) for c in cells] == [("Eastside", False)]


async def test_burn_through_the_daemon_reaches_a_listening_member(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    lead, ana, mailboxes = await _eastside(running_relay, tmp_path)
    daemon = await start_daemon_process(lead, nursery)
    listener = await trio.lowlevel.open_process(
        [CELLRELAY, "listen", "--json", "--home", str(ana)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment(),
    )  # fmt: skip
    try:
        feed = Feed(listener)
        nursery.start_soon(feed.pump_stderr)
        await feed.read_until(lambda line: line["type"] == "listening")

        burned = (await cli("cell", "burn", "Eastside", "--yes", "--json", home=lead)).json()
        assert burned["cell"] == "Eastside"
        assert burned["burned"] is True
        assert burned["mailboxes_pending"] == 0
        seen = await feed.read_until(lambda line: line["type"] == "burned")
        assert (seen["cell"], seen["by"]["name"]) == ("Eastside", "lead")
        listener.send_signal(signal.SIGINT)
        with trio.fail_after(COMMAND_TIMEOUT):
            await listener.wait()
    finally:
        await reap(listener)
        daemon.process.send_signal(signal.SIGTERM)
        await reap(daemon.process)
    for home in (lead, ana):
        assert (await cli("cell", "list", "--json", home=home)).json()["cells"] == []
    store = running_relay.relay.store
    assert [await store.get_mailbox(m) for m in mailboxes] == [None, None]  # type: ignore[arg-type]


def test_listen_lines_for_a_burn_and_a_gone_cell() -> None:
    lead = Member(member_id=bytes(range(16)), name="lead", is_admin=True)
    style = Style(colour=False)
    burned = CellBurned(cell="Eastside", by=lead)
    assert event_json(burned) == {"type": "burned", "cell": "Eastside", "by": member_json(lead)}
    assert member_json(lead)["name"] == "lead"
    (line,) = event_lines(burned, style, me=b"")
    assert "was burned by" in line
    assert "deleted from this device" in line
    gone = CellGone(cell="Eastside", code="BAD_PROOF")
    assert event_json(gone) == {"type": "gone", "cell": "Eastside", "code": "BAD_PROOF"}
    first, second = event_lines(gone, style, me=b"")
    assert "gone from its relay (BAD_PROOF)" in first
    assert "cellrelay cell leave Eastside --yes" in second
