"""The ops endpoints of a serving relay: health, readiness through shutdown, and what /metrics counts.

An in-process relay with its ops listener on a free loopback port, driven by real
clients; the endpoints are read over HTTP like a monitoring system would.
"""

from __future__ import annotations

import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from cellrelay.protocol._errors import ErrorCode
from cellrelay.protocol.wire._messages import Goodbye, Ok, Published, Subscribed
from cellrelay.protocol.wire._noise import KeyPair
from cellrelay.relay._memory_store import MemoryStore
from cellrelay.relay._server import Relay

from ..wire_client import MailboxKeys
from .conftest import (
    PATIENCE,
    IndependentWire,
    RelayFactory,
    receive_deliveries,
    relay_config,
)
from .process import http_get


async def scrape(port: int) -> dict[str, float]:
    """GET /metrics, parse it with prometheus_client's parser, return {sample with labels: value}.

    The parser is what a scraper uses: text it cannot read, or two families of one name
    (issue 10: a gauge `cellrelay_connections` beside the counter
    `cellrelay_connections_total`), fails here.
    """
    status, body = await http_get(port, "/metrics")
    assert status == 200
    samples: dict[str, float] = {}
    families: set[str] = set()
    for family in text_string_to_metric_families(body.decode()):
        assert family.name not in families, f"two families named {family.name}"
        families.add(family.name)
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


async def test_health_readiness_and_counts(relays: RelayFactory) -> None:
    """/healthz and /readyz answer 200 while serving; /metrics counts publishes, deliveries, rejections.

    Catches counters that are not incremented on the paths that matter to an operator
    (each refusal by its reason, deliveries per subscriber, connections dropped for bad
    input), and endpoints that are not wired to the running relay.
    """
    running = await relays.start(max_envelope=100)
    port = running.relay.ops_port
    assert port is not None
    with trio.fail_after(PATIENCE):
        assert await http_get(port, "/healthz") == (200, b"ok\n")
        assert await http_get(port, "/readyz") == (200, b"ready\n")
        before = await scrape(port)
        assert before["cellrelay_publishes_total"] == 0
        assert before['cellrelay_rejections_total{reason="unauthorized"}'] == 0

        writer = await running.connect()
        keys = MailboxKeys()
        mailbox = await writer.create(keys)
        readers = [await running.connect() for _ in range(2)]
        for reader in readers:
            assert isinstance(await reader.auth(keys.read, "read", mailbox), Ok)
            assert isinstance(await reader.subscribe(mailbox), Subscribed)
        assert (await writer.publish(mailbox, b"no capability yet")).__class__.__name__ == "Error"
        assert (await writer.auth(keys.read, "write", mailbox)).__class__.__name__ == "Error"
        assert isinstance(await writer.auth(keys.write, "write", mailbox), Ok)
        for i in range(3):
            assert isinstance(await writer.publish(mailbox, b"alert %d" % i), Published)
        assert (await writer.publish(mailbox, b"x" * 101)).__class__.__name__ == "Error"
        for reader in readers:
            assert len(await receive_deliveries(reader, 3)) == 3
        bad = await IndependentWire.connect(running.port, running.public_key)
        await bad.send_plaintext(b"\xc1")
        await bad.read_until_closed()
        await bad.aclose()

        samples = await scrape(port)
    assert samples["cellrelay_publishes_total"] == 3
    assert samples["cellrelay_deliveries_total"] == 6
    assert samples['cellrelay_rejections_total{reason="unauthorized"}'] == 1
    assert samples['cellrelay_rejections_total{reason="bad_proof"}'] == 1
    assert samples['cellrelay_rejections_total{reason="envelope_too_large"}'] == 1
    assert samples['cellrelay_rejections_total{reason="malformed"}'] == 1
    assert samples['cellrelay_connections_dropped_total{reason="malformed"}'] == 1
    assert samples["cellrelay_connections_open"] == 3
    assert samples["cellrelay_connections_total"] == 4
    assert samples["cellrelay_subscriptions"] == 2
    assert samples["cellrelay_mailboxes"] == 1
    assert samples["cellrelay_mailboxes_created_total"] == 1
    assert samples['cellrelay_handshakes_total{result="ok"}'] == 4
    assert samples["cellrelay_store_commit_seconds_count"] >= 1
    assert samples["cellrelay_bytes_received_total"] > 0


async def test_readyz_turns_503_once_shutdown_begins(relays: RelayFactory) -> None:
    """After shutdown starts, /readyz is 503 (a load balancer stops sending clients), /healthz stays 200.

    Clients get `goodbye` SHUTTING_DOWN and new connections are no longer accepted.
    """
    running = await relays.start()
    port = running.relay.ops_port
    assert port is not None
    # The drain is held open until the probes are done, as a slow commit would hold it:
    # with nothing to drain, shutdown ends (and the ops server with it) within a moment.
    hub = running.relay.hub
    drained, release = hub.drain, trio.Event()

    async def slow_drain() -> None:
        await release.wait()
        await drained()

    hub.drain = slow_drain  # type: ignore[method-assign]
    with trio.fail_after(PATIENCE):
        client = await running.connect()
        assert await http_get(port, "/readyz") == (200, b"ready\n")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(running.relay.shutdown)
            await trio.testing.wait_all_tasks_blocked()
            status, _ = await http_get(port, "/readyz")
            assert status == 503
            assert (await http_get(port, "/healthz"))[0] == 200
            release.set()
            goodbye = await client.receive()
            assert isinstance(goodbye, Goodbye)
            assert goodbye.code == ErrorCode.SHUTTING_DOWN
        # Shutdown is over and `serve` has returned: the ops server went with it.
        try:
            await running.connect()
        except (OSError, EOFError):
            pass  # refused, or accepted by the kernel and closed: either way not served
        else:
            raise AssertionError("a relay that is shutting down accepted a client")


async def test_serve_returns_once_shutdown_has_drained() -> None:
    """`Relay.serve` returns after `shutdown`, with its committer, sweeper and ops server gone.

    Catches a `serve` that keeps its background tasks running after a shutdown, so that an
    embedding program (the demo, a test) has to cancel it and cannot tell a clean stop
    from a hang.
    """
    relay = Relay(relay_config(), key=KeyPair.generate(), store=MemoryStore())
    with trio.fail_after(PATIENCE):
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve)
            assert relay.ready
            await relay.shutdown()
        # The nursery exited by itself: serve returned.
        assert not relay.ready
