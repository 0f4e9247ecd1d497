"""The app hears of what should have arrived and has not, and of equivocation (issue 9).

Through a real relay on loopback made hostile (tests/client/hostile.py):

| what happens                                          | what the member's app sees             |
|-------------------------------------------------------|----------------------------------------|
| the relay withholds one message from one member only  | MessagesMissing (after the grace)      |
| ... and delivers it after all                         | the message, then MessagesRecovered    |
| a member signs a second, different message for a      | EquivocationDetected naming it         |
| counter (a device restored from a backup)             |                                        |
| the same envelope again                               | nothing (a duplicate, as before)       |
| no epoch change reaches a member for too long         | EpochStale                             |
| a skipped key 8 days later                            | gone from the keystore                 |

Grace periods are shortened with monkeypatch (the real ones are minutes), and the
client's maintenance runs every 0.1 s, so the tests wait on events, not on the clock.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from cellrelay.client import _cell_member as cell_module
from cellrelay.client import _client as client_module
from cellrelay.client._cell_admin import Cell
from cellrelay.client._cli_output import Style, event_json, event_lines
from cellrelay.client._client import open_client
from cellrelay.client._events import (
    CellEvent,
    EpochStale,
    EquivocationDetected,
    Member,
    MessageReceived,
    MessagesMissing,
    MessagesRecovered,
    SecurityWarning,
)
from cellrelay.protocol.cell import _receiver as receiver_module
from cellrelay.protocol.cell._envelope import Kind
from cellrelay.protocol.cell._group import CellCrypto
from cellrelay.protocol.cell._state import read_state
from cellrelay.protocol.wire import RelayAddress

from ..relay.conftest import RelayFactory, relays
from .cells import admit, announce, members, passphrase_of
from .conftest import RunningRelay
from .hostile import Emitted, HostileRelay, client_port, read_keystore, until
from .test_cells import address_of

__all__ = ["relays"]

TEST_TIMEOUT = 60
DAY = 24 * 3600.0


@pytest.fixture
def emitted(monkeypatch: pytest.MonkeyPatch) -> Emitted:
    return Emitted(monkeypatch)


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """Grace periods of half a second, maintenance ten times a second."""
    monkeypatch.setattr(receiver_module, "GAP_GRACE", 0.5)
    monkeypatch.setattr(client_module, "MAINTENANCE_INTERVAL", 0.1)


def of_type(emitted: Emitted, member: str, kind: type) -> list[object]:
    return [e for e in emitted.of(member) if isinstance(e, kind)]


async def test_a_message_withheld_from_one_member_is_reported_and_accepted_later(
    running_relay: RunningRelay, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, emitted: Emitted
) -> None:
    hostile = HostileRelay(running_relay, monkeypatch)
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana", "ben") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            await admit(lead, clients["ana"])
            ben = await admit(lead, clients["ben"])
            group = lead.record.group_mailbox
            await lead.send_message("m0")
            await until(lambda: emitted.messages("ben") == ["m0"])
            hostile.only(group, {client_port(ben.link)})
            hostile.tamper_next(group, "withheld from ben", None)
            await lead.send_message("m1 withheld from ben")
            await lead.send_message("m2")
            await until(lambda: emitted.messages("ana") == ["m0", "m1 withheld from ben", "m2"])
            await until(lambda: bool(of_type(emitted, "ben", MessagesMissing)))
            (missing,) = of_type(emitted, "ben", MessagesMissing)
            assert isinstance(missing, MessagesMissing)
            assert missing.sender.member_id == lead.me.member_id
            assert missing.count == 1
            assert emitted.messages("ben") == ["m0", "m2"]
            assert not of_type(emitted, "ana", MessagesMissing)
            assert not of_type(emitted, "lead", MessagesMissing)

            # The relay delivers it after all: shown once, and said to be recovered.
            genuine = hostile.genuine(group)
            ((seq, _),) = hostile.tampered(group)
            hostile.only(group, set())
            await hostile.insert(lead, genuine[seq])
            await until(lambda: bool(of_type(emitted, "ben", MessagesRecovered)))
            assert emitted.messages("ben") == ["m0", "m2", "m1 withheld from ben"]
            assert len(of_type(emitted, "ben", MessagesMissing)) == 1
            assert not of_type(emitted, "ben", SecurityWarning)


async def test_a_second_different_message_for_one_counter_names_the_sender(
    running_relay: RunningRelay, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, emitted: Emitted
) -> None:
    hostile = HostileRelay(running_relay, monkeypatch)
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            await admit(lead, clients["ana"])
            group = lead.record.group_mailbox
            hostile.watch(group)
            # A backup of the lead's device, taken now, reuses the next counter later.
            backup = CellCrypto.from_bytes(lead.crypto.to_bytes(), lead._identity)
            hostile.mark_next(group, "real")
            await lead.send_message("the real one")
            await until(lambda: emitted.messages("ana") == ["the real one"])
            now = lead.link.relay_time()
            forked = backup.seal(Kind.MESSAGE, b"\x81", expires_at=int(now) + 3600, now=now)
            await hostile.insert(lead, forked)
            await until(lambda: bool(of_type(emitted, "ana", EquivocationDetected)))
            (event,) = of_type(emitted, "ana", EquivocationDetected)
            assert isinstance(event, EquivocationDetected)
            assert event.member.member_id == lead.me.member_id
            assert event.epoch == lead.crypto.epoch
            # The genuine envelope once more is a duplicate: nothing at all.
            ((real_seq, _),) = hostile.tampered(group)
            await hostile.insert(lead, hostile.genuine(group)[real_seq])
            await lead.send_message("after")
            await until(lambda: emitted.messages("ana") == ["the real one", "after"])
            assert len(of_type(emitted, "ana", EquivocationDetected)) == 1
            assert not of_type(emitted, "ana", SecurityWarning)


async def test_an_epoch_older_than_rotation_allows_is_reported_once(
    running_relay: RunningRelay, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, emitted: Emitted
) -> None:
    monkeypatch.setattr(cell_module, "EPOCH_STALE_AFTER", 0.3)
    monkeypatch.setattr(client_module, "ROTATE_AFTER", 3600.0)  # nobody rotates here
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            await until(lambda: bool(of_type(emitted, "ana", EpochStale)))
            (stale,) = of_type(emitted, "ana", EpochStale)
            assert isinstance(stale, EpochStale)
            assert stale.epoch == ana.crypto.epoch
            assert stale.newer == 0
            for _ in range(3):  # more rounds of the client's maintenance: still once
                ana.check_notices()
                ana.flush()
            assert len(of_type(emitted, "ana", EpochStale)) == 1


def test_the_stale_margin_exceeds_the_rotation_period() -> None:
    assert cell_module.EPOCH_STALE_AFTER > client_module.ROTATE_AFTER


async def test_a_skipped_key_is_gone_from_the_keystore_8_days_later(
    running_relay: RunningRelay, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, emitted: Emitted
) -> None:
    hostile = HostileRelay(running_relay, monkeypatch)
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ben") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ben = await admit(lead, clients["ben"])
            group = lead.record.group_mailbox
            await announce(lead)  # the next envelope is m0, not the announcement before it
            hostile.tamper_next(group, "withheld", None)
            await lead.send_message("m0 withheld")
            await lead.send_message("m1")
            await until(lambda: emitted.messages("ben") == ["m1"])
            keystore = tmp_path / "ben" / "keystore"

            def skipped_on_disk() -> list[int]:
                state = read_keystore(keystore, passphrase_of("ben"))
                (record,) = state.cells
                saved = read_state(record.crypto, ben.me.member_id)
                return [
                    c for e in saved.epochs.values() for ch in e.chains.values() for c in ch.skipped
                ]

            await clients["ben"].save()
            assert skipped_on_disk() == [0]
            # Eight days on, for both of Ben's clocks: expiry goes by the earlier (§C7), so
            # moving the relay's alone (as this did before finding 1's clocks) moves nothing.
            offset = 8 * DAY
            real = ben.link.device_time
            monkeypatch.setattr(ben.link, "device_time", lambda: real() + offset)
            await until(lambda: skipped_on_disk() == [])  # the next maintenance round saves
            assert not [e for e in emitted.of("ben") if isinstance(e, MessageReceived)][1:]


async def test_a_skipped_key_outlives_the_default_on_a_relay_that_keeps_longer(
    relays: RelayFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, emitted: Emitted
) -> None:
    """A relay keeping 30 days: Ben's device keeps a skipped key that long, even offline.

    The relay's maximum TTL used to be known only from a welcome in the current run, so a
    client that started while the relay was unreachable, and applied an epoch change
    before its first welcome was read, expired skipped keys by the default 7 days: keys
    of messages the relay could still deliver (the withheld one here).
    """
    relay = await relays.start(max_ttl=int(30 * DAY))
    hostile = HostileRelay(relay, monkeypatch)
    address = str(RelayAddress("127.0.0.1", relay.port, relay.public_key))
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ben") as clients:
            lead = await clients["lead"].create_cell("Eastside", address)
            ben = await admit(lead, clients["ben"])
            await announce(lead)  # the next envelope is m0, not the announcement before it
            hostile.tamper_next(lead.record.group_mailbox, "withheld", None)
            await lead.send_message("m0 withheld", ttl=int(20 * DAY))
            await lead.send_message("m1")
            await until(lambda: emitted.messages("ben") == ["m1"])
            online = ben.crypto.key_lifetime
        assert online > 30 * DAY
        await relay.relay.shutdown()
        async with open_client(
            passphrase_of("ben"), home=tmp_path / "ben", clock=lambda: time.time() + 8 * DAY
        ) as client:
            (cell,) = client.cells
            assert cell.link.welcome is None  # offline: no relay has said its TTL in this run
            assert cell.crypto.key_lifetime == online


def test_listen_prints_each_notice_as_a_security_line_and_as_json() -> None:
    """What `cellrelay listen` prints for the new events, as text and with --json."""
    ana = Member(member_id=bytes.fromhex("3fa2c1d0") + bytes(12), name="Ana")
    style = Style(colour=False)
    cases: list[tuple[CellEvent, str, dict[str, object]]] = [
        (
            MessagesMissing(cell="Eastside", sender=ana, count=2),
            "[Eastside] security: 2 messages are missing from Ana (3fa2c1d0).",
            {"type": "missing", "count": 2},
        ),
        (
            MessagesRecovered(cell="Eastside", sender=ana, count=1),
            "[Eastside] 1 missing message from Ana arrived after all",
            {"type": "recovered", "count": 1},
        ),
        (
            EquivocationDetected(cell="Eastside", member=ana, epoch=7, counter=3),
            "[Eastside] security: Ana (3fa2c1d0) signed two different messages as one.",
            {"type": "equivocation", "epoch": 7, "counter": 3},
        ),
        (
            EpochStale(cell="Eastside", epoch=7, newer=8, age=60),
            "[Eastside] security: messages of a newer epoch (8) arrive that this device"
            " cannot open (it is in epoch 7).",
            {"type": "epoch_stale", "epoch": 7, "newer": 8, "age": 60},
        ),
        (
            EpochStale(cell="Eastside", epoch=7, newer=0, age=26 * 3600),
            "[Eastside] security: no new epoch for 26 hours (epoch 7).",
            {"type": "epoch_stale", "newer": 0},
        ),
    ]
    for event, first_line, fields in cases:
        assert event_lines(event, style)[0] == first_line
        as_json = event_json(event)
        assert as_json["cell"] == "Eastside"
        assert fields.items() <= as_json.items(), as_json


async def test_counters_skipped_after_a_crash_are_not_reported_missing(
    running_relay: RunningRelay, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, emitted: Emitted
) -> None:
    """A sender that restarts after a crash skips what it reserved, and says so (§G8.2)."""
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "ana") as ana_clients:
            async with members(tmp_path, "lead") as lead_clients:
                lead = await lead_clients["lead"].create_cell("Eastside", address_of(running_relay))
                ana = await admit(lead, ana_clients["ana"])
                await lead.send_message("m0")
                await until(lambda: emitted.messages("ana") == ["m0"])
                # An unclean end: the reservation is not given back, the next run skips it.
                settle = Cell.settle
                monkeypatch.setattr(Cell, "settle", lambda self: False)
            monkeypatch.setattr(Cell, "settle", settle)
            async with members(tmp_path, "lead") as lead_clients:
                (lead,) = lead_clients["lead"].cells
                skipped_to = lead.crypto.send_position()[1]
                assert skipped_to > 1
                await lead.send_message("m1")
                await until(lambda: emitted.messages("ana") == ["m0", "m1"])
            saved = read_state(ana.crypto.to_bytes(), ana.me.member_id)
            chain = saved.epochs[ana.crypto.epoch].chains[lead.me.member_id]
            assert (chain.next, dict(chain.skipped)) == (skipped_to + 1, {})
            assert ana.crypto.check(ana.clock() + 3600) == ()
            assert not of_type(emitted, "ana", MessagesMissing)
