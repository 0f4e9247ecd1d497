"""A cell record's bookkeeping of kept messages: what `prune` keeps and what a save holds.

`CellRecord` keeps a lower bound of the soonest expiry and the saved form of its seen ids,
so that a save does not scan or re-encode 1,000 messages and 20,000 ids every time. These
tests hold it to the plain definition: after any sequence of remembering and pruning, the
record holds exactly the unexpired messages within the bounds, and its saved form equals a
fresh encoding of that content.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given

from cellrelay.client._state import (
    MAX_HISTORY,
    MAX_HISTORY_PER_SENDER,
    MAX_SEEN,
    SEEN_SLACK,
    CellRecord,
    HistoryItem,
    LeaveRecord,
    RelayRecord,
    StateError,
)
from cellrelay.protocol.wire import MailboxId
from cellrelay.protocol.wire._codec import decode_map, encode_map


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


def _from(sender: int, number: int) -> HistoryItem:
    return HistoryItem(kind=1, content=b"%d/%d" % (sender, number), sender_id=bytes([sender]) * 16,
                       sender_name=f"m{sender}", received_at=1000.0, expires_at=10_000)  # fmt: skip


def test_a_flood_pushes_out_only_the_flooders_own_messages() -> None:
    """issue 15: the last 1,000 messages used to be anyone's, so one burst emptied recent()."""
    record = _record()
    genuine = [_from(1, n) for n in range(10)]
    for n, item in enumerate(genuine):
        record.remember(b"g" + n.to_bytes(15, "big"), item)
    for n in range(3 * MAX_HISTORY):
        record.remember(b"f" + n.to_bytes(15, "big"), _from(2, n))
        if n % 100 == 0:
            record.prune(5_000)
    record.prune(5_000)
    assert [h for h in record.history if h.sender_id == bytes([1]) * 16] == genuine
    flood = [h for h in record.history if h.sender_id == bytes([2]) * 16]
    assert len(flood) == MAX_HISTORY_PER_SENDER
    assert flood[-1].content == b"2/%d" % (3 * MAX_HISTORY - 1)  # the newest are kept


@given(st.lists(st.integers(1, 8), min_size=1, max_size=2_000))
def test_when_the_history_is_full_the_sender_holding_most_pays(senders: list[int]) -> None:
    record = _record()
    for n, sender in enumerate(senders):
        record.remember(n.to_bytes(16, "big"), _from(sender, n))
    record.prune(5_000)
    sent = {s: senders.count(s) for s in set(senders)}
    kept = {s: sum(1 for h in record.history if h.sender_id == bytes([s]) * 16) for s in sent}
    assert len(record.history) <= MAX_HISTORY
    assert all(n <= MAX_HISTORY_PER_SENDER for n in kept.values())
    losers = [s for s in sent if kept[s] < sent[s]]
    for loser in losers:  # cut down to the level of the others, never below one who kept all
        assert kept[loser] >= max(kept.values()) - 1
        assert all(sent[s] <= kept[loser] + 1 for s in sent if s not in losers)
    for sender in sent:  # each keeps its newest, in order
        mine = [
            int(h.content.split(b"/")[1])
            for h in record.history
            if h.sender_id == bytes([sender]) * 16
        ]
        assert (
            mine == [n for n, s in enumerate(senders) if s == sender][sent[sender] - kept[sender] :]
        )


@given(
    st.sampled_from(["sent", "sending", "failed"]),
    st.dictionaries(st.binary(min_size=16, max_size=16), st.text(max_size=20), max_size=4),
)
def test_send_status_and_verified_members_survive_a_save(
    status: str, verified: dict[bytes, str]
) -> None:
    """Issue 9: a message not acknowledged stays so after a restart; so do verified members."""
    record = _record()
    item = _item(1, 2000)
    item.status = status
    record.remember(b"\x01" * 16, item)
    record.verified = dict(verified)
    again = CellRecord.decode(record.encode())
    assert [h.status for h in again.history] == [status]
    assert again.verified == verified
    # A record saved before either existed reads as sent, and as nobody verified.
    plain = _item(2, 2000)
    assert b"status" not in plain.encode()
    assert HistoryItem.decode(plain.encode()).status == "sent"


relay_records = st.builds(
    RelayRecord,
    relay=st.text(min_size=1, max_size=40),
    group_mailbox=st.binary(min_size=16, max_size=16).map(MailboxId),
    control_mailbox=st.binary(min_size=16, max_size=16).map(MailboxId),
    group_cursor=st.integers(0, 2**63 - 1),
    control_cursor=st.integers(0, 2**63 - 1),
)


@given(st.lists(relay_records, max_size=2), st.integers(0, 2**40), st.integers(0, 2**40))
def test_the_relays_of_a_cell_survive_a_save(
    more: list[RelayRecord], group_cursor: int, control_cursor: int
) -> None:
    """Issue 13's ground: a cell record lists its relays, the first in the flat fields."""
    record = _record()
    record.group_cursor, record.control_cursor = group_cursor, control_cursor
    record.more_relays = list(more)
    again = CellRecord.decode(record.encode())
    assert again.relays == record.relays
    assert again.relays[0] == RelayRecord(
        relay="cellrelay://example",
        group_mailbox=MailboxId(bytes(16)),
        control_mailbox=MailboxId(bytes([1]) * 16),
        group_cursor=group_cursor,
        control_cursor=control_cursor,
    )
    assert again.relays[1:] == more


def test_a_record_saved_before_several_relays_reads_as_one_relay() -> None:
    """Migration: a saved record without `more_relays` is the one-relay cell it was."""
    record = _record()
    record.group_cursor = 7
    fields = decode_map(record.encode())
    del fields["more_relays"]
    old = CellRecord.decode(encode_map(fields))
    assert old.more_relays == []
    assert [r.relay for r in old.relays] == ["cellrelay://example"]
    assert old.relays[0].group_cursor == 7
    assert old.encode() == record.encode()


def test_a_damaged_relay_record_is_refused() -> None:
    record = _record()
    record.more_relays = [RelayRecord(relay="r", group_mailbox=MailboxId(b"short"),
                                      control_mailbox=MailboxId(bytes(16)))]  # fmt: skip
    with pytest.raises(StateError):
        CellRecord.decode(record.encode())


def test_a_record_saved_before_verified_members_existed_still_reads() -> None:
    """Found here: the default for a missing `verified` was a list, which `_list` refused,
    so a cell saved before issue 9 would not load (StateError) after the upgrade."""
    record = _record()
    fields = decode_map(record.encode())
    del fields["verified"], fields["more_relays"]
    assert CellRecord.decode(encode_map(fields)).verified == {}


leave_records = st.builds(
    LeaveRecord,
    member_id=st.binary(min_size=16, max_size=16),
    epoch=st.integers(0, 2**32 - 1),
    sent_at_ms=st.integers(0, 2**63 - 1),
    received_at=st.floats(0, 2e9, allow_nan=False),
)


@given(
    st.lists(leave_records, max_size=4),
    st.dictionaries(st.binary(min_size=16, max_size=16), st.integers(0, 2**32 - 1), max_size=4),
)
def test_pending_leaves_and_admissions_survive_a_save(
    leaves: list[LeaveRecord], admitted: dict[bytes, int]
) -> None:
    """docs/protocol.md §C9: a leave is kept until its sender is removed, across restarts."""
    record = _record()
    record.leaves, record.admitted = list(leaves), dict(admitted)
    again = CellRecord.decode(record.encode())
    assert again.leaves == leaves
    assert again.admitted == admitted


def test_a_record_saved_before_leaves_existed_still_reads() -> None:
    record = _record()
    fields = decode_map(record.encode())
    del fields["leaves"], fields["admitted"]
    old = CellRecord.decode(encode_map(fields))
    assert (old.leaves, old.admitted) == ([], {})
    assert old.encode() == record.encode()


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("admitted", b"\x00" * 19),
        (
            "leaves",
            (encode_map({"member_id": b"short", "epoch": 1, "sent_at_ms": 1, "received_at": 1.0}),),
        ),
        (
            "leaves",
            (
                encode_map(
                    {"member_id": bytes(16), "epoch": "1", "sent_at_ms": 1, "received_at": 1.0}
                ),
            ),
        ),
    ],
)
def test_damaged_leaves_are_refused(name: str, damage: object) -> None:
    fields = decode_map(_record().encode())
    fields[name] = damage
    with pytest.raises(StateError):
        CellRecord.decode(encode_map(fields))
