"""Receipts at scale (protocol/cell/_receipts.py, docs/protocol.md §C1.7)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from cellrelay.protocol._crypto import blake2b
from cellrelay.protocol.cell._content import MAX_RECEIPT_IDS, MessageId, ReceiptState
from cellrelay.protocol.cell._receipts import (
    RECEIPT_SAMPLE,
    ReceiptBatch,
    ReceiptCounts,
    ReceiptTally,
    reporters,
)

DELIVERED, READ = ReceiptState.DELIVERED, ReceiptState.READ
ids16 = st.binary(min_size=16, max_size=16)


def member(n: int) -> bytes:
    return n.to_bytes(16, "big")


def alert(n: int) -> MessageId:
    return MessageId(blake2b(n.to_bytes(8, "big"), size=16))


@given(alert_id=ids16, members=st.sets(ids16, max_size=80), sample=st.integers(1, 40))
def test_reporters_are_the_lowest_ranks_without_the_sender(
    alert_id: bytes, members: set[bytes], sample: int
) -> None:
    sender = member(10**6)
    chosen = reporters(alert_id, sender, [*members, sender, *members], sample=sample)
    assert sender not in chosen
    assert chosen <= members
    assert len(chosen) == min(sample, len(members))
    # The documented rule, computed independently: the lowest keyed BLAKE2b ranks.
    rank = {m: blake2b(m, size=16, key=alert_id, person=b"cellrelay-sample") for m in members}
    assert chosen == set(sorted(members, key=rank.__getitem__)[:sample])
    assert reporters(alert_id, sender, reversed(sorted(members)), sample=sample) == chosen


def test_each_member_reports_on_its_share_of_alerts() -> None:
    """Over many alerts every member of a large cell is sampled about sample/N of the time."""
    members = [member(n) for n in range(200)]
    counts: Counter[bytes] = Counter()
    alerts = 400
    for n in range(alerts):
        counts.update(reporters(alert(n), members[0], members))
    expected = alerts * RECEIPT_SAMPLE / 199
    assert members[0] not in counts
    assert len(counts) == 199
    assert all(0.4 * expected < c < 1.8 * expected for c in counts.values()), counts


def test_a_batch_is_due_after_its_delay_and_says_each_thing_once() -> None:
    batch = ReceiptBatch(delay=5.0, jitter=10.0)
    assert batch.take(100.0) == []
    assert batch.add(alert(1), DELIVERED, now=100.0, draw=0.5)
    assert batch.due == 110.0
    assert not batch.add(alert(1), DELIVERED, now=101.0, draw=0.9)  # queued already
    assert batch.add(alert(2), DELIVERED, now=102.0, draw=0.9)
    assert batch.add(alert(2), READ, now=103.0, draw=0.9)  # read says delivered too
    assert batch.due == 110.0
    assert batch.pending == 2
    assert batch.take(109.9) == []
    assert batch.take(110.0) == [(DELIVERED, (alert(1),)), (READ, (alert(2),))]
    assert batch.due == float("inf")
    assert not batch.add(alert(1), DELIVERED, now=111.0, draw=0.0)  # said already
    assert not batch.add(alert(2), DELIVERED, now=111.0, draw=0.0)
    assert not batch.add(alert(2), READ, now=111.0, draw=0.0)
    assert batch.add(alert(1), READ, now=111.0, draw=0.0)  # delivered before, read now
    assert not batch.add(alert(1), READ, now=111.0, draw=0.0)
    assert batch.take(116.0) == [(READ, (alert(1),))]
    batch.forget([alert(1)])
    assert batch.add(alert(1), DELIVERED, now=120.0, draw=0.0)


def test_a_large_batch_is_cut_into_receipts_of_at_most_100_ids() -> None:
    batch = ReceiptBatch(delay=0.0, jitter=0.0)
    for n in range(MAX_RECEIPT_IDS * 2 + 1):
        batch.add(alert(n), DELIVERED, now=0.0, draw=0.0)
    sizes = [(state, len(ids)) for state, ids in batch.take(0.0)]
    assert sizes == [(DELIVERED, 100), (DELIVERED, 100), (DELIVERED, 1)]


def test_the_tally_counts_only_the_sampled_reporters() -> None:
    me, members = member(0), [member(n) for n in range(1, 101)]
    tally = ReceiptTally()
    tally.track(alert(7), me, [me, *members], sample=10)
    tally.track(alert(7), me, [me], sample=10)  # tracked once: kept as it was
    sampled = sorted(reporters(alert(7), me, members, sample=10))
    outsider = next(m for m in members if m not in sampled)
    assert not tally.add(alert(7), outsider, READ)
    assert not tally.add(alert(8), sampled[0], READ)  # not ours
    for m in sampled[:6]:
        assert tally.add(alert(7), m, DELIVERED)
    for m in sampled[:3]:
        assert tally.add(alert(7), m, READ)
    assert tally.add(alert(7), sampled[9], READ)  # read without a delivered receipt first
    counts = tally.counts(alert(7))
    assert counts == ReceiptCounts(members=100, sampled=10, delivered=7, read=4)
    assert not counts.exact
    assert (counts.estimated_delivered, counts.estimated_read) == (70, 40)
    assert tally.tracked() == [alert(7)]
    tally.forget([alert(7)])
    assert tally.counts(alert(7)) is None


def test_small_cells_count_exactly() -> None:
    counts = ReceiptCounts(members=5, sampled=5, delivered=3, read=1)
    assert counts.exact
    assert (counts.estimated_delivered, counts.estimated_read) == (3, 1)
    assert ReceiptCounts(members=0, sampled=0, delivered=0, read=0).estimated_read == 0


@given(
    steps=st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from([DELIVERED, READ, None]), st.floats(0, 1)),
        max_size=60,
    )
)
def test_a_batch_never_says_a_thing_twice_nor_delivered_after_read(
    steps: list[tuple[int, ReceiptState | None, float]],
) -> None:
    """Any interleaving of reports and takes: each (id, state) goes out at most once, and
    no delivered receipt follows a read one for the same id."""
    batch = ReceiptBatch(delay=1.0, jitter=2.0)
    now = 0.0
    sent: list[tuple[MessageId, ReceiptState]] = []
    for n, state, draw in steps:
        now += draw * 3
        if state is None:
            for said, ids in batch.take(now):
                sent += [(m, said) for m in ids]
        else:
            batch.add(alert(n), state, now=now, draw=draw)
            assert batch.due <= now + 3.0 or batch.pending == 0
    assert len(sent) == len(set(sent))
    for m, state in sent:
        if state is DELIVERED and (m, READ) in sent:
            assert sent.index((m, DELIVERED)) < sent.index((m, READ))
