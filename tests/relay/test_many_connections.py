"""2,000 concurrent connections, each subscribed to one mailbox, all held and all served.

An in-process relay on loopback; the client side runs in the same process, so the test
needs two file descriptors per connection and raises its soft limit if that is short.
"""

from __future__ import annotations

import resource

import pytest
import trio

from cellrelay.protocol.wire._messages import Deliver, Ok, Published, Subscribed

from ..wire_client import MailboxKeys, WireClient
from .conftest import RelayFactory, assert_quiet

CONNECTIONS = 2_000
# Handshakes in flight from the test at once: the relay's accept backlog and handshake
# slots are not what this test measures.
CONCURRENT_OPENS = 64
# Opening 2,000 Noise connections with a capability proof each takes a few seconds here;
# the bound leaves room for a loaded machine.
DEADLINE = 90.0
# Two descriptors per connection (both ends live in this process) plus the test's own.
FDS_NEEDED = 2 * CONNECTIONS + 256


def _ensure_file_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= FDS_NEEDED:
        return
    if hard != resource.RLIM_INFINITY and hard < FDS_NEEDED:
        pytest.skip(f"needs {FDS_NEEDED} file descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (FDS_NEEDED, hard))


@pytest.mark.slow
async def test_two_thousand_subscribed_connections_all_receive_one_publish(
    relays: RelayFactory,
) -> None:
    """Every one of 2,000 subscribed connections gets the envelope; all stay open and answer.

    Catches per-connection limits or leaks that only show at scale (descriptor
    exhaustion, an accept loop that stalls, fan-out that skips connections once the
    kernel refuses a write), and a relay that drops idle connections it should hold.
    """
    _ensure_file_descriptors()
    running = await relays.start(
        max_connections_per_address=CONNECTIONS + 16,
        max_handshakes=CONNECTIONS + 16,
        ops_listen="",
    )
    metrics = running.relay.metrics
    with trio.fail_after(DEADLINE):
        writer = await running.connect()
        keys = MailboxKeys()
        mailbox = await writer.create(keys)
        assert isinstance(await writer.auth(keys.write, "write", mailbox), Ok)

        subscribers: list[WireClient] = []
        limiter = trio.CapacityLimiter(CONCURRENT_OPENS)

        async def open_subscriber() -> None:
            async with limiter:
                client = await running.connect()
                assert isinstance(await client.auth(keys.read, "read", mailbox), Ok)
                assert isinstance(await client.subscribe(mailbox), Subscribed)
                subscribers.append(client)

        async with trio.open_nursery() as nursery:
            for _ in range(CONNECTIONS):
                nursery.start_soon(open_subscriber)
        assert len(subscribers) == CONNECTIONS
        assert metrics.connections_open.value == CONNECTIONS + 1
        assert metrics.subscriptions.value == CONNECTIONS

        envelope = b"one alert for everyone"
        published = await writer.publish(mailbox, envelope)
        assert isinstance(published, Published)
        for client in subscribers:
            delivered = await client.receive()
            assert isinstance(delivered, Deliver)
            assert (delivered.seq, delivered.envelope) == (published.seq, envelope)
        assert metrics.deliveries.value == CONNECTIONS
        # Still held and responsive afterwards: a few round trips spread over the set.
        for client in subscribers[:: CONNECTIONS // 20]:
            await assert_quiet(client)
        assert metrics.connections_open.value == CONNECTIONS + 1
