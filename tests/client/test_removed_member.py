"""A removed member keeps everything it had and stays connected: it still learns nothing new.

Mallory is admitted, holds the group mailbox's read and write capability keys, keeps a
raw connection authorised with them (besides her own client), and saves a copy of her
group state before the removal. After the lead removes her and rotates once more:

* the relay revokes her raw connection's capabilities, and delivers nothing new on it;
* the cell moved to a new group mailbox (docs/protocol.md §C6 item 4), whose keys she never
  had; the old one holds nothing new, and her old keys no longer authorise anything on it,
  on that connection or a new one, so she can neither read nor publish;
* the envelopes sent after the removal, captured from the relay's store anyway, do not
  open with her client's state, nor with the state she saved before the removal even
  after she feeds it every epoch change from the control mailbox (which she can still
  read: its read key never rotates, and what it says is sealed to the members).
"""

from __future__ import annotations

import time
from pathlib import Path

import trio

from cellrelay.client._events import AlertReceived, MembershipChanged, MessageReceived
from cellrelay.protocol._errors import ErrorCode
from cellrelay.protocol.cell._content import Change
from cellrelay.protocol.cell._errors import GroupError
from cellrelay.protocol.cell._group import CellCrypto, EpochUpdate, Opened
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.wire._capability import CapabilityKey
from cellrelay.protocol.wire._messages import Deliver, Error, Ok, Ping, Pong, Revoked, Subscribed
from cellrelay.relay._memory_store import MemoryStore

from ..wire_client import WireClient
from .cells import Recorder, admit, members, passphrase_of
from .conftest import RunningRelay
from .hostile import read_keystore
from .test_cells import address_of

TEST_TIMEOUT = 40
SECRET = "sent after mallory's removal"


def saved_crypto(tmp_path: Path, name: str) -> CellCrypto:
    """The group state in a member's keystore file, as it is on disk now."""
    state = read_keystore(tmp_path / name / "keystore", passphrase_of(name))
    (record,) = state.cells
    return CellCrypto.from_bytes(record.crypto, Identity.from_bytes(state.identity))


async def messages_until_pong(client: WireClient) -> list[object]:
    """Everything the relay sends this connection up to the answer of a fresh ping."""
    ping = client.next_id()
    await client.send(Ping(id=ping))
    seen: list[object] = []
    while True:
        message = await client.receive()
        if isinstance(message, Pong) and message.id == ping:
            return seen
        seen.append(message)


async def test_removed_member_with_old_keys_reads_and_publishes_nothing(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    store = running_relay.relay.store
    assert isinstance(store, MemoryStore)
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana", "mallory") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            mallory = await admit(lead, clients["mallory"])
            group, control = lead.record.group_mailbox, lead.record.control_mailbox
            watch_ana, watch_mallory = Recorder(ana), Recorder(mallory)
            await nursery.start(watch_ana.run)
            await nursery.start(watch_mallory.run)
            await lead.send_message("before the removal")
            await watch_mallory.wait_for(lambda e: isinstance(e, MessageReceived))

            # What mallory keeps: the capability keys, a live raw connection, her state.
            old_read_seed, old_write_seed = mallory.crypto.group_keys
            old_read, old_write = (
                CapabilityKey.from_seed(old_read_seed),
                CapabilityKey.from_seed(old_write_seed),
            )
            before = saved_crypto(tmp_path, "mallory")
            group_head = (await store.get_mailbox(group)).head  # type: ignore[union-attr]
            control_head = (await store.get_mailbox(control)).head  # type: ignore[union-attr]
            kept = await running_relay.connect()
            assert isinstance(await kept.auth(old_read, "read", group), Ok)
            assert isinstance(await kept.auth(old_write, "write", group), Ok)
            subscribed = await kept.subscribe(group, after=group_head)  # live from here on
            assert isinstance(subscribed, Subscribed)
            assert subscribed.head == group_head

            await lead.remove(lead.find_member("mallory"))
            await watch_mallory.wait_for(
                lambda e: isinstance(e, MembershipChanged) and e.change.change is Change.REMOVED
            )
            await lead.rotate()  # one more epoch she never had
            await lead.send_alert(SECRET, priority="emergency")
            await watch_ana.wait_for(
                lambda e: isinstance(e, AlertReceived) and e.alert.text == SECRET
            )

            # The kept connection was cut off from the mailbox, and got nothing new.
            after = await messages_until_pong(kept)
            assert any(isinstance(m, Revoked) and m.mailbox == group for m in after)
            assert not [m for m in after if isinstance(m, Deliver)]
            refused = await kept.publish(group, b"\x01" + bytes(255))
            assert isinstance(refused, Error)
            assert refused.code == ErrorCode.UNAUTHORIZED
            resubscribe = await kept.subscribe(group, after=group_head)
            assert isinstance(resubscribe, Error)
            assert resubscribe.code == ErrorCode.UNAUTHORIZED
            # The old keys prove nothing any more, on a new connection either.
            fresh = await running_relay.connect()
            for reply in (
                await fresh.auth(old_read, "read", group),
                await fresh.auth(old_write, "write", group),
            ):
                assert isinstance(reply, Error)
                assert reply.code == ErrorCode.BAD_PROOF
            refused = await fresh.publish(group, b"\x01" + bytes(255))
            assert isinstance(refused, Error)
            assert refused.code == ErrorCode.UNAUTHORIZED
            moved_to = lead.record.group_mailbox
            assert moved_to not in (group, control)
            assert ana.record.group_mailbox == moved_to
            for reply in (
                await fresh.auth(old_read, "read", moved_to),
                await fresh.auth(old_write, "write", moved_to),
            ):
                assert isinstance(reply, Error)
                assert reply.code == ErrorCode.BAD_PROOF
            for connection in (kept, fresh):
                await connection.aclose()

            # Her own client shows nothing sent after the removal.
            await trio.sleep(0.3)
            assert not [e for e in watch_mallory.events if isinstance(e, AlertReceived)]

            # What she captures anyway (the relay's store) does not open.
            now = time.time()
            assert await store.read_after(group, group_head, limit=100, now=now) == []
            new_group = [
                e.envelope for e in await store.read_after(moved_to, 0, limit=100, now=now)
            ]
            new_control = [
                e.envelope
                for e in await store.read_after(control, control_head, limit=100, now=now)
            ]
            assert len(new_group) >= 2  # the lead's announcement and alert (ana said nothing)
            assert len(new_control) == 2
            for crypto in (mallory.crypto, saved_crypto(tmp_path, "mallory")):
                assert opened_contents(crypto, new_group) == []
            updates: list[EpochUpdate | GroupError] = []
            for envelope in new_control:
                try:
                    updates.append(before.open_control(envelope, now=now))
                except GroupError as exc:
                    updates.append(exc)
            assert isinstance(updates[0], EpochUpdate)
            assert updates[0].removed_self
            assert isinstance(updates[1], GroupError)
            assert opened_contents(before, new_group) == []


def opened_contents(crypto: CellCrypto, envelopes: list[bytes]) -> list[bytes]:
    """The plaintexts of every envelope `crypto` can open (refusals and parked ones skipped)."""
    out: list[bytes] = []
    for envelope in envelopes:
        try:
            outcome = crypto.open(envelope, now=time.time())
        except GroupError:
            continue
        if isinstance(outcome, Opened):
            out.extend(o.plaintext for o in (outcome, *outcome.released) if isinstance(o, Opened))
    return out
