"""One client, cells on two relays: each cell talks to its own relay, and one relay's
failure stops only its own cells.

Catches a client that routes a cell's traffic to the wrong relay (its capabilities would
be refused there), and one whose links share a fate: a relay that went away must not
hold up alerts on the other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trio

from cellrelay.client._events import AlertReceived, CellEvent

from ..relay.conftest import RelayFactory, relays
from .cells import Recorder, admit, members
from .test_cells import address_of

__all__ = ["relays"]

TEST_TIMEOUT = 40


def _alert(text: str) -> Callable[[CellEvent], bool]:
    return lambda event: isinstance(event, AlertReceived) and event.alert.text == text


async def test_cells_on_two_relays_and_one_goes_away(
    relays: RelayFactory, tmp_path: Path, nursery: trio.Nursery
) -> None:
    north_relay, south_relay = await relays.start(), await relays.start()
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana") as clients:
            north = await clients["lead"].create_cell("North", address_of(north_relay))
            south = await clients["lead"].create_cell("South", address_of(south_relay))
            ana_north = await admit(north, clients["ana"])
            ana_south = await admit(south, clients["ana"])
            heard_north, heard_south = Recorder(ana_north), Recorder(ana_south)
            await nursery.start(heard_north.run)
            await nursery.start(heard_south.run)

            await north.send_alert("north one")
            await south.send_alert("south one")
            for recorder, text in ((heard_north, "north one"), (heard_south, "south one")):
                await recorder.wait_for(_alert(text))
            # Each relay stored only its own cell's envelopes.
            for running, cell in ((north_relay, north), (south_relay, south)):
                box = await running.relay.store.get_mailbox(cell.record.group_mailbox)
                assert box is not None
                assert box.head >= 2  # distributions and the alert
            assert await north_relay.relay.store.get_mailbox(south.record.group_mailbox) is None

            await south_relay.relay.shutdown()  # the south relay is gone from now on
            await north.send_alert("north two")
            await heard_north.wait_for(_alert("north two"))
            assert not [
                e
                for e in heard_south.events
                if isinstance(e, AlertReceived) and "two" in e.alert.text
            ]
