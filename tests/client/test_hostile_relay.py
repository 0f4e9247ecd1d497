"""A hostile relay tampers with a cell's envelopes: nothing forged reaches the app.

The relay is an in-process relay whose delivery path is rewritten (tests/client/hostile.py):
it flips bytes, cuts envelopes short, makes envelopes up, withholds them, swaps them,
re-sends them under new seqs, and re-sends envelopes of an earlier epoch after a member
was removed. Expected outcomes, per docs/protocol.md Part 2 §G10-G13:

| what the relay does                              | what the member's app sees              |
|--------------------------------------------------|-----------------------------------------|
| flips a bit in the sealed header                 | SecurityWarning TamperedError           |
| flips a bit in the body                          | SecurityWarning BadSignatureError       |
| flips the version byte; cuts the envelope short  | SecurityWarning MalformedError          |
| makes an envelope up                             | SecurityWarning TamperedError           |
| flips a bit in an epoch change (control mailbox) | SecurityWarning, epoch not applied      |
| re-sends a message from a removed member         | shown once if sealed while a member     |
| re-sends a message already opened (new seq)      | nothing: a duplicate, dropped quietly   |
| withholds a message (drop)                       | MessagesMissing after 5 min (test_gaps) |
| swaps two messages                               | both, once each (out of order is legal) |
| delivers the genuine bytes of any of those later | the message, exactly once               |

A duplicate is dropped without a warning because it cannot be told from the ordinary
re-delivery of a publish whose acknowledgement was lost (§7: at least once), which
`test_lost_acknowledgement_duplicate_is_quiet` makes happen; §G13 says it needs no alarm.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from cellrelay.client._cell_admin import AdminSecrets, Cell
from cellrelay.client._events import MessageReceived, SecurityWarning
from cellrelay.protocol._crypto import random_bytes

from .cells import Recorder, admit, members
from .conftest import RunningRelay
from .hostile import HostileRelay, client_port, flip, until
from .test_cells import address_of

HEADER_BYTE = 29 + 10  # inside the sealed header (protocol/cell/_envelope.py's layout)
BODY_BYTE = 158 + 20  # inside the body
VERSION_BYTE = 0
TEST_TIMEOUT = 60


def texts(recorder: Recorder) -> list[str]:
    """The texts of the plain messages the app was handed, in order."""
    return [e.message.text for e in recorder.events if isinstance(e, MessageReceived)]


def warnings(recorder: Recorder) -> list[str]:
    """The reasons of the security warnings the app was handed, in order."""
    return [e.reason for e in recorder.events if isinstance(e, SecurityWarning)]


async def settled(*cells: Cell) -> None:
    """Let the cells process what the relay has sent them (bounded)."""
    with trio.fail_after(20):
        for cell in cells:
            await cell.wait_synced()
    await trio.sleep(0.2)  # deliveries already on the wire


async def test_tampered_forged_withheld_and_replayed_envelopes(
    running_relay: RunningRelay,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    nursery: trio.Nursery,
) -> None:
    """Every tampering is reported or harmless; each genuine message reaches each app once."""
    hostile = HostileRelay(running_relay, monkeypatch)
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana", "ben") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            ben = await admit(lead, clients["ben"])
            readers = {"ana": Recorder(ana), "ben": Recorder(ben)}
            for recorder in readers.values():
                await nursery.start(recorder.run)
            group = lead.record.group_mailbox
            hostile.watch(group)
            sent: list[str] = []

            async def send(text: str) -> None:
                await lead.send_message(text)
                sent.append(text)

            await send("m0 before any tampering")
            await until(lambda: all(texts(r) == sent for r in readers.values()))

            # Altered in flight: each is reported, none is shown.
            expected_warnings = [
                "TamperedError",
                "BadSignatureError",
                "MalformedError",
                "MalformedError",
            ]
            alterations = [
                ("header bit", flip(HEADER_BYTE)),
                ("body bit", flip(BODY_BYTE)),
                ("version", flip(VERSION_BYTE)),
                ("cut short", lambda envelope: envelope[:-1]),
            ]
            for number, (name, transform) in enumerate(alterations, start=1):
                hostile.tamper_next(group, name, transform)
                await send(f"m{number} {name}")
                await until(lambda: all(len(warnings(r)) == number for r in readers.values()))  # noqa: B023
            # Made up by the relay: the right size, version and epoch, random otherwise.
            forged = b"\x01" + lead.crypto.epoch.to_bytes(4, "big") + random_bytes(251)
            await hostile.insert(lead, forged)
            expected_warnings.append("TamperedError")
            await until(lambda: all(warnings(r) == expected_warnings for r in readers.values()))
            # Withheld: not detectable on its own (docs/threat-model.md §3.3).
            hostile.tamper_next(group, "withheld", None)
            await send("m5 withheld")
            await send("m6 after the withheld one")
            await until(
                lambda: all(texts(r)[-1] == "m6 after the withheld one" for r in readers.values())
            )
            for recorder in readers.values():
                assert texts(recorder) == ["m0 before any tampering", "m6 after the withheld one"]

            # The relay now hands over the genuine bytes of everything it altered or
            # withheld, under new seqs: each opens once, from the key the receiver kept.
            genuine = hostile.genuine(group)
            for seq, _ in hostile.tampered(group):
                await hostile.insert(lead, genuine[seq])
            await until(lambda: all(len(texts(r)) == len(sent) for r in readers.values()))

            # Replays of envelopes already opened, under new seqs: dropped, not shown again.
            for seq, _ in hostile.tampered(group):
                await hostile.insert(lead, genuine[seq])
            await hostile.insert(lead, genuine[min(genuine)])  # m0's envelope

            # Reordered: both arrive, once each, in the order the relay chose.
            hostile.swap_next_two(group)
            await send("m7 first sent")
            await send("m8 second sent")
            await until(lambda: all("m7 first sent" in texts(r) for r in readers.values()))
            await settled(ana, ben)

            for name, recorder in readers.items():
                shown = texts(recorder)
                assert sorted(shown) == sorted(sent), name  # each genuine message exactly once
                assert shown[-2:] == ["m8 second sent", "m7 first sent"], name
                assert warnings(recorder) == expected_warnings, name
            assert lead.removed is False


async def test_old_epoch_envelopes_after_a_removal(
    running_relay: RunningRelay,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    nursery: trio.Nursery,
) -> None:
    """After a removal the relay re-sends the old epoch's envelopes: each one sealed before
    the removal shows once, the removed member's included (judged by the membership of its
    epoch: issue 9, finding 3), and one already shown is a quiet replay."""
    hostile = HostileRelay(running_relay, monkeypatch)
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana", "mallory") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            mallory = await admit(lead, clients["mallory"])
            reader = Recorder(ana)
            await nursery.start(reader.run)
            group = lead.record.group_mailbox

            hostile.mark_next(group, "mallory 1")
            await mallory.send_message("mallory 1")
            hostile.tamper_next(group, "withheld from mallory", None)
            await mallory.send_message("mallory 2, withheld")
            await lead.send_message("lead 1")
            hostile.tamper_next(group, "withheld from lead", None)
            await lead.send_message("lead 2, withheld")
            await until(lambda: texts(reader) == ["mallory 1", "lead 1"])
            genuine = hostile.genuine(group)
            old = {name: genuine[seq] for seq, name in hostile.tampered(group)}
            epoch_before = ana.crypto.epoch

            await lead.remove(lead.find_member("mallory"))
            await until(lambda: ana.crypto.epoch == epoch_before + 1)
            await hostile.insert(lead, old["mallory 1"])  # opened by ana before the removal
            await hostile.insert(lead, old["withheld from mallory"])  # never opened by ana
            await hostile.insert(lead, old["withheld from lead"])  # sealed before the change
            await lead.send_message("lead 3, new epoch")
            await until(lambda: "lead 3, new epoch" in texts(reader))
            await settled(ana)

            # Once each, in order per sender. The two senders' late envelopes, inserted while
            # ana still moves to the fresh mailbox, show in either order (seen both ways since
            # `remove` waits for the lead's own move): the protocol orders per sender only.
            shown = texts(reader)
            assert sorted(shown) == sorted([
                "mallory 1", "lead 1", "mallory 2, withheld", "lead 2, withheld",
                "lead 3, new epoch",
            ])  # fmt: skip
            assert [t for t in shown if t.startswith("mallory")] == [
                "mallory 1",
                "mallory 2, withheld",
            ]
            assert [t for t in shown if t.startswith("lead")] == [
                "lead 1", "lead 2, withheld", "lead 3, new epoch"]  # fmt: skip
            assert warnings(reader) == []


async def test_tampered_epoch_change_is_reported_and_not_applied(
    running_relay: RunningRelay,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    nursery: trio.Nursery,
) -> None:
    """A bit flipped in an epoch change is reported; the genuine change, delivered later, applies."""
    hostile = HostileRelay(running_relay, monkeypatch)
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            reader = Recorder(ana)
            await nursery.start(reader.run)
            control = lead.record.control_mailbox
            hostile.only(control, {client_port(ana.link)})  # the lead must apply its own change
            hostile.tamper_next(control, "change bit", flip(200))
            epoch = ana.crypto.epoch
            await lead.rotate()
            await until(lambda: warnings(reader) != [])
            assert ana.crypto.epoch == epoch
            seq, _ = hostile.tampered(control)[0]
            secrets = AdminSecrets.decode(lead.crypto.admin_secrets)
            await hostile.insert_into(control, secrets.control_write, hostile.genuine(control)[seq])
            await until(lambda: ana.crypto.epoch == epoch + 1)
            await lead.send_message("in the new epoch")
            await until(lambda: texts(reader) == ["in the new epoch"])
            assert len(warnings(reader)) == 1


async def test_lost_acknowledgement_duplicate_is_quiet(
    running_relay: RunningRelay,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    nursery: trio.Nursery,
) -> None:
    """A publish stored but not acknowledged is published again: the second copy is a
    duplicate that must neither show twice nor raise a false alarm."""
    hostile = HostileRelay(running_relay, monkeypatch)
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            reader = Recorder(ana)
            await nursery.start(reader.run)
            group = lead.record.group_mailbox
            hostile.watch(group)
            connections = lead.link.connections
            hostile.lose_next_ack(client_port(lead.link))
            await lead.send_message("sent once, stored twice")
            assert hostile.acks_lost == 1
            assert lead.link.connections == connections + 1
            await lead.send_message("the next one")
            await until(lambda: "the next one" in texts(reader))
            await settled(ana)
            stored = list(hostile.genuine(group).values())
            assert len(stored) - len(set(stored)) == 1, "the relay should hold one message twice"
            assert texts(reader) == ["sent once, stored twice", "the next one"]
            assert warnings(reader) == []
