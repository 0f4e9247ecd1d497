"""A storage failure refuses the requests it touches (INTERNAL); it never stops the relay.

The failure is real, not simulated: another program (here, a second SQLite connection,
as a backup tool or the sqlite3 shell would be) holds the database's write lock longer
than the store's busy timeout, so the relay's group commit, its sweeper and its admin
writes get SQLITE_BUSY. The store's busy timeout (5 s) is lowered for the test so the
waits are short. docs/protocol.md §8: INTERNAL means "the relay failed internally; retry
later", and the Store interface promises that a failed batch stored nothing.
"""

from __future__ import annotations

import sqlite3
import time

import pytest
import trio
from structlog.testing import capture_logs

import cellrelay.relay._sqlite_store as sqlite_module
from cellrelay.protocol._errors import ErrorCode
from cellrelay.protocol.wire._messages import Error, Ok, Published, Subscribed

from ..wire_client import MailboxKeys
from .conftest import PATIENCE, RelayFactory, assert_quiet, receive_deliveries, settle

BUSY_TIMEOUT = 0.5


async def test_locked_database_refuses_writes_and_the_relay_carries_on(
    relays: RelayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write lock held elsewhere refuses writes with INTERNAL; the relay carries on.

    While the lock is held: publish, create and rotate get INTERNAL, the sweeper fails
    quietly, and everything else is served; once it is released, publishing works and
    the refused publish left nothing behind (it took no seq).

    Catches a group committer or sweeper that lets the StorageError escape, which would
    cancel the relay's nursery and take every connection down with it, and a request
    handler that ends the connection instead of answering.
    """
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT", BUSY_TIMEOUT)
    store = await relays.open_sqlite()
    running = await relays.start(store=store, sweep_interval=0.5)
    with trio.fail_after(PATIENCE + 3 * BUSY_TIMEOUT), capture_logs() as logs:
        writer = await running.connect()
        keys = MailboxKeys()
        mailbox = await writer.create(keys)
        assert isinstance(await writer.auth(keys.write, "write", mailbox), Ok)
        reader = await running.connect()
        assert isinstance(await reader.auth(keys.read, "read", mailbox), Ok)
        assert isinstance(await reader.subscribe(mailbox), Subscribed)
        first = await writer.publish(mailbox, b"before the lock")
        assert isinstance(first, Published)
        assert len(await receive_deliveries(reader, 1)) == 1

        outsider = sqlite3.connect(store.path, timeout=0, isolation_level=None)
        try:
            outsider.execute("BEGIN IMMEDIATE")  # holds the write lock until ROLLBACK
            started = time.monotonic()
            refused = await writer.publish(mailbox, b"during the lock")
            assert isinstance(refused, Error), refused
            assert refused.code == ErrorCode.INTERNAL
            assert time.monotonic() - started >= BUSY_TIMEOUT * 0.9
            with pytest.raises(AssertionError, match="code=500"):
                await reader.create(MailboxKeys())
            rotated = await writer.rotate(keys.admin, mailbox, MailboxKeys(), counter=1)
            assert isinstance(rotated, Error)
            assert rotated.code == ErrorCode.INTERNAL
            # The sweeper, queued behind that commit, now meets the lock too.
            await settle(
                lambda: any(entry.get("operation") == "sweep" for entry in logs),
                what="the sweeper to meet the lock",
            )
            # Meanwhile the relay serves everyone else.
            await assert_quiet(reader)
            await assert_quiet(await running.connect())
        finally:
            outsider.execute("ROLLBACK")
            outsider.close()

        second = await writer.publish(mailbox, b"after the lock")
        assert isinstance(second, Published)
        assert second.seq == first.seq + 1  # the refused publish took no seq
        (delivered,) = await receive_deliveries(reader, 1)
        assert delivered.envelope == b"after the lock"
    assert running.rejections("internal") == 3
    failed = {entry["operation"] for entry in logs if entry["event"] == "storage_error"}
    assert {"append_batch", "sweep", "create", "rotate"} <= failed
    assert "connection_crashed" not in {entry["event"] for entry in logs}
