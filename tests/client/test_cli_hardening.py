"""The command line and the library as a new user met them (issue 10, items 9 to 14).

Every `cellrelay` command runs as its own process through the installed console script,
against a relay in the test's process on loopback (tests/client/test_cli.py's helpers).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import pty
import secrets
import signal
import subprocess
import sys
import termios
from pathlib import Path

import trio

from cellrelay.client import open_client
from cellrelay.client._cli_output import until
from cellrelay.client._client import create_identity
from cellrelay.client._keystore import TEST_COST
from cellrelay.protocol.cell import Invite
from cellrelay.protocol.wire import MailboxId, RelayAddress

from ..relay.process import open_relay_process
from .conftest import RunningRelay
from .test_cli import (
    CELLRELAY,
    COMMAND_TIMEOUT,
    PASSPHRASE,
    Result,
    cli,
    environment,
    identity,
    one_line_error,
)


def _invite_to(relay: RelayAddress, *, name: str = "Eastside") -> Invite:
    """An invite to a cell that does not exist, on `relay`: a join mailbox nobody created."""
    return Invite(
        relay=relay,
        cell_id=secrets.token_bytes(16),
        cell_name=name,
        join_mailbox=MailboxId(secrets.token_bytes(16)),
        admin_sign_key=secrets.token_bytes(32),
        admin_box_key=secrets.token_bytes(32),
        expires_at=2**32 - 1,
    )


async def test_a_typo_in_an_invite_is_caught_before_connecting(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    """Item 11: one wrong character is a typo, said at once, not a relay that cannot be reached."""
    address = RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key)
    link = _invite_to(address).to_link()
    position = len("cellrelay://join/") + 10  # inside the relay's key
    typo = link[:position] + ("A" if link[position] != "A" else "B") + link[position + 1 :]
    result = await cli("cell", "join", typo, home=identity(tmp_path, "ana"), expect=1)
    assert one_line_error(result) == (
        "cellrelay: bad invite link: the invite has a typo (its checksum does not match); "
        "check it was copied exactly, or ask for a new one"
    )


async def test_a_relay_with_another_key_is_named_at_once(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    """Item 11: an intact invite whose relay key the relay does not hold (a relay re-created,
    or someone in between) is reported as such after the first handshake, not as a relay that
    could not be reached once `--timeout` (here 60 s) ran out."""
    stranger = RelayAddress("127.0.0.1", running_relay.port, secrets.token_bytes(32))
    link = _invite_to(stranger).to_link()
    with trio.fail_after(COMMAND_TIMEOUT / 2):
        result = await cli(
            "cell", "join", link, "--timeout", "60", home=identity(tmp_path, "ana"), expect=1
        )
    line = one_line_error(result)
    assert line.startswith("cellrelay: the relay's key does not match the invite"), line
    assert "within" not in line  # not a timeout
    failed = running_relay.relay.metrics.handshakes.labels(result="failed").value
    assert failed >= 1


async def test_a_used_invite_says_to_ask_for_a_new_one(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    """Item 14: an invite whose join mailbox is gone (used, or expired and deleted by the admin)."""
    address = RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key)
    result = await cli(
        "cell", "join", _invite_to(address).to_link(), home=identity(tmp_path, "ana"), expect=1
    )
    assert one_line_error(result) == (
        "cellrelay: this invite was used or has expired (the relay no longer has its join "
        "mailbox): ask the cell's admin for a new one"
    )


async def test_joining_and_approving_print_no_warnings(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    """Item 14: a successful `cell approve` printed `warning: delivery_failed`; nothing normal
    is a warning."""
    address = str(RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key))
    lead, ana = identity(tmp_path, "lead"), identity(tmp_path, "ana")
    await cli("cell", "create", "Eastside", "--relay", address, home=lead)
    link = (await cli("cell", "invite", "Eastside", "--json", home=lead)).json()["link"]
    results: dict[str, Result] = {}

    async def join() -> None:
        results["join"] = await cli("cell", "join", link, "--wait", "60", home=ana)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(join)
        results["approve"] = await cli("cell", "approve", "Eastside", "--wait", "60", home=lead)
    results["members"] = await cli("cell", "members", "Eastside", home=ana)
    for name, result in results.items():
        assert "warning" not in result.stderr, f"{name}: {result.stderr}"
        assert "error" not in result.stderr, f"{name}: {result.stderr}"
    assert results["approve"].stdout.startswith("Approved ana")


async def _started_our_code(pid: int) -> None:
    """Wait until the process is importing the client: PyNaCl's libsodium is mapped.

    Before that it is Python's own start-up, before any code of ours could catch a signal;
    the console script catches SIGINT before it imports the client (cellrelay/_console.py).
    """
    maps = trio.Path(f"/proc/{pid}/maps")
    while True:
        try:
            if "_sodium" in await maps.read_text():
                return
        except PermissionError:  # not root, and the CLI already made itself undumpable
            return
        await trio.sleep(0.005)


async def test_ctrl_c_while_a_command_starts_is_one_line(tmp_path: Path) -> None:
    """Item 13: Ctrl-C in a command's first second printed a KeyboardInterrupt traceback.

    SIGINT is sent at several moments from when the client's import begins (that is where
    the second went: the window before it, Python's own start-up, is no code of ours): each
    run ends with status 130 and the one line, or had finished its work first.
    """
    home = identity(tmp_path, "ana")
    interrupted = 0
    for delay in (0.0, 0.05, 0.15, 0.3, 0.5):
        process = await trio.lowlevel.open_process(
            [CELLRELAY, "cell", "list", "--home", str(home)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=environment(),
        )
        with trio.fail_after(COMMAND_TIMEOUT):
            await _started_our_code(process.pid)
            await trio.sleep(delay)
            process.send_signal(signal.SIGINT)
            assert process.stderr is not None
            stderr = b""
            while data := await process.stderr.receive_some(65536):
                stderr += data
            status = await process.wait()
            await process.stderr.aclose()
        assert b"Traceback" not in stderr, (delay, stderr.decode())
        if status == 130:
            assert stderr == b"cellrelay: interrupted\n", (delay, stderr)
            interrupted += 1
        elif status == -signal.SIGINT:
            # Python restores SIGINT's default action as it shuts down: a Ctrl-C then,
            # after the command's work and output, ends it without a word.
            assert stderr == b"", (delay, stderr)
        else:
            assert status == 0, (delay, status, stderr)
    assert interrupted >= 2, "the signals came after the commands ended: nothing was tested"


def _open_on_a_terminal(args: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start `cellrelay ARGS` with a pseudo-terminal as its controlling terminal."""
    leader, follower = pty.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = environment(passphrase=None)
    process = subprocess.Popen(
        [CELLRELAY, *args],
        stdin=follower, stdout=follower, stderr=follower,
        preexec_fn=controlling_terminal, env=env,
    )  # fmt: skip
    os.close(follower)
    return process, leader


def _read_until(fd: int, wanted: bytes) -> bytes:
    seen = b""
    while wanted not in seen:
        try:
            data = os.read(fd, 4096)
        except OSError:  # the terminal closed: the process ended
            return seen
        if not data:
            return seen
        seen += data
    return seen


def test_ctrl_d_at_the_passphrase_prompt_is_one_line(tmp_path: Path) -> None:
    """Item 13: Ctrl-D at the prompt printed `unexpected EOFError`."""
    home = identity(tmp_path, "ana")
    process, terminal = _open_on_a_terminal(["cell", "list", "--home", str(home)])
    try:
        assert b"Passphrase:" in _read_until(terminal, b"Passphrase:")
        os.write(terminal, b"\x04")  # Ctrl-D: end of input
        rest = _read_until(terminal, b"\n(never)")
        assert process.wait(timeout=COMMAND_TIMEOUT) == 1
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(terminal)
    text = rest.decode().replace("\r", "")
    assert "EOFError" not in text
    assert [line for line in text.splitlines() if line.strip()] == [
        "cellrelay: no passphrase given (input ended)"
    ]


LIBRARY_USER = """
import sys
from cellrelay.client import BlockingClient

with BlockingClient.open(sys.argv[2], home=sys.argv[1]) as client:
    client.cell("Eastside").send_alert("Agents at 14th & Main", priority="urgent")
"""


async def test_the_library_is_silent_and_takes_home_as_a_string(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    """Item 12: the guide's three-line blocking example printed `[debug] relay_connected ...`,
    and `home` given as a `str` ended in a TypeError deep inside.

    The example runs as a program of its own that configures no logging, with `home` a
    string: it must print nothing at all.
    """
    home = tmp_path / "lead"
    create_identity(PASSPHRASE, "lead", home=str(home), cost=TEST_COST)
    address = RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key)
    async with open_client(PASSPHRASE, home=str(home)) as client:
        await client.create_cell("Eastside", address)
    with trio.fail_after(COMMAND_TIMEOUT):
        done = await trio.run_process(
            [sys.executable, "-c", LIBRARY_USER, str(home), PASSPHRASE],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=environment(passphrase=None),
        )
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")


async def test_a_ttl_beyond_the_relay_is_refused_and_expiry_shows_its_date(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    """Item 10: `--ttl 365d` was accepted on a relay that keeps 7 days, and members' clients
    kept the alert a year; `1y` did not say which units there are; an expiry after midnight
    showed only a time."""
    address = str(RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key))
    lead = identity(tmp_path, "lead")
    await cli("cell", "create", "Eastside", "--relay", address, home=lead)
    for command in (["send", "Eastside", "x"], ["message", "Eastside", "x"], ["cell", "invite", "Eastside"]):  # fmt: skip
        too_long = await cli(*command, "--ttl", "365d", home=lead, expect=1)
        assert one_line_error(too_long) == (
            "cellrelay: --ttl 365d is longer than the relay of 'Eastside' keeps anything "
            "(at most 7d): give --ttl 7d or less"
        ), command
    units = await cli("send", "Eastside", "x", "--ttl", "1y", home=lead, expect=2)
    assert "s, m, h or d" in one_line_error(units)
    sent = await cli("send", "Eastside", "Agents at 14th & Main", "--ttl", "2d", home=lead)
    expires = (await cli("alerts", "Eastside", "--json", home=lead)).json()[0]["expires_at"]
    day = datetime.datetime.fromtimestamp(expires).strftime("%Y-%m-%d")
    assert f"(until {day} " in sent.stdout, sent.stdout
    assert alerts_of_today_show_only_a_time()


def alerts_of_today_show_only_a_time() -> bool:
    noon = datetime.datetime.combine(datetime.date.today(), datetime.time(12)).timestamp()
    return until(noon + 3600, now=noon) == "13:00:00" and until(noon + 86_400, now=noon).endswith(
        " 12:00"
    )


async def test_listen_shows_a_lost_connection_and_its_return(tmp_path: Path) -> None:
    """Item 9: during a 40 s relay outage `listen` printed nothing, so a member believed they
    were listening. The relay process is stopped and started again on the same port: the
    feed says the connection was lost, when it tries again, and that it is back and caught
    up with what the relay stored meanwhile, as JSON lines and as lines for people."""
    data_dir = tmp_path / "relay"
    lead = identity(tmp_path, "lead")
    with trio.fail_after(8 * COMMAND_TIMEOUT):
        async with open_relay_process(data_dir) as relay:
            port = relay.port
            address = str(relay.address)
            await cli("cell", "create", "Eastside", "--relay", address, home=lead)
            await relay.terminate()
        for json_mode in (True, False):
            feed_args = [CELLRELAY, "listen", "--home", str(lead)]
            feed_args += ["--json"] if json_mode else []
            async with open_relay_process(data_dir, listen=f"127.0.0.1:{port}") as relay:
                process = await trio.lowlevel.open_process(
                    feed_args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, env=environment(),
                )  # fmt: skip
                lines = _Lines(process)
                if json_mode:
                    await lines.wait_for('"type": "listening"')
                else:
                    await lines.wait_for("Listening to", stderr=True)
                await relay.terminate()
            lost = await lines.wait_for('"state": "lost"' if json_mode else "lost")
            retry = await lines.wait_for('"state": "retrying"' if json_mode else "trying again")
            async with open_relay_process(data_dir, listen=f"127.0.0.1:{port}") as relay:
                back = await lines.wait_for('"caught_up"' if json_mode else "back: caught up")
                process.send_signal(signal.SIGINT)
                assert await process.wait() == 0
                await relay.terminate()
            if json_mode:
                assert json.loads(lost)["relay"] == f"127.0.0.1:{port}"
                assert json.loads(retry)["retry_in"] >= 0
                assert json.loads(back) == {
                    "type": "connection", "relay": f"127.0.0.1:{port}", "state": "caught_up",
                    "reason": None, "retry_in": None,
                }  # fmt: skip
            else:
                assert "not listening" in lost
                assert f"relay 127.0.0.1:{port}" in back
            await lines.aclose()


class _Lines:
    """The lines a process writes, read as they come (stdout, or stderr when asked)."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.seen = {False: b"", True: b""}

    async def wait_for(self, text: str, *, stderr: bool = False) -> str:
        stream = self.process.stderr if stderr else self.process.stdout
        assert stream is not None
        with trio.fail_after(COMMAND_TIMEOUT):
            while True:
                for line in self.seen[stderr].decode().splitlines():
                    if text in line:
                        self.seen[stderr] = self.seen[stderr].split(line.encode(), 1)[1]
                        return line
                data = await stream.receive_some(65536)
                assert data, f"the feed ended: {self.seen}"
                self.seen[stderr] += data

    async def aclose(self) -> None:
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                await stream.aclose()
