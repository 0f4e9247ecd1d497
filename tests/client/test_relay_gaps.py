"""Gaps and presence on a cell on several relays (issue 13, item 3): real relay processes.

A member is present on a cell while it reads at least one of its relays without a break
(client/_cell_relays.py, `Presence`), so one that reads only a further relay, the first
being down, still hears of what should have arrived and has not (`MessagesMissing`) and of
an epoch too old (`EpochStale`). Before this it followed the first relay only, and a member
that started while the first relay was down was never present: no gap was ever owed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest
import trio

from cellrelay.client import _cell_member as cell_module
from cellrelay.client import _client as client_module
from cellrelay.client._cell_admin import Cell
from cellrelay.client._events import EpochStale, MessagesMissing
from cellrelay.protocol.cell import _receiver as receiver_module

from ..relay.process import open_relay_process
from .cells import Recorder, admit, members
from .test_several_relays import _alert

TEST_TIMEOUT: Final = 90


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gap is reported after half a second; maintenance runs ten times a second."""
    monkeypatch.setattr(receiver_module, "GAP_GRACE", 0.5)
    monkeypatch.setattr(client_module, "MAINTENANCE_INTERVAL", 0.1)


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
        async with (
            open_relay_process(tmp_path / "relay-0") as first,
            open_relay_process(tmp_path / "relay-1") as second,
            members(tmp_path, "lead") as leads,
        ):
            lead = await leads["lead"].create_cell(
                "Eastside", [str(first.address), str(second.address)]
            )
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
