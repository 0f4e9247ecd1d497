"""Receipts at scale through a real relay (docs/protocol.md §C1.7).

Six members, a sample of three: the lead's alert is reported on by exactly the three
sampled members, once each, in one batch each; the lead counts three delivered of three
sampled and estimates five of five; a sampled member's read is counted, an unsampled
member's `mark_read` sends nothing; a receipt from outside the sample is not counted.
"""

from __future__ import annotations

from pathlib import Path

import trio

from cellrelay.client._cell_admin import Cell
from cellrelay.client._events import AlertReceived, ReceiptReceived, ReceiptsCounted
from cellrelay.protocol.cell._content import ReceiptState
from cellrelay.protocol.cell._receipts import ReceiptBatch, ReceiptCounts, reporters
from cellrelay.protocol.wire import RelayAddress

from .cells import Recorder, admit, members
from .conftest import RunningRelay
from .daemons import admit as admit_through_daemons
from .daemons import make_cell, start_daemon

TEST_TIMEOUT = 90
NAMES = ("lead", "ana", "ben", "cy", "dee", "eli")


def _small_batches(cell: Cell, sample: int) -> None:
    cell.report_receipts = True
    cell.receipt_sample = sample
    cell.receipt_batch = ReceiptBatch(delay=0.1, jitter=0.2)


async def _counts(lead: Cell, alert_id: bytes, want: ReceiptCounts) -> None:
    with trio.fail_after(20):
        while lead.receipts(alert_id) != want:
            await trio.sleep(0.02)


async def test_only_the_sample_reports_and_the_sender_counts(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    address = str(RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key))
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, *NAMES) as clients:
            lead = await clients["lead"].create_cell("Eastside", address)
            cells = {"lead": lead}
            for name in NAMES[1:]:
                cells[name] = await admit(lead, clients[name])
            for cell in cells.values():
                _small_batches(cell, sample=3)
            recorders = {name: Recorder(cell) for name, cell in cells.items()}
            for recorder in recorders.values():
                await nursery.start(recorder.run)

            alert = await lead.send_alert("agents at 14th & Main", priority="urgent")
            ids = {name: cell.me.member_id for name, cell in cells.items()}
            sampled = reporters(alert.alert_id, ids["lead"], ids.values(), sample=3)
            names = {v: k for k, v in ids.items()}
            assert len(sampled) == 3
            for name in NAMES[1:]:
                await recorders[name].wait_for(lambda e: isinstance(e, AlertReceived))

            await _counts(
                lead, alert.alert_id, ReceiptCounts(members=5, sampled=3, delivered=3, read=0)
            )
            counts = lead.receipts(alert.alert_id)
            assert counts is not None
            assert (counts.exact, counts.estimated_delivered) == (False, 5)

            reader = names[sorted(sampled)[0]]
            outsider = next(n for n in NAMES[1:] if ids[n] not in sampled)
            # A receipt from outside the sample (an older client, or one that lies) is shown
            # to apps as before but not counted. Stored before the reader's read goes out,
            # so the lead has taken it in when it counts that read.
            await cells[outsider].send_receipt([alert.alert_id], ReceiptState.READ)
            assert await cells[reader].mark_read(alert.alert_id)
            assert not await cells[outsider].mark_read(alert.alert_id)
            read = ReceiptCounts(members=5, sampled=3, delivered=3, read=1)
            await recorders["lead"].wait_for(
                lambda e: isinstance(e, ReceiptsCounted) and e.counts == read
            )
            assert lead.receipts(alert.alert_id) == read
            assert any(
                isinstance(e, ReceiptReceived) and e.sender.member_id == ids[outsider]
                for e in recorders["lead"].events
            )
            # The sender's app is told the counts once sent (none yet), then each change, and
            # only changes: three reporters said delivered, one said read; the outsider's
            # receipt changed nothing.
            assert [
                (e.alert_id, e.counts.delivered, e.counts.read)
                for e in recorders["lead"].of(ReceiptsCounted)
                if isinstance(e, ReceiptsCounted)
            ] == [(alert.alert_id, 0, 0), (alert.alert_id, 1, 0), (alert.alert_id, 2, 0),
                  (alert.alert_id, 3, 0), (alert.alert_id, 3, 1)]  # fmt: skip
            assert not recorders["ana"].of(ReceiptsCounted)  # only the sender counts

            # What crossed the relay: one delivered receipt per sampled member, one read.
            receipts = [e for e in recorders[outsider].of(ReceiptReceived)]
            assert isinstance(receipts[0], ReceiptReceived)
            automatic = [
                e
                for e in receipts
                if isinstance(e, ReceiptReceived) and e.sender.member_id != ids[outsider]
            ]
            assert sorted(
                (names[e.sender.member_id], str(e.receipt.state)) for e in automatic
            ) == sorted([(names[m], "delivered") for m in sampled] + [(reader, "read")])
            assert lead.receipts(b"\0" * 16) is None
            assert cells["ana"].receipts(alert.alert_id) is None  # only the sender counts


async def test_a_small_cell_counts_exactly(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    address = str(RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key))
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, "lead", "ana", "ben") as clients:
            lead = await clients["lead"].create_cell("Eastside", address)
            ana, ben = await admit(lead, clients["ana"]), await admit(lead, clients["ben"])
            for cell in (lead, ana, ben):
                _small_batches(cell, sample=32)
            alert = await lead.send_alert("two vans on 5th", priority="info")
            await _counts(
                lead, alert.alert_id, ReceiptCounts(members=2, sampled=2, delivered=2, read=0)
            )
            assert await ana.mark_read(alert.alert_id)
            assert not await lead.mark_read(alert.alert_id)  # one's own alert
            await _counts(
                lead, alert.alert_id, ReceiptCounts(members=2, sampled=2, delivered=2, read=1)
            )
            counts = lead.receipts(alert.alert_id)
            assert counts is not None
            assert counts.exact


async def test_the_daemon_says_the_counts_and_marks_read(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """GET .../receipts for the sender, POST .../read for a member (default batching)."""
    lead = await start_daemon(nursery, tmp_path, "lead")
    ana = await start_daemon(nursery, tmp_path, "ana")
    await make_cell(lead, running_relay)
    await admit_through_daemons(lead, ana)
    sent = await lead.ok("POST", "/cells/Eastside/alerts", 201, json_body={"text": "vans on 5th"})
    alert_id = sent["alert"]["message_id"]
    assert (await ana.ok("POST", f"/cells/Eastside/alerts/{alert_id}/read"))["reported"] is True
    with trio.fail_after(TEST_TIMEOUT):  # one batch: within BATCH_DELAY + BATCH_JITTER
        while True:
            counts = await lead.ok("GET", f"/cells/Eastside/alerts/{alert_id}/receipts")
            if counts["read"] == 1:
                break
            await trio.sleep(0.2)
    assert counts == {
        "alert_id": alert_id, "members": 1, "sampled": 1, "delivered": 1, "read": 1,
        "estimated_delivered": 1, "estimated_read": 1, "exact": True,
    }  # fmt: skip
    refused = await ana.request("GET", f"/cells/Eastside/alerts/{alert_id}/receipts")
    assert refused.status == 404
    lead.stop()
    ana.stop()
