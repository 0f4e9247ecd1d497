"""Durable publishes: acknowledged publishes per second and acknowledgement latency.

Run from the repository root: `python bench/bench_publish.py` (about 2 minutes with the
defaults; `--help` for the knobs). For each of `--repeats` rounds, for each server, and
for each pipelining depth, `--procs` worker processes (bench/_worker.py) open
`--connections` connections in all, and each connection keeps `window` publishes of a
600-byte envelope in flight (a new one is sent as each acknowledgement arrives, several
per frame). After `--warmup` seconds, for `--seconds` seconds it counts the
acknowledgements and times each from the write of its publish to the read of its
acknowledgement (CLOCK_MONOTONIC), and reads the server's CPU time.

Servers:

* the relay (`python -m relay serve`, SQLite store, one mailbox per connection) with
  durability full (each group commit is fsync'd before its publishes are acknowledged)
  and durability normal (WAL without fsync at commit: survives a crash of the relay, not
  of the machine);
* Redis 7 with an append-only file, as the peer with the same promise: with
  `appendfsync always` Redis acknowledges a write only after the AOF is fsync'd, and it
  group-commits the same way (one fsync per event-loop pass, covering every client's
  writes); `appendfsync everysec` is the counterpart of durability normal. Each
  connection XADDs to its own stream, which, like a relay publish, returns the entry's
  new id. (Mosquitto was not chosen: its persistence is a snapshot every
  `autosave_interval`, so a QoS 1 PUBACK promises nothing durable. NATS JetStream on
  this machine's version fsyncs on a timer, not before the acknowledgement.)

Target from issue 3: at least 20,000 acknowledged durable publishes per second with the
acknowledgement p99 at or under 10 ms. Latency grows with the depth of the pipeline
(Little's law), so each depth is its own row: the target is met if one row meets both.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _benchlib import (
    OtherLoad,
    Server,
    fmt,
    machine_summary,
    median,
    percentile,
    py_spy,
    raise_open_files_limit,
    run_redis,
    run_relay,
    split_evenly,
    start_workers,
    tree_state,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

WINDOWS: Final = (4, 12, 16, 64)  # publishes in flight per connection (x 8 connections)
START_DELAY: Final = 0.3  # seconds between "go" and the first publish, so all start together
SETUP_TIMEOUT: Final = 60.0
RESULT_TIMEOUT: Final = 60.0
TARGET_RATE: Final = 20_000
TARGET_P99_MS: Final = 10.0

SERVERS: Final[dict[str, tuple[Callable[[], AbstractContextManager[Server]], str]]] = {
    "relay full": (lambda: run_relay(durability="full"), "publish-relay"),
    "relay normal": (lambda: run_relay(durability="normal"), "publish-relay"),
    # Not durable: a diagnostic that separates the store's cost from everything else.
    "relay memory": (lambda: run_relay(store="memory"), "publish-relay"),
    "redis always": (lambda: run_redis(appendfsync="always"), "publish-redis"),
    "redis everysec": (lambda: run_redis(appendfsync="everysec"), "publish-redis"),
}


@dataclass
class Result:
    """One server's figures at one pipelining depth in one round."""

    server: str
    window: int
    in_flight: int
    publishes_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_publish: float
    errors: int
    other_load: float


def measure(server: Server, kind: str, window: int, args: argparse.Namespace) -> Result:
    """Run one depth against one server."""
    argsets = [
        [kind, "--port", str(server.port), "--connections", str(count), "--window", str(window)]
        + (["--key", server.public_key.hex()] if server.public_key else [])
        for count in split_evenly(args.connections, args.procs)
    ]
    workers = start_workers(argsets, SETUP_TIMEOUT)
    try:
        other = OtherLoad([server.pid, *(w.process.pid for w in workers)])
        start = time.monotonic_ns() + int(START_DELAY * 1e9)
        m0 = start + int(args.warmup * 1e9)
        m1 = m0 + int(args.seconds * 1e9)
        for worker in workers:
            worker.tell(f"go {start} {m0} {m1}")
        profile = None
        if args.profile and server.name == "relay":
            Path(args.profile).mkdir(parents=True, exist_ok=True)
            profile = Path(args.profile) / f"publish-{window}-{server.pid}.txt"
        time.sleep(max(0.0, (m0 - time.monotonic_ns()) / 1e9))
        cpu0 = server.cpu()
        with py_spy(server.pid, profile):
            time.sleep(max(0.0, (m1 - time.monotonic_ns()) / 1e9))
        cpu1 = server.cpu()
        results = [w.wait_json(RESULT_TIMEOUT) for w in workers]
        other_load = other.cores()
        server.check_alive()
    finally:
        for worker in workers:
            worker.stop()
    acked = sum(int(r["acked"]) for r in results)  # type: ignore[call-overload]
    latencies = [us / 1000 for r in results for us in r["latencies_us"]]  # type: ignore[attr-defined]
    return Result(
        server=server.name,
        window=window,
        in_flight=window * args.connections,
        publishes_per_s=acked / args.seconds,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        cpu_us_per_publish=(cpu1 - cpu0) * 1e6 / acked if acked else float("nan"),
        errors=sum(int(r["errors"]) for r in results),  # type: ignore[call-overload]
        other_load=other_load,
    )


COLUMNS: Final = (
    ("in flight", "in_flight", 0),
    ("publishes/s", "publishes_per_s", 0),
    ("ack p50 ms", "p50_ms", 2),
    ("ack p99 ms", "p99_ms", 2),
    ("CPU us/publish", "cpu_us_per_publish", 1),
    ("other load", "other_load", 2),
)


def print_header() -> None:
    """Print the table header."""
    print(f"{'server':<22}" + "".join(f"{title:>{len(title) + 2}}" for title, _, _ in COLUMNS))


def print_row(label: str, values: dict[str, float]) -> None:
    """Print one table row."""
    cells = "".join(
        f"{fmt(values[attr], digits):>{len(title) + 2}}" for title, attr, digits in COLUMNS
    )
    print(f"{label:<22}{cells}", flush=True)


def main(args: argparse.Namespace) -> None:
    """Run every round and print the results."""
    raise_open_files_limit()
    print(machine_summary())
    print(tree_state())
    print(
        f"600-byte envelopes; {args.connections} connections over {args.procs} processes;"
        f" windows {', '.join(map(str, args.windows))} per connection;"
        f" {args.warmup} s warm-up + {args.seconds} s measured; median of {args.repeats} rounds\n"
    )
    print_header()
    results: list[Result] = []
    notes: list[str] = []
    for repeat in range(args.repeats):
        order = list(args.servers) if repeat % 2 == 0 else list(reversed(args.servers))
        for name in order:
            start_server, kind = SERVERS[name]
            with start_server() as server:
                for note in server.notes:
                    if note not in notes:
                        notes.append(note)
                        print(f"  [{note}]")
                for window in args.windows:
                    result = measure(server, kind, window, args)
                    result.server = name
                    results.append(result)
                    if result.errors:
                        print(f"  !! {result.errors} publishes were refused")
                    print_row(f"{name} #{repeat + 1}", asdict(result))
    print(f"\nmedian of {args.repeats} rounds")
    print_header()
    medians: dict[str, dict[str, float]] = {}
    for window in args.windows:
        for name in args.servers:
            runs = [r for r in results if r.server == name and r.window == window]
            medians[f"{name}/{window}"] = row = {
                attr: median([getattr(r, attr) for r in runs]) for _, attr, _ in COLUMNS
            }
            print_row(name, row)
    verdict = "MISS"
    for window in args.windows:
        full = medians.get(f"relay full/{window}")
        if full and full["publishes_per_s"] >= TARGET_RATE and full["p99_ms"] <= TARGET_P99_MS:
            verdict = f"PASS (at {int(full['in_flight'])} in flight)"
    print(
        f"\ntarget (issue 3): >= {TARGET_RATE:,} acknowledged durable publishes/s with ack p99"
        f" <= {TARGET_P99_MS} ms, durability full: {verdict}"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps(
                {"notes": notes, "medians": medians, "runs": [asdict(r) for r in results]},
                indent=1,
            )
        )


def parse_args() -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds (median taken)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds")
    parser.add_argument("--connections", type=int, default=8, help="publishing connections")
    parser.add_argument("--procs", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--windows", type=lambda s: tuple(int(x) for x in s.split(",")), default=WINDOWS,
        help="publishes in flight per connection, comma-separated",
    )  # fmt: skip
    parser.add_argument(
        "--servers", type=lambda s: tuple(s.split(",")),
        default=tuple(name for name in SERVERS if name != "relay memory"),
        help=f"comma-separated, from: {', '.join(SERVERS)} (relay memory is not durable:"
        " a diagnostic only)",
    )  # fmt: skip
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--profile", help="directory for py-spy profiles of the relay")
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_args())
