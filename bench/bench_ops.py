"""Measure the cost of metrics updates, log calls through the relay's chain, and ops scrapes.

Run from the repository root: `python bench/bench_ops.py` (about 15 s). It prints, per
operation, the median over 5 runs of the time per call:

* metric updates on the hot path (`Counter.inc`, `inc(n)`, a labelled child, `reject`,
  `Histogram.observe`) and rendering all of `RelayMetrics`, beside `prometheus_client`'s
  own `Counter.inc` and `Gauge.inc` (the reason relay/_metrics.py keeps its own values);
* one log call through `configure_logging`'s JSON and console chains into a string buffer,
  with a handful of fields (so including `redact`), and one filtered out by level;
* one `GET /metrics` over a keep-alive loopback connection to `serve_ops`, client included.
"""

from __future__ import annotations

import io
import statistics
import sys
import time
import timeit
from pathlib import Path
from typing import TYPE_CHECKING, Final

import prometheus_client
import structlog
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cellrelay.protocol._errors import ErrorCode
from cellrelay.relay._logging import configure_logging
from cellrelay.relay._metrics import Registry, RelayMetrics
from cellrelay.relay._ops import serve_ops

if TYPE_CHECKING:
    from collections.abc import Callable

RUNS: Final = 5
SCRAPES: Final = 2000


def per_call(statement: Callable[[], object], number: int) -> float:
    """Median seconds per call of `statement` over RUNS runs of `number` calls."""
    times = timeit.repeat(statement, number=number, repeat=RUNS)
    return statistics.median(times) / number


def report(name: str, seconds: float) -> None:
    """Print one figure in nanoseconds or microseconds."""
    figure = f"{seconds * 1e9:8.0f} ns" if seconds < 1e-6 else f"{seconds * 1e6:8.1f} us"
    print(f"{name:<48} {figure}")


def bench_metrics() -> None:
    """Time the updates the relay makes per delivery, per request and per scrape."""
    registry = Registry()
    metrics = RelayMetrics.create(registry)
    metrics.mailboxes.set_function(lambda: 1234)
    for i in range(200):
        metrics.store_commit_seconds.observe(i / 1e4)
    report("Counter.inc()", per_call(metrics.deliveries.inc, 1_000_000))
    peers = prometheus_client.CollectorRegistry()
    their_counter = prometheus_client.Counter("bench_total", "Bench.", registry=peers)
    their_gauge = prometheus_client.Gauge("bench_open", "Bench.", registry=peers)
    report("prometheus_client Counter.inc() (peer)", per_call(their_counter.inc, 1_000_000))
    report("Gauge.inc()", per_call(metrics.connections_open.inc, 1_000_000))
    report("prometheus_client Gauge.inc() (peer)", per_call(their_gauge.inc, 1_000_000))
    report("Counter.inc(500)", per_call(lambda: metrics.deliveries.inc(500), 1_000_000))
    child = metrics.rejections.labels(reason="rate_limited")
    report("labelled child .inc() (child cached by caller)", per_call(child.inc, 1_000_000))
    report(
        "family.labels(reason=...).inc()",
        per_call(lambda: metrics.rejections.labels(reason="rate_limited").inc(), 300_000),
    )
    report("RelayMetrics.reject(code)", per_call(lambda: metrics.reject(ErrorCode.BUSY), 300_000))
    report(
        "Histogram.observe()", per_call(lambda: metrics.store_commit_seconds.observe(3e-3), 300_000)
    )
    size = len(registry.render())
    report(f"Registry.render() of RelayMetrics ({size} bytes)", per_call(registry.render, 500))


def bench_logging() -> None:
    """Time one log call through the configured chain, the way the relay logs."""
    saved = structlog.get_config()
    log = structlog.get_logger("bench")
    for json in (True, False):
        sink = io.StringIO()
        configure_logging(json=json, level="info", stream=sink)

        def call(sink: io.StringIO = sink) -> None:
            log.info(
                "connection_closed",
                conn_id="1a2b3c4d",
                reason="slow_consumer",
                frames=1234,
                bytes_sent=99_000,
                mailbox_tag="abcdef012345",
            )
            sink.seek(0)
            sink.truncate()

        report(f"log.info, 6 fields, {'JSON' if json else 'console'} chain", per_call(call, 20_000))
    report("log.debug filtered out at level info", per_call(lambda: log.debug("x", a=1), 200_000))
    structlog.reset_defaults()
    structlog.configure(**saved)


async def bench_scrape() -> None:
    """Time GET /metrics round trips on one keep-alive loopback connection."""
    registry = Registry()
    RelayMetrics.create(registry)
    request = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"
    body_size = len(registry.render())
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_ops(
                "127.0.0.1", 0, registry=registry, ready=lambda: True, task_status=task_status
            )
        )
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request)
            first = b""
            while b"\r\n\r\n" not in first or len(first) < first.index(b"\r\n\r\n") + 4 + body_size:
                first += await stream.receive_some(1 << 16)
            expected = len(first)  # every response is the same size: nothing changes between
            times = []
            for _ in range(RUNS):
                start = time.perf_counter()
                for _ in range(SCRAPES):
                    await stream.send_all(request)
                    received = b""
                    while len(received) < expected:
                        received += await stream.receive_some(1 << 16)
                    assert len(received) == expected
                times.append((time.perf_counter() - start) / SCRAPES)
        nursery.cancel_scope.cancel()
    report("GET /metrics over loopback keep-alive", statistics.median(times))


def main() -> None:
    """Run every measurement and print the figures."""
    print(f"python {sys.version.split()[0]}, median of {RUNS} runs, time per call")
    bench_metrics()
    bench_logging()
    trio.run(bench_scrape)


if __name__ == "__main__":
    main()
