"""A member leaves with a signed announcement, and the cell moves on without it (issue 14, item 4).

docs/protocol.md §C9: ana's client publishes a `Leave` (content kind 16) and forgets the
cell; every member shows "ana left"; the admin with the lowest member id (ana aside)
removes her at once, another admin after `leave_takeover` if that one is offline, an
offline admin as soon as it is back. The removal is a normal one: a new epoch and a fresh
group mailbox, which a copy of ana's keystore from before she left cannot read. A leave
is spent once its sender is removed: an old one never removes the member admitted again.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from cellrelay.client._cell_member import CellError
from cellrelay.client._client import open_client
from cellrelay.client._events import AlertReceived, CellEvent, MembershipChanged
from cellrelay.protocol.cell._content import Change
from cellrelay.protocol.cell._errors import GroupError
from cellrelay.protocol.cell._group import EpochUpdate
from cellrelay.protocol.wire import RelayAddress
from cellrelay.protocol.wire._noise import KeyPair
from cellrelay.relay._memory_store import MemoryStore
from cellrelay.relay._server import Relay

from ..relay.conftest import relay_config
from .cells import Recorder, admit, members, passphrase_of
from .conftest import RunningRelay
from .test_cells import address_of
from .test_removed_member import opened_contents, saved_crypto

TEST_TIMEOUT = 60
SECRET = "sent after ana left"


def change_of(event: CellEvent, change: Change, name: str) -> bool:
    """Whether `event` says that `name` had `change` (left, removed, ...)."""
    return (
        isinstance(event, MembershipChanged)
        and event.change.change is change
        and event.change.member_name == name
    )


async def test_every_member_sees_ana_leave_and_the_lead_removes_her_for_good(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    store = running_relay.relay.store
    assert isinstance(store, MemoryStore)
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana", "ben") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            ben = await admit(lead, clients["ben"])
            watch = {"lead": Recorder(lead), "ben": Recorder(ben)}
            for recorder in watch.values():
                await nursery.start(recorder.run)
            await ana.send_message("hello before I go")
            await watch["ben"].wait_for(lambda e: not isinstance(e, MembershipChanged))
            control = lead.record.control_mailbox
            control_head = (await store.get_mailbox(control)).head  # type: ignore[union-attr]
            before = saved_crypto(tmp_path, "ana")  # a copy of her keystore, kept somewhere

            assert await ana.leave() is True
            assert clients["ana"].cells == []  # forgotten on her device

            for name, recorder in watch.items():
                left = await recorder.wait_for(lambda e: change_of(e, Change.LEFT, "ana"))
                assert isinstance(left, MembershipChanged)
                assert left.change.by_name == "ana", name
                removed = await recorder.wait_for(lambda e: change_of(e, Change.REMOVED, "ana"))
                assert isinstance(removed, MembershipChanged)
                assert removed.change.by_name == "lead", name
                events = recorder.events
                assert events.index(left) < events.index(removed), name
            for cell in (lead, ben):
                assert [m.name for m in cell.members()] == ["lead", "ben"]
                assert cell.record.leaves == []  # spent by the removal
                # A leave is shown, never kept as a message.
                assert [c for _, c in cell.recent() if type(c).__name__ == "Leave"] == []

            await lead.send_alert(SECRET, priority="urgent")
            await watch["ben"].wait_for(
                lambda e: isinstance(e, AlertReceived) and e.alert.text == SECRET
            )

            # Her saved state cannot read the new epoch, even fed every epoch change.
            now = time.time()
            moved_to = lead.record.group_mailbox
            new_group = [
                e.envelope for e in await store.read_after(moved_to, 0, limit=100, now=now)
            ]
            changes = [
                e.envelope
                for e in await store.read_after(control, control_head, limit=100, now=now)
            ]
            assert new_group
            assert changes
            first = before.open_control(changes[0], now=now)
            assert isinstance(first, EpochUpdate)
            assert first.removed_self
            for envelope in changes[1:]:
                with pytest.raises(GroupError):
                    before.open_control(envelope, now=now)
            assert opened_contents(before, new_group) == []
            assert SECRET.encode() not in b"".join(opened_contents(before, new_group))


async def test_the_only_admin_cannot_just_leave(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            with pytest.raises(CellError, match=r"only admin of 'Eastside'.*force=True"):
                await lead.leave()
            assert clients["lead"].cells == [lead]  # nothing happened
            watch = Recorder(ana)
            async with trio.open_nursery() as nursery:
                await nursery.start(watch.run)
                assert await lead.leave(force=True) is True
                await watch.wait_for(lambda e: change_of(e, Change.LEFT, "lead"))
                nursery.cancel_scope.cancel()
            assert clients["lead"].cells == []
            # Nobody can remove the lead: the leave waits, shown, in ana's record.
            assert [r.member_id for r in ana.record.leaves] == [lead.me.member_id]
            assert await ana.remove_leavers() == []


async def _setup(tmp_path: Path, relay: str, *, admins: tuple[str, ...]) -> dict[str, bytes]:
    """A cell of lead, ana and ben (admins: lead and those named); their member ids."""
    async with members(tmp_path, "lead", "ana", "ben") as clients:
        lead = await clients["lead"].create_cell("Eastside", relay)
        cells = {"lead": lead, "ana": await admit(lead, clients["ana"])}
        cells["ben"] = await admit(lead, clients["ben"])
        for name in admins:
            await lead.promote(lead.find_member(name))
        for cell in cells.values():
            await cell.wait_synced()
        return {name: cell.me.member_id for name, cell in cells.items()}


async def test_another_admin_takes_over_when_the_first_is_offline(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """ben and lead are admins; whichever has the lower id (ana aside) is offline."""
    relay = address_of(running_relay)
    takeover = 2.0
    with trio.fail_after(TEST_TIMEOUT):
        ids = await _setup(tmp_path, relay, admins=("ben",))
        first, second = sorted(("lead", "ben"), key=ids.__getitem__)
        async with open_client(
            passphrase_of(second), home=tmp_path / second, leave_takeover=takeover
        ) as client:
            admin = client.cell("Eastside")
            watch = Recorder(admin)
            await nursery.start(watch.run)
            await admin.wait_synced()
            async with open_client(passphrase_of("ana"), home=tmp_path / "ana") as ana_client:
                ana = ana_client.cell("Eastside")
                await ana.wait_synced()
                started = trio.current_time()
                assert await ana.leave() is True
            await watch.wait_for(lambda e: change_of(e, Change.LEFT, "ana"))
            removed = await watch.wait_for(lambda e: change_of(e, Change.REMOVED, "ana"))
            assert isinstance(removed, MembershipChanged)
            assert removed.change.by_name == second
            # Not before its turn: the first admin had `takeover` seconds to act (the
            # leave's own clock may be up to a second off this one).
            assert trio.current_time() - started >= takeover - 1.0
            assert {m.name for m in admin.members()} == {"lead", "ben"}
            epoch = admin.crypto.epoch
        # The first admin, back, catches up: the leave is spent, nobody is removed twice.
        async with open_client(passphrase_of(first), home=tmp_path / first) as client:
            back = client.cell("Eastside")
            await back.wait_synced()
            assert {m.name for m in back.members()} == {"lead", "ben"}
            assert back.record.leaves == []
            assert await back.remove_leavers() == []
            assert back.crypto.epoch == epoch


async def test_an_offline_admin_removes_the_leaver_when_it_is_back(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    relay = address_of(running_relay)
    with trio.fail_after(TEST_TIMEOUT):
        await _setup(tmp_path, relay, admins=())
        async with open_client(passphrase_of("ana"), home=tmp_path / "ana") as ana_client:
            ana = ana_client.cell("Eastside")
            await ana.wait_synced()
            assert await ana.leave() is True
        async with open_client(passphrase_of("ben"), home=tmp_path / "ben") as ben_client:
            ben = ben_client.cell("Eastside")
            watch = Recorder(ben)
            await nursery.start(watch.run)
            async with open_client(passphrase_of("lead"), home=tmp_path / "lead") as lead_client:
                lead = lead_client.cell("Eastside")
                removed = await watch.wait_for(lambda e: change_of(e, Change.REMOVED, "ana"))
                assert isinstance(removed, MembershipChanged)
                assert removed.change.by_name == "lead"
                assert [m.name for m in lead.members()] == [m.name for m in ben.members()]
                assert "ana" not in {m.name for m in lead.members()}


async def test_an_old_leave_never_removes_ana_admitted_again(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    """ben, an admin, is offline while ana leaves, is removed and is admitted again.

    Back, ben reads the old leave from the cell's retired mailbox after the changes that
    removed and re-admitted ana: it is spent, and ben removes nobody, although it is its
    turn at once (its takeover is 0).
    """
    relay = address_of(running_relay)
    with trio.fail_after(TEST_TIMEOUT):
        ids = await _setup(tmp_path, relay, admins=("ben",))
        async with members(tmp_path, "lead", "ana") as clients:
            lead = clients["lead"].cell("Eastside")
            ana = clients["ana"].cell("Eastside")
            await ana.wait_synced()
            watch = Recorder(lead)
            async with trio.open_nursery() as nursery:
                await nursery.start(watch.run)
                assert await ana.leave() is True
                left = await watch.wait_for(lambda e: change_of(e, Change.LEFT, "ana"))
                assert isinstance(left, MembershipChanged)
                if ids["lead"] > ids["ben"]:  # ben's turn, and ben is away: lead takes over
                    await lead.remove_leavers()  # not yet: 120 seconds
                    assert "ana" in {m.name for m in lead.members()}
                    await lead.remove(lead.find_member("ana"))
                else:
                    await watch.wait_for(lambda e: change_of(e, Change.REMOVED, "ana"))
                nursery.cancel_scope.cancel()
            again = await admit(lead, clients["ana"])
            assert again.me.member_id == ids["ana"]  # the same identity, admitted again
            epoch = lead.crypto.epoch
        async with open_client(
            passphrase_of("ben"), home=tmp_path / "ben", leave_takeover=0.0
        ) as ben_client:
            ben = ben_client.cell("Eastside")
            await ben.wait_synced()
            # It read the old leave (the retired mailbox, read to its end) and set it aside.
            while left.change.message_id not in ben.record.seen:
                await trio.sleep(0.05)
            assert ben.record.leaves == []
            assert await ben.remove_leavers() == []
            assert "ana" in {m.name for m in ben.members()}
            assert ben.crypto.epoch == epoch


async def test_a_leave_the_relay_does_not_take_is_reported_and_the_cell_forgotten(
    tmp_path: Path,
) -> None:
    """The relay is gone: `leave` says it could not announce, within its timeout, and the
    cell is deleted from the device anyway (the person then asks an admin)."""
    key = KeyPair.generate()
    relay = Relay(relay_config(), key=key, store=MemoryStore())
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as serving:
            ports = await serving.start(relay.serve)
            address = str(RelayAddress("127.0.0.1", ports[0][1], key.public))
            async with members(tmp_path, "lead", "ana") as clients:
                lead = await clients["lead"].create_cell("Eastside", address)
                await admit(lead, clients["ana"])
            serving.cancel_scope.cancel()
        async with members(tmp_path, "ana") as clients:
            ana = clients["ana"].cell("Eastside")
            started = trio.current_time()
            assert await ana.leave(timeout=1.0) is False
            assert trio.current_time() - started < 10
            assert clients["ana"].cells == []
        async with members(tmp_path, "ana") as clients:  # and on disk
            assert clients["ana"].cells == []


async def test_an_admin_who_leaves_is_removed_by_another_admin(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """The lead leaves a cell that ben also administers: it announces, as anyone does, and
    ben's client removes it (the lead no longer makes the epoch that shuts it out)."""
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana", "ben") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            ben = await admit(lead, clients["ben"])
            await lead.promote(lead.find_member("ben"))
            await ben.wait_synced()
            assert ben.is_admin
            watch = Recorder(ana)
            await nursery.start(watch.run)
            epoch = lead.crypto.epoch
            assert await lead.leave() is True
            removed = await watch.wait_for(lambda e: change_of(e, Change.REMOVED, "lead"))
            assert isinstance(removed, MembershipChanged)
            assert removed.change.by_name == "ben"
            assert clients["lead"].cells == []
            assert {(m.name, m.is_admin) for m in ana.members()} == {("ana", False), ("ben", True)}
            assert ana.crypto.epoch == epoch + 1  # one epoch for the leave, not two
