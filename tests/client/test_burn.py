"""Burning a cell (docs/protocol.md §C1.6) through a real relay on loopback.

An admin's burn deletes the cell from every member's device (checked with a canary
alert: nowhere in the decrypted state, nor in any file under the member's home) and the
cell's mailboxes from the relay's store (group, control, an open invite's join mailbox,
a retired group mailbox). A member's burn is refused by everyone and shown as a security
event. A member offline at the time burns on its return while the mailboxes are kept;
one that returns after they were deleted finds the cell gone, a state that is saved and
that retries nothing.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import trio

from cellrelay.client._cell_admin import AdminSecrets, Cell
from cellrelay.client._cell_member import CellError
from cellrelay.client._client import Client
from cellrelay.client._events import (
    AlertReceived,
    CellBurned,
    CellGone,
    MembershipChanged,
    SecurityWarning,
)
from cellrelay.protocol.cell._content import Burn
from cellrelay.protocol.wire import CapabilityKey, MailboxId, RelayAddress

from .cells import Recorder, admit, members, passphrase_of
from .conftest import RunningRelay
from .hostile import keystore_payload

TEST_TIMEOUT = 90


def _address(relay: RunningRelay) -> str:
    return str(RelayAddress("127.0.0.1", relay.port, relay.public_key))


def _leaks(home: Path, passphrase: str, needles: list[bytes]) -> list[str]:
    """Where under `home` any needle is readable: a file's bytes, or the decrypted state."""
    places = {str(p.relative_to(home)): p.read_bytes() for p in home.rglob("*") if p.is_file()}
    places["(decrypted state)"] = keystore_payload(home / "keystore", passphrase)
    hits = []
    for name, data in places.items():
        for needle in needles:
            forms = [needle, needle.hex().encode()]
            if needle.isascii():
                forms.append(needle.decode().encode("utf-16-le"))
            if any(form in data for form in forms):
                hits.append(f"{name}: {needle[:12]!r}")
    return hits


async def _on_relay(relay: RunningRelay, mailboxes: list[MailboxId]) -> list[bool]:
    """Whether the relay's store still holds each mailbox."""
    return [await relay.relay.store.get_mailbox(m) is not None for m in mailboxes]


async def _gone_from(client: Client, cell_id: bytes) -> None:
    with trio.fail_after(20):
        while any(c.cell_id == cell_id for c in client.cells):
            await client.wait_cells_changed()


async def _canary_alert(lead: Cell, recorders: list[Recorder], canary: str) -> None:
    await lead.send_alert(f"agents at {canary}", place=f"near {canary}", priority="emergency")
    for recorder in recorders:
        await recorder.wait_for(lambda e: isinstance(e, AlertReceived) and canary in e.alert.text)


async def test_an_admins_burn_deletes_the_cell_everywhere_and_its_mailboxes(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    canary = f"canary-{secrets.token_hex(6)}"
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana", "ben", "cy") as clients:
            lead = await clients["lead"].create_cell(f"cell-{canary}", _address(running_relay))
            ana = await admit(lead, clients["ana"])
            ben = await admit(lead, clients["ben"])
            cy = await admit(lead, clients["cy"])
            recorders = [Recorder(ana), Recorder(ben)]
            for recorder in recorders:
                await nursery.start(recorder.run)
            # A removal leaves a retired group mailbox; an open invite, a join mailbox.
            await lead.remove(cy.me)
            for recorder in recorders:
                await recorder.wait_for(lambda e: isinstance(e, MembershipChanged))
            assert lead.record.retired
            invite = await lead.invite()
            await _canary_alert(lead, recorders, canary)
            mailboxes = [
                lead.record.group_mailbox,
                lead.record.control_mailbox,
                invite.join_mailbox,
                *(r.mailbox for r in lead.record.retired),
            ]
            assert await _on_relay(running_relay, mailboxes) == [True] * len(mailboxes)
            needles = [canary.encode(), bytes(lead.cell_id), *map(bytes, mailboxes[:2])]
            for name in ("lead", "ana", "ben"):  # the control: the search finds it before
                assert _leaks(tmp_path / name, passphrase_of(name), needles[:1]) != []

            await lead.burn()

            for recorder in recorders:
                burned = await recorder.wait_for(lambda e: isinstance(e, CellBurned))
                assert isinstance(burned, CellBurned)
                assert burned.by.member_id == lead.me.member_id
            for name in ("lead", "ana", "ben"):
                await _gone_from(clients[name], lead.cell_id)
            assert clients["lead"].burns_pending == 0
            assert await _on_relay(running_relay, mailboxes) == [False] * len(mailboxes)
            for recorder in recorders:  # the burn was the last event: the stream ended
                assert isinstance(recorder.events[-1], CellBurned)
                assert not recorder.of(SecurityWarning)
        for name in ("lead", "ana", "ben"):
            assert _leaks(tmp_path / name, passphrase_of(name), needles) == []


async def test_a_members_burn_is_refused_by_everyone(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana", "ben") as clients:
            lead = await clients["lead"].create_cell("Eastside", _address(running_relay))
            ana = await admit(lead, clients["ana"])
            ben = await admit(lead, clients["ben"])
            watched = {"lead": Recorder(lead), "ben": Recorder(ben)}
            for recorder in watched.values():
                await nursery.start(recorder.run)

            with pytest.raises(CellError, match="only an admin"):
                await ana.burn()
            # A member's client that sends one anyway (modified, or a stolen phone).
            await ana._send(Burn(sent_at_ms=ana._now_ms()), ana._now_ms() // 1000 + 600)

            for recorder in watched.values():
                refused = await recorder.wait_for(
                    lambda e: isinstance(e, SecurityWarning) and e.reason == "BurnRefused"
                )
                assert isinstance(refused, SecurityWarning)
                assert "ana" in refused.detail
                assert "not an admin" in refused.detail
            await ana.send_alert("still here", priority="info")
            for recorder in watched.values():
                await recorder.wait_for(
                    lambda e: isinstance(e, AlertReceived) and e.alert.text == "still here"
                )
                assert not recorder.of(CellBurned)
            for name in ("lead", "ana", "ben"):
                assert [c.name for c in clients[name].cells] == ["Eastside"]
            assert not any(item.kind == Burn.KIND for item in ben.record.history)


async def test_an_offline_member_burns_on_return_while_the_mailboxes_are_kept(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    canary = f"canary-{secrets.token_hex(6)}"
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead") as clients:
            lead = await clients["lead"].create_cell("Eastside", _address(running_relay))
            async with members(tmp_path, "ben") as away:
                ben = await admit(lead, away["ben"])
                recorder = Recorder(ben)
                await nursery.start(recorder.run)
                await _canary_alert(lead, [recorder], canary)
            # Ben's client is closed: the burn waits for him in the group mailbox.
            mailboxes = [lead.record.group_mailbox, lead.record.control_mailbox]
            await lead.burn(keep=3600)
            await _gone_from(clients["lead"], lead.cell_id)
            assert clients["lead"].burns_pending == 2
            assert await _on_relay(running_relay, mailboxes) == [True, True]

            async with members(tmp_path, "ben") as back:
                with trio.fail_after(20):
                    while back["ben"].cells:
                        await back["ben"].wait_cells_changed()
            assert _leaks(tmp_path / "ben", passphrase_of("ben"), [canary.encode()]) == []

            # Once `keep` has passed, the admin's client deletes them (here: made due now).
            for record in clients["lead"]._state.burning:
                record.delete_at = 0
            await clients["lead"].finish_burns()
            assert clients["lead"].burns_pending == 0
            assert await _on_relay(running_relay, mailboxes) == [False, False]


async def test_a_member_back_after_the_mailboxes_were_deleted_finds_the_cell_gone(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead") as clients:
            lead = await clients["lead"].create_cell("Eastside", _address(running_relay))
            async with members(tmp_path, "ben") as away:
                await admit(lead, away["ben"])
            await lead.burn()
            assert clients["lead"].burns_pending == 0

        for _ in range(2):  # gone, and still gone (saved) on the next run
            async with members(tmp_path, "ben") as back:
                (cell,) = back["ben"].cells
                recorder = Recorder(cell)
                await nursery.start(recorder.run)
                with trio.fail_after(20):
                    await cell.wait_ready()
                assert cell.gone
                assert cell.link.cursor(cell.record.control_mailbox) is None  # not retried
                assert cell.link.cursor(cell.record.group_mailbox) is None
                with pytest.raises(CellError, match="gone from its relay"):
                    await cell.send_alert("anyone?")
        # Leaving deletes it.
        async with members(tmp_path, "ben") as back:
            (cell,) = back["ben"].cells
            await cell.leave()
            await back["ben"].forget(cell)
            assert back["ben"].cells == []


async def test_the_gone_event_is_raised_once(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A subscribed member sees `CellGone` when its mailboxes are deleted under it."""
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ben") as clients:
            lead = await clients["lead"].create_cell("Eastside", _address(running_relay))
            ben = await admit(lead, clients["ben"])
            recorder = Recorder(ben)
            await nursery.start(recorder.run)
            # The control mailbox is deleted without any burn reaching Ben (as a relay that
            # withheld the burn, or lost the cell, would look to him).
            secrets_ = AdminSecrets.decode(lead.crypto.admin_secrets)
            control_admin = CapabilityKey.from_seed(secrets_.control_admin)
            await lead._delete_on_relay(lead.record.control_mailbox, control_admin)
            gone = await recorder.wait_for(lambda e: isinstance(e, CellGone))
            assert isinstance(gone, CellGone)
            assert ben.gone
            assert [c.name for c in clients["ben"].cells] == ["Eastside"]  # nothing deleted
            assert recorder.of(CellGone) == [gone]
