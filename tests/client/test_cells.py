"""Cells end to end over a real relay: three members, alert, replies, roll-up, removal."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from cellrelay.client._cell_admin import Cell
from cellrelay.client._cell_member import CellError
from cellrelay.client._events import AlertReceived, MembershipChanged, StatusReceived
from cellrelay.protocol.cell._content import Change, Status
from cellrelay.protocol.wire import RelayAddress

from .cells import Recorder, admit, members
from .conftest import RunningRelay


def address_of(relay: RunningRelay) -> str:
    return str(RelayAddress("127.0.0.1", relay.port, relay.public_key))


async def test_alert_replies_and_rollup_on_every_member(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    async with members(tmp_path, "lead", "ana", "ben") as clients:
        lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
        ana = await admit(lead, clients["ana"])
        ben = await admit(lead, clients["ben"])
        assert [m.name for m in lead.members()] == ["lead", "ana", "ben"]
        recorders = {
            name: Recorder(cell) for name, cell in (("lead", lead), ("ana", ana), ("ben", ben))
        }
        for recorder in recorders.values():
            await nursery.start(recorder.run)
        alert = await lead.send_alert(
            "Agents at 14th & Main", priority="urgent", place="14th & Main"
        )
        for name in ("ana", "ben"):
            received = await recorders[name].wait_for(lambda e: isinstance(e, AlertReceived))
            assert isinstance(received, AlertReceived)
            assert received.alert.text == "Agents at 14th & Main"
            assert received.sender.name == "lead"
        await ana.reply(alert.alert_id, Status.RESPONDING)
        await ben.reply(alert.alert_id, Status.ON_SCENE, note="two vans")
        for name, cell in (("lead", lead), ("ana", ana), ("ben", ben)):

            def both_answered(_: object, cell: Cell = cell) -> bool:
                rollup = cell.rollup(alert.alert_id)
                return rollup is not None and len(rollup.responders) == 2

            await recorders[name].wait_for(both_answered)
            rollup = cell.rollup(alert.alert_id)
            assert rollup is not None
            assert {s.name: s.status for s in rollup.responders.values()} == {
                "ana": Status.RESPONDING,
                "ben": Status.ON_SCENE,
            }
            assert not rollup.resolved
        await ana.reply(alert.alert_id, Status.RESOLVED)
        await recorders["ben"].wait_for(
            lambda e: isinstance(e, StatusReceived) and e.reply.status is Status.RESOLVED
        )
        rollup = ben.rollup(alert.alert_id)
        assert rollup is not None
        assert rollup.resolved_by == {ana.crypto.me.member_id}
        assert not rollup.resolved  # one member's word is a vote (§C2, "Closing")
        await ben.reply(alert.alert_id, Status.RESOLVED)  # a second vote closes it
        await recorders["ana"].wait_for(
            lambda e: isinstance(e, StatusReceived) and e.rollup is not None and e.rollup.resolved
        )
        # Each member saw each message exactly once.
        assert len(recorders["ben"].of(AlertReceived)) == 1


async def test_removed_member_reads_nothing_new_and_cannot_send(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    async with members(tmp_path, "lead", "ana", "mallory") as clients:
        lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
        ana = await admit(lead, clients["ana"])
        mallory = await admit(lead, clients["mallory"])
        watch_ana, watch_mallory = Recorder(ana), Recorder(mallory)
        await nursery.start(watch_ana.run)
        await nursery.start(watch_mallory.run)
        await lead.remove(lead.find_member("mallory"))
        await watch_mallory.wait_for(
            lambda e: isinstance(e, MembershipChanged) and e.change.change is Change.REMOVED
        )
        assert mallory.removed
        await lead.send_alert("after the removal", priority="info")
        await watch_ana.wait_for(
            lambda e: isinstance(e, AlertReceived) and e.alert.text == "after the removal"
        )
        await trio.sleep(0.5)
        late = [
            e
            for e in watch_mallory.events
            if isinstance(e, AlertReceived) and e.alert.text == "after the removal"
        ]
        assert not late
        with pytest.raises(CellError, match="removed"):
            await mallory.send_alert("forged", priority="emergency")
