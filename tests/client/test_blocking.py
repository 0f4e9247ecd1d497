"""The blocking facade: plain threads send and receive through a real relay.

The relay runs in the test's Trio loop; the blocking code runs in a worker thread
(`trio.to_thread.run_sync`), as it would in a Flask app, with its own background Trio
thread per client.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio

from cellrelay.client import (
    AlertReceived,
    BlockingClient,
    CellEvent,
    ClientClosedError,
    JoinRequested,
    MembershipChanged,
    Sent,
    Status,
    StatusReceived,
    create_identity,
)
from cellrelay.client._keystore import TEST_COST
from cellrelay.protocol.wire import RelayAddress

from .cells import passphrase_of
from .conftest import RunningRelay

PATIENCE = 30.0  # seconds for anything to arrive on a loaded machine


def open_member(tmp_path: Path, name: str) -> BlockingClient:
    home = tmp_path / name
    create_identity(passphrase_of(name), name, home=home, cost=TEST_COST)
    return BlockingClient.open(passphrase_of(name), home=home)


def scenario(tmp_path: Path, address: str) -> None:
    """A lead and a member: create, invite, join, alert, reply, roll-up, all blocking."""
    with open_member(tmp_path, "lead") as lead, open_member(tmp_path, "ana") as ana:
        cell = lead.create_cell("Eastside", address)
        assert cell.name == "Eastside"
        assert cell.is_admin
        pending = ana.request_join(cell.invite().to_link())
        with cell.events(timeout=PATIENCE) as admin_events:
            if not cell.join_requests:
                next(event for event in admin_events if isinstance(event, JoinRequested))
        (waiting,) = cell.join_requests
        assert cell.safety_number(waiting) == ana.safety_number_for(pending)
        assert cell.approve().name == "ana"
        ana_cell = ana.wait_joined(pending, timeout=PATIENCE)
        assert [m.name for m in ana_cell.members()] == ["lead", "ana"]
        member = cell.find_member("ana")
        cell.mark_verified(member)
        assert cell.is_verified(member)
        assert cell.verified() == [member]
        cell.unmark_verified(member)
        assert not cell.is_verified(member)
        assert ana.cell("eastside") == ana_cell

        # The lead's callback sees the answer; Ana's iterator sees the alert.
        answers: list[CellEvent] = []
        answered = threading.Event()

        def on_event(event: CellEvent) -> None:
            answers.append(event)
            if isinstance(event, StatusReceived):
                answered.set()

        subscription = cell.on_event(on_event)
        with ana_cell.events(timeout=PATIENCE) as events:
            alert = cell.send_alert("Agents at 14th & Main", priority="urgent", place="14th & Main")
            received = next(e for e in events if isinstance(e, AlertReceived))
            assert isinstance(received, AlertReceived)
            assert received.alert == alert
            assert received.sender.name == "lead"
            reply = ana_cell.reply(alert.alert_id, Status.ON_SCENE, note="two vans")
            sent = events.get(timeout=PATIENCE)  # her own reply, once the relay stored it
            assert isinstance(sent, Sent)
            assert sent.content == reply
            with pytest.raises(TimeoutError):
                events.get(timeout=0.05)  # nothing more came for Ana
        assert answered.wait(PATIENCE)
        subscription.close()
        status = next(e for e in answers if isinstance(e, StatusReceived))
        assert status.sender.name == "ana"
        rollup = cell.rollup(alert.alert_id)
        assert rollup is not None
        assert [(s.name, s.status, s.note) for s in rollup.responders.values()] == [
            ("ana", Status.ON_SCENE, "two vans")
        ]
        assert [r.alert_id for r in ana_cell.active_alerts()] == [alert.alert_id]
        assert cell.send_status(alert.alert_id) == "sent"
        assert cell.unsent() == []

        # Ana leaves: announced, forgotten on her side, shown and acted on by the lead's client.
        with cell.events(timeout=PATIENCE) as admin_events:
            assert ana_cell.leave() is True
            assert ana.cells == []
            changes = []
            for event in admin_events:
                if isinstance(event, MembershipChanged) and event.change.member_name == "ana":
                    changes.append(str(event.change.change))
                    if event.change.change == "removed":
                        break
        assert changes == ["left", "removed"]
        assert [m.name for m in cell.members()] == ["lead"]
    with pytest.raises(ClientClosedError):
        cell.send_alert("after close")


async def test_blocking_client_sends_and_receives(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    address = str(RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key))
    with trio.fail_after(120):
        await trio.to_thread.run_sync(scenario, tmp_path, address)


def test_operations_time_out_on_an_unreachable_relay(tmp_path: Path) -> None:
    """A relay that does not answer gives TimeoutError, not a hang; closing still works."""
    silent = RelayAddress("127.0.0.1", 9, bytes(32))  # discard port: nothing listens on loopback
    with open_member(tmp_path, "lead") as lead:
        with pytest.raises(TimeoutError, match=r"not confirmed within 0\.5 s"):
            lead.create_cell("Eastside", silent, timeout=0.5)
        assert lead.cells == []
