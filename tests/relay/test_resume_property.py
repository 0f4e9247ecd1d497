"""Property: resuming a subscription across the backlog/live seam loses and repeats nothing.

A publisher keeps publishing while a subscriber subscribes at a random cursor, stops at a
random point (closing its connection, or re-subscribing on the same one) and resumes from
the last seq it saw. Within one subscription the deliveries must be exactly the next seqs
in order (no gap, no duplicate); together they must be every seq after the first cursor.

To reach the hub's multi-page backlog and catch-up-buffer overflow paths with small
examples, each example also draws the backlog page size and the catch-up buffer size
(module constants of cellrelay.relay._hub, restored afterwards), and the store (MemoryStore, whose
commit and fan-out happen in one step, or SQLite, whose commit becomes visible to readers
in a worker thread before the hub fans it out).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import cellrelay.relay._hub as hub_module
from cellrelay.protocol.wire._messages import (
    Deliver,
    MailboxId,
    Ok,
    Published,
    Subscribe,
    Subscribed,
)
from cellrelay.protocol.wire._noise import KeyPair
from cellrelay.relay._memory_store import MemoryStore
from cellrelay.relay._server import Relay
from cellrelay.relay._sqlite_store import SQLiteStore
from cellrelay.relay._store import Store

from ..wire_client import MailboxKeys, WireClient
from .conftest import PATIENCE, assert_quiet, publish_many, relay_config

MAX_TOTAL = 40


@contextmanager
def hub_sizes(page: int, buffer: int) -> Iterator[None]:
    """Set the hub's backlog page and catch-up buffer sizes for one example."""
    saved = hub_module.BACKLOG_PAGE, hub_module.CATCH_UP_BUFFER
    hub_module.BACKLOG_PAGE, hub_module.CATCH_UP_BUFFER = page, buffer  # type: ignore[misc]
    try:
        yield
    finally:
        hub_module.BACKLOG_PAGE, hub_module.CATCH_UP_BUFFER = saved  # type: ignore[misc]


async def _subscribe(client: WireClient, mailbox: bytes, after: int) -> list[Deliver]:
    """Send subscribe; return the deliveries that arrive before its answer (an earlier subscription's)."""
    request_id = client.next_id()
    await client.send(Subscribe(id=request_id, mailbox=MailboxId(mailbox), after=after))
    earlier: list[Deliver] = []
    while True:
        message = await client.receive()
        if isinstance(message, Deliver):
            earlier.append(message)
        elif isinstance(message, Subscribed) and message.id == request_id:
            return earlier


async def _run_example(
    store: Store,
    *,
    total: int,
    before: int,
    start_cursor: int,
    bursts: list[int],
    cut: int,
    same_connection: bool,
) -> None:
    key = KeyPair.generate()
    relay = Relay(relay_config(ops_listen=""), key=key, store=store)
    async with trio.open_nursery() as nursery:
        port = (await nursery.start(relay.serve))[0][1]
        writer = await WireClient.connect(port, key.public)
        keys = MailboxKeys()
        mailbox = await writer.create(keys)
        assert isinstance(await writer.auth(keys.write, "write", mailbox), Ok)
        envelope_of: dict[int, bytes] = {}

        async def publish(count: int) -> None:
            envelopes = [f"e{len(envelope_of) + i}".encode() for i in range(count)]
            answers = await publish_many(writer, mailbox, envelopes)
            for answer, envelope in zip(answers, envelopes, strict=True):
                assert isinstance(answer, Published), answer
                envelope_of[answer.seq] = envelope

        published_all = trio.Event()

        async def keep_publishing() -> None:
            remaining, i = total - before, 0
            while remaining > 0:
                count = min(bursts[i % len(bursts)], remaining)
                await publish(count)
                remaining -= count
                i += 1
            published_all.set()

        await publish(before)
        first_cursor = min(start_cursor, before)
        reader = await WireClient.connect(port, key.public)
        assert isinstance(await reader.auth(keys.read, "read", mailbox), Ok)
        subscriptions: list[list[Deliver]] = [[]]
        cursors = [first_cursor]
        nursery.start_soon(keep_publishing)
        assert not await _subscribe(reader, mailbox, first_cursor)

        async def receive_until(last_seq: int, stop_after: int | None) -> None:
            current = subscriptions[-1]
            while (current[-1].seq if current else cursors[-1]) < last_seq and (
                stop_after is None or len(current) < stop_after
            ):
                message = await reader.receive()
                if isinstance(message, Deliver):
                    current.append(message)

        expected_last = total
        cut_here = cut < expected_last - first_cursor
        await receive_until(expected_last, cut if cut_here else None)
        if cut_here:
            last = subscriptions[-1][-1].seq if subscriptions[-1] else first_cursor
            if same_connection:
                subscriptions[-1].extend(await _subscribe(reader, mailbox, last))
            else:
                await reader.aclose()
                reader = await WireClient.connect(port, key.public)
                assert isinstance(await reader.auth(keys.read, "read", mailbox), Ok)
                assert not await _subscribe(reader, mailbox, last)
            subscriptions.append([])
            cursors.append(last)
            if last < expected_last:
                await receive_until(expected_last, None)
        # The relay fans an envelope out before the publisher has read its acknowledgement:
        # the reader can hold the last one while `publish` has yet to record it. Wait for
        # the publisher's own record before comparing with it (it failed on a busy machine).
        await published_all.wait()
        await assert_quiet(reader)
        assert len(envelope_of) == total

        for cursor, seen in zip(cursors, subscriptions, strict=True):
            seqs = [d.seq for d in seen]
            assert seqs == list(range(cursor + 1, cursor + 1 + len(seqs))), (cursor, seqs)
            assert all(d.envelope == envelope_of[d.seq] for d in seen)
        union = sorted({d.seq for seen in subscriptions for d in seen})
        assert union == list(range(first_cursor + 1, total + 1))
        await writer.aclose()
        await reader.aclose()
        nursery.cancel_scope.cancel()


# Found by this test: with SQLite, a re-subscribe on the same connection while the old
# subscription's backlog read ran in a worker thread let the old one send a page after
# the new `subscribed` (duplicates within the new subscription). Kept as a regression case.
@example(total=39, before=39, start_cursor=2, bursts=[6], cut=19, same_connection=True,
         page=1, buffer=hub_module.CATCH_UP_BUFFER, sqlite=True)  # fmt: skip
@example(total=27, before=7, start_cursor=2, bursts=[4, 7], cut=10, same_connection=True,
         page=2, buffer=1, sqlite=True)  # fmt: skip
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    total=st.integers(1, MAX_TOTAL),
    before=st.integers(0, MAX_TOTAL),
    start_cursor=st.integers(0, MAX_TOTAL),
    bursts=st.lists(st.integers(1, 8), min_size=1, max_size=6),
    cut=st.integers(0, MAX_TOTAL),
    same_connection=st.booleans(),
    page=st.sampled_from([1, 2, 3, 7, hub_module.BACKLOG_PAGE]),
    buffer=st.sampled_from([0, 1, 2, 5, hub_module.CATCH_UP_BUFFER]),
    sqlite=st.booleans(),
)
async def test_resume_across_the_seam_has_no_gap_and_no_duplicate(
    total: int,
    before: int,
    start_cursor: int,
    bursts: list[int],
    cut: int,
    same_connection: bool,
    page: int,
    buffer: int,
    sqlite: bool,
) -> None:
    """Catches a gap or duplicate where the backlog read meets live delivery, in either store.

    Would fail if the hub turned a subscription live without re-reading after a buffer
    overflow, set the cursor from the wrong head, or delivered live envelopes to a
    subscription still reading its backlog.
    """
    before = min(before, total)
    with trio.fail_after(PATIENCE), hub_sizes(page, buffer), tempfile.TemporaryDirectory() as tmp:
        store: Store = (
            await SQLiteStore.open(Path(tmp) / "relay.sqlite3", durability="normal")
            if sqlite
            else MemoryStore()
        )
        try:
            await _run_example(
                store,
                total=total,
                before=before,
                start_cursor=start_cursor,
                bursts=bursts,
                cut=cut,
                same_connection=same_connection,
            )
        finally:
            await store.aclose()
