"""Forward secrecy: once a member has read a message, its saved state cannot decrypt it.

The attacker holds the relay's store (every envelope, captured here from the in-process
relay's MemoryStore) and then seizes the member's device with its passphrase: it
decrypts the keystore file and restores the group layer's state from the saved bytes.
The keys of the messages already read must be gone from that state. As a control, the
same attack with the state saved *before* the messages arrived decrypts them all, so
the captured envelopes really are the ones that state's chains produce.
"""

from __future__ import annotations

import time
from pathlib import Path

import trio

from cellrelay.client._events import AlertReceived, MessageReceived
from cellrelay.protocol.cell._content import decode_content
from cellrelay.protocol.cell._errors import ReplayError
from cellrelay.protocol.cell._group import CellCrypto, Opened
from cellrelay.protocol.cell._identity import Identity
from cellrelay.relay._memory_store import MemoryStore

from .cells import Recorder, admit, members, passphrase_of
from .conftest import RunningRelay
from .hostile import read_keystore
from .test_cells import address_of

TEST_TIMEOUT = 40
TEXTS = ("first alert", "a message", "second alert")


def restore(tmp_path: Path, name: str) -> CellCrypto:
    """What an attacker with the device and its passphrase gets: the saved group state."""
    state = read_keystore(tmp_path / name / "keystore", passphrase_of(name))
    identity = Identity.from_bytes(state.identity)
    (record,) = state.cells
    return CellCrypto.from_bytes(record.crypto, identity)


def opened_texts(crypto: CellCrypto, envelopes: list[bytes]) -> list[str]:
    """Open every envelope with `crypto`; return the texts of the messages it could read."""
    found: list[str] = []
    for envelope in envelopes:
        try:
            outcome = crypto.open(envelope, now=time.time())
        except ReplayError:
            continue  # its key is gone
        if isinstance(outcome, Opened) and outcome.plaintext:
            content = decode_content(outcome.kind, outcome.plaintext)
            found.append(getattr(content, "text", ""))
    return found


async def test_saved_state_cannot_decrypt_messages_already_read(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    store = running_relay.relay.store
    assert isinstance(store, MemoryStore)
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana") as clients:
            lead = await clients["lead"].create_cell("Eastside", address_of(running_relay))
            ana = await admit(lead, clients["ana"])
            reader = Recorder(ana)
            await nursery.start(reader.run)
            # A first message makes sure ana holds the lead's sender key before the snapshot.
            await lead.send_message("warm-up")
            await reader.wait_for(lambda e: isinstance(e, MessageReceived))
            reader.events.clear()
            before = restore(tmp_path, "ana")
            head = (await store.get_mailbox(lead.record.group_mailbox)).head  # type: ignore[union-attr]

            await lead.send_alert(TEXTS[0])
            await lead.send_message(TEXTS[1])
            await lead.send_alert(TEXTS[2], priority="emergency")
            await reader.wait_for(
                lambda e: isinstance(e, AlertReceived) and e.alert.text == TEXTS[2]
            )
            shown = [e.alert.text if isinstance(e, AlertReceived) else e.message.text
                     for e in reader.events if isinstance(e, AlertReceived | MessageReceived)]  # fmt: skip
            assert shown == list(TEXTS)
            captured = [
                e.envelope
                for e in await store.read_after(
                    lead.record.group_mailbox, head, limit=100, now=time.time()
                )
            ]
            assert len(captured) == len(TEXTS)

            # The moment the app had the last message, the keys were already off the disk
            # (persist before emit), while the client still runs.
            assert opened_texts(restore(tmp_path, "ana"), captured) == []
        # And after a clean shutdown.
        assert opened_texts(restore(tmp_path, "ana"), captured) == []
        # The control: the state from before the messages reads every one of them.
        assert opened_texts(before, captured) == list(TEXTS)
