"""The dispatcher's commands (issue 14): `cell role`, `cell verify-first`, `mark`, `alerts`.

Each runs as a real process through the installed console script, first alone on one cell,
then through a real daemon on a twin cell (same members, same roles), and what they print
is compared byte for byte, for people and for scripts, errors included; then the words a
dispatcher reads are checked (docs/workflow.md shows the same sequence).
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import trio

from cellrelay.client._client import open_client
from cellrelay.protocol.cell._content import MessageId, Step, VerificationStep
from cellrelay.protocol.wire import RelayAddress

from ..relay.process import reap
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
from .test_cli_flood import read_text_until

BOTH = ((), ("--json",))
# (arguments, expected exit status, modes); CELL and ALERT are filled in per cell.
SCRIPT: tuple[tuple[tuple[str, ...], int, tuple[tuple[str, ...], ...]], ...] = (
    (("cell", "role", "CELL", "dana", "dispatcher"), 0, ((),)),
    (("cell", "role", "CELL", "dana", "dispatcher"), 1, BOTH),
    (("cell", "role", "CELL", "rory", "responder"), 0, (("--json",),)),
    (("cell", "role", "CELL", "nobody", "responder"), 1, BOTH),
    (("cell", "verify-first", "CELL", "on"), 0, BOTH),
    (("alerts", "CELL"), 0, BOTH),
    (("mark", "CELL", "ALERT", "verifying", "--note", "calling the caller back"), 0, ((),)),
    (("mark", "CELL", "ALERT", "confirmed", "--note", "two vans"), 0, (("--json",),)),
    (("alerts", "CELL"), 0, BOTH),
    (("mark", "CELL", "ffff", "confirmed"), 1, BOTH),
    (("mark", "CELL", "ALERT", "resolved"), 0, ((),)),
    (("cell", "verify-first", "CELL", "off"), 0, ((),)),
)


def _normal(text: str, cell: str, alert: str) -> str:
    text = text.replace(cell, "CELL").replace(alert, "ALERT").replace(alert[:8], "ALERT")
    text = re.sub(r"\b\d\d:\d\d(:\d\d)?\b", "HH:MM", text)  # clock times
    text = re.sub(r'"(sent_at_ms|epoch|expires_at)": \d+', r'"\1": N', text)
    text = re.sub(r'"message_id": "[0-9a-f]+"', '"message_id": "M"', text)
    return re.sub(r"\(until [^)]*\)", "(until T)", text)


async def run_script(home: Path, cell: str, alert: str, *, passphrase: str | None) -> list[Result]:
    results = []
    for args, status, modes in SCRIPT:
        for flags in modes:
            command = [cell if a == "CELL" else alert if a == "ALERT" else a for a in args]
            result = await cli(*command, *flags, home=home, passphrase=passphrase, expect=status)
            results.append(
                Result(
                    result.returncode,
                    _normal(result.stdout, cell, alert),
                    _normal(result.stderr, cell, alert),
                )
            )
    return results


async def test_the_dispatchers_commands_alone_and_through_the_daemon(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    address = str(RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key))
    homes = {name: identity(tmp_path, name) for name in ("lead", "dana", "rory")}
    alerts: dict[str, str] = {}
    async with open_client(PASSPHRASE, home=homes["lead"]) as lead_client:
        for name in ("Eastside", "Westside"):
            cell = await lead_client.create_cell(name, address)
            for member in ("dana", "rory"):
                async with open_client(PASSPHRASE, home=homes[member]) as client:
                    joined = await admit(cell, client)
                    if member == "rory":
                        alert = await joined.send_alert(f"ICE van at the school ({name})")
                        alerts[name] = alert.alert_id.hex()

    alone = await run_script(homes["lead"], "Eastside", alerts["Eastside"], passphrase=PASSPHRASE)
    # A responder may not verify: the library refuses before anything is sent.
    refused = await cli("mark", "Eastside", alerts["Eastside"][:8], "confirmed",
                        home=homes["rory"], expect=1)  # fmt: skip
    assert refused.stderr == (
        "cellrelay: only a dispatcher or an admin of 'Eastside' can mark a report confirmed\n"
    )

    daemon = await start_daemon_process(homes["lead"], nursery)
    try:
        through = await run_script(homes["lead"], "Westside", alerts["Westside"], passphrase=None)
    finally:
        daemon.process.send_signal(signal.SIGTERM)
        with trio.fail_after(COMMAND_TIMEOUT):
            code = await daemon.process.wait()
    assert code == 0, daemon.stderr.decode()
    assert "Traceback" not in daemon.stderr.decode()

    labels = [a for a, _, modes in SCRIPT for _ in modes]
    for args, (one, other) in zip(labels, zip(alone, through, strict=True), strict=True):
        assert one.stdout == other.stdout, (args, one, other)
        if one.returncode:
            assert one.stderr == other.stderr, (args, one, other)

    said = [r.stdout for r in alone]
    assert said[0].startswith("dana (")
    assert said[0].endswith(
        ") is now dispatcher of CELL: verifies, confirms and resolves reports.\n"
    )
    assert '"role": "responder"' in said[3]
    assert said[6].startswith("In CELL, reports now go to dispatchers and admins first")
    assert "UNVERIFIED" in said[8]  # the admin sees the held report, marked unverified
    assert '"verification": "reported"' in said[9]
    assert "VERIFYING" in said[10]
    assert '"calling the caller back"' in said[10]
    assert '"verification": "confirmed"' in said[11]
    assert 'CONFIRMED by you HH:MM "two vans"' in said[12]
    assert '"name": "lead"' in said[13]
    assert "RESOLVED" in said[16]
    errors = [r.stderr for r in alone if r.returncode]
    assert "cellrelay: 'dana' is a dispatcher already\n" in errors


async def test_listen_shows_each_step_and_a_forged_one_as_a_security_warning(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """`cellrelay listen`, as text and as JSON, in a verify-first cell: a member's feed shows
    nothing of a report until a dispatcher confirms it, then the alert and each step with who
    took it; a responder's forged "confirmed" is a security warning naming them."""
    address = str(RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key))
    homes = {name: identity(tmp_path, name) for name in ("lead", "dana", "rory", "mo")}
    async with open_client(PASSPHRASE, home=homes["lead"]) as lead_client:
        cell = await lead_client.create_cell("Eastside", address)
        joined = {}
        for name in ("dana", "rory", "mo"):
            async with open_client(PASSPHRASE, home=homes[name]) as client:
                joined[name] = await admit(cell, client)
        await cell.set_role(cell.find_member("dana"), "dispatcher")
        await cell.set_role(cell.find_member("rory"), "responder")
        await cell.set_verify_first(True)

    feeds = {}
    for name, flags in (("mo", ["--json"]), ("lead", [])):
        process = await trio.lowlevel.open_process(
            [CELLRELAY, "listen", *flags, "--home", str(homes[name])],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=environment(),
        )  # fmt: skip
        feeds[name] = Feed(process)
        nursery.start_soon(feeds[name].pump_stderr)
    try:
        await feeds["mo"].read_until(lambda line: line["type"] == "listening")
        # The lead's text feed must be live too: caught up later, it would show the report
        # once, already confirmed, and never as unverified.
        await feeds["lead"].stderr_until("Listening to ")
        async with open_client(PASSPHRASE, home=homes["rory"]) as client:
            rory = client.cell("Eastside")
            report = await rory.send_alert("ICE van at the school", priority="emergency")
            forged = VerificationStep(sent_at_ms=rory._now_ms(), alert_id=MessageId(report.alert_id),
                                      step=Step.CONFIRMED)  # fmt: skip
            await rory._send(forged, report.expires_at)
        warning = await feeds["mo"].read_until(lambda line: line["type"] == "security_warning")
        assert warning["reason"] == "RoleRefused"
        assert "rory (responder) may not mark a report confirmed" in warning["detail"]
        assert not any(line["type"] == "alert" for line in feeds["mo"].lines)  # held
        async with open_client(PASSPHRASE, home=homes["dana"]) as client:
            dana = client.cell("Eastside")
            await dana.wait_synced()
            await dana.verify(report.alert_id, "verifying", note="calling back")
            await dana.verify(report.alert_id, "confirmed", note="two vans")
        rung = await feeds["mo"].read_until(lambda line: line["type"] == "alert")
        assert rung["priority"] == "emergency"
        assert rung["rollup"]["verification"] == "confirmed"
        assert rung["rollup"]["verified_by"]["name"] == "dana"
        assert rung["rollup"]["verified_by"]["note"] == "two vans"
        step = await feeds["mo"].read_until(lambda line: line["type"] == "verification")
        assert (step["from"]["name"], step["step"]) == ("dana", "confirmed")
        assert step["from"]["role"] == "dispatcher"
        # The lead is an admin: it saw the report unverified at once, then each step.
        text = await read_text_until(feeds["lead"], "CONFIRMED ")
        for feed in feeds.values():
            feed.process.terminate()
        with trio.fail_after(COMMAND_TIMEOUT):
            for feed in feeds.values():
                await feed.process.wait()
    finally:
        for feed in feeds.values():
            await reap(feed.process)
    assert "UNVERIFIED" in text
    assert "dana: VERIFYING " in text
    assert '"calling back"' in text
    assert "security warning: refused a message: RoleRefused (rory (responder)" in text
