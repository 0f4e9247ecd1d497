"""Safety numbers at full strength, verified members, and a loud warning when one's keys change.

Issue 9, finding 9. People compared 8 hex digits of a member id (32 bits) when approving
someone: whoever knows a victim's id can make a key pair whose id starts the same. Now two
members compare a 60-digit safety number (docs/protocol.md §C8), the same on both their
devices; a client records whom its person verified, and a member of the same name with other
keys (a new identity, an impostor) raises `VerifiedKeyChanged` rather than passing quietly.
"""

from __future__ import annotations

from pathlib import Path

import trio

from cellrelay.client import Member, VerifiedKeyChanged
from cellrelay.client._client import create_identity
from cellrelay.client._events import MembershipChanged
from cellrelay.client._keystore import TEST_COST
from cellrelay.protocol.cell._content import Change

from .cells import Recorder, admit, members, passphrase_of
from .conftest import RunningRelay
from .test_cells import address_of

TEST_TIMEOUT = 60


async def test_both_members_see_the_same_sixty_digits(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana", "ben") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            ben = await admit(lead, clients["ben"])
            number = lead.safety_number(lead.find_member("ana"))
            assert len(number) == 60
            assert number.isdigit()
            assert ana.safety_number(ana.find_member("lead")) == number
            # Another pair has another number; the short id is only a name tag.
            assert ben.safety_number(ben.find_member("lead")) != number
            assert ana.safety_number(ana.find_member("ben")) == ben.safety_number(
                ben.find_member("ana")
            )
            # An admin compares it before approving too: the request has the joiner's keys.
            invite = await lead.invite()
            async with members(tmp_path, "cara") as more:
                await more["cara"].request_join(invite.to_link())
                with trio.fail_after(20):
                    while not lead.join_requests:
                        await trio.sleep(0.02)
                (waiting,) = lead.join_requests
                assert lead.safety_number(waiting) == more["cara"].safety_number_for(invite)


async def test_verified_members_are_kept_and_a_key_change_is_loud(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            await admit(lead, clients["ana"])
            ana = lead.find_member("ana")
            assert not lead.is_verified(ana)
            await lead.mark_verified(ana)
            assert lead.is_verified(ana)
            assert [m.member_id for m in lead.verified()] == [ana.member_id]

        # Kept across a restart.
        async with members(tmp_path, "lead") as clients:
            lead = clients["lead"].cell("Eastside")
            await lead.wait_ready()
            assert lead.is_verified(lead.find_member("ana"))
            watch = Recorder(lead)
            await nursery.start(watch.run)
            # Ana's phone is lost; "ana" comes back with a new identity (or an impostor does).
            await lead.remove(lead.find_member("ana"))
            home = tmp_path / "ana-new"
            create_identity(passphrase_of("ana-new"), "ana", home=home, cost=TEST_COST)
            async with members(tmp_path, "ana-new") as again:
                await admit(lead, again["ana-new"])
                event = await watch.wait_for(lambda e: isinstance(e, VerifiedKeyChanged))
                assert isinstance(event, VerifiedKeyChanged)
                new_ana: Member = lead.find_member("ana")
                assert event.member == new_ana
                assert event.verified_id == ana.member_id
                assert not lead.is_verified(new_ana)
                assert [e for e in watch.events if isinstance(e, MembershipChanged)][
                    -1
                ].change.change is Change.ADDED
