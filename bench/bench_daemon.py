"""The daemon (issue 11): send latency through the API, event delivery to 100 streams, an idle daemon.

    python bench/bench_daemon.py                # about 3 minutes
    python bench/bench_daemon.py --sends 200 --idle-seconds 10   # a quick pass

Three measurements, each printed beside what a user would otherwise do:

1. **Send**: `POST /cells/Eastside/alerts` to the relay's acknowledgement (the response
   comes when the relay has stored the alert durably), over one keep-alive connection on
   the Unix socket, then on loopback TCP with the token; beside it `cellrelay send` through
   the daemon (a process per alert) and `cellrelay send` alone (unlocking the keystore with
   Argon2id at the default cost, connecting, catching up: what every command cost before).
   Targets: p50 <= 5 ms and p99 <= 20 ms on the socket.
2. **Events**: a member's daemon with 100 open `/events` streams (in a separate process)
   receives alerts the lead sends; the latency is from the member daemon's `publish` of the
   event to each stream's client having parsed it (CLOCK_MONOTONIC is system-wide, so the
   two processes' readings subtract). Beside it: the lead's API call to that publish, which
   crosses the relay. Target: p99 <= 50 ms.
3. **Idle**: the lead's daemon with 10 cells, doing nothing, for `--idle-seconds`: CPU (user
   + system, all threads, from /proc) as a share of one core, and resident memory; beside
   it `cellrelay listen` alone following the same 10 cells. Target: <= 1% of a core.

The relay is a real `python -m cellrelay.relay serve` process (SQLite, durability full);
the lead's daemon is a real `cellrelay daemon` process; the member's daemon runs in this
process, with an event hub that records when it publishes each event.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Final

import structlog
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchlib import (
    PYTHON,
    REPO,
    OtherLoad,
    cpu_seconds,
    fmt,
    machine_summary,
    percentile,
    rss_bytes,
    run_relay,
    temporary_directory,
    tree_state,
)

from cellrelay.client._client import create_identity
from cellrelay.client._daemon import run_daemon, socket_path
from cellrelay.client._daemon_client import DaemonConnection, open_daemon
from cellrelay.client._keystore import DEFAULT_COST, TEST_COST
from cellrelay.client._sse import EventHub
from cellrelay.protocol.wire import RelayAddress

CELLRELAY: Final = str(Path(sys.executable).with_name("cellrelay"))
PASSPHRASE: Final = "passphrase of the daemon benchmark"  # noqa: S105 - a benchmark identity
TARGET_SEND_P50: Final = 5.0
TARGET_SEND_P99: Final = 20.0
TARGET_EVENT_P99: Final = 50.0
TARGET_IDLE_CPU: Final = 1.0  # percent of one core
PATIENCE: Final = 60.0


def quiet_logs() -> None:
    """The member daemon in this process logs warnings only, to stderr (stdout is the report)."""
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLRELAY_")}
    env["CELLRELAY_PASSPHRASE"] = PASSPHRASE
    env["NO_COLOR"] = "1"
    return env


class TimedHub(EventHub):
    """An event hub that records when it published each event (CLOCK_MONOTONIC, ns)."""

    def __init__(self) -> None:
        super().__init__()
        self.published_ns: dict[int, int] = {}

    def publish(self, payload: object, *, cell_id: bytes | None = None) -> None:
        super().publish(payload, cell_id=cell_id)
        self.published_ns[int(self.last_id.rsplit("-", 1)[1])] = time.monotonic_ns()


def fsync_probe() -> str:
    """What one fsync of a 4 KiB write costs here: the floor of a durable relay's publish."""
    times = []
    with temporary_directory("cellrelay-bench-fsync-") as directory:
        fd = os.open(directory / "probe", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for _ in range(30):
                os.write(fd, b"x" * 4096)
                started = time.perf_counter()
                os.fsync(fd)
                times.append((time.perf_counter() - started) * 1000)
        finally:
            os.close(fd)
    return f"p50 {fmt(percentile(times, 0.5), 2)} ms, p90 {fmt(percentile(times, 0.9), 2)} ms"


def summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "n": len(values_ms),
        "p50": percentile(values_ms, 0.5),
        "p90": percentile(values_ms, 0.9),
        "p99": percentile(values_ms, 0.99),
        "max": max(values_ms) if values_ms else float("nan"),
    }


def row(label: str, s: dict[str, float]) -> str:
    return f"  {label:46} {int(s['n']):>6} {fmt(s['p50'], 2):>9} {fmt(s['p90'], 2):>9} {fmt(s['p99'], 2):>9} {fmt(s['max'], 2):>9}"


# -- the listener worker: 100 event streams in their own process -----------------------------------


async def listener_worker(socket_file: Path, streams: int) -> None:
    """Open `streams` event streams; print each event's (seq, receive time); end on stdin EOF."""
    received: list[tuple[int, int, int]] = []  # (stream, seq, monotonic_ns)

    async def follow(
        index: int, connection: DaemonConnection, task_status: trio.TaskStatus[None]
    ) -> None:
        stream = await connection.open_events("/events")
        task_status.started()
        async for event in stream:
            if event.id is not None and event.data.get("type") == "alert_received":
                received.append((index, int(event.id.rsplit("-", 1)[1]), time.monotonic_ns()))

    async with trio.open_nursery() as nursery:
        for index in range(streams):
            connection = await nursery.start(_connection, socket_file)
            await nursery.start(follow, index, connection)
        print("ready", flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(0))
        while await stdin.receive_some(1024):
            pass
        await stdin.aclose()
        nursery.cancel_scope.cancel()
    print(json.dumps(received), flush=True)


async def _connection(socket_file: Path, task_status: trio.TaskStatus[DaemonConnection]) -> None:
    async with open_daemon(socket_file) as connection:
        task_status.started(connection)
        await trio.sleep_forever()


# -- the controller ---------------------------------------------------------------------------------


async def start_lead_daemon(home: Path) -> tuple[trio.Process, dict[str, Any]]:
    process = await trio.lowlevel.open_process(
        [CELLRELAY, "daemon", "--json", "--listen", "0", "--home", str(home)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=_env(),
    )  # fmt: skip
    assert process.stdout is not None
    buffer = b""
    with trio.fail_after(PATIENCE):
        while b"\n" not in buffer:
            chunk = await process.stdout.receive_some(65536)
            if not chunk:
                raise RuntimeError("the lead's daemon ended before announcing itself")
            buffer += chunk
    return process, json.loads(buffer.split(b"\n", 1)[0])


async def call(
    connection: DaemonConnection, method: str, path: str, status: int, body: object = None
) -> Any:  # noqa: ANN401 - JSON
    response = await connection.request(method, path, json_body=body)
    if response.status != status:
        raise RuntimeError(f"{method} {path}: {response.status} {response.body!r}")
    return response.json()


async def timed_sends(connection: DaemonConnection, count: int, label: str) -> list[float]:
    latencies = []
    for n in range(count):
        started = time.perf_counter()
        await call(connection, "POST", "/cells/Eastside/alerts", 201,
                   {"text": f"{label} {n}: agents at 14th & Main", "priority": "urgent", "ttl": 600})  # fmt: skip
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def timed_commands(command: list[str], count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        await trio.run_process(command, env=_env(), capture_stdout=True, capture_stderr=True)
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def admit(lead: DaemonConnection, member: DaemonConnection) -> None:
    invite = await call(lead, "POST", "/cells/Eastside/invites", 201)
    await call(member, "POST", "/joins", 201, {"link": invite["link"]})
    with trio.fail_after(PATIENCE):
        while not (await call(lead, "GET", "/cells/Eastside/join-requests", 200))["requests"]:  # noqa: ASYNC110 - the daemon's state, over HTTP
            await trio.sleep(0.05)
    await call(lead, "POST", "/cells/Eastside/join-requests/ana/approve", 200)
    joined = await call(member, "POST", "/joins", 201, {"link": invite["link"], "wait": 60})
    assert joined["joined"], joined


async def idle_reading(pid: int, seconds: float) -> tuple[float, int, float]:
    """CPU as % of one core over `seconds` of doing nothing, RSS at the end, other load."""
    await trio.sleep(3)  # let start-up work settle
    other = OtherLoad([pid])
    before = cpu_seconds(pid)
    await trio.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds * 100, rss_bytes(pid), other.cores()


async def controller(
    args: argparse.Namespace, relay_address: str, relay_pid: int, workdir: Path
) -> dict[str, Any]:
    lead_home, ana_home = workdir / "lead", workdir / "ana"
    # The lead at the default Argon2id cost: `cellrelay send` alone must pay what people pay.
    create_identity(PASSPHRASE, "lead", home=lead_home, cost=DEFAULT_COST)
    create_identity(PASSPHRASE, "ana", home=ana_home, cost=TEST_COST)
    results: dict[str, Any] = {}
    lead_process, announced = await start_lead_daemon(lead_home)
    hub = TimedHub()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_daemon, PASSPHRASE, home=ana_home, hub=hub))
            async with (
                open_daemon(socket_path(lead_home)) as lead,
                open_daemon(socket_path(ana_home)) as ana,
            ):
                await call(
                    lead, "POST", "/cells", 201, {"name": "Eastside", "relay": relay_address}
                )

                # 1. Send latency (before the member joins: its daemon runs in this process).
                await timed_sends(lead, 20, "warm-up")
                other = OtherLoad([relay_pid, lead_process.pid])
                cpu_before = cpu_seconds(lead_process.pid), cpu_seconds(relay_pid)
                socket_ms = await timed_sends(lead, args.sends, "socket")
                results["send_cpu_ms"] = {
                    "daemon": (cpu_seconds(lead_process.pid) - cpu_before[0]) / args.sends * 1000,
                    "relay": (cpu_seconds(relay_pid) - cpu_before[1]) / args.sends * 1000,
                    "other_load_cores": other.cores(),
                }
                token = Path(announced["token_file"]).read_text().strip()  # noqa: ASYNC240 - once
                async with open_daemon(url=announced["url"], token=token) as tcp:
                    tcp_ms = await timed_sends(tcp, args.sends, "tcp")
                send = [
                    CELLRELAY,
                    "send",
                    "Eastside",
                    "sent by the command line",
                    "--home",
                    str(lead_home),
                ]
                via_cli_ms = await timed_commands(send, args.commands)
                results["send"] = {"socket": summary(socket_ms), "tcp": summary(tcp_ms),
                                   "cli_via_daemon": summary(via_cli_ms)}  # fmt: skip

                # 2. Event delivery to 100 streams on the member's daemon.
                await admit(lead, ana)
                results["events"] = await event_latency(
                    args, lead, hub, ana_home, [relay_pid, lead_process.pid]
                )

                # 3. Idle: ten cells on the lead's daemon.
                for n in range(2, 11):
                    await call(
                        lead, "POST", "/cells", 201, {"name": f"Cell {n}", "relay": relay_address}
                    )
            nursery.cancel_scope.cancel()  # the member's daemon: done
        cpu, rss, load = await idle_reading(lead_process.pid, args.idle_seconds)
        results["idle_daemon"] = {"cpu_percent": cpu, "rss_bytes": rss, "other_load_cores": load}
    finally:
        lead_process.terminate()
        with trio.fail_after(PATIENCE):
            await lead_process.wait()
    # Beside it: the command line alone, as every command ran before (the daemon has stopped).
    alone_ms = await timed_commands(
        [CELLRELAY, "send", "Eastside", "sent by the command line alone", "--home", str(lead_home)],
        args.alone,
    )
    results["send"]["cli_alone"] = summary(alone_ms)
    listen = await trio.lowlevel.open_process(
        [CELLRELAY, "listen", "--home", str(lead_home)], stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(),
    )  # fmt: skip
    try:
        assert listen.stderr is not None
        said = b""
        with trio.fail_after(PATIENCE):  # unlocked, connected and caught up: now it idles
            while b"Listening to" not in said:
                said += await listen.stderr.receive_some(65536)
        cpu, rss, load = await idle_reading(listen.pid, args.idle_seconds)
        results["idle_listen"] = {"cpu_percent": cpu, "rss_bytes": rss, "other_load_cores": load}
    finally:
        listen.terminate()
        with trio.fail_after(PATIENCE):
            await listen.wait()
    return results


async def event_latency(
    args: argparse.Namespace, lead: DaemonConnection, hub: TimedHub, ana_home: Path, pids: list[int]
) -> dict[str, Any]:
    worker = await trio.lowlevel.open_process(
        [PYTHON, __file__, "--listener-worker", str(socket_path(ana_home)), str(args.listeners)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO,
    )  # fmt: skip
    assert worker.stdout is not None
    assert worker.stdin is not None
    output = b""
    with trio.fail_after(PATIENCE):
        while b"ready\n" not in output:
            output += await worker.stdout.receive_some(65536)
    other = OtherLoad([*pids, worker.pid])
    sent_ns: list[int] = []
    first_seq = int(hub.last_id.rsplit("-", 1)[1]) + 1
    for n in range(args.events):
        sent_ns.append(time.monotonic_ns())
        await call(lead, "POST", "/cells/Eastside/alerts", 201, {"text": f"event {n}", "ttl": 600})
        await trio.sleep(args.event_interval)
    await trio.sleep(1.0)  # the last deliveries
    load = other.cores()
    await worker.stdin.aclose()
    with trio.fail_after(PATIENCE):
        while True:
            chunk = await worker.stdout.receive_some(1 << 20)
            if not chunk:
                break
            output += chunk
        await worker.wait()
    received = json.loads(output.split(b"ready\n", 1)[1])
    alert_seqs = sorted({seq for _, seq, _ in received if seq >= first_seq})
    latencies = [
        (ns - hub.published_ns[seq]) / 1e6
        for _, seq, ns in received
        if seq in hub.published_ns and seq >= first_seq
    ]
    relay_path = [
        (hub.published_ns[seq] - sent) / 1e6 for seq, sent in zip(alert_seqs, sent_ns, strict=False)
    ]
    return {
        "streams": args.listeners,
        "alerts": len(alert_seqs),
        "deliveries": len(latencies),
        "publish_to_stream": summary(latencies),
        "api_to_publish": summary(relay_path),
        "other_load_cores": load,
    }


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    send = results["send"]
    print()
    print(
        f"1. Send an alert: API call to the relay's acknowledgement (relay: SQLite, durability {args.durability})"
    )
    print(f"  {'path':46} {'n':>6} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    print(row("API, one connection on the Unix socket", send["socket"]))
    print(row("API, one connection on loopback TCP + token", send["tcp"]))
    print(row("`cellrelay send` through the daemon (a process)", send["cli_via_daemon"]))
    print(row("`cellrelay send` alone (unlock, connect, catch up)", send["cli_alone"]))
    ratio = send["cli_alone"]["p50"] / send["socket"]["p50"]
    cpu = results["send_cpu_ms"]
    print(f"  the socket API is {ratio:,.0f}x faster than a command alone (medians)")
    print(f"  CPU per alert on the socket: daemon {fmt(cpu['daemon'], 2)} ms, relay {fmt(cpu['relay'], 2)} ms;"
          f" other load meanwhile {fmt(cpu['other_load_cores'], 2)} cores")  # fmt: skip
    events = results["events"]
    print()
    print(
        f"2. Events: {events['alerts']} alerts to {events['streams']} open streams ({events['deliveries']} deliveries)"
    )
    print(f"  {'from -> to':46} {'n':>6} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    print(row("member daemon's publish -> each stream parsed", events["publish_to_stream"]))
    print(row("lead's API call -> member daemon's publish", events["api_to_publish"]))
    print(f"  other load meanwhile {fmt(events['other_load_cores'], 2)} cores")
    print()
    print(f"3. Idle with 10 cells, {args.idle_seconds:g} s")
    print(f"  {'process':46} {'CPU % of a core':>16} {'RSS MiB':>9} {'other load':>11}")
    for label, key in (
        ("cellrelay daemon", "idle_daemon"),
        ("cellrelay listen alone (same 10 cells)", "idle_listen"),
    ):
        reading = results[key]
        print(f"  {label:46} {fmt(reading['cpu_percent'], 2):>16} {fmt(reading['rss_bytes'] / 2**20, 1):>9}"
              f" {fmt(reading['other_load_cores'], 2):>11}")  # fmt: skip
    print()
    checks = [
        ("send p50 on the socket", send["socket"]["p50"], TARGET_SEND_P50, "ms"),
        ("send p99 on the socket", send["socket"]["p99"], TARGET_SEND_P99, "ms"),
        ("events p99, 100 streams", events["publish_to_stream"]["p99"], TARGET_EVENT_P99, "ms"),
        ("idle daemon CPU", results["idle_daemon"]["cpu_percent"], TARGET_IDLE_CPU, "% of a core"),
    ]
    for name, value, target, unit in checks:
        verdict = "PASS" if value <= target else "MISS"
        print(f"{verdict} {name}: {fmt(value, 2)} {unit} (target <= {fmt(target, 1)})")
    if events["deliveries"] != events["alerts"] * events["streams"]:
        print(
            f"MISS events: {events['deliveries']} deliveries, expected {events['alerts'] * events['streams']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sends", type=int, default=1000, help="alerts per API path (default 1000)"
    )
    parser.add_argument(
        "--commands", type=int, default=10, help="`cellrelay send` through the daemon (default 10)"
    )
    parser.add_argument("--alone", type=int, default=5, help="`cellrelay send` alone (default 5)")
    parser.add_argument("--listeners", type=int, default=100, help="event streams (default 100)")
    parser.add_argument("--events", type=int, default=200, help="alerts sent to them (default 200)")
    parser.add_argument(
        "--event-interval", type=float, default=0.05, help="seconds between those alerts"
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=60.0, help="idle measurement (default 60)"
    )
    parser.add_argument("--durability", choices=["full", "normal"], default="full",
                        help="the relay's: full (an fsync per commit, the default) or normal")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--listener-worker", nargs=2, metavar=("SOCKET", "STREAMS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.listener_worker:
        trio.run(listener_worker, Path(args.listener_worker[0]), int(args.listener_worker[1]))
        return
    quiet_logs()
    print("cellrelay daemon benchmark")
    print(machine_summary())
    print(tree_state())
    print(f"relay durability: {args.durability}; fsync on this disk: {fsync_probe()}")
    with (
        run_relay(durability=args.durability) as relay,
        temporary_directory("cellrelay-bench-daemon-") as workdir,
    ):
        address = str(RelayAddress("127.0.0.1", relay.port, relay.public_key))
        results = trio.run(controller, args, address, relay.process.pid, workdir)
    report(results, args)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
