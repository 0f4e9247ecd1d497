"""`cellrelay daemon` and the command line through it, as real processes against a real relay.

While a daemon runs for an identity every command goes through it: no passphrase, no
"another command is using this identity", and the same output as the command prints on
its own (compared here byte for byte, for people and for scripts). `listen` in one process
with `send` and `cell approve` in others works. A second daemon refuses in one line;
SIGTERM saves and exits 0, and the commands work alone again.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import trio

from cellrelay.client._daemon import socket_path
from cellrelay.protocol.wire import RelayAddress

from ..relay.process import reap
from .conftest import RunningRelay
from .test_cli import CELLRELAY, COMMAND_TIMEOUT, Feed, cli, environment, identity, one_line_error

READS = (
    ("cell", "list"),
    ("cell", "members", "Eastside"),
    ("alerts", "Eastside"),
    ("id", "show"),
    ("cell", "requests", "Eastside"),
)


class Daemon:
    """A `cellrelay daemon --json` process and what it announced."""

    def __init__(self, process: trio.Process, announced: dict[str, Any]) -> None:
        self.process = process
        self.announced = announced
        self.stderr = bytearray()


async def start_daemon_process(home: Path, nursery: trio.Nursery) -> Daemon:
    process = await trio.lowlevel.open_process(
        [CELLRELAY, "daemon", "--json", "--listen", "0", "--home", str(home)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment(),
    )  # fmt: skip
    assert process.stdout is not None
    buffer = b""
    with trio.fail_after(COMMAND_TIMEOUT):
        while b"\n" not in buffer:
            data = await process.stdout.receive_some(65536)
            assert data, "the daemon ended before announcing itself"
            buffer += data
    daemon = Daemon(process, json.loads(buffer.split(b"\n", 1)[0]))

    async def pump() -> None:
        assert process.stderr is not None
        while data := await process.stderr.receive_some(65536):
            daemon.stderr += data

    nursery.start_soon(pump)
    return daemon


async def test_commands_go_through_a_running_daemon_and_print_the_same(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    address = str(RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key))
    lead, ana, ben = (identity(tmp_path, name) for name in ("lead", "ana", "ben"))
    await cli("cell", "create", "Eastside", "--relay", address, home=lead)
    link = (await cli("cell", "invite", "Eastside", "--json", home=lead)).json()["link"]
    await cli("cell", "join", link, "--wait", "0", home=ana)
    await cli("cell", "approve", "Eastside", "ana", "--wait", "60", home=lead)
    await cli("cell", "join", link, "--wait", "60", home=ana)
    sent = (
        await cli(
            "send",
            "Eastside",
            "Agents at 14th & Main",
            "--place",
            "14th & Main",
            "--json",
            home=lead,
        )
    ).json()
    await cli("reply", "Eastside", sent["alert_id"][:8], "on-scene", "--note", "two vans", home=ana)
    await cli("alerts", "Eastside", home=lead)  # the lead has read the reply

    alone: dict[tuple[str, ...], tuple[str, str]] = {}
    for command in READS:
        human = await cli(*command, home=lead)
        machine = await cli(*command, "--json", home=lead)
        alone[command] = (human.stdout, machine.stdout)

    daemon = await start_daemon_process(lead, nursery)
    assert daemon.announced["type"] == "daemon_listening"
    assert daemon.announced["socket"] == str(socket_path(lead))
    assert daemon.announced["board_url"].startswith("http://127.0.0.1:")
    try:
        for command in READS:
            # No passphrase at all: the daemon holds the keystore.
            human = await cli(*command, home=lead, passphrase=None)
            machine = await cli(*command, "--json", home=lead, passphrase=None)
            assert (human.stdout, machine.stdout) == alone[command], command

        second = await cli("daemon", home=lead, expect=1)
        assert "already running for this identity" in one_line_error(second)

        # Listen in one process; send, invite and approve from others, all through the daemon.
        process = await trio.lowlevel.open_process(
            [CELLRELAY, "listen", "--json", "--interactive", "--home", str(lead)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=environment(passphrase=None),
        )  # fmt: skip
        feed = Feed(process)
        nursery.start_soon(feed.pump_stderr)
        try:
            ready = await feed.read_until(lambda line: line["type"] == "listening")
            assert ready["cells"] == ["Eastside"]
            snapshot = await feed.read_until(lambda line: line.get("snapshot"))
            assert snapshot["alert_id"] == sent["alert_id"]

            second_alert = (await cli("send", "Eastside", "More agents on 15th", "--priority", "emergency",
                                      "--json", home=lead, passphrase=None)).json()  # fmt: skip
            assert second_alert["priority"] == "emergency"
            assert second_alert["from"]["name"] == "lead"
            heard = await feed.read_until(
                lambda line: line["type"] == "alert" and not line.get("snapshot")
            )
            assert heard["alert_id"] == second_alert["alert_id"]

            answer = await cli(
                "reply", "Eastside", second_alert["alert_id"][:8], "responding", home=ana
            )
            assert "responding" in answer.stdout
            status = await feed.read_until(lambda line: line["type"] == "status")
            assert status["from"]["name"] == "ana"
            assert status["rollup"]["responders"][0]["status"] == "responding"
            # Typed replies go through the daemon too; a wrong line says why, and goes on.
            assert process.stdin is not None
            await process.stdin.send_all(f"reply {second_alert['alert_id'][:6]} soon\n".encode())
            await feed.stderr_until("'soon' is not a status")
            await process.stdin.send_all(f"r {second_alert['alert_id'][:6]} on-scene\n".encode())
            typed = await feed.read_until(lambda line: line["type"] == "reply_sent")
            assert (typed["alert_id"], typed["status"]) == (second_alert["alert_id"], "on_scene")

            invite = (
                await cli("cell", "invite", "Eastside", "--json", home=lead, passphrase=None)
            ).json()
            await cli("cell", "join", invite["link"], "--wait", "0", home=ben)
            approved = await cli(
                "cell",
                "approve",
                "Eastside",
                "ben",
                "--wait",
                "60",
                "--json",
                home=lead,
                passphrase=None,
            )
            assert approved.json()["name"] == "ben"
            await feed.read_until(lambda line: line["type"] == "join_request")
            joined = (
                await cli("cell", "join", invite["link"], "--wait", "60", "--json", home=ben)
            ).json()
            assert [m["name"] for m in joined["members"]] == ["lead", "ana", "ben"]
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(COMMAND_TIMEOUT):
                assert await process.wait() == 0
        finally:
            await reap(process)

        # Errors come back as the same one line.
        missing = await cli("alerts", "Westside", home=lead, passphrase=None, expect=1)
        assert "no cell matches 'Westside'" in one_line_error(missing)
        unknown = await cli(
            "reply", "Eastside", "ffffffff", "resolved", home=lead, passphrase=None, expect=1
        )
        assert "no current alert in 'Eastside' has an id starting with ffffffff" in one_line_error(
            unknown
        )
        board = await cli("board", home=lead, passphrase=None)
        assert board.stdout.startswith(daemon.announced["url"] + "/#code=")
    finally:
        daemon.process.send_signal(signal.SIGTERM)
        with trio.fail_after(COMMAND_TIMEOUT):
            code = await daemon.process.wait()
    assert code == 0, daemon.stderr.decode()
    assert "Traceback" not in daemon.stderr.decode()
    assert not socket_path(lead).exists()

    # Alone again: the passphrase is needed, and what went through the daemon was saved.
    alerts = (await cli("alerts", "Eastside", "--json", home=lead)).json()
    assert {a["alert_id"] for a in alerts} == {sent["alert_id"], second_alert["alert_id"]}
    assert "no daemon runs" in one_line_error(await cli("board", home=lead, expect=1))
