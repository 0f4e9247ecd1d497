"""A cell record's bookkeeping of kept messages: what `prune` keeps and what a save holds.

`CellRecord` keeps a lower bound of the soonest expiry and the saved form of its seen ids,
so that a save does not scan or re-encode 1,000 messages and 20,000 ids every time. These
tests hold it to the plain definition: after any sequence of remembering and pruning, the
record holds exactly the unexpired messages within the bounds, and its saved form equals a
fresh encoding of that content.
"""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given

from cellrelay.client._state import MAX_HISTORY, MAX_SEEN, SEEN_SLACK, CellRecord, HistoryItem
from cellrelay.protocol.wire import MailboxId


def _record() -> CellRecord:
    return CellRecord(
        crypto=b"state",
        relay="cellrelay://example",
        group_mailbox=MailboxId(bytes(16)),
        control_mailbox=MailboxId(bytes([1]) * 16),
    )


def _item(number: int, expires_at: int) -> HistoryItem:
    return HistoryItem(kind=4, content=b"m%d" % number, sender_id=bytes(16), sender_name="ana",
                       received_at=1000.0, expires_at=expires_at)  # fmt: skip


# Each step: remember a message expiring at `expiry`, or prune at time `now`.
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("remember"), st.integers(1000, 1100)),
        st.tuples(st.just("prune"), st.integers(990, 1110)),
    ),
    max_size=60,
)


@given(STEPS)
def test_prune_and_save_match_the_plain_definition(steps: list[tuple[str, int]]) -> None:
    """Catches an expired message kept (on disk after its expiry) or a stale saved id list."""
    record = _record()
    kept: list[tuple[bytes, int]] = []  # the reference: (id, expires_at) in arrival order
    for number, (action, value) in enumerate(steps):
        if action == "remember":
            message_id = number.to_bytes(16, "big")
            record.remember(message_id, _item(number, value))
            kept.append((message_id, value))
        else:
            record.prune(value)
            kept = [(mid, exp) for mid, exp in kept if exp > value]
            assert [h.expires_at for h in record.history] == [exp for _, exp in kept]
            assert record.seen == dict(kept)
        fresh = _record()
        fresh.history, fresh.seen = list(record.history), dict(record.seen)
        assert record.encode() == fresh.encode()
        assert CellRecord.decode(record.encode()).seen == record.seen


def test_bounds_hold_without_a_sort_at_every_save() -> None:
    """History is cut to MAX_HISTORY at once; seen ids back to MAX_SEEN once SEEN_SLACK over."""
    record = _record()
    for number in range(MAX_SEEN + SEEN_SLACK + 1):
        item = _item(number, 10_000 + number)
        record.remember(number.to_bytes(16, "big"), item)
        if number % 500 == 0 or number > MAX_SEEN + SEEN_SLACK - 2:
            record.prune(5_000)
            assert len(record.history) <= MAX_HISTORY
            assert len(record.seen) <= MAX_SEEN + SEEN_SLACK
    assert len(record.seen) == MAX_SEEN  # the last prune cut it back
    assert min(record.seen.values()) == 10_000 + SEEN_SLACK + 1  # the soonest expiries went
    assert record.history[-1].content == b"m%d" % (MAX_SEEN + SEEN_SLACK)
