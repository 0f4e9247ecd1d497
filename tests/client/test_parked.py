"""A relay that makes up parked envelopes during an epoch change loses no genuine one.

The relay holds no key, but it can make up envelopes that claim the next epoch: nobody can
check them before that epoch arrives, so members park them (docs/protocol.md §G10). Here
the relay withholds an epoch change from ana (only on her connection, as it may) and
stores 256 made-up envelopes of the new epoch in the group mailbox, before the members
who did apply the change send in it. Ana parks what fits in the share of envelopes of
future epochs, and refuses the rest, the genuine ones included; when the change reaches
her she fetches the refused ones again (client/_cell_refetch.py). Every genuine message
opens, once; the made-up ones come out as security warnings. Her keystore never holds a
parked envelope: a restart fetches them from the relay again too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from cellrelay.client._cell_admin import Cell
from cellrelay.client._events import AlertReceived, MessageReceived, SecurityWarning
from cellrelay.protocol._crypto import random_bytes
from cellrelay.protocol.cell._receiver import MAX_PENDING
from cellrelay.protocol.wire._capability import CapabilityKey
from cellrelay.protocol.wire._messages import Published

from ..wire_client import WireClient
from .cells import Recorder, admit, members, passphrase_of
from .conftest import RunningRelay
from .hostile import HostileRelay, client_port, keystore_payload, until
from .test_cells import address_of

TEST_TIMEOUT = 90
GENUINE = [f"sent in the new epoch {n}" for n in range(6)]


async def make_up(relay: RunningRelay, cell: Cell, count: int) -> None:
    """Store `count` envelopes of the cell's next epoch that nobody sealed (the relay's own)."""
    epoch = cell.crypto.epoch + 1
    client = await WireClient.connect(relay.port, relay.public_key)
    try:
        await client.auth(
            CapabilityKey.from_seed(cell.crypto.group_keys[1]), "write", cell.record.group_mailbox
        )
        for _ in range(count):
            fake = b"\x01" + epoch.to_bytes(4, "big") + random_bytes(512 - 5)
            reply = await client.publish(cell.record.group_mailbox, fake, ttl=3600)
            assert isinstance(reply, Published), reply
    finally:
        await client.aclose()


def shown(events: Sequence[object]) -> Counter[str]:
    out: Counter[str] = Counter()
    for event in events:
        if isinstance(event, MessageReceived):
            out[event.message.text] += 1
        elif isinstance(event, AlertReceived):
            out[event.alert.text] += 1
    return out


async def _race(
    relay: RunningRelay, hostile: HostileRelay, lead: Cell, ben: Cell, ana: Cell
) -> None:
    """Withhold the next epoch change from ana; make up envelopes; send genuine ones."""
    control = lead.record.control_mailbox
    hostile.only(control, {client_port(ana.link)})
    hostile.tamper_next(control, "withheld from ana", None)
    epoch = ana.crypto.epoch
    await make_up(relay, ana, MAX_PENDING)  # all of the next epoch, as far as ana can tell
    await lead.rotate()
    await until(lambda: ben.crypto.epoch == epoch + 1)
    for n, text in enumerate(GENUINE):
        await (ben if n % 2 else lead).send_message(text)
    await until(lambda: ana.record.group_cursor >= lead.record.group_cursor)
    assert ana.crypto.epoch == epoch  # the change has not reached her


async def test_made_up_envelopes_push_out_no_genuine_one(
    running_relay: RunningRelay,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    nursery: trio.Nursery,
) -> None:
    hostile = HostileRelay(running_relay, monkeypatch)
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana", "ben") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            ben = await admit(lead, clients["ben"])
            reader = Recorder(ana)
            await nursery.start(reader.run)
            await _race(running_relay, hostile, lead, ben, ana)
            assert ana.record.group_refetch  # refused ones are to be fetched again
            # Ana's connection drops (the relay cuts it after her next publish); on the
            # new one the change reaches her.
            hostile.lose_next_ack(client_port(ana.link))
            await ana.send_message("from ana, in the old epoch")
            await until(lambda: all(shown(reader.events)[text] for text in GENUINE), timeout=60)
            await trio.sleep(0.3)  # anything shown twice would be by now
            counts = shown(reader.events)
            assert [counts[text] for text in GENUINE] == [1] * len(GENUINE)
            made_up = [e for e in reader.events if isinstance(e, SecurityWarning)]
            assert len(made_up) >= MAX_PENDING // 2  # the ones she parked, then opened
            assert {e.reason for e in made_up} == {"TamperedError"}


async def test_a_restart_fetches_parked_envelopes_again(
    running_relay: RunningRelay, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hostile = HostileRelay(running_relay, monkeypatch)
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ben") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ben = await admit(lead, clients["ben"])
            async with members(tmp_path, "ana") as first_run:
                ana = await admit(lead, first_run["ana"])
                await _race(running_relay, hostile, lead, ben, ana)
                assert ana.crypto.parked_refs()
                await first_run["ana"].save()
            # On disk: where to fetch from again, and no parked envelope (each is 512
            # bytes here, far above what the rest of the state takes).
            state = keystore_payload(tmp_path / "ana" / "keystore", passphrase_of("ana"))
            assert len(state) < 64 * 1024
            async with members(tmp_path, "ana") as second_run:
                ana = second_run["ana"].cell("Eastside")
                await until(lambda: all(shown_recent(ana)[t] for t in GENUINE), timeout=60)
                assert [shown_recent(ana)[t] for t in GENUINE] == [1] * len(GENUINE)


def shown_recent(cell: Cell) -> Counter[str]:
    return Counter(getattr(content, "text", "") for _, content in cell.recent())
