"""An admin's invites against the relay's limit of mailboxes per connection.

Each open invite is a join mailbox the admin's one connection to the relay watches (to
read requests and write the welcome), and the relay allows `max_mailboxes_per_connection`
(64 by default) per connection. Used invites used to stay authenticated until they
expired, so an admin could admit only about 60 people a week; now the join mailbox is
deleted once the joiner's first message in the group shows they read the welcome. Open
(unused) invites still count: one more than fit is refused with a clear error and leaves
nothing behind.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from cellrelay.client import Cell, CellError
from cellrelay.protocol.wire import RelayAddress

from ..relay.conftest import RelayFactory, relays
from .cells import admit, members

__all__ = ["relays"]

LIMIT = 4  # the group and control mailboxes, and room for two invites


async def _released(lead: Cell) -> None:
    """Wait until the lead has let go of every used invite's join mailbox."""
    while lead.record.invites:
        await trio.sleep(0.02)


async def test_admin_keeps_admitting_past_the_per_connection_mailbox_limit(
    relays: RelayFactory, tmp_path: Path
) -> None:
    """Three admissions through a connection with room for two invites.

    Catches join mailboxes that stay authenticated after their joiner joined: the
    second or third invite would be refused with TOO_MANY_MAILBOXES.
    """
    relay = await relays.start(max_mailboxes_per_connection=LIMIT)
    address = str(RelayAddress("127.0.0.1", relay.port, relay.public_key))
    with trio.fail_after(30):
        async with members(tmp_path, "lead", "ana", "ben", "cleo") as clients:
            lead = await clients["lead"].create_cell("Eastside", address)
            for name in ("ana", "ben", "cleo"):
                await admit(lead, clients[name])
                await _released(lead)
            assert len(lead.members()) == 4
            # The joiners were welcomed before their mailboxes went: all can talk.
            assert all(m.name in {"lead", "ana", "ben", "cleo"} for m in lead.members())


async def test_one_invite_too_many_is_refused_clearly_and_leaves_nothing(
    relays: RelayFactory, tmp_path: Path
) -> None:
    """With room for two open invites, the third raises CellError and is not kept.

    Catches an invite saved (and re-watched at every start) although the relay refused to
    let us watch it, and a join mailbox left behind on the relay.
    """
    relay = await relays.start(max_mailboxes_per_connection=LIMIT)
    address = str(RelayAddress("127.0.0.1", relay.port, relay.public_key))
    with trio.fail_after(30):
        async with members(tmp_path, "lead") as clients:
            lead = await clients["lead"].create_cell("Eastside", address)
            await lead.invite()
            await lead.invite()
            mailboxes = relay.relay.hub.mailbox_count
            with pytest.raises(CellError, match="TOO_MANY_MAILBOXES"):
                await lead.invite()
            assert len(lead.record.invites) == 2
            assert relay.relay.hub.mailbox_count == mailboxes


async def test_a_cell_starts_even_when_its_saved_invites_no_longer_fit(
    relays: RelayFactory, tmp_path: Path
) -> None:
    """The operator lowered the limit below what the lead's open invites need: it still starts.

    Catches a start that stops at the first invite the relay refuses, skipping what comes
    after the invites (finishing a saved epoch change, publishing a pending sender key
    distribution).
    """
    relay = await relays.start(max_mailboxes_per_connection=LIMIT)
    address = str(RelayAddress("127.0.0.1", relay.port, relay.public_key))
    with trio.fail_after(30):
        async with members(tmp_path, "lead") as clients:
            lead = await clients["lead"].create_cell("Eastside", address)
            await lead.invite()
            await lead.invite()
        hub = relay.relay.hub
        hub.config = dataclasses.replace(hub.config, max_mailboxes_per_connection=LIMIT - 1)
        with capture_logs() as logs:
            async with members(tmp_path, "lead") as clients:
                (lead,) = clients["lead"].cells
                await lead.wait_ready()
                assert len(lead.record.invites) == 2  # kept until they expire
                await lead.send_alert("still works")
        events = [entry["event"] for entry in logs]
        assert "invite_not_watched" in events
        assert "start_abandoned" not in events  # the start went on to its other duties


async def test_two_reaps_at_once_forget_each_invite_once(
    relays: RelayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start's reap (no lock) overlaps a release after a joiner's first message.

    Catches the race that crashed a lead's `listen` with "list.remove(x): x not in list":
    each message from a joiner marks its invite settled again, so while one reap awaited
    the relay's delete a second listed the same invite, and the later of the two to wake
    removed an invite the first had already forgotten.
    """
    relay = await relays.start()
    address = str(RelayAddress("127.0.0.1", relay.port, relay.public_key))
    with trio.fail_after(30):
        async with members(tmp_path, "lead", "ana") as clients:
            lead = await clients["lead"].create_cell("Eastside", address)
            await lead.invite()
            invite = lead.record.invites[0]
            lead._settled.add(invite.join_mailbox)  # as if its joiner had spoken
            # Hold the first reap's delete at the relay's door until the second has begun.
            admin, asked, go = lead.link.admin, trio.Event(), trio.Event()

            async def held_admin(*args: object, **kwargs: object) -> object:
                asked.set()
                await go.wait()
                return await admin(*args, **kwargs)  # type: ignore[arg-type,type-var]

            monkeypatch.setattr(lead.link, "admin", held_admin)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lead._reap_invites)
                await asked.wait()
                lead._settled.add(invite.join_mailbox)  # the joiner spoke again
                nursery.start_soon(lead._reap_invites)
                await trio.testing.wait_all_tasks_blocked()
                go.set()
            assert lead.record.invites == []
            assert not lead._settled
            await lead.send_alert("still works")
