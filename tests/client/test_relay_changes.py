"""Adding a relay to a cell that exists, and dropping one (issue 13): real relay processes.

An admin's `add_relay` makes the cell's mailboxes on the new relay and announces it in an
epoch change; every member then reads and writes it too, so the cell outlives the loss of
the relays it had before. `drop_relay` announces that the cell leaves a relay; members
stop using it and an admin deletes the cell's mailboxes there.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Final

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.client import CellError
from cellrelay.client._cell_moves import ChangeExtra, ChangeExtraError
from cellrelay.protocol.wire import MailboxId, RelayAddress
from cellrelay.protocol.wire._codec import encode_map

from ..relay.conftest import RelayFactory, relays
from ..relay.process import reap
from ..relay.test_ops_endpoints import scrape
from .cells import Recorder, admit, members
from .test_cli import cli, identity, one_line_error
from .test_cli_daemon import start_daemon_process
from .test_several_relays import _alert, three_relays

__all__ = ["relays"]

TEST_TIMEOUT: Final = 120

_addresses = st.builds(
    lambda host, port, key: str(RelayAddress(host, port, key)),
    st.from_regex(r"[a-z]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z]{2,6}){0,2}", fullmatch=True),
    st.integers(1, 65535),
    st.binary(min_size=32, max_size=32),
)
_ids = st.binary(min_size=16, max_size=16).map(MailboxId)


@given(add=st.none() | st.tuples(_addresses, _ids, _ids), drop=st.none() | _addresses)
def test_relay_changes_in_client_data_round_trip(
    add: tuple[str, MailboxId, MailboxId] | None, drop: str | None
) -> None:
    """Any relay the cell adds or drops survives encoding; two names for one relay do not."""
    if add is not None and drop == add[0]:
        with pytest.raises(ChangeExtraError):
            ChangeExtra(relay_add=add, relay_drop=drop)
        return
    extra = ChangeExtra(relay_add=add, relay_drop=drop)
    assert ChangeExtra.decode(extra.encode()) == extra
    assert bool(extra) == (add is not None or drop is not None)


@pytest.mark.parametrize(
    "fields",
    [
        {"relay_add": ["not an address", bytes(16), bytes(16)]},
        {"relay_add": [f"cellrelay://{'A' * 43}@r.example:1", bytes(15), bytes(16)]},
        {"relay_add": [f"cellrelay://{'A' * 43}@r.example:1", bytes(16)]},
        {"relay_add": f"cellrelay://{'A' * 43}@r.example:1"},
        {"relay_drop": b"bytes"},
        {"relay_drop": f"cellrelay://{'B' * 43}@r.example:1"},  # not the canonical spelling
    ],
)
def test_damaged_relay_changes_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ChangeExtraError):
        ChangeExtra.decode(encode_map(fields))


async def _until(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Wait until `condition()` holds (state other tasks change as deliveries arrive)."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.02)


async def test_a_relay_added_to_a_cell_carries_it_when_the_first_is_killed(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A cell on one relay; the lead adds a second; the first is killed: alerts go on,
    both ways, and a member who joins afterwards learns both relays."""
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            three_relays(tmp_path) as relays,
            members(tmp_path, "lead", "ana", "cy") as clients,
        ):
            lead = await clients["lead"].create_cell("Eastside", str(relays[0].address))
            ana = await admit(lead, clients["ana"])
            assert ana.further == []
            added = str(relays[1].address)
            epoch = lead.crypto.epoch
            await lead.add_relay(added)
            assert lead.crypto.epoch == epoch + 1
            assert [f.record.relay for f in lead.further] == [added]
            await _until(lambda: [f.record.relay for f in ana.further] == [added])
            # Ana watches the new relay: its group mailbox there, with her keys for it.
            await _until(lambda: ana.further[0].started)
            assert (await scrape(relays[1].ops_port))["cellrelay_mailboxes"] == 2
            cy = await admit(lead, clients["cy"])
            assert [f.record.relay for f in cy.further] == [added]

            heard_by_ana, heard_by_lead = Recorder(ana), Recorder(lead)
            for recorder in (heard_by_ana, heard_by_lead):
                await nursery.start(recorder.run)
            await relays[0].kill()
            await lead.send_alert("through the added relay")
            await heard_by_ana.wait_for(_alert("through the added relay"), timeout=30)
            await ana.send_alert("ana is heard there too")
            await heard_by_lead.wait_for(_alert("ana is heard there too"), timeout=30)

            # Refused: the same relay again, and a relay already the cell's first.
            with pytest.raises(CellError, match="lives on that relay already"):
                await lead.add_relay(added)
            with pytest.raises(CellError, match="only an admin"):
                await ana.add_relay(str(relays[2].address))


async def test_a_dropped_relay_is_left_by_every_member_and_emptied(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A cell on three relays drops the third: members stop reading it, the lead deletes
    the cell's mailboxes there, and the cell carries on on the other two. The first relay
    cannot be dropped."""
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            three_relays(tmp_path) as relays,
            members(tmp_path, "lead", "ana") as clients,
        ):
            addresses = [str(r.address) for r in relays]
            lead = await clients["lead"].create_cell("Eastside", addresses)
            ana = await admit(lead, clients["ana"])
            assert len(ana.further) == 2
            assert (await scrape(relays[2].ops_port))["cellrelay_mailboxes"] >= 2
            with pytest.raises(CellError, match="first relay cannot be dropped"):
                await lead.drop_relay(addresses[0])

            await lead.drop_relay(addresses[2])
            await _until(
                lambda: all(
                    [f.record.relay for f in c.further] == addresses[1:2] for c in (lead, ana)
                )
            )
            # Nothing of the cell is left there, an invite's join mailbox included.
            with trio.fail_after(30):
                while True:
                    samples = await scrape(relays[2].ops_port)
                    if samples["cellrelay_mailboxes"] == 0:
                        break
                    await trio.sleep(0.1)
            # Members no longer use its link at all.
            assert all(relays[2].port != link.address.port for link in ana.links)

            heard = Recorder(ana)
            await nursery.start(heard.run)
            await relays[0].kill()
            await lead.send_alert("on the relay that is left")
            await heard.wait_for(_alert("on the relay that is left"), timeout=30)
            with pytest.raises(CellError, match="does not live on that relay"):
                await lead.drop_relay(addresses[2])
        # Saved: a restart reads the cell on its two relays only.
        async with members(tmp_path, "ana") as again:
            further = again["ana"].cell("Eastside").further
            assert [f.record.relay for f in further] == addresses[1:2]


async def test_the_command_line_adds_and_drops_a_relay_alone_and_through_a_daemon(
    relays: RelayFactory, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """`cell add-relay` and `cell drop-relay`, standing alone and through a daemon."""
    running = [await relays.start() for _ in range(3)]
    addresses = [str(RelayAddress("127.0.0.1", r.port, r.public_key)) for r in running]
    lead = identity(tmp_path, "lead")
    await cli("cell", "create", "North", "--relay", addresses[0], home=lead)
    added = (await cli("cell", "add-relay", "North", addresses[1], "--json", home=lead)).json()
    assert added == {"cell": "North", "relay": addresses[0], "more_relays": [addresses[1]]}
    assert running[1].relay.metrics.mailboxes_created.value == 2
    again = await cli("cell", "add-relay", "North", addresses[1], home=lead, expect=1)
    assert "lives on that relay already" in one_line_error(again)
    await cli("send", "North", "on both", home=lead)

    daemon = await start_daemon_process(lead, nursery)
    try:
        through = await cli("cell", "add-relay", "North", addresses[2], "--json", home=lead, passphrase=None)  # fmt: skip
        assert through.json()["more_relays"] == addresses[1:]
        assert running[2].relay.metrics.mailboxes_created.value == 2
        dropped = await cli("cell", "drop-relay", "North", addresses[1], "--json", home=lead, passphrase=None)  # fmt: skip
        assert dropped.json()["more_relays"] == [addresses[2]]
        first = await cli("cell", "drop-relay", "North", addresses[0], home=lead, passphrase=None, expect=1)  # fmt: skip
        assert "first relay cannot be dropped" in one_line_error(first)
        # The daemon, an admin, deletes the cell's mailboxes on the dropped relay.
        await _until(lambda: running[1].relay.hub.mailbox_count == 0)
    finally:
        daemon.process.send_signal(signal.SIGTERM)
        await reap(daemon.process)
    await cli("send", "North", "on the first and the third", home=lead)


async def test_an_admin_copies_epoch_changes_to_a_relay_their_author_cannot_reach(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """The lead reaches only the first relay, Ben only the second; Ana, an admin, all three.

    The lead changes a setting and then removes Cy: both changes reach the first relay
    only, and Ana's client copies them to the others (rotating the group keys there first
    for the removal), so Ben, who reads only the second relay, follows both epochs and
    still hears the lead, and Cy reads nothing sent after the removal.
    """
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            three_relays(tmp_path) as relays,
            members(tmp_path, "lead", "ana", "ben", "cy") as clients,
        ):
            lead = await clients["lead"].create_cell("Eastside", [str(r.address) for r in relays])
            ana, ben, cy = [await admit(lead, clients[n]) for n in ("ana", "ben", "cy")]
            await lead.promote(ana.me)
            await _until(lambda: ana.is_admin and ben.crypto.epoch == lead.crypto.epoch)
            heard_by_ben, heard_by_cy = Recorder(ben), Recorder(cy)
            for recorder in (heard_by_ben, heard_by_cy):
                await nursery.start(recorder.run)
            for link in lead.links[1:]:
                await link.aclose()
            for link in (ben.links[0], ben.links[2]):
                await link.aclose()

            await lead.set_alert_limit(500)
            await _until(lambda: ben.crypto.epoch == lead.crypto.epoch and ben.alert_limit == 500)
            await lead.remove(cy.me)
            await _until(lambda: ben.crypto.epoch == lead.crypto.epoch, timeout=60)
            assert len(ben.members()) == 3
            await lead.send_alert("after cy left")
            await heard_by_ben.wait_for(_alert("after cy left"), timeout=60)
            await ben.send_alert("ben, on the second relay")
            heard_by_lead = Recorder(lead)
            await nursery.start(heard_by_lead.run)
            await heard_by_lead.wait_for(_alert("ben, on the second relay"), timeout=60)
            assert cy.removed
            assert not [e for e in heard_by_cy.events if _alert("after cy left")(e)]
