"""Gaps and presence on a cell on several relays (issue 13, item 3): real relay processes.

A member is present on a cell while it reads at least one of its relays without a break
(client/_cell_relays.py, `Presence`), so one that reads only a further relay, the first
being down, still hears of what should have arrived and has not (`MessagesMissing`) and of
an epoch too old (`EpochStale`). Before this it followed the first relay only, and a member
that started while the first relay was down was never present: no gap was ever owed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import pytest
import trio

from cellrelay.client import _cell_member as cell_module
from cellrelay.client import _client as client_module
from cellrelay.client._cell_admin import Cell
from cellrelay.client._client import Client
from cellrelay.client._events import AlertReceived, EpochStale, MessagesMissing, SecurityWarning
from cellrelay.protocol.cell import _receiver as receiver_module

from ..relay.process import RelayProcess, open_relay_process
from .cells import Recorder, admit, members
from .test_several_relays import _alert

TEST_TIMEOUT: Final = 90


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gap is reported after half a second; maintenance runs ten times a second."""
    monkeypatch.setattr(receiver_module, "GAP_GRACE", 0.5)
    monkeypatch.setattr(client_module, "MAINTENANCE_INTERVAL", 0.1)


@asynccontextmanager
async def cell_on_two(
    tmp_path: Path, *names: str
) -> AsyncIterator[tuple[list[RelayProcess], Cell, dict[str, Client]]]:
    """Two relay processes, the lead's cell on both, and clients for `names` besides."""
    async with (
        open_relay_process(tmp_path / "relay-0") as first,
        open_relay_process(tmp_path / "relay-1") as second,
        members(tmp_path, "lead", *names) as clients,
    ):
        relays = [first, second]
        lead = await clients["lead"].create_cell("Eastside", [str(r.address) for r in relays])
        yield relays, lead, clients


async def _send_unpublished(lead: Cell, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    """Seal an alert and publish it nowhere (as a crash between sealing and publishing
    would): its counter is a gap for everyone who reads the next one."""
    with monkeypatch.context() as patch:

        async def nowhere(envelope: bytes, expires_at: int) -> None:
            pass

        patch.setattr(lead, "_publish_group", nowhere)
        await lead.send_alert(text)


async def test_a_member_reading_only_a_further_relay_hears_of_a_gap_and_an_old_epoch(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first relay is killed (kill -9); Ana's client starts while it is down."""
    with trio.fail_after(TEST_TIMEOUT):
        async with cell_on_two(tmp_path) as ((first, _), lead, _):
            async with members(tmp_path, "ana") as clients:
                await admit(lead, clients["ana"])
            await first.kill()
            async with members(tmp_path, "ana") as clients:
                ana = clients["ana"].cell("Eastside")
                heard = Recorder(ana)
                await nursery.start(heard.run)
                # Caught up on the second relay first: what the lead sent while Ana was away
                # is never owed (it may have expired there), so "one" must come live.
                await ana.wait_synced()
                await lead.send_alert("one")
                await heard.wait_for(_alert("one"), timeout=30)
                await _send_unpublished(lead, monkeypatch, "two")
                await lead.send_alert("three")
                await heard.wait_for(_alert("three"), timeout=30)
                missing = await heard.wait_for(lambda e: isinstance(e, MessagesMissing), timeout=30)
                assert isinstance(missing, MessagesMissing)
                assert missing.count == 1
                assert missing.sender.name == "lead"
                assert not ana.link.connected  # it read the second relay only
                # An epoch too old is reported from the second relay's control mailbox.
                monkeypatch.setattr(cell_module, "EPOCH_STALE_AFTER", 0.3)
                stale = await heard.wait_for(lambda e: isinstance(e, EpochStale), timeout=30)
                assert isinstance(stale, EpochStale)
                assert stale.newer == 0


async def test_a_further_relay_whose_data_is_gone_is_reported_and_can_carry_the_cell_again(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """The second relay comes back with its key and none of its data.

    Every member is warned once that it lost the cell (naming it), alerts go on through
    the first relay; the lead drops the relay and adds it again, and a member that then
    reads only that relay hears the lead through it.
    """
    with trio.fail_after(TEST_TIMEOUT):
        async with cell_on_two(tmp_path, "ana") as ((_, second), lead, clients):
            ana = await admit(lead, clients["ana"])
            heard = Recorder(ana)
            await nursery.start(heard.run)
            address, port, data_dir = str(second.address), second.port, second.data_dir
            await second.terminate()
            for path in data_dir.iterdir():  # everything but its key: the data is gone
                if path.name != "relay.key" and path.is_file():
                    path.unlink()
            async with open_relay_process(data_dir, listen=f"127.0.0.1:{port}") as wiped:
                assert str(wiped.address) == address
                lost = await heard.wait_for(
                    lambda e: isinstance(e, SecurityWarning) and e.reason == "RelayLostCell",
                    timeout=60,
                )
                assert isinstance(lost, SecurityWarning)
                assert f"127.0.0.1:{port}" in lost.detail
                await lead.send_alert("through the first relay")
                await heard.wait_for(_alert("through the first relay"))
                await lead.drop_relay(address)
                await lead.add_relay(address)
                while [f.record.relay for f in ana.further] != [address]:
                    await trio.sleep(0.02)
                await ana.further[0].wait_synced()  # the new mailboxes, watched
                await ana.link.aclose()  # Ana now reads the renewed relay only
                await lead.send_alert("through the renewed relay")
                await heard.wait_for(_alert("through the renewed relay"), timeout=30)
                warnings = [
                    e
                    for e in heard.of(SecurityWarning)
                    if isinstance(e, SecurityWarning) and e.reason == "RelayLostCell"
                ]
                assert len(warnings) == 1


async def test_a_gap_that_another_relay_fills_is_not_reported(
    tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first relay is frozen (SIGSTOP) while the lead sends "two" to it alone and then
    "three" to both: Ana reads "three" from the second relay first, a gap, which the first
    relay fills when it is resumed. Then no check ever reports it."""
    with trio.fail_after(TEST_TIMEOUT):
        async with cell_on_two(tmp_path, "ana") as ((first, _), lead, clients):
            ana = await admit(lead, clients["ana"])
            heard = Recorder(ana)
            await nursery.start(heard.run)
            await ana.wait_synced()
            await lead.send_alert("one")
            await heard.wait_for(_alert("one"))
            monkeypatch.setattr(receiver_module, "GAP_GRACE", 60.0)  # until the relay is back
            pid = first.process.pid
            os.kill(pid, signal.SIGSTOP)
            try:
                with monkeypatch.context() as patch:

                    async def not_here(envelope: bytes, expires_at: int) -> int:
                        return 0

                    patch.setattr(lead.further[0], "publish_group", not_here)
                    await lead.send_alert("two")
                await lead.send_alert("three")
                await heard.wait_for(_alert("three"), timeout=30)
            finally:
                os.kill(pid, signal.SIGCONT)
            await heard.wait_for(_alert("two"), timeout=60)
            order = [e.alert.text for e in heard.of(AlertReceived) if isinstance(e, AlertReceived)]
            assert order == ["one", "three", "two"], "a gap opened, and the first relay filled it"
            # Every gap is now past its grace: a check reports any still open, and the
            # epoch-age warning of the same check marks that it ran.
            monkeypatch.setattr(receiver_module, "GAP_GRACE", 0.0)
            monkeypatch.setattr(cell_module, "EPOCH_STALE_AFTER", 0.3)
            await heard.wait_for(lambda e: isinstance(e, EpochStale), timeout=30)
            assert heard.of(MessagesMissing) == []
