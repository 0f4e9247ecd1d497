"""A subscriber that stops reading is cut off (bounded queue) and later resumes without loss.

The slow subscriber's socket has a 4 KiB receive buffer set before connecting, so the
TCP window stays small and the relay's send queue (`send_queue_bytes`, set to its
minimum of two frames) fills after a modest amount of traffic.
"""

from __future__ import annotations

import pytest
import trio

from cellrelay.protocol._errors import ErrorCode
from cellrelay.protocol.wire._messages import Deliver, Ok, Ping, Published, Subscribed

from ..wire_client import MailboxKeys
from .conftest import (
    PATIENCE,
    RelayFactory,
    assert_quiet,
    connect_raw_socket,
    handshake,
    publish_many,
    read_until_closed,
    receive_deliveries,
)

ENVELOPE_SIZE = 8 * 1024
BATCH = 20
# Bounded: 400 batches of 160 KiB is 64 MiB, far beyond any loopback buffering, and at
# 50 ms a batch at most 20 s.
MAX_BATCHES = 400


async def test_slow_subscriber_is_cut_off_and_resumes_from_its_cursor(relays: RelayFactory) -> None:
    """The stalled subscriber is dropped with SLOW_CONSUMER; the rest are unaffected; resuming loses nothing.

    Catches a relay that buffers without bound for a reader that does not read (memory
    exhaustion by one client), one slow reader stalling publishers or other subscribers,
    and a resume that skips or repeats envelopes.
    """
    running = await relays.start(
        send_queue_bytes=2 * 65_537,
        publish_rate=1e6, publish_burst=10**6,
        mailbox_publish_rate=1e6, mailbox_publish_burst=10**6,
        mailbox_max_bytes=2**30,
    )  # fmt: skip
    with trio.fail_after(3 * PATIENCE):
        writer = await running.connect()
        keys = MailboxKeys()
        mailbox = await writer.create(keys)
        assert isinstance(await writer.auth(keys.write, "write", mailbox), Ok)
        fast = await running.connect()
        assert isinstance(await fast.auth(keys.read, "read", mailbox), Ok)
        assert isinstance(await fast.subscribe(mailbox), Subscribed)
        slow = await handshake(
            await connect_raw_socket(running.port, receive_buffer=4096), running.public_key
        )
        running.clients.append(slow)
        assert isinstance(await slow.auth(keys.read, "read", mailbox), Ok)
        assert isinstance(await slow.subscribe(mailbox), Subscribed)

        envelopes: list[bytes] = []
        fast_seen = 0

        async def publish_batch() -> None:
            nonlocal fast_seen
            batch = [
                len(envelopes).to_bytes(4, "big") + bytes([i % 256]) * ENVELOPE_SIZE
                for i in range(len(envelopes), len(envelopes) + BATCH)
            ]
            answers = await publish_many(writer, mailbox, batch)
            assert all(isinstance(a, Published) for a in answers), answers[:3]
            envelopes.extend(batch)
            # The fast subscriber keeps up with every batch while the slow one stalls.
            got = await receive_deliveries(fast, BATCH)
            assert [d.seq for d in got] == list(range(fast_seen + 1, fast_seen + BATCH + 1))
            fast_seen += BATCH

        for _ in range(MAX_BATCHES):
            await publish_batch()
            if running.dropped("slow_consumer"):
                break
            # The drop is counted when the connection ends, after the relay has given its
            # writer a grace period to flush the goodbye; pace the batches meanwhile.
            await trio.sleep(0.05)
        assert running.dropped("slow_consumer") == 1
        for _ in range(3):  # published while the slow subscriber is away
            await publish_batch()

        ending = await read_until_closed(slow)
        if ending.goodbye is not None:
            assert ending.goodbye.code == ErrorCode.SLOW_CONSUMER
        received = ending.deliveries
        cursor = len(received)
        assert [d.seq for d in received] == list(range(1, cursor + 1))
        assert cursor < len(envelopes), "the slow subscriber was not behind"

        again = await running.connect()
        assert isinstance(await again.auth(keys.read, "read", mailbox), Ok)
        subscribed = await again.subscribe(mailbox, after=cursor)
        assert isinstance(subscribed, Subscribed)
        assert subscribed.head == len(envelopes)
        rest = await receive_deliveries(again, len(envelopes) - cursor)
        assert [d.seq for d in rest] == list(range(cursor + 1, len(envelopes) + 1))
        assert [d.envelope for d in received + rest] == envelopes
        await assert_quiet(again)


@pytest.mark.parametrize(
    ("queue", "size"), [(1024 * 1024, 8 * 1024), (2 * 65_537, 16_384)], ids=["default", "minimum"]
)
async def test_catching_up_on_a_large_backlog_is_not_slow_consumption(
    relays: RelayFactory, queue: int, size: int
) -> None:
    """A reader that keeps reading catches up on megabytes of backlog without being cut off.

    With the default queue (1 MiB) and the minimum one (two frames), while replies to its
    own pings interleave with the backlog. Catches a catch-up that queues a whole backlog
    page (up to 256 envelopes, megabytes) at once and so trips SLOW_CONSUMER for a healthy
    reader, who would then reconnect and trip it again, never catching up.
    """
    running = await relays.start(
        send_queue_bytes=queue, max_envelope=16_384,
        publish_rate=1e6, publish_burst=10**6,
        mailbox_publish_rate=1e6, mailbox_publish_burst=10**6,
    )  # fmt: skip
    count = 600
    with trio.fail_after(3 * PATIENCE):
        writer = await running.connect()
        keys = MailboxKeys()
        mailbox = await writer.create(keys)
        assert isinstance(await writer.auth(keys.write, "write", mailbox), Ok)
        envelopes = [i.to_bytes(4, "big") * (size // 4) for i in range(count)]
        for start in range(0, count, 100):
            answers = await publish_many(writer, mailbox, envelopes[start : start + 100])
            assert all(isinstance(a, Published) for a in answers)
        reader = await running.connect()
        assert isinstance(await reader.auth(keys.read, "read", mailbox), Ok)
        assert isinstance(await reader.subscribe(mailbox), Subscribed)
        got: list[Deliver] = []
        while len(got) < count:
            got.extend(await receive_deliveries(reader, min(50, count - len(got))))
            await reader.send(Ping(id=reader.next_id()))  # a reply to queue mid-backlog
        assert [d.seq for d in got] == list(range(1, count + 1))
        assert [d.envelope for d in got] == envelopes
    assert running.dropped("slow_consumer") == 0
