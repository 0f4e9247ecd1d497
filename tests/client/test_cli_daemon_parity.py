"""Every command goes through a running daemon, and prints what it prints alone.

Issue 15's commands (`cell recover`, `cell mute`, `cell unmute`, `cell alert-limit`) came
after the daemon: with a daemon running they fell back to running alone, which then failed
on the identity lock the daemon holds. Here each runs as a real process through the
installed console script, first alone on one cell, then through a real daemon on a twin
cell (same members, same history of epochs), and what they print is compared byte for
byte, for people and for scripts, errors included.
"""

from __future__ import annotations

import re
import secrets
import signal
import subprocess
from pathlib import Path

import trio

from cellrelay.client import _cli, _cli_daemon
from cellrelay.client._client import open_client
from cellrelay.protocol.wire import RelayAddress

from .cells import admit
from .conftest import RunningRelay
from .test_cli import (
    CELLRELAY,
    COMMAND_TIMEOUT,
    PASSPHRASE,
    Feed,
    Result,
    cli,
    environment,
    identity,
)
from .test_cli_daemon import start_daemon_process
from .test_cli_flood import flood_and_check, read_text_until
from .test_daemon_hardening import invite_to

# Commands that never go through a daemon, and why.
ALONE = {
    "id new": "creates the keystore a daemon would hold: there is none yet",
    "daemon": "is the daemon (a second one refuses at once)",
    # Issue 14's keystore commands act on the keystore file with its passphrase; routing them
    # would mean sending passphrases over the API, a design decision of their own (left
    # open: with a daemon running they meet its lock).
    "keystore set-duress": "acts on the keystore file itself (see above)",
    "keystore clear-duress": "acts on the keystore file itself (see above)",
}


def test_every_command_has_a_route_through_the_daemon() -> None:
    routed = set(_cli_daemon._COMMANDS)
    assert set(_cli.COMMANDS) - set(ALONE) <= routed, set(_cli.COMMANDS) - set(ALONE) - routed


BOTH = ((), ("--json",))
# (arguments, expected exit status[, modes]): in this order, on a cell called CELL; each
# for people and with --json unless it says otherwise.
SCRIPT: tuple[tuple[tuple[str, ...], int, tuple[tuple[str, ...], ...]], ...] = (
    (("cell", "alert-limit", "CELL", "3"), 0, BOTH),
    (("cell", "alert-limit", "CELL", "0"), 1, BOTH),
    (("cell", "mute", "CELL", "eve"), 0, BOTH),
    (("cell", "mute", "CELL", "lead"), 1, BOTH),
    (("cell", "mute", "CELL", "nobody"), 1, BOTH),
    (("cell", "unmute", "CELL", "eve", "--here"), 0, BOTH),
    (("cell", "mute", "CELL", "eve", "--here"), 0, BOTH),
    (("cell", "unmute", "CELL", "eve"), 0, BOTH),
    (("cell", "recover", "CELL"), 0, BOTH),
    (("send", "CELL", "Agents at 14th & Main", "--ttl", "8d"), 1, BOTH),
    (("message", "CELL", "hello", "--ttl", "30d"), 1, BOTH),
    (("cell", "invite", "CELL", "--ttl", "30d"), 1, BOTH),
    (("cell", "remove", "CELL", "eve"), 0, ((),)),
    (("cell", "remove", "CELL", "ana"), 0, (("--json",),)),
)


def _epochs(text: str) -> str:
    """The text with epoch numbers as N: the twin cells' epochs need not stay in step.

    Seen once under the full suite's load: the daemon's twin was one epoch ahead at the
    second `cell recover` (not reproduced alone; see the report of branch daemon-parity).
    What is compared is what the commands say, not how many epochs a cell went through.
    """
    return re.sub(r'("epoch": |\(epoch )\d+', r"\1N", text)


async def run_script(home: Path, cell: str, *, passphrase: str | None) -> list[Result]:
    """Each command of SCRIPT, for people and then with --json; outputs with `cell` as CELL."""
    results = []
    for args, status, modes in SCRIPT:
        for flags in modes:
            command = [cell if a == "CELL" else a for a in args]
            result = await cli(*command, *flags, home=home, passphrase=passphrase, expect=status)
            results.append(
                Result(
                    result.returncode,
                    _epochs(result.stdout.replace(cell, "CELL")),
                    result.stderr.replace(cell, "CELL"),
                )
            )
    return results


async def test_issue_15_commands_through_the_daemon_print_what_they_print_alone(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    address = str(RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key))
    lead, ana, eve = (identity(tmp_path, name) for name in ("lead", "ana", "eve"))
    async with open_client(PASSPHRASE, home=lead) as lead_client:
        for name in ("Eastside", "Westside"):
            cell = await lead_client.create_cell(name, address)
            async with open_client(PASSPHRASE, home=ana) as ana_client:
                await admit(cell, ana_client)
            async with open_client(PASSPHRASE, home=eve) as eve_client:
                await admit(cell, eve_client)

    alone = await run_script(lead, "Eastside", passphrase=PASSPHRASE)

    daemon = await start_daemon_process(lead, nursery)
    try:
        # No passphrase: were any command to run alone it would fail, asking for one.
        through = await run_script(lead, "Westside", passphrase=None)
    finally:
        daemon.process.send_signal(signal.SIGTERM)
        with trio.fail_after(COMMAND_TIMEOUT):
            code = await daemon.process.wait()
    assert code == 0, daemon.stderr.decode()
    assert "Traceback" not in daemon.stderr.decode()

    for args, pair in zip(
        (a for a, _, modes in SCRIPT for _ in modes), zip(alone, through, strict=True), strict=True
    ):
        assert pair[0].stdout == pair[1].stdout, (args, pair)
        if pair[0].returncode:
            assert pair[0].stderr == pair[1].stderr, (args, pair)
    said = [r.stdout for r in through]
    assert said[0] == (
        "In CELL, a member who sends more than 3 alerts in a minute is now muted by every"
        " member's client.\n"
    )
    assert said[4].startswith("Muted eve (")
    assert said[4].endswith(") for everyone in CELL.\n")
    assert "moved to a fresh mailbox" in said[16]
    errors = [r.stderr for r in through if r.returncode]
    assert "cellrelay: you cannot mute yourself\n" in errors
    assert any("--ttl 8d is longer than the relay of 'CELL' keeps anything" in e for e in errors)


async def test_joins_that_fail_say_the_same_through_the_daemon(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Issue 10's invite checks on the daemon's path: a typo caught before connecting, a used
    invite, and a relay that does not hold the key, each in the same one line."""
    address = RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key)
    link = invite_to(address).to_link()
    position = len("cellrelay://join/") + 10
    typo = link[:position] + ("A" if link[position] != "A" else "B") + link[position + 1 :]
    stranger = invite_to(RelayAddress("127.0.0.1", running_relay.port, secrets.token_bytes(32)))
    links = (typo, link, stranger.to_link())
    ana = identity(tmp_path, "ana")
    alone = [(await cli("cell", "join", t, home=ana, expect=1)).stderr for t in links]
    daemon = await start_daemon_process(ana, nursery)
    try:
        through = [
            (await cli("cell", "join", t, home=ana, passphrase=None, expect=1)).stderr
            for t in links
        ]
    finally:
        daemon.process.send_signal(signal.SIGTERM)
        with trio.fail_after(COMMAND_TIMEOUT):
            await daemon.process.wait()
    assert through == alone
    assert alone[0].startswith("cellrelay: bad invite link: the invite has a typo")
    assert alone[1].startswith("cellrelay: this invite was used or has expired")
    assert alone[2].startswith("cellrelay: the relay's key does not match the invite")


async def test_listen_through_the_daemon_shows_a_flood_as_it_does_alone(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """tests/client/test_cli_flood.py's feed, with `listen` going through ana's daemon."""
    address = str(RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key))
    lead, ana, eve = (identity(tmp_path, name) for name in ("lead", "ana", "eve"))
    async with open_client(PASSPHRASE, home=lead) as lead_client:
        cell = await lead_client.create_cell("Eastside", address)
        async with open_client(PASSPHRASE, home=ana) as ana_client:
            await admit(cell, ana_client)
        async with open_client(PASSPHRASE, home=eve) as eve_client:
            await admit(cell, eve_client)
        await cell.set_alert_limit(3)
    daemon = await start_daemon_process(ana, nursery)
    feeds = {}
    try:
        for mode in ("json", "text"):
            process = await trio.lowlevel.open_process(
                [CELLRELAY, "listen", *(["--json"] if mode == "json" else []), "--home", str(ana)],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=environment(passphrase=None),
            )  # fmt: skip
            feeds[mode] = Feed(process)
        nursery.start_soon(feeds["json"].pump_stderr)
        await feeds["json"].read_until(lambda line: line["type"] == "listening")
        # The text feed says on standard error that it listens (then its stderr is pumped).
        said = feeds["text"].process.stderr
        assert said is not None
        with trio.fail_after(COMMAND_TIMEOUT):
            while b"Listening to" not in feeds["text"].stderr:
                data = await said.receive_some(65536)
                assert data, "the text feed ended"
                feeds["text"].stderr += data
        nursery.start_soon(feeds["text"].pump_stderr)
        await flood_and_check(eve, feeds["json"])
        text = await read_text_until(feeds["text"], "flood 4")
    finally:
        for feed in feeds.values():
            if feed.process.returncode is None:
                feed.process.terminate()
        with trio.fail_after(COMMAND_TIMEOUT):
            for feed in feeds.values():
                await feed.process.wait()
        daemon.process.send_signal(signal.SIGTERM)
        with trio.fail_after(COMMAND_TIMEOUT):
            await daemon.process.wait()
    assert "sent 4 alerts within a minute (the cell allows 3): muted on this device." in text
    assert any(line.startswith("(muted) ") and "flood 3" in line for line in text.splitlines())
    assert "eve muted on this device (flood control)" in text


async def _members(home: Path, cell: str, *, passphrase: str | None) -> list[str]:
    listed = await cli("cell", "members", cell, "--json", home=home, passphrase=passphrase)
    return [m["name"] for m in listed.json()]


async def test_leave_through_the_daemon_says_what_it_says_alone(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Issue 14 item 4, on both paths: the only admin is refused without --force, ana's leave
    is announced (for people, and with --json), and the lead's client removes her: the next
    command of the lead alone, or the lead's running daemon."""
    address = str(RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key))
    lead, ana, eve = (identity(tmp_path, name) for name in ("lead", "ana", "eve"))
    names = ("Eastside", "Northside", "Westside", "Southside")
    async with open_client(PASSPHRASE, home=lead) as lead_client:
        for name in names:
            cell = await lead_client.create_cell(name, address)
            async with open_client(PASSPHRASE, home=ana) as ana_client:
                await admit(cell, ana_client)
            async with open_client(PASSPHRASE, home=eve) as eve_client:
                await admit(cell, eve_client)

    async def script(cells: tuple[str, str], passphrase: str | None) -> list[Result]:
        text_cell, json_cell = cells
        runs = [
            (lead, ("cell", "leave", text_cell), 1),
            (lead, ("cell", "leave", text_cell, "--yes"), 1),
            (lead, ("cell", "leave", text_cell, "--yes", "--json"), 1),
            (ana, ("cell", "leave", text_cell), 1),
            (ana, ("cell", "leave", text_cell, "--yes"), 0),
            (ana, ("cell", "leave", json_cell, "--yes", "--json"), 0),
        ]
        results = []
        for home, args, status in runs:
            result = await cli(*args, home=home, passphrase=passphrase, expect=status)
            results.append(
                Result(
                    result.returncode,
                    re.sub(r'"cell_id": "[0-9a-f]+"', '"cell_id": ID', result.stdout)
                    .replace(text_cell, "CELL")
                    .replace(json_cell, "CELL"),
                    result.stderr.replace(text_cell, "CELL").replace(json_cell, "CELL"),
                )
            )
        return results

    alone = await script(("Eastside", "Northside"), PASSPHRASE)
    # Alone, the lead's next command catches up and removes ana on the way.
    for left in ("Eastside", "Northside"):
        assert await _members(lead, left, passphrase=PASSPHRASE) == ["lead", "eve"]

    daemons = [await start_daemon_process(home, nursery) for home in (lead, ana)]
    try:
        through = await script(("Westside", "Southside"), None)
        # The lead's daemon removes ana as soon as her leave arrives.
        with trio.fail_after(COMMAND_TIMEOUT):
            for left in ("Westside", "Southside"):
                while await _members(lead, left, passphrase=None) != ["lead", "eve"]:
                    await trio.sleep(0.2)
    finally:
        for daemon in daemons:
            daemon.process.send_signal(signal.SIGTERM)
        with trio.fail_after(COMMAND_TIMEOUT):
            codes = [await daemon.process.wait() for daemon in daemons]
    assert codes == [0, 0], [d.stderr.decode() for d in daemons]
    assert all("Traceback" not in d.stderr.decode() for d in daemons)

    assert through == alone
    assert [r.returncode for r in alone] == [1, 1, 1, 1, 0, 0]
    only_admin = (
        "cellrelay: you are the only admin of 'CELL': nobody could add or remove members"
        " after you leave (--force leaves anyway)\n"
    )
    assert [r.stderr for r in alone[:3]] == [only_admin] * 3
    assert "add --yes to confirm" in alone[3].stderr
    assert alone[4].stdout == (
        "Left CELL and deleted its keys from this device.\n"
        "The cell was told: an admin removes you, and it moves on to keys you never had.\n"
    )
    assert alone[5].stdout == ('{"cell": "CELL", "cell_id": ID, "left": true, "announced": true}\n')


async def _listen(home: Path, cell: str, *, json_mode: bool, passphrase: str | None) -> Feed:
    """A `listen` process on `cell`, once it listens (its standard error then pumped)."""
    process = await trio.lowlevel.open_process(
        [CELLRELAY, "listen", cell, *(["--json"] if json_mode else []), "--home", str(home)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=environment(passphrase=passphrase),
    )  # fmt: skip
    feed = Feed(process)
    if json_mode:
        await feed.read_until(lambda line: line["type"] == "listening")
        return feed
    said = process.stderr
    assert said is not None
    with trio.fail_after(COMMAND_TIMEOUT):
        while b"Listening to" not in feed.stderr:
            data = await said.receive_some(65536)
            assert data, f"listen ended: {feed.stderr.decode()}"
            feed.stderr += data
    return feed


async def _stop(feeds: list[Feed]) -> None:
    for feed in feeds:
        if feed.process.returncode is None:
            feed.process.terminate()
    with trio.fail_after(COMMAND_TIMEOUT):
        for feed in feeds:
            await feed.process.wait()


async def test_listen_shows_a_leave_alone_and_through_the_daemon(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """eve listens while ana leaves and the lead's client removes her: "ana left", then the
    removal, for people and with --json, alone and through eve's daemon alike."""
    address = str(RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key))
    lead, ana, eve = (identity(tmp_path, name) for name in ("lead", "ana", "eve"))
    names = ("Eastside", "Northside", "Westside")
    async with open_client(PASSPHRASE, home=lead) as lead_client:
        for name in names:
            cell = await lead_client.create_cell(name, address)
            for home in (ana, eve):
                async with open_client(PASSPHRASE, home=home) as client:
                    await admit(cell, client)

        async def ana_leaves(cell: str) -> None:
            async with open_client(PASSPHRASE, home=ana) as client:
                leaving = client.cell(cell)
                await leaving.wait_synced()
                assert await leaving.leave() is True

        def membership(feed: Feed) -> list[tuple[str, str, str]]:
            return [
                (line["change"], line["member"]["name"], line["by"]["name"])
                for line in feed.lines
                if line["type"] == "membership"
            ]

        # Alone: one listen at a time (each holds eve's keystore).
        json_alone = await _listen(eve, "Eastside", json_mode=True, passphrase=PASSPHRASE)
        nursery.start_soon(json_alone.pump_stderr)
        try:
            await ana_leaves("Eastside")
            await json_alone.read_until(lambda line: line.get("change") == "removed")
        finally:
            await _stop([json_alone])
        text_alone = await _listen(eve, "Northside", json_mode=False, passphrase=PASSPHRASE)
        nursery.start_soon(text_alone.pump_stderr)
        try:
            await ana_leaves("Northside")
            said_alone = await read_text_until(text_alone, "ana removed by lead")
        finally:
            await _stop([text_alone])

        daemon = await start_daemon_process(eve, nursery)
        feeds: list[Feed] = []
        try:
            for json_mode in (True, False):
                feeds.append(await _listen(eve, "Westside", json_mode=json_mode, passphrase=None))
                nursery.start_soon(feeds[-1].pump_stderr)
            await ana_leaves("Westside")
            await feeds[0].read_until(lambda line: line.get("change") == "removed")
            said_through = await read_text_until(feeds[1], "ana removed by lead")
        finally:
            await _stop(feeds)
            daemon.process.send_signal(signal.SIGTERM)
            with trio.fail_after(COMMAND_TIMEOUT):
                code = await daemon.process.wait()
    assert code == 0, daemon.stderr.decode()

    assert (
        membership(json_alone)
        == membership(feeds[0])
        == [
            ("left", "ana", "ana"),
            ("removed", "ana", "lead"),
        ]
    )
    left = next(line for line in feeds[0].lines if line.get("change") == "left")
    assert left["member"] == left["by"]
    assert left["cell"] == "Westside"

    def lines(text: str, cell: str) -> list[str]:
        return [line.replace(cell, "CELL") for line in text.splitlines() if "ana " in line]

    assert lines(said_alone, "Northside") == lines(said_through, "Westside")
    assert any(line.endswith("ana left") for line in said_through.splitlines())
