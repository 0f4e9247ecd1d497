"""A welcome answers one invite: an old one replayed into a new invite's mailbox is refused.

Issue 9, finding 8. Ben is admitted, removed, and the cell moves on three epochs; the lead
invites him again. A hostile relay (or anyone who kept Ben's old welcome and holds the new
invite) puts the old welcome into the new join mailbox before the lead answers. The old
welcome is sealed to Ben and signed by the same admin, so before the fix Ben's client
installed it: a state three epochs stale, its keys long rotated away. A welcome now
carries a commitment to its invite's secret (docs/protocol.md §G7), so the old one is
refused, and the lead's real answer still admits Ben at the current epoch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from cellrelay.client._events import MembershipChanged
from cellrelay.protocol.cell._content import Change, PlainMessage

from .cells import Recorder, members
from .conftest import RunningRelay
from .hostile import HostileRelay, until
from .test_cells import address_of

TEST_TIMEOUT = 60


async def test_an_old_welcome_replayed_for_a_new_invite_is_refused(
    running_relay: RunningRelay,
    tmp_path: Path,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hostile = HostileRelay(running_relay, monkeypatch)
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ben") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            first = await lead.invite()
            hostile.watch(first.join_mailbox)
            pending = await clients["ben"].request_join(first.to_link())
            await until(lambda: bool(lead.join_requests))
            await lead.approve()
            ben = await clients["ben"].wait_joined(pending)
            (old_welcome,) = [
                e for e in hostile.genuine(first.join_mailbox).values() if e[0] == 0x02
            ]
            welcomed_epoch = ben.crypto.epoch

            watch = Recorder(ben)
            await nursery.start(watch.run)
            await lead.remove(lead.find_member("ben"))
            await watch.wait_for(
                lambda e: isinstance(e, MembershipChanged) and e.change.change is Change.REMOVED
            )
            await lead.rotate()
            await lead.rotate()
            assert lead.crypto.epoch == welcomed_epoch + 3

            second = await lead.invite()
            asked = await clients["ben"].request_join(second.to_link())
            await until(lambda: bool(lead.join_requests))
            # The old welcome, put in the new invite's join mailbox before the lead answers.
            await hostile.insert_into(second.join_mailbox, second.join_write_seed, old_welcome)
            # The lead's real answer comes after it, in the same mailbox: the first welcome Ben
            # accepts must be this one.
            await lead.approve()
            again = await clients["ben"].wait_joined(asked)
            assert again.crypto.epoch == lead.crypto.epoch
            await lead.send_message("welcome back")
            await until(
                lambda: any(
                    isinstance(c, PlainMessage) and c.text == "welcome back"
                    for _, c in again.recent()
                )
            )
