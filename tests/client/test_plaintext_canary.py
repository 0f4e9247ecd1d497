"""A unique marker in an alert never appears outside the members' apps.

A relay process on SQLite (database, WAL and logs in tmp_path) serves three members in
this process through a TCP proxy that records every byte both ways. The marker goes into
an alert's text and place, a reply's note and a plain message; once every member has
read them, the marker must be in none of: the bytes that crossed the socket, the relay's
files (while it runs, with its WAL, and after it stopped), the relay's logs (debug level),
the client library's logs, or the members' keystore files as they are on disk. As
controls, the decrypted keystores do hold it (so the search would find it if it leaked
in clear), and traffic did go through the proxy.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import structlog
import trio

from cellrelay.client._events import AlertReceived, MessageReceived, StatusReceived
from cellrelay.protocol.cell._content import Status
from cellrelay.protocol.wire import RelayAddress

from ..relay.process import open_relay_process
from .cells import Recorder, admit, members, passphrase_of
from .hostile import RecordingProxy, keystore_payload

TEST_TIMEOUT = 60
NAMES = ("lead", "ana", "ben")


def files_under(directory: Path) -> dict[str, bytes]:
    """Every regular file under `directory`, by relative path."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def leaks(marker: bytes, places: dict[str, bytes]) -> list[str]:
    """The names of the places whose bytes hold `marker` (or its UTF-16, or its hex)."""
    forms = (marker, marker.decode().encode("utf-16-le"), marker.hex().encode())
    return [name for name, data in places.items() if any(form in data for form in forms)]


async def test_marker_never_leaves_the_apps(tmp_path: Path, nursery: trio.Nursery) -> None:
    marker = f"canary-{secrets.token_hex(8)}"
    relay_dir = tmp_path / "relay"
    homes = tmp_path / "members"
    with trio.fail_after(TEST_TIMEOUT), structlog.testing.capture_logs() as client_logs:
        async with open_relay_process(relay_dir, log_level="debug") as relay:
            proxy = RecordingProxy(relay.port)
            proxy_port = await nursery.start(proxy.serve)
            address = str(RelayAddress("127.0.0.1", proxy_port, relay.public_key))
            async with members(homes, *NAMES) as clients:
                lead = await clients["lead"].create_cell("Eastside", address)
                cells = {
                    "lead": lead,
                    "ana": await admit(lead, clients["ana"]),
                    "ben": await admit(lead, clients["ben"]),
                }
                recorders = {name: Recorder(cell) for name, cell in cells.items()}
                for recorder in recorders.values():
                    await nursery.start(recorder.run)

                alert = await lead.send_alert(
                    f"Agents at {marker}", place=f"near {marker}", priority="emergency"
                )
                await cells["ana"].reply(
                    alert.alert_id, Status.RESPONDING, note=f"on my way to {marker}"
                )
                await cells["ben"].send_message(f"copy {marker}")
                for name, recorder in recorders.items():
                    if name != "lead":
                        await recorder.wait_for(
                            lambda e: isinstance(e, AlertReceived) and marker in e.alert.text
                        )
                    if name != "ana":
                        await recorder.wait_for(
                            lambda e: (
                                isinstance(e, StatusReceived) and marker in (e.reply.note or "")
                            )
                        )
                    if name != "ben":
                        await recorder.wait_for(
                            lambda e: isinstance(e, MessageReceived) and marker in e.message.text
                        )

                running_files = files_under(relay_dir)
                assert any(name.endswith("-wal") for name in running_files), sorted(running_files)
                assert leaks(marker.encode(), running_files) == []
            await relay.terminate()
            assert leaks(marker.encode(), files_under(relay_dir)) == []
            assert (
                leaks(
                    marker.encode(),
                    {"relay log": bytes(relay.stderr), "relay stdout": bytes(relay.stdout)},
                )
                == []
            )

    assert proxy.connections >= len(NAMES)
    assert len(proxy.upstream) > 0
    assert len(proxy.downstream) > 0
    assert (
        leaks(
            marker.encode(),
            {"client to relay": bytes(proxy.upstream), "relay to client": bytes(proxy.downstream)},
        )
        == []
    )
    assert leaks(marker.encode(), {"client logs": repr(client_logs).encode()}) == []
    assert leaks(marker.encode(), files_under(homes)) == []
    for name in NAMES:  # the control: it is in there, encrypted
        assert marker.encode() in keystore_payload(homes / name / "keystore", passphrase_of(name))
