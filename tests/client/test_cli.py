"""The `cellrelay` command line end to end: real CLI processes against a real relay.

The relay runs in the test's process (the in-process fixture, on loopback); every
`cellrelay` command is its own OS process, run through the installed console script, as a
person or a script would. Identities other than the one `id new` creates are made with the
library at libsodium's smallest Argon2id cost, so unlocking them does not dominate the run.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from cellrelay.client._cli_output import isolate, parse_duration
from cellrelay.client._client import create_identity
from cellrelay.client._keystore import TEST_COST
from cellrelay.protocol.cell import Invite
from cellrelay.protocol.wire import MailboxId, RelayAddress

from ..relay.process import reap
from .conftest import RunningRelay

CELLRELAY = str(Path(sys.executable).with_name("cellrelay"))
# A CLI process starts Python, imports the client and unlocks its keystore (about a second
# here); a loaded 2-core machine shared with other test runs can take many times that.
COMMAND_TIMEOUT = 60.0
PASSPHRASE = "passphrase for the cli tests"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:  # noqa: ANN401 - parsed JSON
        return json.loads(self.stdout)

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def environment(passphrase: str | None = PASSPHRASE) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLRELAY_")}
    env["NO_COLOR"] = "1"
    if passphrase is not None:
        env["CELLRELAY_PASSPHRASE"] = passphrase
    return env


async def cli(
    *args: str, home: Path, passphrase: str | None = PASSPHRASE, expect: int = 0, stdin: bytes = b""
) -> Result:
    """Run `cellrelay ARGS --home HOME` and check its exit status."""
    with trio.fail_after(COMMAND_TIMEOUT):
        done = await trio.run_process(
            [CELLRELAY, *args, "--home", str(home)],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=environment(passphrase),
        )
    result = Result(done.returncode, done.stdout.decode(), done.stderr.decode())
    assert result.returncode == expect, (
        f"cellrelay {' '.join(args)} -> {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def one_line_error(result: Result) -> str:
    """The single line a failing command printed on standard error."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cellrelay"), lines[0]
    return lines[0]


def identity(tmp_path: Path, name: str) -> Path:
    home = tmp_path / name
    create_identity(PASSPHRASE, name, home=home, cost=TEST_COST)
    return home


class Feed:
    """A `cellrelay listen --json` process whose output lines are read as they come."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self.stderr = bytearray()
        self._buffer = b""
        self._stderr_grew = trio.Event()

    async def read_until(self, predicate: Any) -> dict[str, Any]:  # noqa: ANN401 - a callable on a JSON object
        """Read lines until one satisfies `predicate`; return it."""
        assert self.process.stdout is not None
        with trio.fail_after(COMMAND_TIMEOUT):
            while True:
                for line in self.lines:
                    if predicate(line):
                        return line
                data = await self.process.stdout.receive_some(65536)
                assert data, f"listen ended early: {self.stderr.decode()}"
                self._buffer += data
                *complete, self._buffer = self._buffer.split(b"\n")
                self.lines += [json.loads(c) for c in complete if c.strip()]

    async def pump_stderr(self) -> None:
        assert self.process.stderr is not None
        while data := await self.process.stderr.receive_some(65536):
            self.stderr += data
            self._stderr_grew.set()
            self._stderr_grew = trio.Event()

    async def stderr_until(self, wanted: str) -> None:
        """Wait until standard error (read by `pump_stderr`) holds `wanted`."""
        with trio.fail_after(COMMAND_TIMEOUT):
            while wanted not in self.stderr.decode(errors="replace"):
                await self._stderr_grew.wait()


async def test_a_cell_through_the_command_line(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Create, invite, join and approve, send, listen, reply, alerts, members, remove."""
    address = str(RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key))
    lead, ana, ben = (identity(tmp_path, name) for name in ("lead", "ana", "ben"))

    created = (
        await cli("cell", "create", "Eastside", "--relay", address, "--json", home=lead)
    ).json()
    assert created["cell"] == "Eastside"
    assert len(created["cell_id"]) == 32

    # Ana: invite (with a PNG), join and wait, approve by name.
    png = tmp_path / "invite.png"
    invite = (
        await cli("cell", "invite", "Eastside", "--png", str(png), "--json", home=lead)
    ).json()
    assert invite["link"].startswith("cellrelay://join/")
    assert png.read_bytes().startswith(b"\x89PNG")
    assert stat.S_IMODE(png.stat().st_mode) == 0o600
    joined: dict[str, Result] = {}

    async def join_ana() -> None:
        joined["ana"] = await cli(
            "cell", "join", invite["link"], "--wait", "60", "--json", home=ana
        )

    async with trio.open_nursery() as step:
        step.start_soon(join_ana)
        approved = (
            await cli("cell", "approve", "Eastside", "ana", "--wait", "60", "--json", home=lead)
        ).json()
    assert approved["name"] == "ana"
    ana_view = joined["ana"].json()
    assert ana_view["joined"] is True
    assert [(m["name"], m["admin"], m["you"]) for m in ana_view["members"]] == [
        ("lead", True, False),
        ("ana", False, True),
    ]

    # Ben: only ask, show up in `requests`, get approved, then the same join command waits
    # for the approval it already asked for (no second request).
    link = (await cli("cell", "invite", "Eastside", "--json", home=lead)).json()["link"]
    asked = (await cli("cell", "join", link, "--wait", "0", "--json", home=ben)).json()
    assert asked == {"cell": "Eastside", "cell_id": created["cell_id"], "joined": False}
    requests = (await cli("cell", "requests", "Eastside", "--json", home=lead)).json()
    assert [r["name"] for r in requests] == ["ben"]
    assert (await cli("cell", "approve", "Eastside", "--json", home=lead)).json()["name"] == "ben"
    rejoined = await cli("cell", "join", link, "--json", home=ben)
    assert rejoined.json()["joined"] is True
    assert "already asked" in rejoined.stderr

    # Ana listens (answering from the same process: her keystore is taken while it runs);
    # the lead sends an emergency; Ben answers with an id prefix, Ana by typing a reply.
    process = await trio.lowlevel.open_process(
        [CELLRELAY, "listen", "--json", "--interactive", "--home", str(ana)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(),
    )
    feed = Feed(process)
    nursery.start_soon(feed.pump_stderr)
    try:
        ready = await feed.read_until(lambda line: line["type"] == "listening")
        assert ready["cells"] == ["Eastside"]
        assert ready["as"]["name"] == "ana"

        # While it listens, Ana's keystore is taken: another command says so in one line.
        busy = await cli("cell", "members", "Eastside", home=ana, expect=1)
        assert "another cellrelay command is using this identity" in one_line_error(busy)

        sent = (await cli("send", "Eastside", "Agents at 14th & Main", "--priority", "emergency",
                          "--place", "14th & Main", "--ttl", "30m", "--json", home=lead)).json()  # fmt: skip
        alert_id = sent["alert_id"]
        assert sent["priority"] == "emergency"
        assert sent["expires_at"] * 1000 - sent["sent_at_ms"] == pytest.approx(1_800_000, abs=1000)
        replied = (
            await cli(
                "reply",
                "Eastside",
                alert_id[:6],
                "on-scene",
                "--note",
                "two vans",
                "--json",
                home=ben,
            )
        ).json()
        assert replied["alert_id"] == alert_id
        assert replied["status"] == "on_scene"

        alert = await feed.read_until(lambda line: line["type"] == "alert")
        assert (alert["alert_id"], alert["text"], alert["place"], alert["from"]["name"]) == (
            alert_id,
            "Agents at 14th & Main",
            "14th & Main",
            "lead",
        )
        status = await feed.read_until(lambda line: line["type"] == "status")
        assert (status["from"]["name"], status["status"], status["note"]) == (
            "ben",
            "on_scene",
            "two vans",
        )
        assert [(r["name"], r["status"]) for r in status["rollup"]["responders"]] == [
            ("ben", "on_scene")
        ]
        assert process.stdin is not None
        await process.stdin.send_all(f"reply {alert_id[:5]} responding 'on my way'\n".encode())
        sent_reply = await feed.read_until(lambda line: line["type"] == "reply_sent")
        assert (sent_reply["alert_id"], sent_reply["status"]) == (alert_id, "responding")
        assert sorted((r["name"], r["status"]) for r in sent_reply["rollup"]["responders"]) == [
            ("ana", "responding"),
            ("ben", "on_scene"),
        ]
        process.send_signal(signal.SIGINT)  # Ctrl-C is how a feed ends: exit status 0
        with trio.fail_after(COMMAND_TIMEOUT):
            assert await process.wait() == 0
    finally:
        await reap(process)

    # The roll-up, as scripts and people see it.
    alerts = (await cli("alerts", "Eastside", "--json", home=lead)).json()
    assert [a["alert_id"] for a in alerts] == [alert_id]
    answers = sorted((r["name"], r["status"], r["note"]) for r in alerts[0]["rollup"]["responders"])
    assert answers == [("ana", "responding", "on my way"), ("ben", "on_scene", "two vans")]
    shown = (await cli("alerts", "Eastside", home=lead)).stdout
    assert "EMERGENCY" in shown
    assert alert_id[:8] in shown
    assert 'on scene: ben ("two vans"); responding: ana ("on my way")' in shown

    # Members, removal, and what the removed member can still do (nothing).
    listed = (await cli("cell", "members", "Eastside", "--json", home=lead)).json()
    assert [(m["name"], m["admin"], m["you"]) for m in listed] == [
        ("lead", True, True),
        ("ana", False, False),
        ("ben", False, False),
    ]
    assert (await cli("cell", "remove", "Eastside", "ben", "--json", home=lead)).json()[
        "name"
    ] == "ben"
    for home in (lead, ana):  # the lead's own view too: it once kept ben under load
        listed = (await cli("cell", "members", "Eastside", "--json", home=home)).json()
        assert [m["name"] for m in listed] == ["lead", "ana"], home.name
    refused = await cli("send", "Eastside", "still here?", home=ben, expect=1)
    assert "removed from 'Eastside'" in one_line_error(refused)
    cells = (await cli("cell", "list", "--json", home=ben)).json()["cells"]
    assert [(c["name"], c["role"]) for c in cells] == [("Eastside", "removed")]

    # Leaving announces it (docs/protocol.md §C9) and deletes the cell from the keystore;
    # the lead's next command, catching up, removes ana.
    left = (await cli("cell", "leave", "Eastside", "--yes", "--json", home=ana)).json()
    assert left == {
        "cell": "Eastside", "cell_id": created["cell_id"], "left": True, "announced": True,
    }  # fmt: skip
    assert (await cli("id", "show", "--json", home=ana)).json()["cells"] == 0
    listed = (await cli("cell", "members", "Eastside", "--json", home=lead)).json()
    assert [m["name"] for m in listed] == ["lead"]


async def test_id_new_and_show(tmp_path: Path) -> None:
    home = tmp_path / "dana"
    created = (await cli("id", "new", "--name", "dana", "--json", home=home)).json()
    assert created["name"] == "dana"
    assert len(created["member_id"]) == 32
    assert stat.S_IMODE((home / "keystore").stat().st_mode) == 0o600
    shown = (await cli("id", "show", "--json", home=home)).json()
    assert shown == {**created, "cells": 0}
    again = await cli("id", "new", "--name", "dana", home=home, expect=1)
    assert "already have an identity" in one_line_error(again)


async def test_errors_are_one_line(tmp_path: Path, running_relay: RunningRelay) -> None:
    """Wrong passphrase, unknown cell, bad and expired invites, unreachable relay, usage."""
    with trio.socket.socket() as closed:  # closed whatever happens
        await closed.bind(("127.0.0.1", 0))
        dead = str(
            RelayAddress("127.0.0.1", closed.getsockname()[1], running_relay.public_key)
        )  # bound, never listening
        expired = Invite(
            relay=RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key),
            cell_id=bytes(16),
            cell_name="Eastside",
            join_mailbox=MailboxId(bytes(16)),
            admin_sign_key=bytes(32),
            admin_box_key=bytes(32),
            expires_at=1_000_000,
        ).to_link()
        # name -> (arguments, passphrase, what the one line says)
        cases: dict[str, tuple[list[str], str | None, str]] = {
            "wrong passphrase": (
                ["cell", "list"],
                "not the passphrase",
                "wrong passphrase",
            ),
            "unknown cell": (
                ["cell", "members", "Westside"],
                PASSPHRASE,
                "no cell matches 'Westside'",
            ),
            "bad link": (
                ["cell", "join", "https://example.org/join"],
                PASSPHRASE,
                "bad invite link: this is not an invite link",
            ),
            "expired link": (
                ["cell", "join", expired],
                PASSPHRASE,
                "this invite expired on 1970-01-12",
            ),
            "unreachable": (
                ["cell", "create", "X", "--relay", dead, "--timeout", "2"],
                PASSPHRASE,
                "could not reach the relay at 127.0.0.1",
            ),
            "bad address": (
                ["cell", "create", "X", "--relay", "example.org"],
                PASSPHRASE,
                "bad relay address",
            ),
            "no passphrase": (
                ["cell", "list"],
                None,
                "no passphrase: set CELLRELAY_PASSPHRASE",
            ),
        }
        results: dict[str, Result] = {}

        async def run(name: str) -> None:
            args, passphrase, _ = cases[name]
            home = identity(tmp_path, name.replace(" ", "-"))  # one keystore each: they run at once
            results[name] = await cli(*args, home=home, passphrase=passphrase, expect=1)

        async with trio.open_nursery() as nursery:
            for name in cases:
                nursery.start_soon(run, name)
        for name, (_, _, expected) in cases.items():
            assert expected in one_line_error(results[name]), name
        usage = await cli("send", home=tmp_path / "nobody", expect=2)
        assert "required: CELL, TEXT" in one_line_error(usage)
        missing = await cli("cell", "list", home=tmp_path / "nobody", expect=1)
        assert "no identity in" in one_line_error(missing)


def test_durations_and_isolation() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "30m", "2h", "1d")] == [
        90,
        90,
        1800,
        7200,
        86400,
    ]
    for bad in ("", "0", "-5", "1w", "1.5h", "h"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)
    assert isolate("Eastside") == "Eastside"
    assert isolate("\u05d0\u05d1") == "\u2068\u05d0\u05d1\u2069"  # right-to-left text is isolated


async def test_version_through_the_console_script(tmp_path: Path) -> None:
    """`cellrelay --version` and `cellrelay relay --version` print the installed version."""
    version = importlib.metadata.version("cellrelay")
    assert (await cli("--version", home=tmp_path)).stdout == f"cellrelay {version}\n"
    relay = await cli("relay", "--version", home=tmp_path, expect=0)
    assert relay.stdout == f"cellrelay relay {version}\n"
