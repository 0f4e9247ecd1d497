"""A removal does not rewrite history: what a member sent while it was one stays valid.

Issue 9, finding 3. Ben answers an alert and is then removed. The lead read Ben's answer
before the removal; Ana was offline and catches up afterwards, reading the epoch change
(control mailbox) first and the old group mailbox after it. Both must compute the same
roll-up: a message is judged by the membership of the epoch it was sealed in
(docs/protocol.md §G11), never by the membership of the reader's current epoch.
"""

from __future__ import annotations

from pathlib import Path

import trio

from cellrelay.protocol.cell._content import Status

from .cells import admit, members
from .conftest import RunningRelay
from .test_cells import address_of

TEST_TIMEOUT = 60


async def test_a_removed_members_earlier_answer_counts_for_everyone(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ben") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ben = await admit(lead, clients["ben"])
            async with members(tmp_path, "ana") as offline:
                await admit(lead, offline["ana"])
            # Ana is offline from here on.
            alert = await lead.send_alert("eviction at 5th and Main", ttl=3600)
            with trio.fail_after(20):
                while ben.rollup(alert.alert_id) is None:
                    await trio.sleep(0.01)
            await ben.reply(alert.alert_id, Status.RESOLVED, note="police left")
            with trio.fail_after(20):
                while (r := lead.rollup(alert.alert_id)) is None or not r.resolved_by:
                    await trio.sleep(0.01)
            await lead.remove(lead.find_member("ben"))
            lead_view = lead.rollup(alert.alert_id)
            assert lead_view is not None
            assert {m: s.status for m, s in lead_view.responders.items()} == {
                ben.crypto.me.member_id: Status.RESOLVED
            }
        async with members(tmp_path, "ana") as back:
            ana = back["ana"].cell("Eastside")
            with trio.fail_after(20):
                await ana.wait_synced()
                while (view := ana.rollup(alert.alert_id)) is None or not view.responders:
                    await trio.sleep(0.01)
            assert {m: s.status for m, s in view.responders.items()} == {
                m: s.status for m, s in lead_view.responders.items()
            }
            assert view.closed == lead_view.closed
