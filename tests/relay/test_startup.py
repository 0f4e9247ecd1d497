"""Starting a relay: it sweeps before it serves, owns its database, and names a port it cannot take.

Issue 10, items 3, 6 and 7:

* envelopes that expired while the relay was stopped stayed on disk until its first
  sweep (60 s by default) while it already served;
* a second relay started on the same database without a word;
* with only the ops port taken, the error read `listen: cannot listen (Address already in
  use)`, naming neither the right setting nor the address.
"""

from __future__ import annotations

import os
import sqlite3
from typing import TYPE_CHECKING

import pytest
import trio
from structlog.testing import capture_logs

from cellrelay.protocol.wire._messages import Ok, Published
from cellrelay.relay._sqlite_store import SQLiteStore
from cellrelay.relay._store import StorageError

from ..wire_client import MailboxKeys, WireClient
from .conftest import PATIENCE, RelayFactory
from .process import open_relay_process, run_serve_to_exit

if TYPE_CHECKING:
    from pathlib import Path

BASE = 1_800_000_000.0  # the relays' clock in the sweep test, unix seconds


async def test_envelopes_that_expired_while_stopped_are_gone_before_it_serves(
    relays: RelayFactory,
) -> None:
    """A relay restarted after an envelope expired deletes it before it listens.

    The second relay runs on the same database with a clock 1000 s later and the
    default sweep interval (60 s): by the time it reports itself listening, the expired
    envelope is gone from the file, not merely hidden from reads, and the unexpired one
    is still there.
    """
    store = await relays.open_sqlite()
    first = await relays.start(store=store, now=lambda: BASE)
    with trio.fail_after(PATIENCE):
        writer = await first.connect()
        keys = MailboxKeys()
        mailbox = await writer.create(keys)
        assert isinstance(await writer.auth(keys.write, "write", mailbox), Ok)
        short = await writer.publish(mailbox, b"expires soon", expires_at=int(BASE) + 100)
        long = await writer.publish(mailbox, b"expires later", expires_at=int(BASE) + 10_000)
        assert isinstance(short, Published)
        assert isinstance(long, Published)
        await first.relay.shutdown()

        with capture_logs() as logs:
            second = await relays.start(store=store, now=lambda: BASE + 1000)
        stored = await store.read_after(mailbox, 0, limit=10, now=0)  # now=0 hides nothing
        assert [e.seq for e in stored] == [long.seq]
        assert second.relay.config.sweep_interval == 60
    events = [entry["event"] for entry in logs]
    assert events.index("expired_deleted") < events.index("relay_listening")


async def test_two_stores_cannot_share_one_database(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    first = await SQLiteStore.open(path, reserve_bytes=0)
    try:
        with pytest.raises(
            StorageError, match=rf"in use by another relay \(process {os.getpid()}\)"
        ):
            await SQLiteStore.open(path, reserve_bytes=0)
    finally:
        await first.aclose()
    # Closing releases it.
    second = await SQLiteStore.open(path, reserve_bytes=0)
    await second.aclose()


async def test_a_second_relay_on_one_database_refuses_with_one_line(tmp_path: Path) -> None:
    """The second relay exits with status 2 and one line naming the first one's process.

    The first one is undisturbed: it still serves, and the database holds what it stored.
    """
    data_dir = tmp_path / "relay"
    with trio.fail_after(3 * PATIENCE):
        async with open_relay_process(data_dir) as first:
            status, stderr = await run_serve_to_exit(data_dir)
            assert status == 2, stderr
            lines = [line for line in stderr.splitlines() if line.startswith("cellrelay relay:")]
            assert lines == [
                f"cellrelay relay: {data_dir / 'relay.sqlite3'} is in use by another relay "
                f"(process {first.process.pid}); stop it first: two relays must never share "
                "one database"
            ], stderr
            assert "Traceback" not in stderr
            client = await WireClient.connect(first.port, first.public_key)
            keys = MailboxKeys()
            mailbox = await client.create(keys)
            assert isinstance(await client.auth(keys.write, "write", mailbox), Ok)
            assert isinstance(await client.publish(mailbox, b"still mine"), Published)
            await client.aclose()
            assert await first.terminate() == 0
    # A killed relay leaves no stale lock: the kernel drops it with the process.
    async with open_relay_process(data_dir) as again:
        assert await again.kill() != 0
    async with open_relay_process(data_dir) as after_kill:
        assert await after_kill.terminate() == 0
    conn = sqlite3.connect(data_dir / "relay.sqlite3")
    try:
        assert conn.execute("SELECT count(*) FROM envelopes").fetchone() == (1,)
    finally:
        conn.close()


@pytest.mark.parametrize("setting", ["listen", "ops_listen"])
async def test_a_taken_port_is_named_with_its_setting_and_address(
    tmp_path: Path, setting: str
) -> None:
    """With one port taken, the relay's one line names that setting and its address."""
    holder = trio.socket.socket()
    try:
        await holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        address = f"127.0.0.1:{port}"
        status, stderr = await run_serve_to_exit(tmp_path / "relay", **{setting: address})
    finally:
        holder.close()
    assert status == 2, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("cellrelay relay:")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(
        f"cellrelay relay: {setting}: cannot listen on {address} (Address already in use); "
    ), lines
    assert f"sport = :{port}" in lines[0]
    assert "Traceback" not in stderr
