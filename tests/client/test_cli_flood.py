"""Flood control and recovery through the real `cellrelay` console script, as people see it.

The cell is set up with the library (fast); then `cell alert-limit`, `listen` (as text for
the lead, as JSON for ana), `cell mute`, `cell unmute --here` and `cell recover` run as
separate processes, as a person or a script would run them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import trio

from cellrelay.client._client import open_client
from cellrelay.protocol.wire import RelayAddress

from ..relay.process import reap
from .cells import admit
from .conftest import RunningRelay
from .test_cli import CELLRELAY, COMMAND_TIMEOUT, PASSPHRASE, Feed, cli, environment, identity


async def read_text_until(feed: Feed, wanted: str) -> str:
    """What a text-mode `listen` printed, read until `wanted` appears in it."""
    assert feed.process.stdout is not None
    text = ""
    with trio.fail_after(COMMAND_TIMEOUT):
        while wanted not in text:
            data = await feed.process.stdout.receive_some(65536)
            assert data, f"listen ended early: {text}\n{feed.stderr.decode()}"
            text += data.decode()
    return text


async def flood_and_check(eve: Path, feed: Feed) -> None:
    """Eve sends 5 emergency alerts; a JSON `listen` (limit 3) flags and mutes her."""
    async with open_client(PASSPHRASE, home=eve) as eve_client:
        flooder = eve_client.cell("Eastside")
        await flooder.wait_synced()
        for n in range(5):
            await flooder.send_alert(f"flood {n}", priority="emergency")
    flagged = await feed.read_until(lambda line: line["type"] == "flood")
    assert (flagged["member"]["name"], flagged["alerts"], flagged["limit"]) == ("eve", 4, 3)
    await feed.read_until(lambda line: line["type"] == "muted_alert" and line["text"] == "flood 4")
    kinds = [(line["type"], line.get("text")) for line in feed.lines]
    assert [k for k in kinds if k[0] in ("alert", "muted_alert")] == [
        ("alert", "flood 0"), ("alert", "flood 1"), ("alert", "flood 2"),
        ("muted_alert", "flood 3"), ("muted_alert", "flood 4"),
    ]  # fmt: skip
    mute = next(line for line in feed.lines if line["type"] == "mute")
    assert (mute["member"]["name"], mute["muted"], mute["everyone"], mute["by"]) == (
        "eve", True, False, None)  # fmt: skip


async def test_flood_control_and_recover_from_the_command_line(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    address = str(RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key))
    lead, ana, eve = (identity(tmp_path, name) for name in ("lead", "ana", "eve"))
    async with open_client(PASSPHRASE, home=lead) as lead_client:
        cell = await lead_client.create_cell("Eastside", address)
        async with open_client(PASSPHRASE, home=ana) as ana_client:
            await admit(cell, ana_client)
        async with open_client(PASSPHRASE, home=eve) as eve_client:
            await admit(cell, eve_client)

    limit = (await cli("cell", "alert-limit", "Eastside", "3", "--json", home=lead)).json()
    assert limit == {"cell": "Eastside", "alert_limit": 3}

    feeds = {}
    for name, home, flags in (("ana", ana, ["--json"]), ("lead", lead, [])):
        process = await trio.lowlevel.open_process(
            [CELLRELAY, "listen", *flags, "--home", str(home)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=environment(),
        )  # fmt: skip
        feeds[name] = Feed(process)
        nursery.start_soon(feeds[name].pump_stderr)
    try:
        await feeds["ana"].read_until(lambda line: line["type"] == "listening")
        await flood_and_check(eve, feeds["ana"])
        # The lead reads it as text: a security line that says what to do.
        text = await read_text_until(feeds["lead"], "flood 4")
        for feed in feeds.values():
            feed.process.terminate()
        with trio.fail_after(COMMAND_TIMEOUT):
            for feed in feeds.values():
                await feed.process.wait()
    finally:
        for feed in feeds.values():
            await reap(feed.process)
    assert "security: eve (" in text
    assert "sent 4 alerts within a minute (the cell allows 3): muted on this device." in text
    assert "admins: cellrelay cell mute Eastside " in text
    assert any(line.startswith("(muted) ") and "flood 3" in line for line in text.splitlines())
    assert "eve muted on this device (flood control)" in text

    # The lead mutes eve for everyone; ana unmutes on her device only.
    muted = (await cli("cell", "mute", "Eastside", "eve", "--json", home=lead)).json()
    assert (muted["name"], muted["muted"], muted["everyone"]) == ("eve", True, True)
    said = (await cli("cell", "unmute", "Eastside", "eve", "--here", home=ana)).stdout
    assert (
        said.strip() == "Unmuted eve (" + muted["member_id"][:8] + ") on this device, in Eastside."
    )
    refused = await cli("cell", "alert-limit", "Eastside", "5", home=ana, expect=1)
    assert "only an admin" in refused.stderr

    # Recover: a new epoch and a fresh mailbox; everyone posts as before.
    recovered = (await cli("cell", "recover", "Eastside", "--json", home=lead)).json()
    assert recovered["cell"] == "Eastside"
    said = (await cli("cell", "recover", "Eastside", home=lead)).stdout
    assert "moved to a fresh mailbox" in said
    await cli("message", "Eastside", "still here", home=ana)
