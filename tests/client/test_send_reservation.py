"""Write-ahead by reservation: a power cut never makes the next run reuse a message key.

The lead saves durably only when it reserves the next `SEND_RESERVATION` counters, and
not for every send (docs/protocol.md §C6 item 3). A power cut may leave on disk the
state of that durable save, behind every alert sent since; the next run must skip past
the reservation, so that what it seals is new to every receiver. The test keeps every
payload the lead's keystore wrote, puts the last durable one back as the power cut would,
and checks that the next alert reaches the member: one sealed with a reused counter is
refused by the member as a replay and never shown (the control below shows it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from cellrelay.client._cell_member import SEND_RESERVATION
from cellrelay.client._events import AlertReceived
from cellrelay.client._keystore import Keystore
from cellrelay.client._state import ClientState

from .cells import Recorder, admit, members, passphrase_of
from .conftest import RunningRelay
from .test_cells import address_of

TEST_TIMEOUT = 40
SENT_BEFORE = 5


def _spy_on_saves(monkeypatch: pytest.MonkeyPatch, path: Path) -> list[tuple[bytes, bool]]:
    """Record (payload, durable) for every save of the keystore at `path`."""
    writes: list[tuple[bytes, bool]] = []
    original = Keystore.save

    def save(self: Keystore, payload: bytes, *, durable: bool = True) -> None:
        if self.path == path:
            writes.append((payload, durable))
        original(self, payload, durable=durable)

    monkeypatch.setattr(Keystore, "save", save)
    return writes


def _power_cut(path: Path, name: str, payload: bytes) -> None:
    """Leave `payload` in the keystore, as if nothing after it had reached the disk."""
    keystore, _ = Keystore.open(path, passphrase_of(name))
    try:
        keystore.save(payload, durable=True)
    finally:
        keystore.close()


async def _sent_then_cut(
    running_relay: RunningRelay,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nursery: trio.Nursery,
    *,
    keep_reservation: bool,
) -> tuple[bool, int, int]:
    """Send alerts, cut the power, send again: (was it shown, reserved, counter after load)."""
    keystore_path = tmp_path / "lead" / "keystore"
    writes = _spy_on_saves(monkeypatch, keystore_path)
    async with members(tmp_path, "lead", "ana") as clients:
        lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
        ana = await admit(lead, clients["ana"])
        reader = Recorder(ana)
        await nursery.start(reader.run)
        while lead.record.invites:  # its release after ana's first message saves durably
            await trio.sleep(0.02)
        writes.clear()
        # The first send of the epoch publishes the lead's sender key distribution and
        # reserves counters: both saved durably. The sends after it wait for no fsync.
        await lead.send_alert("warm-up")
        first = len(writes)
        for number in range(SENT_BEFORE):
            await lead.send_alert(f"alert {number}")
        await reader.wait_for(
            lambda e: isinstance(e, AlertReceived) and e.alert.text == f"alert {SENT_BEFORE - 1}"
        )
        assert not any(durable for _, durable in writes[first:])
        sent_up_to = lead.crypto.send_position()[1]
        before_close = len(writes)  # the clean close saves again: not what a power cut leaves
    durable_payload = [payload for payload, durable in writes[:before_close] if durable][-1]
    state = ClientState.decode(durable_payload)
    (record,) = state.cells
    reserved = record.send_reserved
    assert reserved == sent_up_to - (SENT_BEFORE + 1) + SEND_RESERVATION
    if not keep_reservation:  # the control: as if the client did not reserve
        record.send_reserved_epoch = record.send_reserved = 0
        durable_payload = state.encode()
    _power_cut(keystore_path, "lead", durable_payload)

    async with members(tmp_path, "lead", "ana") as clients:
        (lead,) = clients["lead"].cells
        (ana,) = clients["ana"].cells
        counter_after_load = lead.crypto.send_position()[1]
        reader = Recorder(ana)
        await nursery.start(reader.run)
        await lead.send_alert("after the power cut")
        with trio.move_on_after(3 if not keep_reservation else TEST_TIMEOUT):
            await reader.wait_for(
                lambda e: isinstance(e, AlertReceived) and e.alert.text == "after the power cut"
            )
            return True, reserved, counter_after_load
    return False, reserved, counter_after_load


async def test_after_a_power_cut_the_next_alert_uses_a_fresh_counter(
    running_relay: RunningRelay,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        shown, reserved, counter = await _sent_then_cut(
            running_relay, tmp_path, monkeypatch, nursery, keep_reservation=True
        )
    assert counter == reserved  # skipped past everything the lost run could have used
    assert shown


async def test_control_without_the_reservation_the_alert_is_refused_as_a_replay(
    running_relay: RunningRelay,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nursery: trio.Nursery,
) -> None:
    """The same power cut with the reservation erased: the alert reuses a counter and is lost.

    Shows the test above can fail: what it checks is what the reservation is for.
    """
    with trio.fail_after(TEST_TIMEOUT):
        shown, reserved, counter = await _sent_then_cut(
            running_relay, tmp_path, monkeypatch, nursery, keep_reservation=False
        )
    assert counter < reserved
    assert not shown


async def test_a_clean_close_gives_back_what_was_not_used(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """After a clean close the next run starts at the next counter: nothing is skipped.

    Catches a reservation left on disk by every run (every CLI command would then make
    receivers skip and keep `SEND_RESERVATION` message keys).
    """
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            await admit(lead, clients["ana"])
            await lead.send_alert("one")
            await lead.send_alert("two")
            position = lead.crypto.send_position()
            assert lead.record.send_reserved > position[1]
        async with members(tmp_path, "lead") as clients:
            (lead,) = clients["lead"].cells
            assert lead.crypto.send_position() == position
            assert lead.record.send_reserved == position[1]
