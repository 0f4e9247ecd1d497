"""Admin operations: serialised, idempotent after a crash, promotion, periodic rotation."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import cellrelay.client._client as client_module
from cellrelay.client._events import AlertReceived
from cellrelay.protocol.wire import RelayAddress

from .cells import Recorder, admit, members
from .conftest import RunningRelay


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
