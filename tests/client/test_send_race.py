"""A send that races a removal: sent again in the new epoch, or shown as failed, never as sent.

Issue 9, finding 10 (docs/threat-model.md §3.5, §5.22). When an admin removes a member,
the relay revokes the old group write key before the epoch change is published; a member
who sends in between is refused (its write key was just revoked). Before the fix the send
raised, yet the message stayed in the sender's history as if sent, and the person had to
notice and send it again, during a raid.

Ana's client is held, in these tests, between the relay's rotation and her reading of the
epoch change: her control deliveries wait on a gate the test opens once her send has been
refused. The relay is real, on loopback; so are the keystores.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from cellrelay.client._cell_admin import Cell
from cellrelay.client._cell_member import CellError, MemberCell
from cellrelay.client._events import CellEvent, MessageReceived, SendFailed
from cellrelay.client._link import Delivery, RelayLink, RelayRefusedError, Revocation
from cellrelay.protocol.cell._content import PlainMessage
from cellrelay.protocol.wire import MailboxId

from .cells import Recorder, admit, members
from .conftest import RunningRelay
from .test_cells import address_of

TEST_TIMEOUT = 60


class Gate:
    """Holds the control deliveries of chosen cells until opened; notes refused publishes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.held: set[int] = set()  # id() of the cells whose control deliveries wait
        self.open = trio.Event()
        self.refused = trio.Event()
        on_control = MemberCell._on_control
        publish = RelayLink.publish

        async def gated(cell: MemberCell, event: Delivery | Revocation) -> None:
            if id(cell) in self.held:
                await self.open.wait()
            await on_control(cell, event)

        async def noted(
            link: RelayLink, mailbox: MailboxId, envelope: bytes, expires_at: int
        ) -> int:
            try:
                return await publish(link, mailbox, envelope, expires_at)
            except RelayRefusedError:
                self.refused.set()
                raise

        # Before any cell starts: a cell routes its control mailbox to its bound method.
        monkeypatch.setattr(MemberCell, "_on_control", gated)
        monkeypatch.setattr(RelayLink, "publish", noted)

    def hold(self, cell: Cell) -> None:
        self.held.add(id(cell))


async def _send(cell: Cell, text: str, outcome: list[object]) -> None:
    try:
        outcome.append(await cell.send_message(text))
    except CellError as exc:
        outcome.append(exc)


def _texts(cell: Cell) -> list[str]:
    return [c.text for _, c in cell.recent() if isinstance(c, PlainMessage)]


async def test_a_send_refused_by_a_rotation_is_sent_again_in_the_new_epoch(
    running_relay: RunningRelay,
    tmp_path: Path,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = Gate(monkeypatch)
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana", "ben") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            await admit(lead, clients["ben"])
            watch_lead, watch_ana = Recorder(lead), Recorder(ana)
            await nursery.start(watch_lead.run)
            await nursery.start(watch_ana.run)
            epoch = ana.crypto.epoch

            gate.hold(ana)
            await lead.remove(lead.find_member("ben"))  # the relay has rotated; ana is behind
            assert ana.crypto.epoch == epoch
            outcome: list[object] = []
            nursery.start_soon(_send, ana, "raced the removal", outcome)
            await gate.refused.wait()
            assert not outcome  # refused, but not given up: waiting to catch up
            assert "raced the removal" not in _texts(ana)  # not shown as sent
            gate.open.set()
            await watch_lead.wait_for(
                lambda e: isinstance(e, MessageReceived) and e.message.text == "raced the removal"
            )
            with trio.fail_after(20):
                while not outcome:
                    await trio.sleep(0.02)
            (sent,) = outcome
            assert isinstance(sent, PlainMessage)
            assert ana.crypto.epoch > epoch
            assert _texts(ana).count("raced the removal") == 1
            assert ana.send_status(sent.message_id) == "sent"
            assert not [e for e in watch_ana.events if isinstance(e, SendFailed)]
            # Exactly once at the lead, however many times it was sealed.
            await ana.send_message("after")
            await watch_lead.wait_for(
                lambda e: isinstance(e, MessageReceived) and e.message.text == "after"
            )
            received = [
                e
                for e in watch_lead.events
                if isinstance(e, MessageReceived) and e.message.text == "raced the removal"
            ]
            assert len(received) == 1


async def test_a_send_that_finally_fails_is_shown_as_failed(
    running_relay: RunningRelay,
    tmp_path: Path,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = Gate(monkeypatch)
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana", "cara") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            cara = await admit(lead, clients["cara"])
            watch_cara, watch_ana = Recorder(cara), Recorder(ana)
            await nursery.start(watch_cara.run)
            await nursery.start(watch_ana.run)

            gate.hold(ana)
            await lead.remove(lead.find_member("ana"))  # ana herself: she can never send it
            outcome: list[object] = []
            nursery.start_soon(_send, ana, "sent as she was removed", outcome)
            await gate.refused.wait()
            gate.open.set()
            with trio.fail_after(20):
                while not outcome:
                    await trio.sleep(0.02)
            (failed,) = outcome
            assert isinstance(failed, CellError)
            assert "not sent" in str(failed)
            event: CellEvent = await watch_ana.wait_for(lambda e: isinstance(e, SendFailed))
            assert isinstance(event, SendFailed)
            assert event.content.text == "sent as she was removed"  # type: ignore[union-attr]
            assert "sent as she was removed" not in _texts(ana)
            assert ana.send_status(event.content.message_id) == "failed"
            await lead.send_message("after")
            await watch_cara.wait_for(
                lambda e: isinstance(e, MessageReceived) and e.message.text == "after"
            )
            assert not [
                e
                for e in watch_cara.events
                if isinstance(e, MessageReceived) and e.message.text == "sent as she was removed"
            ]


async def test_a_send_that_an_epoch_change_overtakes_announces_the_new_epoch_first(
    running_relay: RunningRelay,
    tmp_path: Path,
    nursery: trio.Nursery,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing is sealed in an epoch whose announcement is not out (docs/protocol.md §C6 item 2).

    Found through `listen`: a member who ran a command just after three role changes sealed
    its alert in one new epoch and its next message in another before announcing either,
    and exited; the others parked both for good (they cannot open a sender's messages
    before its announcement). A send checked for a pending announcement, then awaited the
    disk for its counter reservation, and sealed in whatever epoch had applied meanwhile.
    Here ana's reservation save is held while the lead changes a role; every envelope she
    publishes to the group mailbox must find no announcement of hers still pending.
    """
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            watch_lead = Recorder(lead)
            await nursery.start(watch_lead.run)
            await ana.wait_synced()

            held, go = trio.Event(), trio.Event()
            save = ana._save

            async def held_save(*, durable: bool = True) -> None:
                if durable and not held.is_set():
                    held.set()  # the send's reservation: the next counter is not reserved
                    await go.wait()
                await save(durable=durable)

            ahead_of_announcement: list[int] = []
            publish = ana.link.publish

            async def checked(mailbox: MailboxId, envelope: bytes, expires_at: int) -> int:
                pending, owed = ana.record.distribution_pending, ana.record.announce_owed
                if mailbox == ana.record.group_mailbox and (
                    owed or (pending and envelope != pending)
                ):
                    ahead_of_announcement.append(ana.crypto.epoch)
                return await publish(mailbox, envelope, expires_at)

            ana.record.send_reserved = 0  # the next send reserves (and saves durably) first
            monkeypatch.setattr(ana, "_save", held_save)
            monkeypatch.setattr(ana.link, "publish", checked)
            epoch, changed = ana.crypto.epoch, ana._epoch_changed
            sent: list[PlainMessage] = []
            done = trio.Event()

            async def send() -> None:
                sent.append(await ana.send_message("sent as the role changed"))
                done.set()

            nursery.start_soon(send)
            await held.wait()
            await lead.set_role(lead.find_member("ana"), "responder")
            await changed.wait()  # applied by ana, its announcement owed behind her send
            assert ana.crypto.epoch > epoch
            assert ana.record.announce_owed
            go.set()
            await done.wait()
            await watch_lead.wait_for(
                lambda e: (
                    isinstance(e, MessageReceived) and e.message.text == "sent as the role changed"
                )
            )
            assert ahead_of_announcement == []
            assert ana.send_status(sent[0].message_id) == "sent"
