"""Run a relay as a separate process for tests: init, serve, read its address, stop it.

`open_relay_process(data_dir)` runs `python -m cellrelay.relay init` the first time a data
directory is used, then `python -m cellrelay.relay serve` on free loopback ports (client and ops)
with JSON logs on standard error, reads the relay address that `serve` prints on
standard output, and learns the ops port from the `ops_listening` log line. Standard
error is collected for the whole life of the process, so a test can search the logs
afterwards. Leaving the block kills the process if the test has not stopped it.

`http_get(port, path)` is a minimal HTTP/1.1 client for the ops endpoints.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import trio

from cellrelay.protocol.wire._address import RelayAddress

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping
    from pathlib import Path

__all__ = [
    "Launch",
    "RelayProcess",
    "http_get",
    "init_relay",
    "open_relay_process",
    "run_serve_to_exit",
]

# Starting Python, importing the relay and opening SQLite takes about half a second here;
# a loaded 2-core machine can take several times that.
STARTUP_TIMEOUT: Final = 30.0
# SIGTERM drains (shutdown_grace, 5 s by default) and gives writers 2 s to flush.
STOP_TIMEOUT: Final = 20.0
READ_SIZE: Final = 65_536
# Settings every test relay gets unless the test overrides them: loopback, free ports,
# JSON logs a test can parse.
BASE_SETTINGS: Final[Mapping[str, str]] = {
    "listen": "127.0.0.1:0",
    "ops_listen": "127.0.0.1:0",
    "log_format": "json",
    "log_level": "info",
}


def _flags(settings: Mapping[str, object]) -> list[str]:
    out: list[str] = []
    for name, value in settings.items():
        text = ",".join(value) if isinstance(value, tuple | list) else str(value)
        out += ["--" + name.replace("_", "-"), text]
    return out


def _environment() -> dict[str, str]:
    # The relay reads CELLRELAY_* settings from the environment: keep the developer's out.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLRELAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def init_relay(data_dir: Path) -> None:
    """Run `python -m cellrelay.relay init` for `data_dir` (creates the static key)."""
    await trio.run_process(
        [sys.executable, "-m", "cellrelay.relay", "init", "--data-dir", str(data_dir),
         "--listen", "127.0.0.1:0"],
        env=_environment(), capture_stdout=True, capture_stderr=True,
    )  # fmt: skip


async def run_serve_to_exit(data_dir: Path, **settings: object) -> tuple[int, str]:
    """Run `relay serve` on `data_dir` where it should stop by itself; return (status, stderr).

    For starts that must fail (a port taken, the database locked, the disk full): bounded
    by STARTUP_TIMEOUT, so a relay that starts after all fails the test instead of hanging.
    """
    if not (data_dir / "relay.key").exists():
        await init_relay(data_dir)
    merged: dict[str, object] = {**BASE_SETTINGS, "data_dir": str(data_dir), **settings}
    with trio.fail_after(STARTUP_TIMEOUT):
        result = await trio.run_process(
            [sys.executable, "-m", "cellrelay.relay", "serve", *_flags(merged)],
            stdin=subprocess.DEVNULL, capture_stdout=True, capture_stderr=True, check=False,
            env=_environment(),
        )  # fmt: skip
    return result.returncode, result.stderr.decode("utf-8", "replace")


@dataclass(eq=False)
class RelayProcess:
    """A relay running as a child process, with its address and everything it logged."""

    process: trio.Process
    address: RelayAddress
    data_dir: Path
    stderr: bytearray = field(default_factory=bytearray, repr=False)
    stdout: bytearray = field(default_factory=bytearray, repr=False)
    ops_port: int = 0

    @property
    def port(self) -> int:
        """The client port."""
        return self.address.port

    @property
    def public_key(self) -> bytes:
        """The relay's static public key."""
        return self.address.public_key

    @property
    def database_dir(self) -> Path:
        """Where the SQLite database and its WAL live (the data directory)."""
        return self.data_dir

    def log_text(self) -> str:
        """Everything written to standard error so far."""
        return self.stderr.decode("utf-8", "replace")

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines so far, parsed (other lines are skipped)."""
        events: list[dict[str, Any]] = []
        for line in self.log_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    async def wait_for_log(self, event: str) -> dict[str, Any]:
        """Wait until a log line with this event name appears; return it (poll, bounded by the caller)."""
        while True:
            for entry in self.log_events():
                if entry.get("event") == event:
                    return entry
            if self.process.returncode is not None:
                raise RuntimeError(f"relay exited ({self.process.returncode}) before {event}")
            await trio.sleep(0.02)

    async def terminate(self) -> int:
        """Send SIGTERM and wait for the exit status."""
        return await self._stop(signal.SIGTERM)

    async def kill(self) -> int:
        """Send SIGKILL and wait for the exit status."""
        return await self._stop(signal.SIGKILL)

    async def _stop(self, signum: signal.Signals) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signum)
        with trio.fail_after(STOP_TIMEOUT):
            return await self.process.wait()


async def _pump(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
    while data := await stream.receive_some(READ_SIZE):
        into += data


@dataclass(frozen=True)
class Launch:
    """How to start the relay's process: its working directory, and code to run in the child."""

    cwd: Path | None = None
    preexec_fn: Callable[[], None] | None = None


@asynccontextmanager
async def open_relay_process(
    data_dir: Path, launch: Launch | None = None, /, **settings: object
) -> AsyncIterator[RelayProcess]:
    """Start `python -m cellrelay.relay serve` on `data_dir` (init first if it has no key).

    `settings` are relay settings by field name (`max_envelope=1000`), passed as flags on
    top of `BASE_SETTINGS`. `launch` says where the process runs (where a core file would
    land) and what its child side does first (a resource limit to start under). The
    process is killed on exit if it is still running.
    """
    launch = launch or Launch()
    if not (data_dir / "relay.key").exists():
        await init_relay(data_dir)
    merged: dict[str, object] = {**BASE_SETTINGS, "data_dir": str(data_dir), **settings}
    command = [sys.executable, "-m", "cellrelay.relay", "serve", *_flags(merged)]
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=_environment(), cwd=launch.cwd, preexec_fn=launch.preexec_fn,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stderr is not None
    stderr = bytearray()
    stdout = bytearray()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump, process.stderr, stderr)
            with trio.fail_after(STARTUP_TIMEOUT):
                while b"\n" not in stdout:
                    data = await process.stdout.receive_some(READ_SIZE)
                    if not data:
                        raise RuntimeError(
                            "relay exited before printing its address: "
                            + stderr.decode("utf-8", "replace")[-2000:]
                        )
                    stdout += data
            nursery.start_soon(_pump, process.stdout, stdout)
            line = stdout.split(b"\n", 1)[0].decode()
            running = RelayProcess(
                process=process,
                address=RelayAddress.parse(line),
                data_dir=data_dir,
                stderr=stderr,
                stdout=stdout,
            )
            if merged.get("ops_listen"):
                with trio.fail_after(STARTUP_TIMEOUT):
                    running.ops_port = int((await running.wait_for_log("ops_listening"))["port"])
            yield running
            if process.returncode is None:
                process.kill()
            with trio.fail_after(STOP_TIMEOUT):
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True), trio.move_on_after(STOP_TIMEOUT):
                await process.wait()


async def reap(process: trio.Process) -> None:
    """Kill `process` if it still runs and wait for it, even while being cancelled.

    A trio process that is killed but never waited for keeps its pidfd open until garbage
    collection, whose ResourceWarning then fails whichever later test happens to be running.
    """
    if process.returncode is None:
        process.kill()
    with trio.CancelScope(shield=True), trio.move_on_after(STOP_TIMEOUT):
        await process.wait()


async def http_get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    """GET `path` from an HTTP server on loopback; return (status, body)."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        await stream.send_all(request.encode())
        response = bytearray()
        while data := await stream.receive_some(READ_SIZE):
            response += data
    head, _, body = bytes(response).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body
