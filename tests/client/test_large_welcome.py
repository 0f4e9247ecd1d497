"""A joiner's client collects a paged welcome from the join mailbox (issue 12, §G7, §C4).

The lead's cell gets 201 members first: 200 added through real epoch changes that the lead
publishes and reads back (`Cell._propose`, as `approve` does), for identities that never
connect (one machine cannot run 200 phones). Then a real client asks to join with an invite
and the lead approves it: the member list no longer fits one welcome, so the lead's client
publishes the welcome and its pages, and the joiner's client must collect them all, in the
order the relay keeps, before it can join.
"""

from __future__ import annotations

from pathlib import Path

import trio

from cellrelay.protocol.cell import Identity
from cellrelay.protocol.cell._epochs import welcome_content

from .cells import admit, members
from .conftest import RunningRelay
from .test_cells import address_of

SILENT = 200


async def test_a_joiner_collects_the_pages_of_a_large_cells_welcome(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    async with members(tmp_path, "lead", "ana") as clients:
        lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
        with trio.fail_after(240):
            for n in range(SILENT):
                silent = Identity.generate(f"silent member number {n:03d} of 200")
                await lead._propose(lead.crypto.add_member(silent.info, now=lead.link.relay_time()))
            assert len(lead.crypto.members) == SILENT + 1
            joined = await admit(lead, clients["ana"])
        assert len(joined.crypto.members) == SILENT + 2
        assert joined.crypto.membership.head_hash == lead.crypto.membership.head_hash
        # The welcome needed pages: the member list does not fit one.
        content = welcome_content(
            lead.crypto._s,
            joined.crypto.me.member_id,
            now=lead.link.relay_time(),
            extra=b"",
            invite_binding=bytes(32),
            page_key=bytes(32),
        )
        assert content.pages_needed() >= 1
