"""A relay's outbox survives a restart (issue 13): what a member keeps for a further relay
whose group keys are behind is saved with the cell record, within bounds.

The restart test runs real relay processes: the second relay is stopped while the lead
removes a member, so the remaining member's client keeps what it sends for that relay;
the client is closed and opened again before the relay returns, and publishes what it
kept there once the relay takes the new keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import hypothesis.strategies as st
import trio
from hypothesis import given

from cellrelay.client._state import OUTBOX_SAVED, OUTBOX_SAVED_BYTES, RelayRecord
from cellrelay.protocol.wire import Fetch, MailboxId, Page

from ..relay.process import open_relay_process
from .cells import admit, members
from .test_relay_gaps import cell_on_two

TEST_TIMEOUT: Final = 120


def _record(outbox: list[tuple[bytes, int]]) -> RelayRecord:
    return RelayRecord(
        relay="relay.example:4433",
        group_mailbox=MailboxId(bytes(16)),
        control_mailbox=MailboxId(bytes(range(16))),
        outbox=outbox,
    )


@given(st.lists(st.tuples(st.binary(max_size=64), st.integers(0, 2**63 - 1)), max_size=40))
def test_a_small_outbox_is_saved_as_it_is(outbox: list[tuple[bytes, int]]) -> None:
    assert RelayRecord.decode(_record(outbox).encode()).outbox == outbox


def test_a_saved_outbox_keeps_the_newest_within_its_bounds() -> None:
    many = [(n.to_bytes(4, "big"), 1000 + n) for n in range(OUTBOX_SAVED + 50)]
    assert RelayRecord.decode(_record(many).encode()).outbox == many[-OUTBOX_SAVED:]
    big = OUTBOX_SAVED_BYTES // 4
    large = [(bytes([n]) * big, 1000 + n) for n in range(6)]
    saved = RelayRecord.decode(_record(large).encode()).outbox
    assert saved == large[-3:]  # a fourth would pass the byte bound with the item headers
    assert sum(len(e) for e, _ in saved) <= OUTBOX_SAVED_BYTES


def test_a_relay_saved_before_the_outbox_reads_with_an_empty_one() -> None:
    from cellrelay.protocol.wire._codec import decode_map, encode_map

    fields = dict(decode_map(_record([(b"x", 5)]).encode()))
    del fields["outbox"]
    assert RelayRecord.decode(encode_map(fields)).outbox == []


async def test_what_is_kept_for_a_relay_whose_keys_are_behind_survives_a_restart(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with cell_on_two(tmp_path, "ben") as ((_, second), lead, clients):
            ben = await admit(lead, clients["ben"])
            async with members(tmp_path, "ana") as anas:
                ana = await admit(lead, anas["ana"])
                port, data_dir = second.port, second.data_dir
                await second.terminate()
                epoch = lead.crypto.epoch
                await lead.remove(ben.me)
                further = ana.further[0]
                while ana.crypto.epoch <= epoch or not further.group_stale:
                    await trio.sleep(0.02)
                await ana.send_alert("kept for the second relay")
                assert further.backlog, "kept while the relay's keys are behind"
                kept = list(further.backlog)
            # Closed: the record was saved with what was kept, and read back.
            async with members(tmp_path, "ana") as anas:
                ana = anas["ana"].cell("Eastside")
                further = ana.further[0]
                assert further.backlog == kept
                async with open_relay_process(data_dir, listen=f"127.0.0.1:{port}"):
                    # The lead rotates the returned relay and posts the removal there; Ana
                    # watches it with the new keys and publishes what she kept.
                    while further.backlog or further.group_stale or not further.started:
                        await trio.sleep(0.05)
                    page = await further.link.request(
                        Fetch(id=0, mailbox=further.record.group_mailbox, after=0, limit=100)
                    )
                    assert isinstance(page, Page)
                    stored = {item.envelope for item in page.items}
                    assert {envelope for envelope, _ in kept} <= stored
