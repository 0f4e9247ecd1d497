"""Panic and duress end to end: after either, nothing of the cell is readable on the device.

A real relay on loopback carries a cell whose name and alert are a unique canary; the
member "ana" receives the alert, so her keystore holds the cell's keys, its mailboxes and
the canary (a control checks that, by decrypting it). Then, through the installed
`cellrelay` console script: `keystore set-duress` and an unlock with the duress
passphrase, or `cellrelay panic` (with a daemon or a listener running for her). Afterwards
every file under her data directory is scanned for the canary, her identity's private
keys, the cell's keys and its mailbox ids, as bytes, hex and UTF-16.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from cellrelay.client import _auth, _client, _daemon, _panic
from cellrelay.client._client import create_identity
from cellrelay.client._events import AlertReceived
from cellrelay.client._keystore import TEST_COST
from cellrelay.client._panic import destroy_local_state, set_duress_passphrase
from cellrelay.client._state import ClientState
from cellrelay.protocol.cell._group import CellCrypto
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.wire import RelayAddress

from .cells import Recorder, admit, members, passphrase_of
from .conftest import RunningRelay
from .hostile import read_keystore
from .test_cli import CELLRELAY, COMMAND_TIMEOUT, Feed, cli, environment, one_line_error

DURESS = "the passphrase ana gives under pressure"
TEST_TIMEOUT = 120


def test_file_names_agree() -> None:
    """client/_panic.py repeats the names it destroys; they must be the real ones."""
    assert _panic.KEYSTORE_NAME == _client.KEYSTORE_NAME
    assert _panic.DAEMON_SOCKET == _daemon.SOCKET_NAME
    assert _panic.DAEMON_LOCK == _daemon.LOCK_NAME
    assert _panic.DAEMON_TOKEN == _auth.TOKEN_NAME


async def _canary_cell(relay: RunningRelay, tmp_path: Path) -> tuple[Path, list[bytes]]:
    """Ana in a canary cell, holding its canary alert; her home and what must not survive."""
    canary = secrets.token_hex(6)
    cell_name = f"cell-{canary}"
    text = f"agents at canary-{canary}"
    address = str(RelayAddress("127.0.0.1", relay.port, relay.public_key))
    async with members(tmp_path, "lead", "ana") as clients, trio.open_nursery() as nursery:
        lead = await clients["lead"].create_cell(cell_name, address)
        ana = await admit(lead, clients["ana"])
        recorder = Recorder(ana)
        await nursery.start(recorder.run)
        await lead.send_alert(text, place=f"place-{canary}", priority="emergency")
        await recorder.wait_for(lambda e: isinstance(e, AlertReceived) and e.alert.text == text)
        nursery.cancel_scope.cancel()
    home = tmp_path / "ana"
    state = read_keystore(home / "keystore", passphrase_of("ana"))
    assert text.encode() in state.encode()  # the control: the search would find it
    return home, [text.encode(), cell_name.encode(), *_secrets_of(state)]


def _secrets_of(state: ClientState) -> list[bytes]:
    """The identity's private keys and every cell's keys, ids and mailboxes."""
    found = [state.identity[1:33], state.identity[33:65]]  # Ed25519 seed, X25519 private
    identity = Identity.from_bytes(state.identity)
    for record in state.cells:
        crypto = CellCrypto.from_bytes(record.crypto, identity)
        saved = crypto._s
        found += [saved.cell_id, *saved.group_keys, saved.control_read_key]
        found += [bytes(e.secret) for e in saved.epochs.values() if e.secret is not None]
        found += [bytes(record.group_mailbox), bytes(record.control_mailbox)]
    assert all(len(s) >= 16 for s in found)
    return [bytes(s) for s in found]


def _readable(directory: Path, needles: list[bytes]) -> list[str]:
    """Which files under `directory` hold any needle (as bytes, hex or UTF-16)."""
    hits = []
    for path in sorted(directory.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        for needle in needles:
            forms = [needle, needle.hex().encode()]
            if needle.isascii():
                forms.append(needle.decode().encode("utf-16-le"))
            if any(form in data for form in forms):
                hits.append(f"{path.name}: {needle[:12]!r}")
    return hits


@asynccontextmanager
async def _running(
    nursery: trio.Nursery, passphrase: str, *args: str, until: Callable[[dict[str, Any]], bool]
) -> AsyncIterator[tuple[trio.Process, dict[str, Any]]]:
    """A `cellrelay ARGS` process, once it printed a JSON line satisfying `until`; killed after."""
    process = await trio.lowlevel.open_process(
        [CELLRELAY, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=environment(passphrase),
    )  # fmt: skip
    try:
        feed = Feed(process)
        nursery.start_soon(feed.pump_stderr)
        yield process, await feed.read_until(until)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def _announced(line: dict[str, Any]) -> bool:
    return line.get("type") == "daemon_listening"


async def test_duress_unlock_destroys_the_cell_and_looks_like_a_new_install(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        home, needles = await _canary_cell(running_relay, tmp_path)
        passphrase = passphrase_of("ana")
        before = (await cli("id", "show", "--json", home=home, passphrase=passphrase)).json()
        assert before["cells"] == 1

        set_result = await cli(
            "keystore", "set-duress", "--duress-passphrase-file", "-", "--json",
            home=home, passphrase=passphrase, stdin=DURESS.encode() + b"\n",
        )  # fmt: skip
        assert set_result.json() == {"duress": True}
        assert _readable(home, needles[:2]) == []  # still encrypted, as before

        # Under duress: the same command, the same kind of answer, nothing else on stderr.
        shown = await cli("id", "show", "--json", home=home, passphrase=DURESS)
        assert shown.stderr == ""
        after = shown.json()
        assert after.keys() == before.keys()
        assert after["name"] == "ana"
        assert after["member_id"] != before["member_id"]
        assert after["cells"] == 0
        people = await cli("id", "show", home=home, passphrase=DURESS)
        assert after["member_id"] in people.stdout
        cells = await cli("cell", "list", "--json", home=home, passphrase=DURESS)
        assert cells.stderr == ""
        assert cells.json() == {"cells": [], "waiting": []}

        assert _readable(home, needles) == []
        assert sorted(p.name for p in home.iterdir()) == [
            "keystore",
            "keystore.lock",
            "keystore.state",
        ]
        # The real passphrase now opens nothing: it is just wrong.
        wrong = await cli("id", "show", home=home, passphrase=passphrase, expect=1)
        assert "wrong passphrase" in wrong.stderr


async def test_panic_kills_the_daemon_and_destroys_everything(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        home, needles = await _canary_cell(running_relay, tmp_path)
        (home / "notes.txt").write_text("not cellrelay's")  # panic must leave it alone
        daemon = ("daemon", "--json", "--listen", "0", "--home", str(home))
        async with _running(nursery, passphrase_of("ana"), *daemon, until=_announced) as (
            process,
            announced,
        ):
            assert await trio.Path(announced["socket"]).exists()
            assert await trio.Path(home / "daemon.token").exists()

            # No passphrase, no question, one line.
            panicked = await cli("panic", home=home, passphrase=None)
            assert panicked.stderr == ""
            assert panicked.stdout.splitlines() == [
                f"Destroyed the identity and its cells in {home} (stopped 1 cellrelay process)"
            ]
            with trio.fail_after(COMMAND_TIMEOUT):
                assert await process.wait() == -signal.SIGKILL
        assert sorted(p.name for p in home.iterdir()) == ["notes.txt"]
        assert _readable(home, needles) == []

        again = await cli("panic", "--json", home=home, passphrase=None)
        assert json.loads(again.stdout) == {"destroyed": False, "stopped": 0, "home": str(home)}


async def test_panic_kills_a_listener_and_removes_the_directory(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        home, needles = await _canary_cell(running_relay, tmp_path)
        listen = ("listen", "--json", "--home", str(home))
        async with _running(
            nursery, passphrase_of("ana"), *listen, until=lambda line: line["type"] == "listening"
        ) as (process, _):
            done = await trio.to_thread.run_sync(destroy_local_state, home)  # the library's
            assert (done.found, done.stopped) == (True, 1)
            with trio.fail_after(COMMAND_TIMEOUT):
                assert await process.wait() == -signal.SIGKILL
        assert not home.exists()
        assert _readable(tmp_path, needles[2:4]) == []  # ana's keys, anywhere in the test


def test_results_are_plain(tmp_path: Path) -> None:
    """Nothing there: panic says so and succeeds (someone may press it twice)."""
    assert destroy_local_state(tmp_path / "nobody") == _panic.LocalStateDestroyed(
        found=False, stopped=0
    )


async def test_daemon_started_under_duress_serves_the_new_identity(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        home, needles = await _canary_cell(running_relay, tmp_path)
        set_duress_passphrase(passphrase_of("ana"), DURESS, home=home)
        daemon = ("daemon", "--json", "--home", str(home))
        async with _running(nursery, DURESS, *daemon, until=_announced) as (process, _):
            # Through the daemon (no passphrase): what a new install shows.
            shown = (await cli("id", "show", "--json", home=home, passphrase=None)).json()
            assert (shown["name"], shown["cells"]) == ("ana", 0)
            assert _readable(home, needles) == []
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(COMMAND_TIMEOUT):
                assert await process.wait() == 0
        assert _readable(home, needles) == []


async def test_set_duress_refuses_the_passphrase_itself(tmp_path: Path) -> None:
    home = tmp_path / "ana"
    create_identity(passphrase_of("ana"), "ana", home=home, cost=TEST_COST)
    same = await cli(
        "keystore", "set-duress", "--duress-passphrase-file", "-", home=home,
        passphrase=passphrase_of("ana"), expect=1, stdin=passphrase_of("ana").encode() + b"\n",
    )  # fmt: skip
    assert "must differ" in one_line_error(same)
    missing = await cli(
        "keystore", "set-duress", home=home, passphrase=passphrase_of("ana"), expect=1
    )
    assert "no duress passphrase" in one_line_error(missing)
