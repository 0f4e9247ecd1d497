"""Members announce lazily: before their first envelope of an epoch, not on entering it.

docs/protocol.md §C6 item 2. An announcement carries a MAC per member, so in a cell of 1,000
where a few dispatchers speak, announcing on every epoch change made each change cost every
member 999 announcements to open (issue 12). A member now owes its announcement from the
change (saved, so a restart keeps owing it) and publishes it just before its first envelope
of the epoch; one that says nothing never announces. The relay is real, on loopback; so are
the keystores.
"""

from __future__ import annotations

from pathlib import Path

import trio

from cellrelay.client._cell_admin import Cell
from cellrelay.client._events import MessageReceived
from cellrelay.protocol.wire import MAX_PAGE_ITEMS, Fetch, Page

from .cells import Recorder, admit, members
from .conftest import RunningRelay
from .hostile import until
from .test_cells import address_of

TEST_TIMEOUT = 60


async def group_head(cell: Cell) -> int:
    """The seq of the last envelope in the cell's group mailbox, asked of the relay."""
    after = head = 0
    while True:
        page = await cell.link.request(
            Fetch(id=0, mailbox=cell.record.group_mailbox, after=after, limit=MAX_PAGE_ITEMS)
        )
        assert isinstance(page, Page)
        if page.items:
            head = after = page.items[-1].seq
        if not page.more:
            return head


def owed(cell: Cell) -> bool:
    return cell.record.announce_owed


def received(recorder: Recorder, text: str) -> bool:
    return any(isinstance(e, MessageReceived) and e.message.text == text for e in recorder.events)


async def test_an_epoch_change_is_announced_by_the_first_send_in_it(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana", "ben") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            ben = await admit(lead, clients["ben"])
            for cell in (lead, ana, ben):
                await cell.wait_synced()
            head = await group_head(lead)

            await lead.set_role(lead.find_member("ben"), "dispatcher")  # a new epoch
            await until(lambda: ana.crypto.epoch == ben.crypto.epoch == lead.crypto.epoch)
            for cell in (ana, ben):
                await cell.wait_synced()
            assert all(cell.record.announce_owed for cell in (lead, ana, ben))
            assert await group_head(lead) == head  # nobody announced on entering the epoch

            watch_ben = Recorder(ben)
            await nursery.start(watch_ben.run)
            await ana.send_message("the first in the epoch")
            await until(lambda: received(watch_ben, "the first in the epoch"))
            assert not owed(ana)
            assert await group_head(lead) == head + 2  # her announcement, then her message
            assert all(cell.record.announce_owed for cell in (lead, ben))  # still silent
            await ana.send_message("the second")
            await until(lambda: received(watch_ben, "the second"))
            assert await group_head(lead) == head + 3  # announced once per epoch


async def test_an_owed_announcement_survives_a_restart(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead") as lead_client:
            lead = await lead_client["lead"].create_cell("Eastside", address_of(running_relay))
            async with members(tmp_path, "ana") as clients:
                ana = await admit(lead, clients["ana"])
                await ana.wait_synced()
                assert owed(ana)  # a joiner announces before its first send
            await lead.rotate()  # while ana is away: she catches up on start
            head = await group_head(lead)
            async with members(tmp_path, "ana") as clients:
                ana = clients["ana"].cell("Eastside")
                await until(lambda: ana.crypto.epoch == lead.crypto.epoch)
                await ana.wait_synced()
                assert owed(ana)
                assert await group_head(lead) == head  # the start published nothing
                watch_lead = Recorder(lead)
                await nursery.start(watch_lead.run)
                await ana.send_message("back")
                await until(lambda: received(watch_lead, "back"))
                assert not owed(ana)
            async with members(tmp_path, "ana") as clients:  # and saved as no longer owed
                ana = clients["ana"].cell("Eastside")
                await ana.wait_synced()
                assert not owed(ana)
