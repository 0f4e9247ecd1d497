"""`cellrelay cell verify`: safety numbers on the command line, alone and through a daemon.

Issue 9, finding 9. Real processes against a real relay; the cell is set up with the library
first (the command line's own join and approve are tested in test_cli.py).
"""

from __future__ import annotations

import signal
from pathlib import Path

import trio

from cellrelay.client._cli_output import Style, event_lines
from cellrelay.client._client import open_client
from cellrelay.client._events import Member, SendFailed, VerifiedKeyChanged
from cellrelay.protocol.cell import PlainMessage
from cellrelay.protocol.cell._safety import format_safety_number

from .cells import admit
from .conftest import RunningRelay
from .test_cells import address_of
from .test_cli import PASSPHRASE, cli, identity, one_line_error
from .test_cli_daemon import start_daemon_process

TEST_TIMEOUT = 180


async def _cell(running_relay: RunningRelay, lead: Path, ana: Path) -> str:
    """Eastside with lead and ana; return their safety number as the library computes it."""
    async with (
        open_client(PASSPHRASE, home=lead) as lead_client,
        open_client(PASSPHRASE, home=ana) as ana_client,
    ):
        cell = await lead_client.create_cell("Eastside", address_of(running_relay))
        await admit(cell, ana_client)
        return cell.safety_number(cell.find_member("ana"))


async def test_verify_shows_the_number_and_records_a_match(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    lead, ana = identity(tmp_path, "lead"), identity(tmp_path, "ana")
    with trio.fail_after(TEST_TIMEOUT):
        number = await _cell(running_relay, lead, ana)

        shown = await cli("cell", "verify", "Eastside", "ana", "--qr", home=lead)
        for line in format_safety_number(number).splitlines():
            assert line in shown.stdout
        assert "not verified" in shown.stdout
        assert "name tag only" in shown.stdout
        assert "\u2588" in shown.stdout or "\u2580" in shown.stdout  # the QR code
        theirs = (await cli("cell", "verify", "Eastside", "lead", "--json", home=ana)).json()
        assert theirs["safety_number"] == number
        assert theirs["verified"] is False

        refused = await cli("cell", "verify", "Eastside", "--mark-verified", home=lead, expect=1)
        assert "needs the MEMBER" in one_line_error(refused)
        marked = await cli("cell", "verify", "Eastside", "ana", "--mark-verified", home=lead)
        assert "Marked ana" in marked.stdout
        listed = (await cli("cell", "verify", "Eastside", "--json", home=lead)).lines()
        assert [(e["member"]["name"], e["verified"]) for e in listed] == [("ana", True)]

        # Through a running daemon: the same, without a passphrase.
        daemon = await start_daemon_process(ana, nursery)
        try:
            via = await cli("cell", "verify", "Eastside", "lead", home=ana, passphrase=None)
            for line in format_safety_number(number).splitlines():
                assert line in via.stdout
            assert "not verified" in via.stdout
            await cli("cell", "verify", "Eastside", "lead", "--mark-verified", home=ana,
                      passphrase=None)  # fmt: skip
            after = (
                await cli("cell", "verify", "Eastside", "--json", home=ana, passphrase=None)
            ).lines()
            assert [(e["member"]["name"], e["safety_number"], e["verified"]) for e in after] == [
                ("lead", number, True)
            ]
        finally:
            daemon.process.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                await daemon.process.wait()


def test_the_loud_lines() -> None:
    """What `listen` prints for a verified member's changed keys and for a failed send."""
    style = Style(colour=False)
    impostor = Member(member_id=bytes.fromhex("5d1f09aa") + bytes(12), name="ana")
    changed = VerifiedKeyChanged(
        cell="Eastside", member=impostor, verified_id=bytes.fromhex("a1c6f05e") + bytes(12)
    )
    lines = event_lines(changed, style)
    assert lines[0] == (
        "[Eastside] SECURITY: ana (5d1f09aa) has other keys than the ana you verified"
        " (a1c6f05e): a new phone, or an impostor."
    )
    assert "cellrelay cell verify Eastside 5d1f09aa" in lines[1]
    failed = SendFailed(
        cell="Eastside",
        content=PlainMessage(sent_at_ms=0, text="on my way"),
        reason="you were removed from 'Eastside' as you sent this; it was not sent",
    )
    lines = event_lines(failed, style)
    assert lines[0].startswith("[Eastside] NOT SENT (plainmessage ")
    assert lines[0].endswith(": on my way")
    assert "it was not sent" in lines[1]
