"""A full disk: writes are refused with STORAGE_FULL, everything else goes on, the relay recovers.

Issue 10, item 2: on a 16 MiB filesystem every refused publish got INTERNAL and one
`storage_error` log line (over a thousand lines a second, filling the disk further), an
admin delete got INTERNAL, the sweeper failed, and the relay stayed stuck. Two tests:

* Everywhere: the database itself is made full with SQLite's `max_page_count`
  (`SQLiteStore.limit_pages`), a real "database or disk is full" from SQLite, on an
  in-process relay over loopback.
* As root: a real relay process on a tmpfs of a few MiB that the test mounts, filled by
  publishing until the filesystem has no room; then restarted while the disk is full,
  with and without the reserve the relay keeps for that case. Skipped, with the reason,
  where a tmpfs cannot be mounted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
import trio
from structlog.testing import capture_logs

from cellrelay.protocol._errors import ErrorCode
from cellrelay.protocol.wire._messages import (
    Error,
    Fetch,
    MailboxId,
    Message,
    Ok,
    Page,
    Published,
    Subscribed,
)
from cellrelay.relay._sqlite_store import RESERVE_SUFFIX, SQLiteStore, open_sqlite_store
from cellrelay.relay._store import StorageFullError

from ..wire_client import MailboxKeys, WireClient
from .conftest import PATIENCE, RelayFactory, publish_many, receive_deliveries, settle
from .process import RelayProcess, http_get, open_relay_process, run_serve_to_exit

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

# Big envelopes fill a small disk in few publishes: each takes about four overflow pages.
ENVELOPE = 16_000
# The filler mailbox's envelopes in the page-limit test: 3.2 MB, so deleting it frees more
# than the 2 MiB of room (WAL_ROOM) the store wants before it takes writes again.
FILLER = 200


def _is_full(answer: Message) -> bool:
    return isinstance(answer, Error) and answer.code == ErrorCode.STORAGE_FULL


async def _open_mailbox(writer: WireClient, keys: MailboxKeys) -> MailboxId:
    mailbox = await writer.create(keys)
    assert isinstance(await writer.auth(keys.write, "write", mailbox), Ok)
    return mailbox


async def _reader(client: WireClient, keys: MailboxKeys, mailbox: MailboxId) -> WireClient:
    assert isinstance(await client.auth(keys.read, "read", mailbox), Ok)
    assert isinstance(await client.subscribe(mailbox), Subscribed)
    return client


async def test_a_full_database_refuses_writes_keeps_serving_and_recovers(
    relays: RelayFactory,
) -> None:
    """A full database: STORAGE_FULL for writes, one log line, reads and deletes go on.

    Catches: a full disk answered with INTERNAL, a log line per refusal, publishes that
    keep hitting the store while it is full, /readyz still 200, reads or subscriptions or
    an admin delete refused, and a relay that stays refusing once room is back.
    """
    store = await relays.open_sqlite()
    running = await relays.start(store=store, sweep_interval=3600)
    ops = running.relay.ops_port
    assert ops is not None
    with trio.fail_after(3 * PATIENCE), capture_logs() as logs:
        writer = await running.connect()
        filler_keys, alert_keys = MailboxKeys(), MailboxKeys()
        filler = await _open_mailbox(writer, filler_keys)
        alerts = await _open_mailbox(writer, alert_keys)
        reader = await _reader(await running.connect(), alert_keys, alerts)
        first = await writer.publish(alerts, b"before the disk filled")
        assert isinstance(first, Published)
        await receive_deliveries(reader, 1)
        answers = await publish_many(writer, filler, [os.urandom(ENVELOPE)] * FILLER)
        assert all(isinstance(a, Published) for a in answers)

        await store.limit_pages(1)  # SQLite keeps what is in use: no page more
        refused = [await writer.publish(alerts, os.urandom(ENVELOPE)) for _ in range(5)]
        assert all(_is_full(a) for a in refused), refused
        assert running.relay.hub.storage_full
        assert await http_get(ops, "/readyz") == (503, b"service unavailable\n")
        with pytest.raises(AssertionError, match="code=309"):
            await writer.create(MailboxKeys())

        # Reads, new subscriptions and fetches go on while the disk is full.
        late = await _reader(await running.connect(), alert_keys, alerts)
        (backlog,) = await receive_deliveries(late, 1)
        assert backlog.envelope == b"before the disk filled"
        page = await late.request(Fetch(id=late.next_id(), mailbox=alerts, after=0, limit=10))
        assert isinstance(page, Page)
        assert [item.envelope for item in page.items] == [b"before the disk filled"]

        # Deleting makes room, and the relay takes writes again by itself.
        assert isinstance(await writer.delete(filler_keys.admin, filler, counter=1), Ok)
        await settle(lambda: not running.relay.hub.storage_full, what="the relay to recover")
        assert await http_get(ops, "/readyz") == (200, b"ready\n")
        after = await writer.publish(alerts, b"after the room came back")
        assert isinstance(after, Published)
        assert after.seq == first.seq + 1  # the refused publishes took no seq
        (delivered,) = await receive_deliveries(reader, 1)
        assert delivered.envelope == b"after the room came back"

    events = [entry["event"] for entry in logs]
    assert events.count("storage_full") == 1
    assert events.count("storage_recovered") == 1
    assert "storage_error" not in events
    (full,) = [entry for entry in logs if entry["event"] == "storage_full"]
    assert full["operation"] == "append_batch"
    (recovered,) = [entry for entry in logs if entry["event"] == "storage_recovered"]
    assert recovered["refused"] == 6  # five publishes and one create
    assert running.rejections("storage_full") == 6
    assert running.rejections("internal") == 0


# -- a real filesystem ------------------------------------------------------------------------

SMALL_FS = 16 * 1024 * 1024
RESERVE = 2 * 1024 * 1024


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of SMALL_FS bytes mounted under tmp_path for this test, unmounted after."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip(
            "mounting a small tmpfs needs root on Linux; "
            "test_a_full_database_refuses_writes_keeps_serving_and_recovers covers the relay's side"
        )
    mountpoint = tmp_path / "small-fs"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_FS},mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        if subprocess.run(["umount", str(mountpoint)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def _fill_up(path: Path) -> None:
    """Write zeros to `path` until the filesystem has no room left (it may have none already)."""
    chunk = bytes(64 * 1024)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        return
    try:
        for size in (len(chunk), 4096, 512, 1):  # the last blocks too
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, chunk[:size])
    finally:
        os.close(fd)


async def _storage_events(relay: RelayProcess) -> list[str]:
    return [e["event"] for e in relay.log_events() if e["event"].startswith("storage")]


async def _fill_mailbox(writer: WireClient, mailbox: MailboxId) -> None:
    """Publish big envelopes until the relay answers STORAGE_FULL (bounded by the disk's size)."""
    for _ in range(SMALL_FS // ENVELOPE // 20 + 1):
        answers = await publish_many(writer, mailbox, [os.urandom(ENVELOPE)] * 20)
        assert all(isinstance(a, Published) or _is_full(a) for a in answers), answers
        if any(_is_full(a) for a in answers):
            return
    raise AssertionError("the filesystem never filled")


async def _wait_for_event(relay: RelayProcess, event: str, count: int) -> None:
    while (await _storage_events(relay)).count(event) < count:
        await trio.sleep(0.05)


async def test_a_full_filesystem_is_survived_and_a_restart_says_what_to_do(
    small_filesystem: Path,
) -> None:
    """A relay process on a 16 MiB tmpfs, filled to the last block, and restarted while full.

    Running: STORAGE_FULL and one `storage_full` line; reads, an admin rotation and a
    delete still work; it recovers by itself once the delete freed room. Restarted while
    full: it starts refusing writes and serving reads, and recovers once a delete makes
    room; with the disk full to the last block (and its reserve already given back) it
    exits with status 75 and one line saying to free space. Nothing stored is lost.
    """
    data_dir = small_filesystem / "relay"
    settings = {"storage_reserve": RESERVE, "sweep_interval": 1, "publish_burst": 10_000}
    reserve = data_dir / ("relay.sqlite3" + RESERVE_SUFFIX)
    # Someone else's files on the same disk, deleted later to give the reserve its room back.
    others = small_filesystem / "other-files"
    others.write_bytes(bytes(2 * RESERVE))
    with trio.fail_after(8 * PATIENCE):
        async with open_relay_process(data_dir, **settings) as relay:
            writer = await WireClient.connect(relay.port, relay.public_key)
            filler_keys, alert_keys = MailboxKeys(), MailboxKeys()
            filler = await _open_mailbox(writer, filler_keys)
            alerts = await _open_mailbox(writer, alert_keys)
            reader = await _reader(
                await WireClient.connect(relay.port, relay.public_key), alert_keys, alerts
            )
            assert isinstance(await writer.publish(alerts, b"the first alert"), Published)
            await receive_deliveries(reader, 1)
            assert reserve.stat().st_size == RESERVE

            await _fill_mailbox(writer, filler)
            assert _is_full(await writer.publish(alerts, b"x"))
            assert not reserve.exists()  # given back for the deletions below
            assert (await http_get(relay.ops_port, "/readyz"))[0] == 503
            late = await _reader(
                await WireClient.connect(relay.port, relay.public_key), alert_keys, alerts
            )
            assert len(await receive_deliveries(late, 1)) == 1
            new_keys = MailboxKeys()
            rotated = await writer.rotate(alert_keys.admin, alerts, new_keys, counter=1)
            assert isinstance(rotated, Ok), rotated
            alert_keys = new_keys
            assert isinstance(await writer.auth(alert_keys.write, "write", alerts), Ok)
            assert isinstance(await writer.delete(filler_keys.admin, filler, counter=1), Ok)
            await _wait_for_event(relay, "storage_recovered", 1)
            after = await writer.publish(alerts, b"after the delete")
            assert isinstance(after, Published), after
            assert (await http_get(relay.ops_port, "/readyz"))[0] == 200
            # Writes resumed on the room the delete freed inside the database (the file
            # keeps its size); the reserve comes back once the disk has room for it, and
            # the sweeper checks for that at every interval.
            assert not reserve.exists()
            others.unlink()
            while not (reserve.exists() and reserve.stat().st_blocks * 512 >= RESERVE):
                await trio.sleep(0.05)
            assert await _storage_events(relay) == ["storage_full", "storage_recovered"]

            # Full again, and stopped so.
            filler_keys = MailboxKeys()
            filler = await _open_mailbox(writer, filler_keys)
            await _fill_mailbox(writer, filler)
            assert not reserve.exists()
            assert "storage_error" not in relay.log_text()
            assert "connection_crashed" not in relay.log_text()
            for client in (writer, reader, late):
                await client.aclose()
            assert await relay.terminate() == 0

        # Restarted while full: it serves reads, refuses writes, and recovers when room is made.
        async with open_relay_process(data_dir, **settings) as relay:
            (full,) = [e for e in relay.log_events() if e["event"] == "storage_full"]
            assert full["operation"] == "open"
            assert (await http_get(relay.ops_port, "/readyz"))[0] == 503
            client = await WireClient.connect(relay.port, relay.public_key)
            await _reader(client, alert_keys, alerts)
            delivered = await receive_deliveries(client, 2)
            assert [d.envelope for d in delivered] == [b"the first alert", b"after the delete"]
            assert isinstance(await client.auth(alert_keys.write, "write", alerts), Ok)
            assert _is_full(await client.publish(alerts, b"while full"))
            await client.aclose()
            assert await relay.terminate() == 0

        # The disk full to the last block, and no reserve left to give back: the relay
        # cannot even open its database, and says so in one line.
        _fill_up(small_filesystem / "ballast")
        status, stderr = await run_serve_to_exit(data_dir, **settings)
        assert status == 75, stderr
        (line,) = [text for text in stderr.splitlines() if text.startswith("cellrelay relay:")]
        assert "is full" in line
        assert "Free space" in line
        assert "restore" not in line  # the advice of issue 10, which was wrong here

        # Room enough to open again: it starts full, a delete makes room, nothing was lost.
        with contextlib.suppress(FileNotFoundError):
            (small_filesystem / "ballast").unlink()
        async with open_relay_process(data_dir, **settings) as relay:
            assert (await http_get(relay.ops_port, "/readyz"))[0] == 503
            client = await WireClient.connect(relay.port, relay.public_key)
            assert isinstance(await client.delete(filler_keys.admin, filler, counter=1), Ok)
            await _wait_for_event(relay, "storage_recovered", 1)
            assert (await http_get(relay.ops_port, "/readyz"))[0] == 200
            await _reader(client, alert_keys, alerts)
            assert len(await receive_deliveries(client, 2)) == 2
            assert isinstance(await client.auth(alert_keys.write, "write", alerts), Ok)
            assert isinstance(await client.publish(alerts, b"room again"), Published)
            await client.aclose()
            assert await relay.terminate() == 0


async def test_a_store_opened_on_a_full_disk_gives_back_its_reserve(
    small_filesystem: Path,
) -> None:
    """With the disk full to the last block, the reserve left by the last run makes room to open.

    Without it SQLite could not create the database's -wal and -shm files; with it the
    store opens and says it cannot take writes until there is room again.
    """
    path = small_filesystem / "relay.sqlite3"
    async with open_sqlite_store(path, reserve_bytes=RESERVE) as store:
        assert await store.restore_reserve()
    reserve = path.with_name(path.name + RESERVE_SUFFIX)
    assert reserve.stat().st_size == RESERVE
    _fill_up(small_filesystem / "ballast")
    async with open_sqlite_store(path, reserve_bytes=RESERVE) as store:
        assert not reserve.exists()
        assert not await store.restore_reserve()
        assert await store.count_mailboxes() == 0
    _fill_up(small_filesystem / "more-ballast")  # the room the reserve gave back
    with pytest.raises(StorageFullError, match="is full"):
        await (await SQLiteStore.open(path, reserve_bytes=RESERVE)).aclose()
