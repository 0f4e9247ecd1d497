"""`cellrelay relay backup`: a consistent copy of a live database, and nothing expired in it.

Every test uses a real SQLite file in tmp_path written by the relay's own `SQLiteStore`;
the first one runs the command as a separate process while the store is open and holds
its latest commits only in the WAL, which is the case an operator's cron job meets.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import stat
import sys
from pathlib import Path

import pytest
import trio

from cellrelay.relay._cli import backup_database, main
from cellrelay.relay._sqlite_store import SQLiteStore, open_sqlite_store
from cellrelay.relay._store import MailboxId, MailboxRecord, PendingAppend, StorageError

NOW = 1_700_000_000  # stores take time as an argument; no test here reads the clock
FAR = NOW + 10**6
# For the test that runs the command, which judges expiry by the real clock: about the
# year 36,800, far enough that no clock reaches it, and still an int64 as the store wants.
NEVER = 2**40
QUOTA = 1 << 30


def _record() -> MailboxRecord:
    return MailboxRecord(
        mailbox=MailboxId(secrets.token_bytes(16)),
        write_key=secrets.token_bytes(32),
        read_key=secrets.token_bytes(32),
        admin_key=secrets.token_bytes(32),
        created_at=NOW,
    )


def _canary() -> bytes:
    return b"canary-" + secrets.token_hex(16).encode()


async def _append(store: SQLiteStore, mailbox: MailboxId, *items: tuple[bytes, int]) -> None:
    results = await store.append_batch(
        [PendingAppend(mailbox=mailbox, expires_at=exp, envelope=env) for env, exp in items],
        default_max_bytes=QUOTA,
    )
    assert all(r.seq is not None for r in results)


def _files_holding(directory: Path, needle: bytes) -> list[str]:
    return sorted(p.name for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes())


async def test_backup_of_a_live_store_holds_every_commit(tmp_path: Path) -> None:
    db, dest = tmp_path / "live" / "relay.sqlite3", tmp_path / "backups" / "copy.sqlite3"
    dest.parent.mkdir()
    first, second = _record(), _record()
    envelopes = [_canary() for _ in range(5)]
    store = await SQLiteStore.open(db)
    try:
        await store.create_mailbox(first)
        await store.create_mailbox(second)
        await _append(store, first.mailbox, *[(e, NEVER) for e in envelopes[:3]])
        await _append(store, second.mailbox, *[(e, NEVER) for e in envelopes[3:]])
        wal = db.with_name(db.name + "-wal")
        assert wal.stat().st_size > 0, "the test needs commits that are only in the WAL"
        assert _files_holding(db.parent, envelopes[-1]) == ["relay.sqlite3-wal"]

        done = await trio.run_process(
            [sys.executable, "-m", "cellrelay.relay", "backup", "--database", str(db), str(dest)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        assert b"2 mailboxes, 5 envelopes" in done.stdout

        # The relay's store goes on working, and its next checkpoint is not held up by a
        # reader the backup left behind.
        await _append(store, first.mailbox, (_canary(), FAR))
        await store.delete_expired(NOW)
        assert not store.wal_checkpoint_pending
    finally:
        await store.aclose()

    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert sorted(p.name for p in dest.parent.iterdir()) == ["copy.sqlite3"]
    with sqlite3.connect(dest) as plain:  # one self-contained file, no WAL needed
        assert plain.execute("PRAGMA journal_mode").fetchall() == [("delete",)]
    plain.close()
    copy = await SQLiteStore.open(dest)
    try:
        for record, expected in ((first, envelopes[:3]), (second, envelopes[3:])):
            restored = await copy.get_mailbox(record.mailbox)
            assert restored is not None
            assert (restored.write_key, restored.read_key, restored.admin_key) == (
                record.write_key,
                record.read_key,
                record.admin_key,
            )
            assert restored.head == len(expected)
            stored = await copy.read_after(record.mailbox, 0, limit=10, now=NOW)
            assert [s.envelope for s in stored] == expected
            assert [s.seq for s in stored] == list(range(1, len(expected) + 1))
    finally:
        await copy.aclose()


async def test_backup_leaves_out_expired_envelopes(tmp_path: Path) -> None:
    """An envelope the sweeper has not reached yet is not copied: its bytes are nowhere."""
    db, dest = tmp_path / "relay.sqlite3", tmp_path / "out" / "copy.sqlite3"
    dest.parent.mkdir()
    record = _record()
    expired, kept = _canary() * 40, _canary()  # the expired one spans pages of its own
    async with open_sqlite_store(db) as store:
        await store.create_mailbox(record)
        await _append(store, record.mailbox, (expired, NOW + 10), (kept, FAR))
        summary = await trio.to_thread.run_sync(lambda: backup_database(db, dest, now=NOW + 100))
        # The source is untouched: it still holds the envelope until its own sweep.
        in_source = await store.read_after(record.mailbox, 0, limit=10, now=NOW)
        assert [s.envelope for s in in_source] == [expired, kept]

    assert (summary.mailboxes, summary.envelopes, summary.expired_left_out) == (1, 1, 1)
    assert _files_holding(dest.parent, expired[:40]) == []
    assert _files_holding(dest.parent, kept) == ["copy.sqlite3"]
    async with open_sqlite_store(dest) as copy:
        restored = await copy.get_mailbox(record.mailbox)
        assert restored is not None
        assert restored.stored_bytes == len(kept)  # the quota count agrees with the rows
        assert restored.head == 2  # seqs are never reused, even for what was left out
        stored = await copy.read_after(record.mailbox, 0, limit=10, now=NOW)
        assert [(s.seq, s.envelope) for s in stored] == [(2, kept)]


async def test_backup_replaces_an_existing_file_only_when_forced(tmp_path: Path) -> None:
    db, dest = tmp_path / "relay.sqlite3", tmp_path / "copy.sqlite3"
    record = _record()
    async with open_sqlite_store(db) as store:
        await store.create_mailbox(record)
        await _append(store, record.mailbox, (b"one", FAR))
        backup_database(db, dest, now=NOW)
        await _append(store, record.mailbox, (b"two", FAR))
        with pytest.raises(StorageError, match="already exists"):
            backup_database(db, dest, now=NOW)
        assert backup_database(db, dest, now=NOW, replace=True).envelopes == 2
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []


async def test_backup_never_changes_the_database_file(tmp_path: Path) -> None:
    db = tmp_path / "relay.sqlite3"
    async with open_sqlite_store(db) as store:
        record = _record()
        await store.create_mailbox(record)
        await _append(store, record.mailbox, (b"sealed", NOW + 1))
    before = db.read_bytes()
    summary = backup_database(db, tmp_path / "copy.sqlite3", now=NOW + 5)
    assert summary.expired_left_out == 1
    assert db.read_bytes() == before


def test_backup_refuses_what_is_not_a_relay_database(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    conn.close()
    with pytest.raises(StorageError, match="not a cellrelay database"):
        backup_database(other, tmp_path / "copy", now=NOW)
    with pytest.raises(StorageError, match="does not exist"):
        backup_database(tmp_path / "missing.sqlite3", tmp_path / "copy", now=NOW)
    with pytest.raises(StorageError, match="is a directory"):
        backup_database(other, tmp_path, now=NOW)
    assert sorted(os.listdir(tmp_path)) == ["other.sqlite3"]


def test_backup_command_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["backup", "--store", "memory", str(tmp_path / "copy")]) == 2
    assert main(["backup", "--data-dir", str(tmp_path / "none"), str(tmp_path / "copy")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "cellrelay relay: store: the memory store keeps nothing on disk to back up",
        f"cellrelay relay: {tmp_path / 'none' / 'relay.sqlite3'} does not exist; "
        "check data_dir or database (the relay creates it on first start)",
    ]
