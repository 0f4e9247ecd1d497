"""Members' key updates through the client and a real relay (issue 12, docs/protocol.md §G6.5).

A member who is not an admin posts its key update in the group mailbox (kind 8, sealed on
its chain); admins' clients take it and the next change commits it. The attacker copies
the member's device (keystore decrypted with its passphrase: identity key and cell state)
before the update and is absent for it: it then holds every envelope the relay stores and
opens nothing of the epoch after the commit. Forged updates are refused with a security
warning and change nothing; an admin who joined later heals members too; a pending update
survives a restart; and the clients do it all by themselves on their schedule.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

import cellrelay.client._cell_member as cell_module
import cellrelay.client._client as client_module
from cellrelay.client._cell_admin import Cell
from cellrelay.client._events import AlertReceived, CellEvent, SecurityWarning
from cellrelay.protocol.cell._control import COMMITTING_VERSION, committed_updates
from cellrelay.protocol.cell._envelope import Kind
from cellrelay.protocol.cell._errors import GroupError, TamperedError
from cellrelay.protocol.cell._group import KEY_UPDATE_PERIOD, CellCrypto, Opened
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._schedule import KeyUpdate
from cellrelay.relay._memory_store import MemoryStore

from ..protocol.test_group_key_updates import keys_that_open
from .cells import Recorder, admit, announce, cell_of, members, passphrase_of
from .conftest import RunningRelay
from .hostile import read_keystore
from .test_cells import address_of

TEST_TIMEOUT = 60


def seize(tmp_path: Path, name: str) -> tuple[bytes, Identity]:
    """What an attacker with the device and its passphrase copies: cell state, identity key."""
    state = read_keystore(tmp_path / name / "keystore", passphrase_of(name))
    (record,) = state.cells
    return record.crypto, Identity.from_bytes(state.identity)


def make_due(cell: Cell) -> None:
    """As if KEY_UPDATE_PERIOD had passed since the member's last key update."""
    cell.crypto._s.receive_at -= KEY_UPDATE_PERIOD


def owed(cell: Cell) -> bool:
    return cell.key_update_owed


async def until(check: Callable[[], bool], what: str) -> None:
    """Wait (bounded by the test's deadline) until `check()` holds (`what`: for the reader)."""
    while not check():
        await trio.sleep(0.02)


async def envelopes_after(store: MemoryStore, mailbox: bytes, head: int) -> list[bytes]:
    return [
        e.envelope
        for e in await store.read_after(mailbox, head, limit=1000, now=time.time())  # type: ignore[arg-type]
    ]


async def head_of(store: MemoryStore, mailbox: bytes) -> int:
    record = await store.get_mailbox(mailbox)  # type: ignore[arg-type]
    return 0 if record is None else record.head


def opened(crypto: CellCrypto, envelopes: list[bytes]) -> list[bytes]:
    """The plaintexts `crypto` opens among `envelopes` (what it cannot open, it skips)."""
    found = []
    for envelope in envelopes:
        try:
            outcome = crypto.open(envelope, now=time.time())
        except GroupError:
            continue
        if isinstance(outcome, Opened) and outcome.plaintext:
            found.append(outcome.plaintext)
    return found


def app_events(events: list[CellEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


async def test_a_copy_from_before_a_members_update_opens_nothing_after_its_commit(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    store = running_relay.relay.store
    assert isinstance(store, MemoryStore)
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana", "ben") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            ben = await admit(lead, clients["ben"])
            await clients["ana"].save()
            before, identity = seize(tmp_path, "ana")  # the attacker's copy; then it leaves
            me = identity.member_id
            ben_watch = Recorder(ben)
            await nursery.start(ben_watch.run)

            make_due(ana)
            assert owed(ana)
            assert await ana.post_key_update()
            assert not owed(ana)  # posted: nothing owed for a week
            # Saved with its private key before it left: a state copied now, after the
            # post and before the commit, does open the commit (the control of the search).
            pending, _ = seize(tmp_path, "ana")
            await until(lambda: lead.crypto.waiting_key_updates == 1, "the admin took it")
            assert ben.crypto.waiting_key_updates == 0  # not an admin: ignored

            control_head = await head_of(store, lead.record.control_mailbox)
            await lead.rotate()
            await until(lambda: ana.crypto.receive_generation == 1, "ana adopted her key")
            watch = Recorder(ana)
            await nursery.start(watch.run)
            await lead.send_alert("after the update")
            await watch.wait_for(lambda e: isinstance(e, AlertReceived))
            group = await envelopes_after(store, lead.record.group_mailbox, 0)
            (change,) = await envelopes_after(store, lead.record.control_mailbox, control_head)
            members_now = list(lead.crypto.membership.members)
            signer = lead.crypto.me.member_id
            # ben's app saw no key update: it is for admins' clients only.
            assert "SecurityWarning" not in app_events(ben_watch.events)

        assert change[0] == COMMITTING_VERSION
        # ana's, and the admin's own (every change of an admin's client commits one).
        assert sorted(u.member_id for u in committed_updates(change)) == sorted([me, signer])
        copy = CellCrypto.from_bytes(before, identity)
        with pytest.raises(TamperedError):
            copy.open_control(change, now=time.time())
        seized = before + identity.to_bytes()
        assert keys_that_open(seized, copy.cell_id, members_now, me, change, signer) == 0
        assert not [p for p in opened(copy, group) if b"after the update" in p]
        # The control: the state saved after the post holds the new key, and the same
        # search finds the change secret with it.
        later = pending + identity.to_bytes()
        assert keys_that_open(later, copy.cell_id, members_now, me, change, signer) > 0
        CellCrypto.from_bytes(pending, identity).open_control(change, now=time.time())


async def test_forged_key_updates_are_refused_with_a_warning_and_change_nothing(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with cell_of(tmp_path, address_of(running_relay), "lead", "ana", "ben") as cells:
            lead, ana, ben = cells
            lead_watch, ben_watch = Recorder(lead), Recorder(ben)
            await nursery.start(lead_watch.run)
            await nursery.start(ben_watch.run)
            # Two updates of ana's committed in turn, so that the first is an old generation.
            updates = []
            for _ in range(2):
                make_due(ana)
                assert await ana.post_key_update()
                await until(lambda: lead.crypto.waiting_key_updates == 1, "taken")
                updates.append(lead.crypto._s.key_updates[ana.crypto.me.member_id])
                generation = ana.crypto.receive_generation + 1
                await lead.rotate()
                await until(lambda: ana.crypto.receive_generation == generation, "adopted")  # noqa: B023
            first = KeyUpdate.from_bytes(updates[0])
            assert (first.generation, ana.crypto.receive_generation) == (1, 2)
            epoch, committed = lead.crypto.epoch, dict(lead.crypto._s.receive_publics)

            bad_signature = bytearray(ana.crypto.key_update(now=time.time()))  # generation 3
            bad_signature[-1] ^= 1
            bens = ben.crypto.key_update(now=time.time())  # ben's own, sealed by ana below
            forged = [bytes(bad_signature), bens, first.to_bytes()]
            await announce(ana)
            for body in forged:
                now = ana.link.relay_time()
                envelope = ana.crypto._seal(
                    Kind.KEY_UPDATE, body, expires_at=int(now) + 600, now=now
                )
                await ana._publish_group(envelope, int(now) + 600)
            await lead_watch.wait_for(
                lambda e: sum(isinstance(x, SecurityWarning) for x in lead_watch.events) == 3
            )
            reasons = [e.reason for e in lead_watch.events if isinstance(e, SecurityWarning)]
            assert reasons == ["BadSignatureError", "MembershipError", "MembershipError"]
            assert lead.crypto.waiting_key_updates == 0
            assert lead.crypto.epoch == epoch
            assert dict(lead.crypto._s.receive_publics) == committed
            # A member who is not an admin ignores them all, and shows the app nothing.
            await ana.send_message("after the forgeries")
            await ben_watch.wait_for(lambda e: type(e).__name__ == "MessageReceived")
            assert not [e for e in ben_watch.events if isinstance(e, SecurityWarning)]


async def test_an_admin_who_joined_later_commits_members_updates(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    store = running_relay.relay.store
    assert isinstance(store, MemoryStore)
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana", "cal") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            make_due(ana)  # an update committed before cal joins
            assert await ana.post_key_update()
            await until(lambda: lead.crypto.waiting_key_updates == 1, "taken")
            await lead.rotate()
            await until(lambda: ana.crypto.receive_generation == 1, "adopted")
            cal = await admit(lead, clients["cal"])
            await lead.promote(lead.find_member("cal"))
            await until(lambda: cal.crypto.is_admin, "cal promoted")
            await until(lambda: ana.crypto.epoch == cal.crypto.epoch, "ana caught up")
            await clients["ana"].save()
            before, identity = seize(tmp_path, "ana")
            make_due(ana)
            assert await ana.post_key_update()
            await until(lambda: cal.crypto.waiting_key_updates == 1, "cal took it")
            control_head = await head_of(store, cal.record.control_mailbox)
            await cal.rotate()  # cal first: it commits, and heals ana
            await until(lambda: ana.crypto.receive_generation == 2, "adopted")
            (change,) = await envelopes_after(store, cal.record.control_mailbox, control_head)
            members_now = list(cal.crypto.membership.members)
            signer = cal.crypto.me.member_id
            await until(lambda: lead.crypto.epoch == cal.crypto.epoch, "lead applied it")
            assert lead.crypto.waiting_key_updates == 0  # lead's copy went with cal's commit
        me = identity.member_id
        # ana's, and the admin's own (every change of an admin's client commits one).
        assert sorted(u.member_id for u in committed_updates(change)) == sorted([me, signer])
        copy = CellCrypto.from_bytes(before, identity)
        with pytest.raises(GroupError):
            copy.open_control(change, now=time.time())
        seized = before + identity.to_bytes()
        assert keys_that_open(seized, copy.cell_id, members_now, me, change, signer) == 0


async def test_a_pending_update_survives_a_restart(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            # What `post_key_update` saves before it seals: then the process stops.
            ana.record.key_update_pending = ana.crypto.key_update(now=time.time())
            ana.record.crypto = ana._state_bytes()
            await clients["ana"].save()
        async with members(tmp_path, "lead", "ana") as clients:
            lead, ana = clients["lead"].cell("Eastside"), clients["ana"].cell("Eastside")
            # Posted again on start, with the private key saved before the stop.
            await until(lambda: lead.crypto.waiting_key_updates == 1, "taken after the restart")
            await until(lambda: not ana.record.key_update_pending, "posted")
            await lead.rotate()
            await until(lambda: ana.crypto.receive_generation == 1, "adopted after a restart")
            watch = Recorder(ana)
            async with trio.open_nursery() as inner:
                await inner.start(watch.run)
                await lead.send_alert("healed")
                await watch.wait_for(lambda e: isinstance(e, AlertReceived))
                inner.cancel_scope.cancel()


async def test_clients_update_and_commit_on_their_own_schedule(
    running_relay: RunningRelay, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing called by hand: ana's client posts when due, the admin's rotates to commit."""
    monkeypatch.setattr(client_module, "MAINTENANCE_INTERVAL", 0.1)
    monkeypatch.setattr(cell_module, "COMMIT_UPDATES_AFTER", 0.3)
    with trio.fail_after(TEST_TIMEOUT):
        async with cell_of(tmp_path, address_of(running_relay), "lead", "ana", "ben") as cells:
            lead, ana, ben = cells
            assert not owed(ana)  # due a week after joining
            assert not owed(ben)
            epoch = lead.crypto.epoch
            make_due(ana)
            make_due(ben)
            await until(
                lambda: ana.crypto.receive_generation == 1 and ben.crypto.receive_generation == 1,
                "both healed",
            )
            # Batched: one rotation committed both (or two, if they came apart).
            assert lead.crypto.epoch - epoch in (1, 2)
            assert lead.crypto.waiting_key_updates == 0
            assert not lead.key_updates_due()
