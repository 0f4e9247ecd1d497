"""Admin operations: serialised, idempotent after a crash, promotion, periodic rotation."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

import cellrelay.client._client as client_module
from cellrelay.client import Cell, CellError
from cellrelay.client._client import Client
from cellrelay.client._events import AlertReceived
from cellrelay.client._link import LinkClosedError
from cellrelay.protocol.wire import RelayAddress

from ..relay.conftest import RelayFactory, relays
from .cells import Recorder, admit, members
from .conftest import RunningRelay

__all__ = ["relays"]


def address_of(relay: RunningRelay) -> str:
    return str(RelayAddress("127.0.0.1", relay.port, relay.public_key))


async def test_concurrent_admin_operations_are_serialised(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """remove and rotate at once: both go through, one after the other (they once raced)."""
    async with members(tmp_path, "lead", "ana", "mallory") as clients:
        lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
        ana = await admit(lead, clients["ana"])
        await admit(lead, clients["mallory"])
        start = lead.crypto.epoch
        async with trio.open_nursery() as both:
            both.start_soon(lead.remove, lead.find_member("mallory"))
            both.start_soon(lead.rotate)
        assert lead.crypto.epoch == start + 2
        assert [m.name for m in lead.members()] == ["lead", "ana"]
        watch = Recorder(ana)
        await nursery.start(watch.run)
        await lead.send_alert("still together", priority="info")
        await watch.wait_for(lambda e: isinstance(e, AlertReceived))


async def test_a_published_change_is_not_redone_after_a_restart(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A removal whose publish succeeded but looked unfinished must not rotate keys twice.

    Rotating again would revoke every connection already on the new keys, the admin's
    included, with no epoch change to tell them (ana's alert below would never arrive).
    """
    async with members(tmp_path, "lead", "ana", "mallory") as clients:
        lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
        await admit(lead, clients["ana"])
        await admit(lead, clients["mallory"])
        published: list[bytes] = []
        publish = lead.link.publish

        async def recording_publish(mailbox: bytes, envelope: bytes, expires_at: int) -> int:
            if mailbox == lead.record.control_mailbox:
                published.append(envelope)
            return await publish(mailbox, envelope, expires_at)  # type: ignore[arg-type]

        lead.link.publish = recording_publish  # type: ignore[method-assign]
        await lead.remove(lead.find_member("mallory"))
        # As if the acknowledgement had been lost: the removal is still marked pending.
        lead.record.pending_change = published[-1]
        lead.record.pending_keys = b"".join(lead.crypto.group_keys)
        await clients["lead"].save()
    async with members(tmp_path, "lead", "ana") as clients:
        lead = clients["lead"].cell("Eastside")
        ana = clients["ana"].cell("Eastside")
        with trio.fail_after(20):
            await lead.wait_synced()
            while lead.record.pending_change:
                await trio.sleep(0.02)
        watch = Recorder(ana)
        await nursery.start(watch.run)
        await lead.send_alert("after the restart", priority="info")
        await watch.wait_for(lambda e: isinstance(e, AlertReceived))


async def test_promoted_member_can_invite(running_relay: RunningRelay, tmp_path: Path) -> None:
    async with members(tmp_path, "lead", "ana", "ben") as clients:
        lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
        ana = await admit(lead, clients["ana"])
        await lead.promote(lead.find_member("ana"))
        with trio.fail_after(20):
            while not ana.is_admin:
                await trio.sleep(0.02)
        ben = await admit(ana, clients["ben"])
        assert sorted(m.name for m in ben.members()) == ["ana", "ben", "lead"]


async def test_old_epochs_are_rotated(
    running_relay: RunningRelay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "ROTATE_AFTER", 0.2)
    monkeypatch.setattr(client_module, "MAINTENANCE_INTERVAL", 0.1)
    async with members(tmp_path, "lead") as clients:
        lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
        start = lead.crypto.epoch
        with trio.fail_after(20):
            while lead.crypto.epoch < start + 2:
                await trio.sleep(0.05)


async def test_a_member_promoted_a_moment_ago_can_remove_at_once(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    """Promoted, then removing someone before the promotion's own work is done.

    The promotion's delivery takes up the admin's duties, which used to finish any saved
    proposal; the removal's was in flight, and finishing it waited for the control mailbox
    that this same delivery was holding up, so the removal timed out (seen through the
    daemon's API, where a promotion and a removal can follow each other within a millisecond).
    """
    async with members(tmp_path, "lead", "ana") as clients:
        lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
        ana = await admit(lead, clients["ana"])
        await lead.promote(lead.find_member("ana"))
        with trio.fail_after(20):
            while not ana.is_admin:
                await trio.lowlevel.checkpoint()  # act at the first moment the library says ana may
            await ana.remove(ana.find_member("lead"))
        assert [m.name for m in ana.members()] == ["ana"]


async def test_taking_up_admin_duties_leaves_a_proposal_in_flight_alone(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    """The same, without the timing: a change being proposed (lock held) is not finished."""
    async with members(tmp_path, "lead", "ana") as clients:
        lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
        await admit(lead, clients["ana"])
        async with lead._admin_lock:
            lead.record.pending_change = b"a change being proposed right now"
            with trio.fail_after(5):
                await lead._take_up_admin_duties()
            assert lead.record.pending_change == b"a change being proposed right now"
            lead.record.pending_change = b""


async def test_a_removal_is_saved_when_remove_returns(
    relays: RelayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When `remove` returns, the admin's saved state no longer counts the removed member.

    Caught under CPU load through the command line: `cell remove Eastside ben`, then the
    lead's `cell members` still listed ben, every time after (catching up did not repair
    it), while ana's did not. `remove` returned as soon as the change was open in memory,
    while its application (the move to a fresh mailbox) still awaited the relay; the
    command ended there, and a save could write the control cursor past the change with
    the group state from before it. A lead that still counts ben could box a later epoch
    to him. Here the move is held at the relay's door: `remove` must wait for it, and the
    state read back with the relay gone (no catch-up possible) must be without ben, in
    its group state (what the next epoch is boxed to) as in its list of members.
    """
    relay = await relays.start()
    with trio.fail_after(30):
        async with _lead_ana_ben(relay, tmp_path) as (_clients, lead):
            move, asked, go = lead._moves.move, trio.Event(), trio.Event()

            async def held_move(*args: object, **kwargs: object) -> None:
                asked.set()
                await go.wait()
                await move(*args, **kwargs)  # type: ignore[arg-type]

            monkeypatch.setattr(lead._moves, "move", held_move)
            publish = lead.link.publish

            async def late_ack(mailbox: bytes, envelope: bytes, expires_at: int) -> int:
                # Under load the change's delivery can be applied before its acknowledgement
                # is: the relay sends both at once, and either task may run first.
                seq = await publish(mailbox, envelope, expires_at)  # type: ignore[arg-type]
                if mailbox == lead.record.control_mailbox:
                    await asked.wait()
                return seq

            monkeypatch.setattr(lead.link, "publish", late_ack)
            returned = trio.Event()

            async def remove_ben() -> None:
                await lead.remove(lead.find_member("ben"))
                returned.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(remove_ben)
                await asked.wait()
                await trio.testing.wait_all_tasks_blocked()
                assert not returned.is_set(), "remove returned before its change was applied"
                go.set()
        assert await _lead_offline(relay, tmp_path) == ["lead", "ana"]


async def test_a_change_whose_application_fails_is_saved_with_its_cursor(
    relays: RelayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control cursor is never saved past a change without the change itself.

    The command line's bound, or a close, cuts the move to a fresh mailbox short (the
    link raises LinkClosedError): the change was already open in memory, and the cursor
    moved past it, but the group state was not marked changed, so the next save wrote the
    cursor with the state from before. Ben stayed a member for the lead for good.
    """
    relay = await relays.start()
    with trio.fail_after(30):
        async with _lead_ana_ben(relay, tmp_path) as (clients, lead):
            failed = trio.Event()

            async def cut_move(*args: object, **kwargs: object) -> None:
                failed.set()
                raise LinkClosedError("closed")

            monkeypatch.setattr(lead._moves, "move", cut_move)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_try_remove, lead)
                await failed.wait()
            await clients["lead"].save()
        assert await _lead_offline(relay, tmp_path) == ["lead", "ana"]


@asynccontextmanager
async def _lead_ana_ben(
    relay: RunningRelay, tmp_path: Path
) -> AsyncIterator[tuple[dict[str, Client], Cell]]:
    """A cell of lead, ana and ben on `relay`: the clients, and the lead's cell."""
    async with members(tmp_path, "lead", "ana", "ben") as clients:
        lead = await clients["lead"].create_cell("Eastside", address_of(relay))
        await admit(lead, clients["ana"])
        await admit(lead, clients["ben"])
        yield clients, lead


async def _lead_offline(relay: RunningRelay, tmp_path: Path) -> list[str]:
    """Stop the relay, open the lead's saved state, and list the members in its group state.

    The group state's members are what the next epoch's secret is boxed to.
    """
    await relay.relay.shutdown()
    async with members(tmp_path, "lead") as clients:
        (lead,) = clients["lead"].cells
        names = [m.name for m in lead.members()]
        assert sorted(names) == sorted(info.name for info in lead.crypto.members)
        return names


async def _try_remove(lead: Cell) -> None:
    with contextlib.suppress(CellError), trio.move_on_after(1):
        await lead.remove(lead.find_member("ben"))


async def test_an_admin_heals_with_each_change_it_makes(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    """Each epoch change an admin's client makes commits a new receive key of the admin's
    (docs/protocol.md §G6.5), and every member records it (tests/protocol and
    tests/relay/test_key_update_relay.py show that a copy from before it opens nothing)."""
    async with members(tmp_path, "lead", "ana") as clients:
        lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
        ana = await admit(lead, clients["ana"])
        before = lead.crypto.receive_generation
        assert before >= 1  # admitting ana was a change of lead's too
        await lead.rotate()
        assert lead.crypto.receive_generation > before
        me = lead.crypto.me.member_id
        with trio.fail_after(20):
            while ana.crypto.epoch < lead.crypto.epoch:
                await trio.sleep(0.05)
        assert ana.crypto._s.receive_publics[me][0] == lead.crypto.receive_generation
