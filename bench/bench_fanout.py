"""Fan-out: one publisher, N subscribers in other processes, the relay beside Mosquitto.

Run from the repository root: `python bench/bench_fanout.py` (about 3 minutes with the
defaults; `--help` for the knobs). For each of `--repeats` rounds, for each broker (the
relay, then Mosquitto, alternating which goes first), for N = 10, 100 and 1,000:

* N subscriber connections are opened by `--procs` worker processes (bench/_worker.py),
  each holding about N/procs of them, all subscribed to one mailbox (relay) or one topic
  at QoS 1 (Mosquitto);
* **loaded**: the controller (this process) publishes 600-byte payloads from one
  connection, keeping `ceil(IN_FLIGHT_DELIVERIES / N)` messages in flight end to end (a
  message stops being in flight when the last subscriber has it), for `--warmup` then
  `--seconds` seconds. Over the measured seconds it reports deliveries per second, the
  broker process's CPU microseconds per delivery, and the p50/p99 latency from publish to
  the last subscriber's receipt, under that load;
* **idle**: then `--alerts` single messages, one at a time, about 100 ms apart, into
  quiet connections: the p50/p99 of the same latency, and CPU per delivery. At N = 1,000
  this is the issue's "one alert to 1,000 idle subscribers".

The relay is a real `python -m relay serve` process: SQLite store, durability full (each
publish is acknowledged after an fsync'd group commit, and delivered after it), Noise
transport encryption on every connection. Its abuse limits are raised so the load
generator is not refused (printed below). Mosquitto runs on a private port with
persistence off and generous in-flight and queue limits; MQTT 3.1.1 at QoS 1 both ways
(the publisher and every subscriber send PUBACKs). The MQTT publisher is paho-mqtt; the
MQTT subscribers are hand-written (bench/_worker.py) like the relay's, so both brokers'
subscribers cost about the same; `--mqtt-client paho` uses paho for them too.

Latency is CLOCK_MONOTONIC (`time.monotonic_ns`, system-wide on Linux) read by the
publisher just before its write and by a subscriber process right after its `recv`
returned the bytes (parsing and decryption follow, and are checked, but are not inside
the figure; see bench/_worker.py for why). CPU is user + system time from
/proc/<pid>/stat (10 ms ticks). "other load" is the CPU, in cores, that processes other
than the benchmark's used meanwhile. The machine has 2 cores shared by the broker, the
publisher, the subscriber processes and whatever else runs: see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import selectors
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _benchlib import (
    OtherLoad,
    Server,
    Worker,
    fmt,
    machine_summary,
    median,
    percentile,
    py_spy,
    raise_open_files_limit,
    run_mosquitto,
    run_relay,
    split_evenly,
    start_workers,
    tree_state,
)
from _relay_client import MailboxKeys, RelayLoadClient

from cellrelay.protocol.wire._messages import Error

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager

    import paho.mqtt.client as mqtt

SIZES: Final = (10, 100, 1000)
PAYLOAD_SIZE: Final = 600
# End-to-end window of the loaded phase, in deliveries: enough to keep every broker busy
# while one message is being fanned out and the next is on its way (4 messages at
# N = 1,000), small enough that nobody's queues fill.
IN_FLIGHT_DELIVERIES: Final = 4000
MIN_WINDOW: Final = 4
ALERT_GAP: Final = 0.1  # seconds between idle messages, plus up to 50% jitter
ALERT_WARMUP: Final = 3  # idle messages sent first and not counted
DRAIN_TIMEOUT: Final = 60.0  # seconds for every message in flight to arrive
SETUP_TIMEOUT: Final = 120.0  # seconds for a worker to open its connections
IDLE_INDEX_BASE: Final = 1 << 40  # idle-phase message indexes, apart from loaded ones
ALERT_RATIO: Final = 1.5  # issue 3: alert-to-1,000 completion p99 within 1.5x Mosquitto's
ALERT_P99_MS: Final = 20.0  # issue 3: ... and under 20 ms


class Publisher(Protocol):
    """The broker-specific part: one publishing connection and the subscribers' arguments."""

    def fileno(self) -> int:
        """The socket to watch."""
        ...

    def publish(self, indexes: list[int]) -> int:
        """Send one message per index; return the monotonic time (ns) just before sending."""
        ...

    def on_readable(self) -> None:
        """Read acknowledgements."""
        ...

    def wants_write(self) -> bool:
        """True while bytes wait to be written."""
        ...

    def on_writable(self) -> None:
        """Write what waits."""
        ...

    def worker_args(self, connections: int) -> list[str]:
        """The bench/_worker.py arguments for a subscriber process with `connections`."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


def payload(index: int, filler: bytes) -> bytes:
    """A 600-byte payload: the index, big-endian, then filler."""
    return index.to_bytes(8, "big") + filler


class RelayPublisher:
    """Publishes to a fresh mailbox on the relay from one connection."""

    def __init__(self, server: Server) -> None:
        """Connect, create a mailbox and authorise as its writer."""
        self.server = server
        self.client = RelayLoadClient.connect(server.port, server.public_key)
        self.keys = MailboxKeys()
        self.mailbox = self.client.create_mailbox(self.keys)
        self.client.authorise(self.keys.write, "write", self.mailbox)
        self.client.go_non_blocking()
        self.filler = os.urandom(PAYLOAD_SIZE - 8)

    def fileno(self) -> int:
        """The socket to watch."""
        return self.client.sock.fileno()

    def publish(self, indexes: list[int]) -> int:
        """Send one `publish` per index, all in one frame."""
        now = time.monotonic_ns()
        self.client.publish_messages(self.mailbox, [payload(i, self.filler) for i in indexes])
        self.client.flush()
        return now

    def on_readable(self) -> None:
        """Read acknowledgements; a refusal ends the benchmark."""
        refused = [m for m in self.client.read() if isinstance(m, Error)]
        if refused:
            raise RuntimeError(f"the relay refused a publish: {refused[0]!r}")

    def wants_write(self) -> bool:
        """True while bytes wait to be written."""
        return bool(self.client.out)

    def on_writable(self) -> None:
        """Write what waits."""
        self.client.flush()

    def worker_args(self, connections: int) -> list[str]:
        """Arguments for a relay subscriber process."""
        return [
            "fanout-relay",
            "--port", str(self.server.port),
            "--key", self.server.public_key.hex(),
            "--mailbox", self.mailbox.hex(),
            "--read-seed", self.keys.read.seed.hex(),
            "--connections", str(connections),
        ]  # fmt: skip

    def close(self) -> None:
        """Close the connection."""
        self.client.close()


class MqttPublisher:
    """Publishes at QoS 1 to a fresh topic on Mosquitto from one paho client."""

    def __init__(self, server: Server, subscriber_kind: str = "fanout-mqtt") -> None:
        """Connect (and wait for CONNACK); subscribers will be `subscriber_kind` workers."""
        from _mqtt import connect_all, paho_client

        self.server = server
        self.subscriber_kind = subscriber_kind
        self.topic = f"bench/fanout/{uuid.uuid4().hex}"
        self.client: mqtt.Client = paho_client(f"pub-{os.getpid()}")
        connect_all([self.client], server.port, None)
        self.filler = os.urandom(PAYLOAD_SIZE - 8)

    def fileno(self) -> int:
        """The socket to watch."""
        sock = self.client.socket()
        assert sock is not None
        return sock.fileno()

    def publish(self, indexes: list[int]) -> int:
        """Publish one QoS 1 message per index (paho writes each at once)."""
        now = time.monotonic_ns()
        for index in indexes:
            self.client.publish(self.topic, payload(index, self.filler), qos=1)
        return now

    def on_readable(self) -> None:
        """Let paho read PUBACKs."""
        from _mqtt import pump

        pump(self.client, readable=True)

    def wants_write(self) -> bool:
        """True while paho has bytes queued."""
        return bool(self.client.want_write())

    def on_writable(self) -> None:
        """Let paho write."""
        self.client.loop_write()

    def worker_args(self, connections: int) -> list[str]:
        """Arguments for an MQTT subscriber process."""
        return [
            self.subscriber_kind, "--port", str(self.server.port), "--topic", self.topic,
            "--connections", str(connections),
        ]  # fmt: skip

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()


@dataclass
class CaseResult:
    """One broker's figures for one N in one round."""

    broker: str
    n: int
    window: int
    deliveries_per_s: float
    cpu_us_per_delivery: float
    loaded_p50_ms: float
    loaded_p99_ms: float
    idle_p50_ms: float
    idle_p99_ms: float
    idle_cpu_us_per_delivery: float
    idle_messages: int
    other_load: float  # cores used by other processes on the machine meanwhile


class Run:
    """Drives one publisher and its subscriber workers in one selector loop."""

    def __init__(self, server: Server, publisher: Publisher, workers: list[Worker]) -> None:
        """Watch the publisher's socket and every worker's output."""
        self.server = server
        self.publisher = publisher
        self.workers = workers
        self.selector = selectors.DefaultSelector()
        self.selector.register(publisher.fileno(), selectors.EVENT_READ, publisher)
        for worker in workers:
            self.selector.register(worker.fd, selectors.EVENT_READ, worker)
        self.sent: dict[int, int] = {}  # index -> publish time (ns)
        self.reported: dict[int, tuple[int, int]] = {}  # index -> (workers done, latest time)
        self.done: list[tuple[int, int, int]] = []  # (index, publish time, completion time)
        self.writing = False

    def poll(self, timeout: float) -> None:
        """Handle whatever happens within `timeout` seconds."""
        publisher = self.publisher
        want = publisher.wants_write()
        if want != self.writing:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
            self.selector.modify(publisher.fileno(), events, publisher)
            self.writing = want
        for key, events in self.selector.select(timeout):
            if key.data is publisher:
                if events & selectors.EVENT_READ:
                    publisher.on_readable()
                if events & selectors.EVENT_WRITE:
                    publisher.on_writable()
                continue
            worker = key.data
            assert isinstance(worker, Worker)
            for line in worker.read_lines():
                index_text, when_text = line.split()
                self._report(int(index_text), int(when_text))
            if worker.closed:
                raise RuntimeError("a subscriber process exited (its stderr is above)")
        self.server.check_alive()

    def _report(self, index: int, when: int) -> None:
        count, latest = self.reported.get(index, (0, 0))
        count, latest = count + 1, max(latest, when)
        if count < len(self.workers):
            self.reported[index] = (count, latest)
            return
        self.reported.pop(index, None)
        self.done.append((index, self.sent.pop(index), latest))

    def publish(self, indexes: list[int]) -> None:
        """Publish messages with these indexes now."""
        now = self.publisher.publish(indexes)
        for index in indexes:
            self.sent[index] = now

    def drain(self) -> None:
        """Wait until every message sent has reached every subscriber."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while self.sent:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.sent)} messages never reached every subscriber")
            self.poll(0.1)

    def loaded(
        self, n: int, window: int, warmup: float, seconds: float
    ) -> tuple[float, float, list[float]]:
        """Publish flat out with `window` in flight; return (deliveries/s, CPU µs each, latencies ms)."""
        start = time.monotonic_ns()
        m0, m1 = start + int(warmup * 1e9), start + int((warmup + seconds) * 1e9)
        cpu0 = cpu1 = 0.0
        t0 = t1 = 0
        index = 0
        self.done.clear()
        while True:
            now = time.monotonic_ns()
            if not t0 and now >= m0:
                cpu0, t0 = self.server.cpu(), time.monotonic_ns()
            if now >= m1:
                cpu1, t1 = self.server.cpu(), time.monotonic_ns()
                break
            room = window - len(self.sent)
            if room > 0:
                self.publish(list(range(index, index + room)))
                index += room
            self.poll(min(0.01, max(0.0, (m1 - now) / 1e9)))
        counted = [(sent, done) for _, sent, done in self.done if t0 <= done <= t1]
        self.drain()
        deliveries = n * len(counted)
        latencies = [(done - sent) / 1e6 for sent, done in counted]
        cpu_us = (cpu1 - cpu0) * 1e6 / deliveries if deliveries else float("nan")
        return deliveries / ((t1 - t0) / 1e9), cpu_us, latencies

    def idle(self, n: int, alerts: int, rng: random.Random) -> tuple[list[float], float]:
        """Send single messages into quiet connections; return (latencies ms, CPU µs each)."""
        latencies: list[float] = []
        cpu0 = 0.0
        for i in range(ALERT_WARMUP + alerts):
            if i == ALERT_WARMUP:
                cpu0 = self.server.cpu()
            pause_until = time.monotonic() + ALERT_GAP * (1 + rng.random() / 2)
            while time.monotonic() < pause_until:
                self.poll(max(0.0, pause_until - time.monotonic()))
            self.done.clear()
            self.publish([IDLE_INDEX_BASE + i])
            self.drain()
            (_, sent, done) = self.done[0]
            if i >= ALERT_WARMUP:
                latencies.append((done - sent) / 1e6)
        cpu = self.server.cpu() - cpu0
        return latencies, cpu * 1e6 / (alerts * n)


def profile_path(args: argparse.Namespace, server: Server, n: int, phase: str) -> Path | None:
    """Where to put a py-spy profile of the relay in this phase, if --profile was given."""
    if args.profile is None or server.name != "relay":
        return None
    Path(args.profile).mkdir(parents=True, exist_ok=True)
    return Path(args.profile) / f"relay-{n}-{phase}-{server.pid}.txt"


def run_case(
    server: Server,
    make_publisher: Callable[[Server], Publisher],
    n: int,
    args: argparse.Namespace,
    rng: random.Random,
) -> CaseResult:
    """Measure one broker at one N."""
    publisher = make_publisher(server)
    workers: list[Worker] = []
    try:
        workers = start_workers(
            [publisher.worker_args(count) for count in split_evenly(n, args.procs)],
            SETUP_TIMEOUT,
        )
        run = Run(server, publisher, workers)
        other = OtherLoad([server.pid, *(w.process.pid for w in workers)])
        window = max(MIN_WINDOW, math.ceil(IN_FLIGHT_DELIVERIES / n))
        with py_spy(server.pid, profile_path(args, server, n, "loaded")):
            rate, cpu_us, loaded = run.loaded(n, window, args.warmup, args.seconds)
        time.sleep(0.5)  # let the connections go quiet
        with py_spy(server.pid, profile_path(args, server, n, "idle")):
            idle, idle_cpu_us = run.idle(n, args.alerts, rng)
        other_load = other.cores()
    finally:
        for worker in workers:
            worker.stop()
        publisher.close()
    return CaseResult(
        broker=server.name,
        n=n,
        window=window,
        deliveries_per_s=rate,
        cpu_us_per_delivery=cpu_us,
        loaded_p50_ms=percentile(loaded, 0.50),
        loaded_p99_ms=percentile(loaded, 0.99),
        idle_p50_ms=percentile(idle, 0.50),
        idle_p99_ms=percentile(idle, 0.99),
        idle_cpu_us_per_delivery=idle_cpu_us,
        idle_messages=len(idle),
        other_load=other_load,
    )


BROKERS: Final[dict[str, Callable[[], AbstractContextManager[Server]]]] = {
    "relay": lambda: run_relay(durability="full"),
    "mosquitto": lambda: run_mosquitto(persistence=False),
}


def publisher_factory(broker: str, args: argparse.Namespace) -> Callable[[Server], Publisher]:
    """Return what makes `broker`'s publisher (and so chooses its subscriber workers)."""
    if broker == "relay":
        return RelayPublisher
    kind = "fanout-paho" if args.mqtt_client == "paho" else "fanout-mqtt"
    return lambda server: MqttPublisher(server, kind)


COLUMNS: Final = (
    ("deliv/s", "deliveries_per_s", 0),
    ("CPU us/deliv", "cpu_us_per_delivery", 2),
    ("load p50 ms", "loaded_p50_ms", 1),
    ("load p99 ms", "loaded_p99_ms", 1),
    ("idle p50 ms", "idle_p50_ms", 2),
    ("idle p99 ms", "idle_p99_ms", 2),
    ("idle CPU us/deliv", "idle_cpu_us_per_delivery", 2),
    ("other load", "other_load", 2),
)


def print_row(label: str, values: dict[str, float], *, ratio: bool = False) -> None:
    """Print one table row (a row of ratios gets two decimals throughout)."""
    cells = "".join(
        f"{fmt(values[attr], 2 if ratio else digits):>{len(title) + 2}}"
        for title, attr, digits in COLUMNS
    )
    print(f"{label:<20}{cells}", flush=True)


def print_header() -> None:
    """Print the table header."""
    print(f"{'N  broker':<20}" + "".join(f"{title:>{len(title) + 2}}" for title, _, _ in COLUMNS))


def rounds(args: argparse.Namespace) -> Iterator[tuple[int, str]]:
    """Yield (round, broker), alternating which broker goes first."""
    for repeat in range(args.repeats):
        order = list(args.brokers) if repeat % 2 == 0 else list(reversed(args.brokers))
        for broker in order:
            yield repeat, broker


def summarise(results: list[CaseResult], args: argparse.Namespace) -> dict[str, object]:
    """Print the medians, the ratios and the targets; return them for --json."""
    print(f"\nmedian of {args.repeats} rounds")
    print_header()
    medians: dict[tuple[str, int], dict[str, float]] = {}
    for n in args.sizes:
        for broker in args.brokers:
            runs = [r for r in results if r.broker == broker and r.n == n]
            medians[broker, n] = {
                attr: median([getattr(r, attr) for r in runs]) for _, attr, _ in COLUMNS
            }
            print_row(f"{n:<6} {broker}", medians[broker, n])
        if set(args.brokers) == {"relay", "mosquitto"}:
            relay, mosq = medians["relay", n], medians["mosquitto", n]
            print_row(
                f"{n:<6} relay/mosq",
                {k: relay[k] / mosq[k] if mosq[k] else float("nan") for k in relay},
                ratio=True,
            )
    verdicts: list[str] = []
    if set(args.brokers) == {"relay", "mosquitto"}:
        for n in (100, 1000):
            if n in args.sizes:
                relay_cpu = medians["relay", n]["cpu_us_per_delivery"]
                mosq_cpu = medians["mosquitto", n]["cpu_us_per_delivery"]
                ok = relay_cpu <= mosq_cpu
                verdicts.append(
                    f"{'PASS' if ok else 'MISS'}: relay CPU per delivery at N={n} {relay_cpu:.2f} us"
                    f" <= Mosquitto's {mosq_cpu:.2f} us"
                )
        if 1000 in args.sizes:
            relay_p99 = medians["relay", 1000]["idle_p99_ms"]
            mosq_p99 = medians["mosquitto", 1000]["idle_p99_ms"]
            relative = relay_p99 <= ALERT_RATIO * mosq_p99
            verdicts.append(
                f"{'PASS' if relative else 'MISS'}: alert to 1,000 idle subscribers, completion"
                f" p99 {relay_p99:.2f} ms <= {ALERT_RATIO} x Mosquitto's {mosq_p99:.2f} ms"
                f" ({ALERT_RATIO * mosq_p99:.2f} ms)"
            )
            verdicts.append(
                f"{'PASS' if relay_p99 < ALERT_P99_MS else 'MISS'}: the same p99"
                f" {relay_p99:.2f} ms < {ALERT_P99_MS} ms"
            )
    print("\ntargets (issue 3):")
    for line in verdicts:
        print("  " + line)
    return {
        "medians": {f"{b}/{n}": v for (b, n), v in medians.items()},
        "runs": [asdict(r) for r in results],
        "verdicts": verdicts,
    }


def main(args: argparse.Namespace) -> None:
    """Run every round and print the results."""
    limit = raise_open_files_limit()
    print(machine_summary())
    print(tree_state())
    print(
        f"{PAYLOAD_SIZE}-byte payloads; {args.procs} subscriber processes per N (N/{args.procs}"
        f" connections each); loaded: {args.warmup} s warm-up + {args.seconds} s measured,"
        f" window ceil({IN_FLIGHT_DELIVERIES}/N) messages (at least {MIN_WINDOW});"
        f" idle: {args.alerts} single messages ~{ALERT_GAP * 1000:.0f}-{ALERT_GAP * 1500:.0f} ms"
        f" apart; open files limit {limit}\n"
    )
    rng = random.Random(args.seed)
    results: list[CaseResult] = []
    notes: set[str] = set()
    print_header()
    for repeat, broker in rounds(args):
        make_publisher = publisher_factory(broker, args)
        with BROKERS[broker]() as server:
            for note in server.notes:
                if note not in notes:
                    notes.add(note)
                    print(f"  [{note}]")
            for n in args.sizes:
                result = run_case(server, make_publisher, n, args, rng)
                results.append(result)
                print_row(f"{n:<6} {broker} #{repeat + 1}", asdict(result))
    summary = summarise(results, args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"notes": sorted(notes), **summary}, indent=1))


def parse_args() -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds per broker (median taken)")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured loaded seconds")
    parser.add_argument("--warmup", type=float, default=1.0, help="loaded warm-up seconds")
    parser.add_argument("--alerts", type=int, default=30, help="idle messages per case")
    parser.add_argument("--procs", type=int, default=4, help="subscriber processes per case")
    parser.add_argument(
        "--sizes", type=lambda s: tuple(int(x) for x in s.split(",")), default=SIZES,
        help="subscriber counts, comma-separated",
    )  # fmt: skip
    parser.add_argument(
        "--brokers", type=lambda s: tuple(s.split(",")), default=tuple(BROKERS),
        help="relay,mosquitto (or one of them)",
    )  # fmt: skip
    parser.add_argument(
        "--mqtt-client", choices=("lean", "paho"), default="lean",
        help="MQTT subscribers: hand-written, stamping on receipt (lean), or paho-mqtt",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=1, help="seed for the idle gaps' jitter")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument(
        "--profile", help="directory for py-spy profiles of the relay (skews its figures)"
    )
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_args())
