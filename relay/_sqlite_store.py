"""The relay's embedded default store: one SQLite file in WAL mode, with group commit.

Theory of operation
===================

Opening
-------
`await SQLiteStore.open(path, durability=...)` (or `async with open_sqlite_store(...)`)
creates the parent directory (mode 0700) and the database file (mode 0600) if they are
missing, and tightens the mode of an existing file, its `-wal` and its `-shm` to 0600:
SQLite gives those two the database file's mode, so they follow.

First of all it takes an exclusive `flock` on the lock file beside the database
(`relay.sqlite3.lock`, mode 0600, holding the owner's process id), and holds it until
`aclose` (or the process ends: the kernel drops the lock with the descriptor, so a killed
relay leaves no stale lock). A second store on the same file, in this process or another,
is refused with a `StorageError` naming the first one's process id. Two relays on one
database would each cache heads and counts the other changes, and sweep and checkpoint
under each other (issue 10, item 6). A separate file rather than the database itself:
SQLite takes POSIX locks on the database, and on some filesystems (NFS) `flock` is
emulated with POSIX locks and would collide with them. `cellrelay relay backup` reads the
database without the lock, as it may while the relay runs.

Then, in order, refusing with a `StorageError` that says what to do at the first problem:

1. the SQLite library is at least `MIN_SQLITE_VERSION`;
2. the file is a SQLite database that is empty or marked as ours (`application_id`), and
   its schema version (`user_version`) is not newer than `SCHEMA_VERSION`;
3. `journal_mode=WAL` really took effect (it cannot on some network filesystems);
4. `PRAGMA quick_check` says "ok";
5. the migrations from the file's version up to `SCHEMA_VERSION` run, all of them in one
   transaction, so a failed migration leaves the file as it was;
6. the expected tables and index exist.

Last, it runs the TRUNCATE checkpoint described under "Deleting" below, because a crash
between a deletion and its checkpoint would otherwise leave deleted ciphertext in the WAL.

Schema (version 1)
------------------
`mailboxes`: one row per mailbox, with an integer `id` used inside the database, the
16-byte `mailbox` id (unique), the three capability public keys, `admin_counter`,
`max_ttl`, `max_bytes` and `created_at`. `heads`: one row per mailbox (`mailbox_id` is
`mailboxes.id`) with `head`, the last seq assigned, and `stored_bytes`, the sum of the
lengths of its stored envelopes. `envelopes`: `id`, `mailbox_id` (references
`mailboxes.id`), `seq` (unique per mailbox), `expires_at`, `envelope` (the opaque
ciphertext). The unique index on (`mailbox_id`, `seq`) serves `read_after` and mailbox
deletion; `envelopes_by_expiry` serves the sweeper. Nothing else is stored: no
plaintext, nothing about members or connections, no clocks besides `created_at` and
`expires_at`.

Two layout choices come from measurement (bench/bench_store.py, 1000 mailboxes). The
head and byte count, which every append rewrites, live in their own narrow table rather
than in the ~200-byte mailbox row: a batch touching 100 mailboxes then dirties a few
pages of `heads` instead of ~40 pages of `mailboxes`, and each dirty page is 4 KiB more
to write and fsync; that raised appends per second by about a fifth. The envelope table
is a rowid table rather than WITHOUT ROWID because envelopes are large rows, which the
SQLite documentation advises against keeping inside a WITHOUT ROWID b-tree; measured, a
WITHOUT ROWID table keyed (mailbox_id, seq) took 2 to 4 times the CPU per append of this
one (600-byte envelopes, 8 or 1000 mailboxes). The foreign keys stay on: turning them off
saved 3-5 % of an append, not worth a check against a bug that orphans envelopes.

Writes and group commit
-----------------------
One connection writes, in the writer thread; a `trio.Lock` keeps one job at a time. Every
write transaction starts with `BEGIN IMMEDIATE`, so it holds SQLite's write lock from its
first statement and never fails half way to upgrade a read lock. `append_batch` is one
transaction for the whole batch: it reads each mailbox's `head`, `stored_bytes` and
`max_bytes` inside the transaction (one `IN (...)` query per 64 mailboxes), assigns
seqs in item order, inserts the envelopes and writes the new heads and byte counts back
with multi-row statements (`ROWS_PER_STATEMENT` rows each), and commits. Because the
head is read inside the write transaction rather than cached, two processes sharing one
file (which nobody should do, but a mistake should not corrupt anything) still never
assign one seq twice. The lookup costs a few percent of a batch, so there is no cache to
keep coherent.

Durability: with `durability="full"` (`synchronous=FULL`) every commit fsyncs the WAL, so
an acknowledged batch survives a power loss or kernel crash. With `"normal"`
(`synchronous=NORMAL`) a commit only writes the WAL and the fsync happens at checkpoints:
a crash of the relay process (kill -9, out of memory) still loses nothing acknowledged,
because the written WAL is in the kernel's page cache, but a power loss or kernel crash
may roll back the last transactions before the most recent checkpoint. Either way the
file is never corrupted. SQLite runs an automatic PASSIVE checkpoint when the WAL passes
`WAL_AUTOCHECKPOINT_PAGES` pages, inside whichever commit crosses that line.

Reads
-----
`get_mailbox`, `read_after` and `count_mailboxes` use a small pool of read-only
connections (`PRAGMA query_only`), each used by one thread at a time. WAL lets them read
the last committed state while a write transaction is in progress, so a catch-up read is
not queued behind a group commit. Every read runs to completion (`fetchall`) so no
statement keeps a read snapshot open, which would both show stale data and hold up the
TRUNCATE checkpoint below. `read_after` filters `expires_at > now` in its query, so an
expired envelope is never returned even if the sweeper has not run yet.

Threads and cancellation
------------------------
All SQLite calls run in other threads, never on the Trio thread: writes in the store's one
writer thread (`_WriterThread`), reads in worker threads (`trio.to_thread.run_sync`).
Connections are created with `check_same_thread=False`; the write connection is used by
the writer thread only once the store is open, each read connection by one thread at a
time (the pool). Waiting for the write lock or a reader can be cancelled; once a job has
been handed to a thread it runs to the end (`abandon_on_cancel=False` for readers), so a
batch whose commit began is committed and its results are returned (the caller sees the
cancellation at its next checkpoint), and an acknowledgement is never lost or doubled. Every method raises `StorageError` for SQLite
errors. After an I/O error or corruption on the write connection the store refuses all
further work: what is on disk is no longer known, and reopening the file (SQLite
recovers the WAL) is the safe way back.

A full disk
-----------
A write that finds no room (SQLite's SQLITE_FULL: the filesystem is full, or the database
reached `max_page_count`) raises `StorageFullError`; its transaction was rolled back, so
nothing was written, and the file is fine (this is not one of the errors after which the
store refuses all work). Deleting also writes (WAL frames, and `secure_delete` rewrites
every page it frees), so a disk that is exactly full would refuse the very deletions that
make room. Three things keep that from happening:

* Deletions are chunked by bytes as well as rows (`DELETE_CHUNK_BYTES`), mailbox deletion
  included, so one transaction adds at most about that much to the WAL, which SQLite
  reuses from its start after each automatic checkpoint: deleting needs a few MiB of
  disk, however much it deletes.
* The *reserve*: `relay.sqlite3.reserve`, a file of `reserve_bytes` allocated zeros beside
  the database. `release_reserve` unlinks it, so its room goes to the deletions the hub
  still lets through while it refuses publishes (expiry sweeps, admin deletes and
  rotations).
* `restore_reserve` says when writes may resume: once the filesystem has `WAL_ROOM` free
  for the WAL, and beyond that, counting the database's free pages (what expiry and
  deletion freed inside the file), room for at least as much as the reserve, so that
  taking writes again is not followed at once by the next full disk. Expiry alone can
  bring a relay back, without anyone freeing space. The reserve itself is allocated again
  whenever the filesystem has room for it and `WAL_ROOM` besides (the hub asks after every
  sweep).

If the disk is so full at start that SQLite could not create its `-wal` and `-shm` files,
`open` releases a reserve left by the last run first (the hub then starts refusing
writes); without one it fails with `StorageFullError`, whose message says to free space.
`limit_pages` sets SQLite's `max_page_count` on the write connection: a real "database is
full", which tests and fire drills use to fill the store without filling a disk.

Deleting, and what it does and does not guarantee
--------------------------------------------------
`secure_delete=ON` makes SQLite overwrite deleted rows, index entries and freed pages
with zeros in the pages it writes. In WAL mode those pages go to the WAL first, and the
WAL may still hold older copies of the same pages with the ciphertext in them; the main
database file is only rewritten at the next checkpoint. So `delete_expired` deletes in
chunks of `DELETE_CHUNK_ROWS` (each its own short transaction, releasing the write lock
between chunks so publishes interleave), then runs `PRAGMA wal_checkpoint(TRUNCATE)`:
that copies the zeroed pages into the database file, fsyncs it, and truncates the WAL to
zero bytes. `delete_mailbox` does the same. A checkpoint cannot complete while another
connection (a slow reader, or an outside program such as a backup) still reads an old
snapshot; then it gives up after `CHECKPOINT_BUSY_TIMEOUT`, logs `wal_checkpoint_busy`,
sets `wal_checkpoint_pending`, and the next `delete_expired` tries again even if it
deleted nothing. `temp_store=MEMORY` keeps SQLite's temporary files (sorts, for
instance) out of the filesystem altogether; the `-shm` file holds only page numbers
and hashes, never row contents.

What this does not reach: truncating the WAL frees its blocks without overwriting them,
and overwriting a page of the database file in place need not overwrite the same
physical storage. Copy-on-write and log-structured filesystems (btrfs, ZFS, F2FS),
filesystem snapshots, SSD and flash wear levelling, swap, backups and the kernel's page
cache can all keep copies of deleted ciphertext. The ciphertext is end-to-end encrypted,
so those copies matter most if a member's keys are later seized; run the relay on
full-disk encryption, and without snapshots or backups of the database, to narrow the
gap.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import queue
import sqlite3
import stat
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import structlog
import trio

from cellrelay.relay._store import (
    INT64_MAX,
    AppendResult,
    MailboxExistsError,
    MailboxId,
    MailboxRecord,
    PendingAppend,
    StorageError,
    StorageFullError,
    StoredEnvelope,
    validate_admin_update,
    validate_append,
    validate_now,
    validate_record,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Sequence

__all__ = [
    "APPLICATION_ID",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Durability",
    "SQLiteStore",
    "open_sqlite_store",
]

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

Durability = Literal["full", "normal"]
_SYNCHRONOUS: Final[dict[str, str]] = {"full": "FULL", "normal": "NORMAL"}

# "crly" in ASCII: marks the file as a cellrelay database (SQLite's `application_id`
# header field), so pointing the relay at some other program's database is refused
# instead of adding our tables to it.
APPLICATION_ID: Final = 0x63726C79

# `INSERT ... ON CONFLICT DO NOTHING` needs 3.24 (2018); everything else used here (WAL,
# secure_delete, wal_checkpoint(TRUNCATE), application_id) is older.
MIN_SQLITE_VERSION: Final = (3, 24, 0)

FILE_MODE: Final = 0o600  # the database, -wal, -shm and .lock: the relay's user only
LOCK_SUFFIX: Final = ".lock"  # the lock file beside the database (module docstring)
DIR_MODE: Final = 0o700  # a parent directory the store creates

# How long a statement waits for a lock held by another connection before failing with
# SQLITE_BUSY. Our own connections only contend at checkpoints (below); this is for an
# outside program (a backup, the sqlite3 shell) holding a lock for a moment.
BUSY_TIMEOUT: Final = 5.0

# How long a TRUNCATE checkpoint waits for readers of an older snapshot. Our own reads
# take milliseconds (a bounded page of envelopes); the write lock is held while it
# waits, so a longer wait would stall publishes. Busy: retry at the next sweep.
CHECKPOINT_BUSY_TIMEOUT: Final = 0.25

# Expired envelopes deleted per transaction, holding the write lock. A chunk of 1000
# 600-byte envelopes took 17-22 ms with secure_delete and fsync here (bench/bench_store.py,
# including its share of the checkpoint), so a publish waits about that long at worst
# behind the sweeper, while 20 chunks still clear 20,000 envelopes in under half a second.
DELETE_CHUNK_ROWS: Final = 1000
# ...and at most this many envelope bytes (but at least one envelope): with large envelopes
# a chunk of 1000 rows would be 16 MB of WAL, which a full disk cannot hold (module
# docstring, "A full disk"). 1 MiB is about 1700 alerts of 600 bytes, so it rarely binds.
DELETE_CHUNK_BYTES: Final = 1024 * 1024

# SQLite checkpoints the WAL into the database file inside the commit that takes it past
# this many pages, and that commit waits for the copy and an fsync of the database file.
# With SQLite's default of 1000 pages (4 MiB) that was the p99 of a commit: 64 envelopes
# over 8 mailboxes, durability full, took 1.5 ms at p50 and 13 ms at p99; at 250 pages the
# p99 was 6.5 ms for 5-10 % fewer appends per second (docs/design.md; `bench/bench_store.py
# --mailboxes 8 --batches 64 --wal-autocheckpoint N`). At 100 pages the extra fsyncs
# cost more throughput than they saved in latency.
WAL_AUTOCHECKPOINT_PAGES: Final = 250

# Envelopes (or heads) written per INSERT statement in `append_batch`. Each statement is
# one step of SQLite with the GIL released around it, and the Trio thread wants the GIL
# back meanwhile, so one statement for many rows instead of `executemany`'s one step per
# row cut the wall time of a 64-envelope commit from 3.3 to 1.8 ms while the Trio thread
# was busy (and its CPU by a fifth). 64 rows of 4 parameters stay far below SQLite's
# bound-parameter limit (999 before 3.32); a remainder goes in power-of-two chunks, so at
# most 7 statements per table are ever prepared (sqlite3 caches them).
ROWS_PER_STATEMENT: Final = 64

# Read connections: enough for several catch-up reads to overlap with each other; each
# costs a file descriptor and up to SQLite's default 2 MiB page cache.
DEFAULT_READ_CONNECTIONS: Final = 4
MAX_READ_CONNECTIONS: Final = 64

# Primary SQLite result codes after which the write connection's view of the file can
# no longer be trusted (https://www.sqlite.org/rescode.html).
_SQLITE_IOERR: Final = 10
_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26
_FATAL_CODES: Final = frozenset({_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_NOTADB})

_SQLITE_BUSY: Final = 5
_SQLITE_FULL: Final = 13  # "database or disk is full": a write found no room

# The reserve (module docstring, "A full disk"): a file of zeros beside the database that
# the store gives back to the filesystem when a write finds the disk full, so that deleting
# (expired envelopes, a mailbox) can still write its WAL frames, and takes again once there
# is room. 32 MiB covers deleting a whole mailbox at the default 16 MiB quota, with
# secure_delete rewriting every page it frees, plus its index pages.
RESERVE_SUFFIX: Final = ".reserve"
DEFAULT_RESERVE_BYTES: Final = 32 * 1024 * 1024
# Room a commit needs on the filesystem beyond the reserve: the WAL grows to about
# WAL_AUTOCHECKPOINT_PAGES pages plus one batch before SQLite reuses it from its start.
WAL_ROOM: Final = 2 * WAL_AUTOCHECKPOINT_PAGES * 4096
_ZEROS: Final = bytes(1024 * 1024)  # for filesystems without fallocate
_SQLITE_LOCKED: Final = 6

# Migrations: MIGRATIONS[n] takes a database from schema version n to n + 1. Never edit
# a step that has shipped; append a new one (tests/relay/test_store.py keeps a frozen
# copy of version 1 and checks such a file still opens). Each step is a tuple of single
# statements because sqlite3's executescript() would commit the open transaction.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        f"PRAGMA application_id = {APPLICATION_ID}",
        """
        CREATE TABLE mailboxes (
            id INTEGER PRIMARY KEY,
            mailbox BLOB NOT NULL UNIQUE CHECK (length(mailbox) = 16),
            write_key BLOB NOT NULL CHECK (length(write_key) = 32),
            read_key BLOB NOT NULL CHECK (length(read_key) = 32),
            admin_key BLOB NOT NULL CHECK (length(admin_key) = 32),
            admin_counter INTEGER NOT NULL CHECK (admin_counter >= 0),
            max_ttl INTEGER NOT NULL CHECK (max_ttl >= 0),
            max_bytes INTEGER NOT NULL CHECK (max_bytes >= 0),
            created_at INTEGER NOT NULL
        )
        """,
        """
        CREATE TABLE heads (
            mailbox_id INTEGER PRIMARY KEY REFERENCES mailboxes (id) ON DELETE CASCADE,
            head INTEGER NOT NULL CHECK (head >= 0),
            stored_bytes INTEGER NOT NULL CHECK (stored_bytes >= 0)
        )
        """,
        """
        CREATE TABLE envelopes (
            id INTEGER PRIMARY KEY,
            mailbox_id INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
            seq INTEGER NOT NULL CHECK (seq > 0),
            expires_at INTEGER NOT NULL,
            envelope BLOB NOT NULL,
            UNIQUE (mailbox_id, seq)
        )
        """,
        "CREATE INDEX envelopes_by_expiry ON envelopes (expires_at)",
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)

# What the open-time check expects to find (name -> type in sqlite_master).
_EXPECTED_OBJECTS: Final[dict[str, str]] = {
    "mailboxes": "table",
    "heads": "table",
    "envelopes": "table",
    "envelopes_by_expiry": "index",
}

# Mailbox ids looked up per statement in `append_batch`: a fixed count (padded by
# repeating an id) keeps it one cached prepared statement. One IN (...) lookup of 64 ids
# took a quarter of the time of 64 single-row SELECTs here; 64 is far below SQLite's
# bound-parameter limit (999 before 3.32).
_LOOKUP_CHUNK: Final = 64
_LOOKUP_SQL: Final = (
    "SELECT m.mailbox, m.id, h.head, h.stored_bytes, m.max_bytes"  # noqa: S608 (only "?"s added)
    " FROM mailboxes AS m JOIN heads AS h ON h.mailbox_id = m.id"
    f" WHERE m.mailbox IN ({', '.join('?' * _LOOKUP_CHUNK)})"
)


def _chunk_sizes() -> tuple[int, ...]:
    sizes = [ROWS_PER_STATEMENT]
    while sizes[-1] > 1:
        sizes.append(sizes[-1] // 2)
    return tuple(sizes)


# The multi-row statements of `append_batch`, by row count (see ROWS_PER_STATEMENT).
_INSERT_ENVELOPES_SQL: Final = {
    rows: "INSERT INTO envelopes (mailbox_id, seq, expires_at, envelope) VALUES "  # noqa: S608 (only "?"s added)
    + ", ".join(["(?, ?, ?, ?)"] * rows)
    for rows in _chunk_sizes()
}
# Every mailbox of the batch has a heads row (the lookup joined it, in this transaction),
# so the conflict branch is the one taken: an UPDATE of many rows in one statement.
# (UPDATE ... FROM would say it more directly but needs SQLite 3.33.)
_UPDATE_HEADS_SQL: Final = {
    rows: "INSERT INTO heads (mailbox_id, head, stored_bytes) VALUES "  # noqa: S608 (only "?"s added)
    + ", ".join(["(?, ?, ?)"] * rows)
    + " ON CONFLICT (mailbox_id) DO UPDATE"
    " SET head = excluded.head, stored_bytes = excluded.stored_bytes"
    for rows in _chunk_sizes()
}


class _WriterThread:
    """The one thread that runs the store's writes, in the order they were submitted.

    `trio.to_thread.run_sync` cost about 185 µs of CPU per call here (an empty job, round
    trip), mostly starting and reporting through a general-purpose thread cache; a thread
    of our own fed through a queue, reporting with one `run_sync_soon`, cost about 105 µs
    (docs/design.md). It is paid per group commit, so at shallow pipelines it was several
    microseconds per publish. Only this thread touches the write connection once
    the store is open, which is a stronger form of the one-thread-at-a-time rule above.

    A job cannot be abandoned once submitted, like `to_thread.run_sync` with
    `abandon_on_cancel=False`: a commit that was handed over is committed and its result
    returned, and a cancellation reaches the caller at its next checkpoint.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        # (work, token, task, box): the thread puts (True, result) or (False, exception)
        # in `box`, then reschedules `task` through `token`. None stops the thread.
        self._jobs: queue.SimpleQueue[
            tuple[
                Callable[[sqlite3.Connection], object],
                trio.lowlevel.TrioToken,
                trio.lowlevel.Task,
                list[tuple[bool, object]],
            ]
            | None
        ] = queue.SimpleQueue()
        # A daemon, so that a store nobody closed cannot keep the process from exiting; an
        # interrupted transaction is rolled back by SQLite when the file is next opened.
        self._thread = threading.Thread(
            target=self._serve, name="cellrelay-sqlite-writer", daemon=True
        )
        self._thread.start()

    def _serve(self) -> None:
        conn, jobs = self._conn, self._jobs
        while (job := jobs.get()) is not None:
            work, token, task, box = job
            try:
                box.append((True, work(conn)))
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting task as is
                box.append((False, exc))
            token.run_sync_soon(trio.lowlevel.reschedule, task)

    async def run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `work(conn)` in the thread; return its result or raise its exception."""
        box: list[tuple[bool, object]] = []
        self._jobs.put(
            (work, trio.lowlevel.current_trio_token(), trio.lowlevel.current_task(), box)
        )
        await trio.lowlevel.wait_task_rescheduled(_cannot_abort)
        ok, value = box[0]
        if not ok:
            raise value  # type: ignore[misc]
        return value  # type: ignore[return-value]

    async def stop(self) -> None:
        """End the thread once the jobs before this call are done, and wait for it."""
        self._jobs.put(None)
        await trio.to_thread.run_sync(self._thread.join)


def _cannot_abort(_: object) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


class SQLiteStore:
    """A `Store` in one SQLite file; see the module docstring for how it works.

    Create it with `await SQLiteStore.open(path)` or `async with open_sqlite_store(path)`,
    and call `aclose` when done.
    """

    def __init__(
        self,
        *,
        path: Path,
        durability: Durability,
        writer: sqlite3.Connection,
        readers: Sequence[sqlite3.Connection],
        lock_fd: int = -1,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
    ) -> None:
        """Wrap connections that `open` prepared; call `open` instead of this."""
        self._path = path
        self._reserve_path = path.with_name(path.name + RESERVE_SUFFIX)
        self._reserve_bytes = reserve_bytes
        self._lock_fd = lock_fd  # the flock on the lock file, released by aclose
        self._durability: Durability = durability
        self._writer = writer
        self._write_lock = trio.Lock()
        self._writer_thread = _WriterThread(writer)
        self._idle_readers = list(readers)
        self._reader_count = len(readers)
        self._read_slots = trio.CapacityLimiter(len(readers))
        # The readers' worker threads: never the process-wide default pool that other code
        # may be using up. (The writer has a thread of its own.)
        self._threads = trio.CapacityLimiter(len(readers))
        self._closed = False
        self._failure: str | None = None
        self._checkpoint_pending = False

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "full",
        read_connections: int = DEFAULT_READ_CONNECTIONS,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
    ) -> SQLiteStore:
        """Open (creating if needed), check and migrate the database at `path`.

        Args:
            path: the database file. Its directory holds the `-wal` and `-shm` files too
                and must be on a local filesystem (WAL needs shared memory).
            durability: "full" survives power loss; "normal" survives a crash of the
                process but may lose the last acknowledged batches on power loss.
            read_connections: size of the read connection pool.
            reserve_bytes: the room kept for deletions on a full disk (module docstring;
                0: none). The reserve is allocated by `restore_reserve`, not here.

        Raises:
            StorageFullError: the disk is too full to open the database at all.
            StorageError: the file cannot be used; the message says why and what to do.
        """
        if durability not in _SYNCHRONOUS:
            raise ValueError('durability must be "full" or "normal"')
        if not 1 <= read_connections <= MAX_READ_CONNECTIONS:
            raise ValueError(f"read_connections must be in [1, {MAX_READ_CONNECTIONS}]")
        if reserve_bytes < 0:
            raise ValueError("reserve_bytes must not be negative")
        db_path = Path(path)
        lock_fd = await trio.to_thread.run_sync(lock_database, db_path)
        try:
            writer, readers, migrated_from, wal_clean = await trio.to_thread.run_sync(
                _open_sync, db_path, durability, read_connections
            )
        except BaseException:
            os.close(lock_fd)
            raise
        log.info(
            "store_opened",
            path=str(db_path),
            durability=durability,
            schema_version=SCHEMA_VERSION,
            migrated_from=migrated_from,
        )
        store = cls(
            path=db_path,
            durability=durability,
            writer=writer,
            readers=readers,
            lock_fd=lock_fd,
            reserve_bytes=reserve_bytes,
        )
        if not wal_clean:
            store._checkpoint_pending = True
            log.warning("wal_checkpoint_busy", during="open")
        return store

    def __repr__(self) -> str:
        state = "closed" if self._closed else "failed" if self._failure else "open"
        return f"<SQLiteStore {str(self._path)!r} durability={self._durability} {state}>"

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    @property
    def durability(self) -> Durability:
        """The durability the store was opened with."""
        return self._durability

    @property
    def failed(self) -> bool:
        """True after an I/O error or corruption: the store refuses all further work."""
        return self._failure is not None

    @property
    def wal_checkpoint_pending(self) -> bool:
        """Whether deleted data may still sit in the WAL because a checkpoint was busy."""
        return self._checkpoint_pending

    # --- the Store interface -------------------------------------------------------------

    async def create_mailbox(self, record: MailboxRecord) -> None:
        """Store a new mailbox; raise `MailboxExistsError` if its id is taken."""
        validate_record(record)
        created = await self._write("create_mailbox", lambda conn: _create_sync(conn, record))
        if not created:
            raise MailboxExistsError("mailbox id already taken")

    async def get_mailbox(self, mailbox: MailboxId) -> MailboxRecord | None:
        """Return the mailbox's record, or None if there is no such mailbox."""
        return await self._read("get_mailbox", lambda conn: _get_sync(conn, mailbox))

    async def update_admin(
        self,
        mailbox: MailboxId,
        *,
        counter: int,
        write_key: bytes | None = None,
        read_key: bytes | None = None,
        admin_key: bytes | None = None,
        max_ttl: int | None = None,
        max_bytes: int | None = None,
    ) -> bool:
        """Apply an admin change if `counter` is above the stored counter, atomically.

        Returns False (and changes nothing) if the mailbox is gone or the counter is stale.
        """
        validate_admin_update(
            counter=counter,
            write_key=write_key,
            read_key=read_key,
            admin_key=admin_key,
            max_ttl=max_ttl,
            max_bytes=max_bytes,
        )
        params = (counter, write_key, read_key, admin_key, max_ttl, max_bytes, mailbox, counter)
        return await self._write("update_admin", lambda conn: _update_admin_sync(conn, params))

    async def delete_mailbox(self, mailbox: MailboxId) -> bool:
        """Delete the mailbox and its envelopes, then checkpoint so the bytes are gone.

        The envelopes go in chunks, as in `delete_expired` (module docstring, "A full
        disk"), then the mailbox in one last transaction. A failure part way leaves the
        mailbox with fewer envelopes, its head and counter as they were; deleting again
        finishes the job. Returns False if there was no such mailbox.
        """
        more = True
        while more:
            count, more = await self._write(
                "delete_mailbox", lambda conn: _delete_envelopes_chunk_sync(conn, mailbox)
            )
            if count:
                self._checkpoint_pending = True
        deleted = await self._write(
            "delete_mailbox", lambda conn: _delete_mailbox_sync(conn, mailbox)
        )
        if deleted:
            # Set before trying, so a cancelled, busy or full checkpoint is retried by the
            # sweeper.
            self._checkpoint_pending = True
            with contextlib.suppress(StorageFullError):
                await self._checkpoint()
        return deleted

    async def append_batch(
        self, items: Sequence[PendingAppend], *, default_max_bytes: int
    ) -> list[AppendResult]:
        """Store a batch durably in one transaction and return one result per item, in order.

        Sequence numbers within one mailbox follow the order of `items`. An item whose
        mailbox does not exist gets error "no_such_mailbox"; one that would take its
        mailbox past its `max_bytes` (or `default_max_bytes` if that is 0) gets
        "mailbox_full". Neither affects the other items.
        """
        validate_append(items, default_max_bytes=default_max_bytes)
        if not items:
            await trio.lowlevel.checkpoint()
            return []
        return await self._write(
            "append_batch", lambda conn: _append_sync(conn, items, default_max_bytes)
        )

    async def read_after(
        self, mailbox: MailboxId, after: int, *, limit: int, now: float
    ) -> list[StoredEnvelope]:
        """Return up to `limit` unexpired envelopes with seq > `after`, by increasing seq."""
        if limit < 0:
            raise ValueError("limit must not be negative")
        validate_now(now)
        if limit == 0 or after >= INT64_MAX:
            # Nothing can follow INT64_MAX; and SQLite could not bind a larger cursor.
            await trio.lowlevel.checkpoint()
            self._check_usable()
            return []
        first_after = max(after, 0)
        return await self._read(
            "read_after", lambda conn: _read_after_sync(conn, mailbox, first_after, limit, now)
        )

    async def delete_expired(self, now: float) -> int:
        """Delete every envelope with expires_at <= now, then checkpoint and truncate the WAL.

        Returns how many envelopes were deleted. Deletes in chunks of `DELETE_CHUNK_ROWS`
        rows or `DELETE_CHUNK_BYTES` bytes, each its own transaction; if cancelled between chunks, what was deleted stays
        deleted (and `stored_bytes` agrees). A busy checkpoint is logged and retried on
        the next call (see `wal_checkpoint_pending`).
        """
        validate_now(now)
        deleted = 0
        while True:
            count, more = await self._write(
                "delete_expired", lambda conn: _delete_expired_chunk_sync(conn, now)
            )
            deleted += count
            if count:
                # Set before the checkpoint, so a cancelled or busy one is retried later.
                self._checkpoint_pending = True
            if not more:
                break
        if self._checkpoint_pending:
            # What was deleted stays deleted; on a full disk the checkpoint (which may have
            # to grow the database file) waits for the next sweep.
            with contextlib.suppress(StorageFullError):
                await self._checkpoint()
        return deleted

    async def count_mailboxes(self) -> int:
        """Return how many mailboxes exist (for the metrics gauge)."""
        return await self._read("count_mailboxes", _count_sync)

    async def total_stored_bytes(self) -> int:
        """Return the envelope bytes stored over all mailboxes (one sum over `heads`)."""
        return await self._read("total_stored_bytes", _total_stored_sync)

    async def release_reserve(self) -> None:
        """Give the reserve's room back to the filesystem (module docstring, "A full disk")."""
        self._check_usable()
        try:
            await trio.to_thread.run_sync(_unlink_if_present, self._reserve_path)
        except OSError as exc:
            raise StorageError(f"cannot remove {self._reserve_path}: {exc.strerror}") from exc

    async def restore_reserve(self) -> bool:
        """Allocate the reserve again if there is room for it and beyond it; True if there is."""
        free_pages, growth = await self._write("restore_reserve", _database_room_sync)
        try:
            return await trio.to_thread.run_sync(
                _restore_reserve_sync, self._reserve_path, self._reserve_bytes, free_pages, growth
            )
        except OSError as exc:
            raise StorageError(
                f"cannot allocate {self._reserve_path}: {exc.strerror}; check that the relay's "
                "user may create files beside the database"
            ) from exc

    async def limit_pages(self, pages: int) -> int:
        """Limit the database to `pages` pages (SQLite's `max_page_count`); return the limit set.

        For tests and fire drills: writes beyond it fail as on a full disk. SQLite never
        sets it below the pages in use, and it lasts until the store is closed.
        """
        if type(pages) is not int or not 1 <= pages <= 0xFFFFFFFE:
            raise ValueError("pages must be an int in [1, 4294967294]")
        limit: int = await self._write(
            "limit_pages",
            lambda conn: conn.execute(f"PRAGMA max_page_count = {pages}").fetchall()[0][0],
        )
        return limit

    async def aclose(self) -> None:
        """Wait for running operations, then close every connection.

        Closing the last connection checkpoints the WAL into the database file and
        removes the `-wal` and `-shm` files. Calling it again does nothing.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        # Shielded: a half-closed store would leave connections (and the WAL) open.
        with trio.CancelScope(shield=True):
            async with self._write_lock:
                tokens = [object() for _ in range(self._reader_count)]
                for token in tokens:
                    await self._read_slots.acquire_on_behalf_of(token)
                try:
                    readers = self._idle_readers
                    await self._writer_thread.run(lambda writer: _close_all(writer, readers))
                    await self._writer_thread.stop()
                finally:
                    # Tasks queued for a reader wake up, see the store closed, and raise.
                    for token in tokens:
                        self._read_slots.release_on_behalf_of(token)
                    if self._lock_fd >= 0:
                        os.close(self._lock_fd)  # releases the flock: another relay may start
                        self._lock_fd = -1
        log.info("store_closed", path=str(self._path))

    # --- plumbing --------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the store is closed")
        if self._failure is not None:
            raise StorageError(
                f"the store stopped after an earlier error ({self._failure}); restart the "
                "relay so SQLite can recover the database file"
            )

    async def _write(self, what: str, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `work` on the write connection in the writer thread, one at a time."""
        self._check_usable()
        await trio.lowlevel.checkpoint_if_cancelled()
        # A free lock is taken without yielding (`async with` yields even then). That yield
        # let every connection with a frame waiting run between the committer taking its
        # batch and the writer thread starting on it: most of the 0.5-1 ms that a group
        # commit waited to start under load (docs/design.md). The wait for the thread's
        # answer is the schedule point; a held lock is waited for as before, in turn.
        lock = self._write_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            self._check_usable()  # aclose, or a failure, may have come while we waited
            return await self._writer_thread.run(work)
        except sqlite3.Error as exc:
            code = _primary_code(exc)
            if code == _SQLITE_FULL:
                raise StorageFullError(f"{what} failed: {exc}") from exc
            if code in _FATAL_CODES:
                self._failure = f"{what}: {exc}"
                # Not log.exception: a rendered traceback may show local variables.
                log.error("store_failed", operation=what, error=str(exc))  # noqa: TRY400
            raise StorageError(f"{what} failed: {exc}") from exc
        finally:
            lock.release()

    async def _read(self, what: str, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `work` on an idle read connection in a worker thread."""
        self._check_usable()
        async with self._read_slots:
            self._check_usable()
            conn = self._idle_readers.pop()
            try:
                return await trio.to_thread.run_sync(
                    work, conn, limiter=self._threads, abandon_on_cancel=False
                )
            except sqlite3.Error as exc:
                raise StorageError(f"{what} failed: {exc}") from exc
            finally:
                self._idle_readers.append(conn)

    async def _checkpoint(self) -> None:
        """Checkpoint and truncate the WAL; on busy, remember to retry and log it."""
        result = await self._write("wal_checkpoint", _checkpoint_sync)
        if result is None:
            self._checkpoint_pending = False
            return
        self._checkpoint_pending = True
        log.warning("wal_checkpoint_busy", wal_frames=result[0], checkpointed=result[1])


@asynccontextmanager
async def open_sqlite_store(
    path: str | os.PathLike[str],
    *,
    durability: Durability = "full",
    read_connections: int = DEFAULT_READ_CONNECTIONS,
    reserve_bytes: int = DEFAULT_RESERVE_BYTES,
) -> AsyncIterator[SQLiteStore]:
    """Open a `SQLiteStore` (see `SQLiteStore.open`) and close it when the block ends."""
    store = await SQLiteStore.open(
        path,
        durability=durability,
        read_connections=read_connections,
        reserve_bytes=reserve_bytes,
    )
    try:
        yield store
    finally:
        await store.aclose()


# --- blocking work, run in worker threads ---------------------------------------------------


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """Run the block in one write transaction: commit if it returns, roll back if not."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        # A failed COMMIT may already have rolled back; the original error matters more
        # than a second one from ROLLBACK.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _create_sync(conn: sqlite3.Connection, record: MailboxRecord) -> bool:
    with _transaction(conn):
        cursor = conn.execute(
            "INSERT INTO mailboxes (mailbox, write_key, read_key, admin_key, admin_counter,"
            " max_ttl, max_bytes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (mailbox) DO NOTHING",
            (
                record.mailbox,
                record.write_key,
                record.read_key,
                record.admin_key,
                record.admin_counter,
                record.max_ttl,
                record.max_bytes,
                record.created_at,
            ),
        )
        if cursor.rowcount != 1:
            return False
        conn.execute(
            "INSERT INTO heads (mailbox_id, head, stored_bytes) VALUES (?, ?, ?)",
            (cursor.lastrowid, record.head, record.stored_bytes),
        )
    return True


def _get_sync(conn: sqlite3.Connection, mailbox: bytes) -> MailboxRecord | None:
    rows = conn.execute(
        "SELECT m.write_key, m.read_key, m.admin_key, m.admin_counter, m.max_ttl,"
        " m.max_bytes, m.created_at, h.head, h.stored_bytes"
        " FROM mailboxes AS m JOIN heads AS h ON h.mailbox_id = m.id WHERE m.mailbox = ?",
        (mailbox,),
    ).fetchall()
    if not rows:
        return None
    write_key, read_key, admin_key, counter, max_ttl, max_bytes, created, head, stored = rows[0]
    return MailboxRecord(
        mailbox=MailboxId(mailbox),
        write_key=write_key,
        read_key=read_key,
        admin_key=admin_key,
        admin_counter=counter,
        max_ttl=max_ttl,
        max_bytes=max_bytes,
        created_at=created,
        head=head,
        stored_bytes=stored,
    )


def _update_admin_sync(conn: sqlite3.Connection, params: tuple[object, ...]) -> bool:
    # One statement, so the counter check and the change are atomic without BEGIN.
    cursor = conn.execute(
        "UPDATE mailboxes SET admin_counter = ?,"
        " write_key = coalesce(?, write_key), read_key = coalesce(?, read_key),"
        " admin_key = coalesce(?, admin_key), max_ttl = coalesce(?, max_ttl),"
        " max_bytes = coalesce(?, max_bytes)"
        " WHERE mailbox = ? AND admin_counter < ?",
        params,
    )
    return cursor.rowcount == 1


def _delete_mailbox_sync(conn: sqlite3.Connection, mailbox: bytes) -> bool:
    with _transaction(conn):
        rows = conn.execute("SELECT id FROM mailboxes WHERE mailbox = ?", (mailbox,)).fetchall()
        if not rows:
            return False
        # Explicit rather than relying on ON DELETE CASCADE alone, so the envelopes go
        # even if foreign keys were somehow off for this connection.
        conn.execute("DELETE FROM envelopes WHERE mailbox_id = ?", rows[0])
        conn.execute("DELETE FROM heads WHERE mailbox_id = ?", rows[0])
        conn.execute("DELETE FROM mailboxes WHERE id = ?", rows[0])
    return True


@dataclass(slots=True)
class _Head:
    """One mailbox's write position while a batch is being assigned (mutable, private)."""

    row_id: int
    head: int
    stored: int
    limit: int
    changed: bool = False


def _lookup_heads(
    conn: sqlite3.Connection, mailboxes: list[bytes], default_max_bytes: int
) -> dict[bytes, _Head]:
    found: dict[bytes, _Head] = {}
    for start in range(0, len(mailboxes), _LOOKUP_CHUNK):
        chunk = mailboxes[start : start + _LOOKUP_CHUNK]
        chunk += [chunk[-1]] * (_LOOKUP_CHUNK - len(chunk))
        for mailbox, row_id, head, stored, max_bytes in conn.execute(_LOOKUP_SQL, chunk):
            found[mailbox] = _Head(row_id, head, stored, max_bytes or default_max_bytes)
    return found


def _append_sync(
    conn: sqlite3.Connection, items: Sequence[PendingAppend], default_max_bytes: int
) -> list[AppendResult]:
    inserts: list[tuple[int, int, int, bytes]] = []
    results: list[AppendResult] = []
    with _transaction(conn):
        # Inside the transaction, so no other writer can move a head under us.
        heads = _lookup_heads(
            conn, list(dict.fromkeys(i.mailbox for i in items)), default_max_bytes
        )
        for item in items:
            box = heads.get(item.mailbox)
            if box is None:
                results.append(AppendResult(seq=None, error="no_such_mailbox"))
                continue
            size = len(item.envelope)
            # The head check mirrors MemoryStore: seq may not pass what SQLite can hold.
            if box.stored + size > box.limit or box.head >= INT64_MAX:
                results.append(AppendResult(seq=None, error="mailbox_full"))
                continue
            box.head += 1
            box.stored += size
            box.changed = True
            inserts.append((box.row_id, box.head, item.expires_at, item.envelope))
            results.append(AppendResult(seq=box.head))
        if inserts:
            _execute_rows(conn, _INSERT_ENVELOPES_SQL, inserts)
            _execute_rows(
                conn,
                _UPDATE_HEADS_SQL,
                [(b.row_id, b.head, b.stored) for b in heads.values() if b.changed],
            )
    return results


def _execute_rows(
    conn: sqlite3.Connection, statements: dict[int, str], rows: Sequence[tuple[object, ...]]
) -> None:
    """Run the multi-row `statements[n]` over `rows`: as many rows per statement as fit.

    Chunks are `ROWS_PER_STATEMENT` rows, then powers of two for the rest (45 rows: 32, 8,
    4, 1), so only the statements in `statements` are ever prepared.
    """
    start, total = 0, len(rows)
    while start < total:
        size = min(ROWS_PER_STATEMENT, 1 << ((total - start).bit_length() - 1))
        conn.execute(
            statements[size], [value for row in rows[start : start + size] for value in row]
        )
        start += size


def _read_after_sync(
    conn: sqlite3.Connection, mailbox: bytes, after: int, limit: int, now: float
) -> list[StoredEnvelope]:
    rows = conn.execute(
        "SELECT seq, expires_at, envelope FROM envelopes"
        " WHERE mailbox_id = (SELECT id FROM mailboxes WHERE mailbox = ?)"
        " AND seq > ? AND expires_at > ? ORDER BY seq LIMIT ?",
        (mailbox, after, now, limit),
    ).fetchall()
    return [StoredEnvelope(seq=seq, expires_at=exp, envelope=env) for seq, exp, env in rows]


def _delete_rows(conn: sqlite3.Connection, rows: list[tuple[int, int, int]]) -> None:
    """Delete envelopes given as (id, mailbox_id, length) and take their bytes off the heads."""
    freed: dict[int, int] = {}
    for _, mailbox_id, size in rows:
        freed[mailbox_id] = freed.get(mailbox_id, 0) + size
    conn.executemany("DELETE FROM envelopes WHERE id = ?", [(row[0],) for row in rows])
    conn.executemany(
        "UPDATE heads SET stored_bytes = stored_bytes - ? WHERE mailbox_id = ?",
        [(size, mailbox_id) for mailbox_id, size in freed.items()],
    )


def _one_chunk(rows: list[tuple[int, int, int]]) -> tuple[list[tuple[int, int, int]], bool]:
    """Cut rows (at most DELETE_CHUNK_ROWS) to DELETE_CHUNK_BYTES; say whether more may follow."""
    total = 0
    for end, (_, _, size) in enumerate(rows):
        total += size
        if total > DELETE_CHUNK_BYTES and end > 0:
            return rows[:end], True
    return rows, len(rows) == DELETE_CHUNK_ROWS


def _delete_expired_chunk_sync(conn: sqlite3.Connection, now: float) -> tuple[int, bool]:
    """Delete one chunk of expired envelopes; return (how many, whether more may be left)."""
    with _transaction(conn):
        # length() of a BLOB column does not read the blob (SQLite's OPFLAG_LENGTHARG).
        rows, more = _one_chunk(
            conn.execute(
                "SELECT id, mailbox_id, length(envelope) FROM envelopes"
                " WHERE expires_at <= ? ORDER BY expires_at LIMIT ?",
                (now, DELETE_CHUNK_ROWS),
            ).fetchall()
        )
        _delete_rows(conn, rows)
    return len(rows), more


def _delete_envelopes_chunk_sync(conn: sqlite3.Connection, mailbox: bytes) -> tuple[int, bool]:
    """Delete one chunk of a mailbox's envelopes; return (how many, whether more may be left)."""
    with _transaction(conn):
        rows, more = _one_chunk(
            conn.execute(
                "SELECT id, mailbox_id, length(envelope) FROM envelopes"
                " WHERE mailbox_id = (SELECT id FROM mailboxes WHERE mailbox = ?)"
                " ORDER BY seq LIMIT ?",
                (mailbox, DELETE_CHUNK_ROWS),
            ).fetchall()
        )
        _delete_rows(conn, rows)
    return len(rows), more


def _checkpoint_sync(conn: sqlite3.Connection) -> tuple[int, int] | None:
    """Checkpoint and truncate the WAL; None if done, else (WAL frames, checkpointed)."""
    conn.execute(f"PRAGMA busy_timeout = {int(CHECKPOINT_BUSY_TIMEOUT * 1000)}")
    try:
        busy, wal_frames, checkpointed = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[
            0
        ]
    except sqlite3.OperationalError as exc:
        if _primary_code(exc) in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return (-1, -1)
        raise
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
    return None if busy == 0 else (wal_frames, checkpointed)


def _count_sync(conn: sqlite3.Connection) -> int:
    count: int = conn.execute("SELECT count(*) FROM mailboxes").fetchall()[0][0]
    return count


def _total_stored_sync(conn: sqlite3.Connection) -> int:
    total: int = conn.execute("SELECT coalesce(sum(stored_bytes), 0) FROM heads").fetchall()[0][0]
    return total


def _close_all(writer: sqlite3.Connection, readers: Sequence[sqlite3.Connection]) -> None:
    # Readers first: the last connection to close checkpoints and removes the WAL.
    for conn in readers:
        conn.close()
    writer.close()


# --- opening ---------------------------------------------------------------------------------


def lock_database(path: Path) -> int:
    """Take the exclusive lock of the database at `path` (module docstring); return its fd.

    The lock lasts until the descriptor is closed. The parent directory is created (mode
    0700) if it is missing, as for the database itself.

    Raises:
        StorageError: another store holds the lock (the message names its process id), or
            the lock file cannot be created.
    """
    lock_path = path.with_name(path.name + LOCK_SUFFIX)
    try:
        if not path.parent.exists():
            path.parent.mkdir(mode=DIR_MODE, parents=True)
            path.parent.chmod(DIR_MODE)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise StorageError(
            f"cannot create {lock_path}: {exc.strerror}; check that the relay's user may "
            "create files in that directory"
        ) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise StorageError(f"cannot lock {lock_path}: {exc.strerror}") from exc
        raise StorageError(
            f"{path} is in use by another relay (process {holder}); stop it first: two "
            "relays must never share one database"
        ) from None
    # The process id is for the message above only: written in place, padded to one size,
    # so that on a full disk the same block is reused; if even that fails, the lock holds.
    with contextlib.suppress(OSError):
        os.fchmod(fd, FILE_MODE)
        line = f"{os.getpid():<10}\n".encode()
        os.pwrite(fd, line, 0)
        os.ftruncate(fd, len(line))
    return fd


def _open_sync(
    path: Path, durability: Durability, read_connections: int
) -> tuple[sqlite3.Connection, list[sqlite3.Connection], int | None, bool]:
    """Prepare the files, open and check the database, migrate it, open the readers.

    Returns the connections, the schema version migrated from (None if none was needed)
    and whether the opening checkpoint emptied the WAL.
    """
    if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
        need = ".".join(map(str, MIN_SQLITE_VERSION))
        raise StorageError(
            f"the SQLite library is version {sqlite3.sqlite_version}; cellrelay needs {need} "
            "or newer (install a Python built against a newer SQLite)"
        )
    _prepare_files(path)
    _release_reserve_if_cramped(path)
    opened: list[sqlite3.Connection] = []
    try:
        writer = _connect(path, durability)
        opened.append(writer)
        _check_identity(writer, path)
        _enable_wal(writer, path)
        _check_integrity(writer, path)
        migrated_from = _migrate(writer, MIGRATIONS, path)
        _check_tables(writer, path)
        # A crash between a deletion and its checkpoint leaves deleted ciphertext in the
        # WAL, and the in-memory "pending" flag died with the process: checkpoint now. On
        # a full disk it may not fit (the database file must grow): then the first sweep
        # with room does it, as after a busy one.
        try:
            wal_clean = _checkpoint_sync(writer) is None
        except sqlite3.OperationalError as exc:
            if _primary_code(exc) != _SQLITE_FULL:
                raise
            wal_clean = False
        for _ in range(read_connections):
            reader = _connect(path, durability)
            opened.append(reader)
            reader.execute("PRAGMA query_only = ON").fetchall()
        return writer, opened[1:], migrated_from, wal_clean
    except sqlite3.Error as exc:
        for conn in opened:
            conn.close()
        if _primary_code(exc) == _SQLITE_FULL or _disk_is_full(path):
            raise _full_at_open(path) from exc
        raise StorageError(
            f"cannot open {path} as a cellrelay database ({exc}); if it is not one, point "
            "the relay at another path, else restore it from a backup"
        ) from exc
    except BaseException:
        for conn in opened:
            conn.close()
        raise


def _free_bytes(directory: Path) -> int:
    """Bytes an unprivileged process may still write on the filesystem of `directory`."""
    info = os.statvfs(directory)
    return info.f_bavail * info.f_frsize


def _disk_is_full(path: Path) -> bool:
    try:
        return _free_bytes(path.parent) < WAL_ROOM
    except OSError:
        return False


def _full_at_open(path: Path) -> StorageFullError:
    free = _free_bytes(path.parent)
    return StorageFullError(
        f"the disk holding {path} is full ({free} bytes free): the relay cannot open its "
        "database until there is room. Free space on that filesystem (or grow it), then start "
        "the relay again (under systemd it retries by itself); nothing stored was lost"
    )


def _release_reserve_if_cramped(path: Path) -> None:
    """Before opening on a full disk, give back a reserve left by the last run.

    SQLite needs room to create the `-wal` and `-shm` files; the hub finds the reserve gone
    and starts refusing writes, as it would have once the disk filled while running.
    """
    reserve = path.with_name(path.name + RESERVE_SUFFIX)
    if reserve.exists() and _free_bytes(path.parent) < WAL_ROOM:
        _unlink_if_present(reserve)


def _unlink_if_present(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _database_room_sync(conn: sqlite3.Connection) -> tuple[int, int]:
    """(bytes of free pages inside the file, bytes it may still grow under max_page_count)."""
    page_size, free, pages, limit = (
        conn.execute(f"PRAGMA {name}").fetchall()[0][0]
        for name in ("page_size", "freelist_count", "page_count", "max_page_count")
    )
    return free * page_size, max(0, limit - pages) * page_size


def _restore_reserve_sync(reserve: Path, reserve_bytes: int, free_pages: int, growth: int) -> bool:
    """Allocate the reserve if it fits; say whether the store can take writes (module docstring)."""
    try:
        held = reserve.stat().st_blocks * 512
    except FileNotFoundError:
        held = 0
    missing = max(0, reserve_bytes - held)
    if missing and _free_bytes(reserve.parent) - missing >= WAL_ROOM:
        _allocate_reserve(reserve, reserve_bytes)
    beyond = _free_bytes(reserve.parent) - WAL_ROOM
    return beyond >= 0 and free_pages + min(beyond, growth) >= max(reserve_bytes, WAL_ROOM)


def _allocate_reserve(reserve: Path, reserve_bytes: int) -> bool:
    """Make the reserve `reserve_bytes` of allocated zeros; False (and no file) if no room."""
    fd = os.open(reserve, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        try:
            os.posix_fallocate(fd, 0, reserve_bytes)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            # No fallocate on this filesystem: write the zeros ourselves.
            for offset in range(0, reserve_bytes, len(_ZEROS)):
                os.pwrite(fd, _ZEROS[: reserve_bytes - offset], offset)
        os.ftruncate(fd, reserve_bytes)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        allocated = False
    else:
        allocated = True
    finally:
        os.close(fd)
    if not allocated:
        _unlink_if_present(reserve)  # half a reserve only hides free space
    return allocated


def _prepare_files(path: Path) -> None:
    """Create the directory and file with private modes, or tighten existing modes."""
    parent = path.parent
    try:
        if not parent.exists():
            parent.mkdir(mode=DIR_MODE, parents=True)
            parent.chmod(DIR_MODE)  # mkdir's mode is filtered by the umask
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise StorageError(f"{path} is not a regular file; give the database a file path")
            if stat.S_IMODE(info.st_mode) != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
                log.warning("store_file_mode_tightened", path=str(path))
            if info.st_size == 0:
                # A new (or empty) database: make its directory entry durable as well.
                dir_fd = os.open(parent, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        finally:
            os.close(fd)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists() and stat.S_IMODE(side.stat().st_mode) != FILE_MODE:
                side.chmod(FILE_MODE)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _full_at_open(path) from exc
        raise StorageError(
            f"cannot create or open {path}: {exc.strerror}; check that the relay's user "
            "may create and write files in that directory"
        ) from exc


def _connect(path: Path, durability: Durability) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves. check_same_thread=False:
    # each connection moves between worker threads, one thread at a time (see above).
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        for pragma in (
            f"busy_timeout = {int(BUSY_TIMEOUT * 1000)}",
            f"synchronous = {_SYNCHRONOUS[durability]}",
            "secure_delete = ON",
            "foreign_keys = ON",
            "temp_store = MEMORY",
            f"wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}",
            "trusted_schema = OFF",
        ):
            conn.execute(f"PRAGMA {pragma}").fetchall()
        # A SQLite built with other defaults or omissions may ignore a pragma silently.
        _expect_pragma(conn, "secure_delete", 1)
        _expect_pragma(conn, "foreign_keys", 1)
        _expect_pragma(conn, "synchronous", {"full": 2, "normal": 1}[durability])
    except BaseException:
        conn.close()
        raise
    return conn


def _expect_pragma(conn: sqlite3.Connection, name: str, want: int) -> None:
    got = conn.execute(f"PRAGMA {name}").fetchall()[0][0]
    if got != want:
        raise StorageError(
            f"SQLite ignored PRAGMA {name} (it is {got}, cellrelay needs {want}); this "
            "SQLite build cannot be used: run cellrelay on a Python with a standard SQLite"
        )


def _enable_wal(conn: sqlite3.Connection, path: Path) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]
    if str(mode).lower() != "wal":
        raise StorageError(
            f"{path}: SQLite could not switch to WAL mode (it reports {mode!r}); put the "
            "database on a local filesystem (WAL does not work on network filesystems)"
        )


def _check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        raise StorageError(
            f"{path} failed SQLite's integrity check (first problem: {problems[0]}); "
            "stop the relay, move the file and its -wal and -shm files aside, and "
            "restore a backup or start with an empty database"
        )


def _check_identity(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse another program's database, and a schema newer than this code knows."""
    app_id = conn.execute("PRAGMA application_id").fetchall()[0][0]
    version = conn.execute("PRAGMA user_version").fetchall()[0][0]
    objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchall()[0][0]
    if app_id != APPLICATION_ID and (app_id != 0 or version != 0 or objects != 0):
        raise StorageError(
            f"{path} is not a cellrelay database (application_id {app_id:#x}, schema "
            f"version {version}); point the relay at a new path"
        )
    _check_version(version, SCHEMA_VERSION, path)


def _check_version(version: int, known: int, path: Path) -> None:
    if version > known:
        raise StorageError(
            f"{path} has schema version {version}, but this cellrelay knows versions up to "
            f"{known}; run the newer cellrelay that wrote it (or restore a backup made "
            "with this version)"
        )


def _migrate(
    conn: sqlite3.Connection, migrations: Sequence[Sequence[str]], path: Path
) -> int | None:
    """Run the missing migration steps in one transaction; return the old version, if any."""
    target = len(migrations)
    with _transaction(conn):
        # Read again inside the transaction: another process may have migrated meanwhile.
        version: int = conn.execute("PRAGMA user_version").fetchall()[0][0]
        _check_version(version, target, path)
        if version == target:
            return None
        for step in migrations[version:]:
            for statement in step:
                conn.execute(statement).fetchall()
        # PRAGMA takes no bound parameters; target is an int we computed.
        conn.execute(f"PRAGMA user_version = {int(target)}")
    log.info("store_migrated", path=str(path), from_version=version, to_version=target)
    return version


def _check_tables(conn: sqlite3.Connection, path: Path) -> None:
    found = dict(conn.execute("SELECT name, type FROM sqlite_master").fetchall())
    for name, kind in _EXPECTED_OBJECTS.items():
        if found.get(name) != kind:
            raise StorageError(
                f"{path} claims schema version {SCHEMA_VERSION} but has no {kind} {name!r}; "
                "it was changed outside cellrelay: restore a backup, or move it aside to "
                "start with an empty database"
            )
