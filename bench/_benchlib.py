"""Shared pieces of the relay benchmarks: servers as subprocesses, /proc readings, statistics.

The benchmarks (bench_fanout.py, bench_publish.py, bench_memory.py) measure a real relay
process (`python -m relay serve`) beside peer servers started the same way, each on a
free loopback port with a private configuration in a temporary directory. The temporary
directory is on the same disk as /tmp (the output names the filesystem), not tmpfs, so an
fsync costs what it costs on this machine.

A server's CPU time is read from /proc/<pid>/stat (user + system time of all its threads,
in clock ticks of 10 ms), its resident memory from /proc/<pid>/status (VmRSS). Load
clients run in subprocesses (bench/_worker.py) that talk to the controller in lines of
text on their standard input and output.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

REPO: Final = Path(__file__).resolve().parent.parent
BENCH: Final = Path(__file__).resolve().parent
PYTHON: Final = sys.executable
CLOCK_TICK: Final = 1.0 / os.sysconf("SC_CLK_TCK")  # seconds per /proc/<pid>/stat tick
STARTUP_TIMEOUT: Final = 20.0  # seconds a server or worker gets to say it is ready
STOP_TIMEOUT: Final = 10.0  # seconds a server gets to exit after SIGTERM before SIGKILL


# -- the process ------------------------------------------------------------------------------


def raise_open_files_limit() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard limit; return it.

    Subprocesses inherit the limit, so calling this once in the controller before any
    server or worker starts covers them all.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU seconds process `pid` has used, all threads together."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        text = stat.read()
    # The command name (field 2) may hold spaces; fields after its ")" are plain.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) * CLOCK_TICK  # utime, stime: fields 14, 15


def rss_bytes(pid: int) -> int:
    """Return the resident set size of process `pid` (VmRSS)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def filesystem_of(path: Path) -> str:
    """Name the filesystem type and device `path` lives on (Linux; else "unknown")."""
    best = ("", "unknown", "unknown")
    with contextlib.suppress(OSError), open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            device, mount_point, fs_type = line.split()[:3]
            inside = str(path).startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best[0]):
                best = (mount_point, fs_type, device)
    return f"{best[1]} on {best[2]}"


def machine_summary() -> str:
    """Describe the machine in one line: CPU model, cores, memory, load, Python."""
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB; load average {load}"
        f" at start; Python {platform.python_version()}"
    )


# -- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of `values` (nan if empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def median(values: Sequence[float]) -> float:
    """Return the median, ignoring nan (nan if nothing is left)."""
    kept = [v for v in values if v == v]
    return statistics.median(kept) if kept else float("nan")


def fmt(value: float, digits: int = 1) -> str:
    """Format a figure with thousands separators, or "-" for nan."""
    if value != value:
        return "-"
    return f"{value:,.{digits}f}"


# -- servers ----------------------------------------------------------------------------------


@dataclass
class Server:
    """A server running as a subprocess of the benchmark."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    public_key: bytes = b""  # the relay's static key; empty for other servers
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """The server's process id (mosquitto and redis run in the foreground, so it is theirs)."""
        return self.process.pid

    def cpu(self) -> float:
        """CPU seconds the server has used so far."""
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        """The server's resident memory in bytes."""
        return rss_bytes(self.pid)

    def check_alive(self) -> None:
        """Raise if the server has exited."""
        if self.process.poll() is not None:
            log = "\n".join(self.log_tail())
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{log}")

    def log_tail(self, lines: int = 20) -> list[str]:
        """The last lines of the server's log file."""
        path = self.workdir / "server.log"
        try:
            return path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []

    def stop(self) -> None:
        """SIGTERM the server, wait for it, SIGKILL it if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def temporary_directory(prefix: str, parent: Path | None = None) -> Iterator[Path]:
    """A temporary directory (under `parent`, else on /tmp's disk), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _log_file(workdir: Path) -> IO[bytes]:
    return open(workdir / "server.log", "ab")


# Relay settings every benchmark passes, so that the load generator is not refused by the
# abuse limits (rates per connection and mailbox, connections per address). They are
# printed with the results; none of them changes how a delivery or a commit is done.
PERMISSIVE_RELAY_FLAGS: Final = (
    "--publish-rate", "1000000", "--publish-burst", "1000000",
    "--mailbox-publish-rate", "1000000", "--mailbox-publish-burst", "1000000",
    "--create-rate", "1000000", "--create-burst", "1000000",
    "--max-connections-per-address", "20000", "--max-connections", "20000",
    "--mailbox-max-bytes", str(1 << 40),
)  # fmt: skip


@contextlib.contextmanager
def run_relay(
    *extra: str, durability: str = "full", store: str = "sqlite", cprofile: Path | None = None
) -> Iterator[Server]:
    """Run `python -m relay serve` (SQLite store by default) on a free port; stop it afterwards.

    With `cprofile`, the relay runs under cProfile (bench/_cprofile_relay.py: the main
    thread's CPU time) and writes its statistics there when it stops.
    """
    with temporary_directory("cellrelay-bench-relay-") as workdir:
        base = [PYTHON, "-m", "cellrelay.relay"]
        common = ["--data-dir", str(workdir), "--listen", "127.0.0.1:0"]
        subprocess.run(
            [*base, "init", *common], cwd=REPO, check=True, capture_output=True, timeout=30
        )
        if cprofile is not None:
            base = [PYTHON, str(BENCH / "_cprofile_relay.py"), str(cprofile)]
        flags = [
            *common,
            "--store", store, "--durability", durability, "--ops-listen", "",
            "--log-format", "json", "--log-level", "warning",
            *PERMISSIVE_RELAY_FLAGS, *extra,
        ]  # fmt: skip
        with _log_file(workdir) as log:
            process = subprocess.Popen(
                [*base, "serve", *flags], cwd=REPO, stdout=subprocess.PIPE, stderr=log
            )
        server = Server("relay", process, 0, workdir)
        try:
            assert process.stdout is not None
            line = _read_line(process.stdout, STARTUP_TIMEOUT, server)
            # `serve` prints its address once listening: cellrelay://KEY@HOST:PORT
            from cellrelay.protocol.wire._address import RelayAddress

            address = RelayAddress.parse(line)
            server.port, server.public_key = address.port, address.public_key
            server.notes.append(
                f"relay: python -m relay serve --store {store} --durability {durability}"
                f" {' '.join(extra)}"
                f" (plus permissive limits: {' '.join(PERMISSIVE_RELAY_FLAGS)});"
                f" database on {filesystem_of(workdir)}"
            )
            yield server
        finally:
            server.stop()


def mosquitto_config(port: int, workdir: Path, *, persistence: bool) -> str:
    """A private Mosquitto configuration for the benchmarks."""
    return "\n".join(
        [
            f"listener {port} 127.0.0.1",
            "allow_anonymous true",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {workdir}/",
            # QoS 1 deliveries in flight per client before Mosquitto queues the rest; the
            # default of 20 would throttle the pipelined fan-out on subscriber round trips.
            "max_inflight_messages 1000",
            # Messages queued per client beyond those in flight (default 1,000): the
            # benchmark's windows stay far below it, so nothing is ever dropped.
            "max_queued_messages 100000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "",
        ]
    )


@contextlib.contextmanager
def run_mosquitto(*, persistence: bool = False) -> Iterator[Server]:
    """Run a private Mosquitto (in the foreground, so its pid is ours) on a free port."""
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with temporary_directory("cellrelay-bench-mosquitto-") as workdir:
        workdir.chmod(0o777)  # mosquitto drops root for its own user; let it write here
        port = free_port()
        config = workdir / "mosquitto.conf"
        config.write_text(mosquitto_config(port, workdir, persistence=persistence))
        with _log_file(workdir) as log:
            process = subprocess.Popen([mosquitto, "-c", str(config)], stdout=log, stderr=log)
        server = Server("mosquitto", process, port, workdir)
        try:
            wait_for_port(port, server)
            version = subprocess.run(
                [mosquitto, "-h"], capture_output=True, text=True, check=False
            ).stdout.splitlines()[0]
            server.notes.append(
                f"mosquitto: {version}; persistence {'on' if persistence else 'off'},"
                " max_inflight_messages 1000, max_queued_messages 100000"
            )
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def run_redis(*, appendfsync: str) -> Iterator[Server]:
    """Run a private redis-server with an append-only file on a free port."""
    redis = shutil.which("redis-server") or "/usr/bin/redis-server"
    with temporary_directory("cellrelay-bench-redis-") as workdir:
        port = free_port()
        command = [
            redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", appendfsync, "--dir", str(workdir),
            "--daemonize", "no", "--logfile", "",
        ]  # fmt: skip
        with _log_file(workdir) as log:
            process = subprocess.Popen(command, stdout=log, stderr=log)
        server = Server("redis", process, port, workdir)
        try:
            wait_for_port(port, server)
            version = subprocess.run(
                [redis, "--version"], capture_output=True, text=True, check=False
            ).stdout.split()[2]
            server.notes.append(
                f"redis: {version}; appendonly yes, appendfsync {appendfsync}, no snapshots;"
                f" AOF on {filesystem_of(workdir)}"
            )
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def run_bare_trio_server() -> Iterator[Server]:
    """Run bench/bare_trio_server.py (an echo server holding idle connections)."""
    with temporary_directory("cellrelay-bench-bare-") as workdir:
        with _log_file(workdir) as log:
            process = subprocess.Popen(
                [PYTHON, str(BENCH / "bare_trio_server.py")], stdout=subprocess.PIPE, stderr=log
            )
        server = Server("bare trio", process, 0, workdir)
        try:
            assert process.stdout is not None
            server.port = int(_read_line(process.stdout, STARTUP_TIMEOUT, server))
            yield server
        finally:
            server.stop()


def wait_for_port(port: int, server: Server) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        server.check_alive()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _read_line(stream: IO[bytes], timeout: float, server: Server) -> str:
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            server.check_alive()
            raise TimeoutError(f"{server.name} printed nothing within {timeout} s")
    line = stream.readline().decode().strip()
    if not line:
        server.check_alive()
        raise RuntimeError(f"{server.name} closed its output")
    return line


# -- load workers -----------------------------------------------------------------------------


class Worker:
    """A load-client subprocess (bench/_worker.py) speaking lines on stdin and stdout."""

    def __init__(self, args: Sequence[str]) -> None:
        """Start `python bench/_worker.py ARGS...`."""
        self.process = subprocess.Popen(
            [PYTHON, str(BENCH / "_worker.py"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
        )
        assert self.process.stdout is not None
        self.fd = self.process.stdout.fileno()
        os.set_blocking(self.fd, False)
        self._buffer = b""
        self.closed = False

    def read_lines(self) -> list[str]:
        """Return the complete lines available now (without blocking)."""
        try:
            data = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return []
        if not data:
            self.closed = True
            return []
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        return [line.decode() for line in lines]

    def wait_line(self, timeout: float) -> str:
        """Block until one line arrives; raise if the worker exits or is silent too long."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                self.kill()
                raise RuntimeError("a load worker failed or timed out (its stderr is above)")
            with selectors.DefaultSelector() as selector:
                selector.register(self.fd, selectors.EVENT_READ)
                selector.select(remaining)
            try:
                data = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                continue
            if not data:
                self.closed = True
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def wait_json(self, timeout: float) -> dict[str, object]:
        """Block until the worker prints one JSON object line; return it."""
        result = json.loads(self.wait_line(timeout))
        assert isinstance(result, dict)
        return result

    def tell(self, line: str) -> None:
        """Send one line to the worker."""
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        """Close the worker's stdin (it exits on EOF) and wait for it."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """Kill the worker at once."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_workers(argsets: Sequence[Sequence[str]], timeout: float) -> list[Worker]:
    """Start one worker per argument list and wait until each prints "ready"."""
    workers = [Worker(args) for args in argsets]
    try:
        for worker in workers:
            line = worker.wait_line(timeout)
            if line != "ready":
                raise RuntimeError(f"a load worker said {line!r} instead of ready")
    except BaseException:
        for worker in workers:
            worker.kill()
        raise
    return workers


def split_evenly(total: int, parts: int) -> list[int]:
    """Split `total` into `parts` near-equal positive counts (fewer parts if total is small)."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


@contextlib.contextmanager
def py_spy(pid: int, output: Path | None, *, native: bool = False) -> Iterator[None]:
    """Sample process `pid` with py-spy into `output` (collapsed stacks) while inside.

    Does nothing when `output` is None. py-spy runs with --nonblocking, so the process is
    not paused to be sampled; it is installed in the venv for profiling only.
    """
    if output is None:
        yield
        return
    spy = shutil.which("py-spy", path=str(Path(PYTHON).parent)) or "py-spy"
    command = [spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(output),
               "--rate", "250", "--nonblocking", "--threads"]  # fmt: skip
    if native:
        command.append("--native")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)  # let it attach
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (from /proc/stat)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = stat.readline().split()[1:]
    # user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait.
    ticks = [int(x) for x in fields[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) * CLOCK_TICK


class OtherLoad:
    """Measures how much CPU processes other than the benchmark's own used meanwhile.

    The machine is shared: this is the noise indicator printed beside each figure. It is
    the machine's busy time less that of the given processes, in cores (1.0 = one core
    busy the whole time); kernel work on behalf of our own traffic that runs outside our
    processes (softirq threads) counts as other load too, so it is never quite zero.
    """

    def __init__(self, pids: Sequence[int]) -> None:
        """Start measuring now; `pids` are the benchmark's own processes."""
        self.pids = [os.getpid(), *pids]
        self.start = time.monotonic()
        self.busy = machine_busy_seconds()
        self.ours = self._ours()

    def _ours(self) -> float:
        total = 0.0
        for pid in self.pids:
            with contextlib.suppress(OSError, ValueError):
                total += cpu_seconds(pid)
        return total

    def cores(self) -> float:
        """Cores' worth of CPU others used since the start."""
        elapsed = time.monotonic() - self.start
        other = (machine_busy_seconds() - self.busy) - (self._ours() - self.ours)
        return max(0.0, other) / elapsed if elapsed > 0 else float("nan")


def tree_state() -> str:
    """Name the commit measured, and any uncommitted changes to the relay's own code."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "relay", "protocol"],
            cwd=REPO, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.split("\n")  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "code: not a git checkout"
    dirty = [line[3:] for line in changed if line.strip()]
    return f"code: commit {commit}" + (
        f", with uncommitted changes to {', '.join(dirty)}" if dirty else ", clean"
    )
