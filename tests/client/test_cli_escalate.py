"""The liaison's commands (issue 14 item 3): `cell escalation`, `cell neighbour`, `escalate`.

Real processes through the installed console script and a real relay: first alone on one
pair of cells (Eastside and Westside), then through a real daemon on a twin pair
(Northside and Southside); what they print is compared byte for byte, for people and for
scripts, errors included. Then the daemon escalates by itself: a confirmed alert that
nobody answers reaches the neighbouring cell once T has passed.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import trio

from cellrelay.client._client import open_client
from cellrelay.protocol.wire import RelayAddress

from .cells import admit
from .conftest import RunningRelay
from .test_cli import COMMAND_TIMEOUT, PASSPHRASE, Result, cli, identity
from .test_cli_daemon import start_daemon_process

BOTH = ((), ("--json",))
# (arguments, expected exit status, modes); CELL, NEIGHBOUR and ALERT are filled in.
SCRIPT: tuple[tuple[tuple[str, ...], int, tuple[tuple[str, ...], ...]], ...] = (
    (("cell", "escalation", "CELL", "3", "--after", "15m"), 0, ((),)),
    (("cell", "escalation", "CELL", "0"), 0, (("--json",),)),
    (("cell", "neighbour", "CELL", "NEIGHBOUR", "--label", "East crew"), 0, BOTH),
    (("escalate", "CELL", "ALERT", "--to", "NEIGHBOUR"), 1, BOTH),  # not confirmed yet
    (("mark", "CELL", "ALERT", "confirmed"), 0, ((),)),
    (("escalate", "CELL", "ALERT", "--to", "NEIGHBOUR"), 0, ((),)),
    (("escalate", "CELL", "ALERT", "--to", "NEIGHBOUR"), 0, (("--json",),)),
    (("escalate", "CELL", "ALERT", "--to", "CELL"), 1, ((),)),
)


def _normal(text: str, names: dict[str, str]) -> str:
    for real, placeholder in names.items():
        text = text.replace(real, placeholder)
    text = re.sub(r"\b\d\d:\d\d(:\d\d)?\b", "HH:MM", text)
    text = re.sub(r'"(sent_at_ms|epoch|expires_at)": \d+', r'"\1": N', text)
    text = re.sub(r'"(message_id|forwarded_id)": "[0-9a-f]+"', r'"\1": "M"', text)
    text = re.sub(r"alert [0-9a-f]{8} there", "alert F there", text)
    text = re.sub(r"where it is alert [0-9a-f]{8}", "where it is alert F", text)
    return re.sub(r"\(until [^)]*\)", "(until T)", text)


async def run_script(
    home: Path, cell: str, neighbour: str, alert: str, *, passphrase: str | None
) -> list[Result]:
    names = {cell: "CELL", neighbour: "NEIGHBOUR", alert: "ALERT", alert[:8]: "ALERT"}
    results = []
    for args, status, modes in SCRIPT:
        for flags in modes:
            filled = {"CELL": cell, "NEIGHBOUR": neighbour, "ALERT": alert}
            command = [filled.get(a, a) for a in args]
            result = await cli(*command, *flags, home=home, passphrase=passphrase, expect=status)
            results.append(Result(result.returncode, _normal(result.stdout, names),
                                  _normal(result.stderr, names)))  # fmt: skip
    return results


async def test_the_liaisons_commands_alone_and_through_the_daemon(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    address = str(RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key))
    homes = {name: identity(tmp_path, name) for name in ("lead", "rory")}
    alerts: dict[str, str] = {}
    async with open_client(PASSPHRASE, home=homes["lead"]) as lead_client:
        for name in ("Eastside", "Westside", "Northside", "Southside"):
            cell = await lead_client.create_cell(name, address)
            async with open_client(PASSPHRASE, home=homes["rory"]) as client:
                joined = await admit(cell, client)
                if name in ("Eastside", "Northside"):
                    alert = await joined.send_alert(f"ICE van at the school ({name})")
                    alerts[name] = alert.alert_id.hex()
                    await cell.wait_synced()

    alone = await run_script(homes["lead"], "Eastside", "Westside", alerts["Eastside"],
                             passphrase=PASSPHRASE)  # fmt: skip
    # Rory is an ordinary member: the library refuses before anything is sent.
    refused = await cli("escalate", "Eastside", alerts["Eastside"][:8], "--to", "Westside",
                        home=homes["rory"], expect=1)  # fmt: skip
    assert "only a liaison, a dispatcher or an admin of both cells can escalate" in refused.stderr

    daemon = await start_daemon_process(homes["lead"], nursery)
    try:
        through = await run_script(homes["lead"], "Northside", "Southside", alerts["Northside"],
                                   passphrase=None)  # fmt: skip
        # -- the daemon escalates by itself once T has passed --------------------------------
        await cli("cell", "escalation", "Northside", "2", "--after", "1s", home=homes["lead"],
                  passphrase=None)  # fmt: skip
        async with open_client(PASSPHRASE, home=homes["rory"]) as client:
            rory = client.cell("Northside")
            await rory.wait_synced()
            lonely = await rory.send_alert("second van, nobody there", priority="emergency")
        await cli("mark", "Northside", lonely.alert_id.hex(), "confirmed", home=homes["lead"],
                  passphrase=None)  # fmt: skip
        with trio.fail_after(60):
            while True:
                shown = await cli("alerts", "Southside", "--json", home=homes["lead"],
                                  passphrase=None)  # fmt: skip
                if "second van, nobody there" in shown.stdout:
                    break
                await trio.sleep(0.5)
        listed = json.loads(shown.stdout)
        (copy,) = [a for a in listed if a.get("text") == "second van, nobody there"]
        assert copy["rollup"]["escalated_from"] == "East crew"  # the label set for Northside
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
    assert said[0] == (
        "In CELL, a confirmed alert that fewer than 3 members answer within 15m of its"
        " confirmation now goes to the neighbouring cells, through a liaison.\n"
    )
    assert '"below": 0' in said[1]
    assert said[2].startswith("CELL and NEIGHBOUR are neighbours")
    assert "show as from 'East crew'" in said[2]
    assert json.loads(said[3]) == {
        "cell": "CELL",
        "label": "East crew",
        "neighbours": ["NEIGHBOUR"],
    }
    errors = [r.stderr for r in alone if r.returncode]
    assert "only a confirmed alert goes to a neighbouring cell; this one is reported" in errors[0]
    assert said[7].startswith("Escalated ALERT from CELL to NEIGHBOUR, where it is alert F.")
    assert "escalated to NEIGHBOUR (via you): no answers yet" in said[7]
    assert '"forwarded": false' in said[8]
    assert '"note": null' in said[8]
    assert "an alert is escalated to another cell" in errors[-1]
