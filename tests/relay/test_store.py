"""Tests for the relay's stores: one contract suite on both, then what only SQLite does.

The contract tests run against `MemoryStore` and `SQLiteStore` (a real file in tmp_path)
through the `store` fixture. The SQLite tests cover persistence, schema versions and
migrations, file modes, that deleted ciphertext is gone from every file on disk (a canary
scan of the raw bytes), crash durability with a separate process killed by SIGKILL, and a
Hypothesis test that runs random operation sequences on both stores and compares every
answer.
"""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import structlog
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.relay._memory_store import MemoryStore
from cellrelay.relay._sqlite_store import (
    APPLICATION_ID,
    DELETE_CHUNK_ROWS,
    SCHEMA_VERSION,
    SQLiteStore,
    _migrate,
    open_sqlite_store,
)
from cellrelay.relay._store import (
    INT64_MAX,
    AppendResult,
    MailboxExistsError,
    MailboxId,
    MailboxRecord,
    PendingAppend,
    StorageError,
    Store,
    StoredEnvelope,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

NOW = 1_700_000_000  # a fixed "current time"; stores take time as an argument
FAR = NOW + 10**6  # an expiry that never comes during a test
QUOTA = 1 << 30  # default_max_bytes when a test is not about quotas
REPO = Path(__file__).resolve().parents[2]


def new_id() -> MailboxId:
    return MailboxId(secrets.token_bytes(16))


def make_record(mailbox: MailboxId | None = None, **fields: int) -> MailboxRecord:
    return MailboxRecord(
        mailbox=new_id() if mailbox is None else mailbox,
        write_key=secrets.token_bytes(32),
        read_key=secrets.token_bytes(32),
        admin_key=secrets.token_bytes(32),
        created_at=NOW,
        **fields,
    )


def pending(
    mailbox: MailboxId, envelope: bytes = b"sealed", expires_at: int = FAR
) -> PendingAppend:
    return PendingAppend(mailbox=mailbox, expires_at=expires_at, envelope=envelope)


async def new_mailbox(store: Store, **fields: int) -> MailboxId:
    record = make_record(None, **fields)
    await store.create_mailbox(record)
    return record.mailbox


async def append(store: Store, *items: PendingAppend) -> list[int | None]:
    return [r.seq for r in await store.append_batch(items, default_max_bytes=QUOTA)]


async def all_seqs(store: Store, mailbox: MailboxId, now: float = NOW) -> list[int]:
    return [e.seq for e in await store.read_after(mailbox, 0, limit=10**6, now=now)]


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "memory":
        memory = MemoryStore()
        yield memory
        await memory.aclose()
    else:
        async with open_sqlite_store(tmp_path / "relay.sqlite3") as sqlite:
            yield sqlite


# --- the contract, on both stores ----------------------------------------------------------


async def test_create_then_get_returns_the_same_record(store: Store) -> None:
    record = make_record(admin_counter=3, max_ttl=600, max_bytes=5000, head=0)
    await store.create_mailbox(record)
    assert await store.get_mailbox(record.mailbox) == record
    assert await store.get_mailbox(new_id()) is None
    assert await store.count_mailboxes() == 1


async def test_duplicate_id_is_refused_and_keeps_the_first(store: Store) -> None:
    first = make_record()
    await store.create_mailbox(first)
    with pytest.raises(MailboxExistsError) as caught:
        await store.create_mailbox(make_record(first.mailbox))
    assert first.mailbox.hex() not in str(caught.value)
    assert await store.get_mailbox(first.mailbox) == first
    assert await store.count_mailboxes() == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"mailbox": b"short"},
        {"write_key": b"k" * 31},
        {"admin_key": b"k" * 33},
        {"admin_counter": -1},
        {"max_bytes": INT64_MAX + 1},
        {"stored_bytes": 5},
    ],
)
async def test_invalid_record_is_refused(store: Store, bad: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "mailbox": new_id(),
        "write_key": b"w" * 32,
        "read_key": b"r" * 32,
        "admin_key": b"a" * 32,
    }
    fields.update(bad)
    with pytest.raises(ValueError, match=r"must|stored_bytes"):
        await store.create_mailbox(MailboxRecord(**fields))  # type: ignore[arg-type]
    assert await store.count_mailboxes() == 0


async def test_seqs_count_per_mailbox_across_batches(store: Store) -> None:
    a = await new_mailbox(store)
    b = await new_mailbox(store)
    assert await append(store, pending(a), pending(b), pending(a), pending(a)) == [1, 1, 2, 3]
    assert await append(store, pending(b), pending(a)) == [2, 4]
    assert await append(store, pending(b, b"x" * 10)) == [3]
    record_a = await store.get_mailbox(a)
    record_b = await store.get_mailbox(b)
    assert record_a is not None
    assert record_b is not None
    assert (record_a.head, record_a.stored_bytes) == (4, 4 * len(b"sealed"))
    assert (record_b.head, record_b.stored_bytes) == (3, 2 * len(b"sealed") + 10)
    assert await all_seqs(store, a) == [1, 2, 3, 4]


async def test_seqs_start_after_the_created_head(store: Store) -> None:
    mailbox = await new_mailbox(store, head=41)
    assert await append(store, pending(mailbox), pending(mailbox)) == [42, 43]


async def test_seqs_are_never_reused_after_expiry(store: Store) -> None:
    mailbox = await new_mailbox(store)
    assert await append(store, pending(mailbox, expires_at=NOW + 1)) == [1]
    assert await store.delete_expired(NOW + 5) == 1
    assert await all_seqs(store, mailbox) == []
    assert await append(store, pending(mailbox)) == [2]


async def test_empty_batch_returns_nothing(store: Store) -> None:
    assert await store.append_batch([], default_max_bytes=QUOTA) == []


async def test_unknown_mailbox_fails_only_its_items(store: Store) -> None:
    known = await new_mailbox(store)
    results = await store.append_batch(
        [pending(known), pending(new_id()), pending(known)], default_max_bytes=QUOTA
    )
    assert results == [
        AppendResult(seq=1),
        AppendResult(seq=None, error="no_such_mailbox"),
        AppendResult(seq=2),
    ]


async def test_quota_refuses_only_the_items_that_do_not_fit(store: Store) -> None:
    small = await new_mailbox(store, max_bytes=100)
    other = await new_mailbox(store, max_bytes=100)
    results = await store.append_batch(
        [
            pending(small, b"a" * 60),
            pending(small, b"b" * 60),  # 120 > 100
            pending(other, b"c" * 100),  # exactly the limit fits
            pending(small, b"d" * 40),  # 60 + 40 = 100 fits
            pending(small, b""),  # an empty envelope still fits a full mailbox
            pending(small, b"e"),
        ],
        default_max_bytes=10,  # ignored: both mailboxes have their own limit
    )
    full = AppendResult(seq=None, error="mailbox_full")
    assert results == [
        AppendResult(seq=1),
        full,
        AppendResult(seq=1),
        AppendResult(seq=2),
        AppendResult(seq=3),
        full,
    ]
    record = await store.get_mailbox(small)
    assert record is not None
    assert record.stored_bytes == 100
    found = await store.read_after(small, 0, limit=10, now=NOW)
    assert [e.envelope for e in found] == [b"a" * 60, b"d" * 40, b""]


async def test_zero_max_bytes_means_the_default(store: Store) -> None:
    mailbox = await new_mailbox(store)  # max_bytes 0
    results = await store.append_batch(
        [pending(mailbox, b"x" * 8), pending(mailbox, b"y" * 8)], default_max_bytes=10
    )
    assert [r.error for r in results] == [None, "mailbox_full"]


async def test_expiry_releases_quota(store: Store) -> None:
    mailbox = await new_mailbox(store, max_bytes=100)
    await append(
        store, pending(mailbox, b"a" * 70, expires_at=NOW + 10), pending(mailbox, b"b" * 30)
    )
    assert await append(store, pending(mailbox, b"c")) == [None]
    assert await store.delete_expired(NOW + 10) == 1
    record = await store.get_mailbox(mailbox)
    assert record is not None
    assert record.stored_bytes == 30
    assert await append(store, pending(mailbox, b"c" * 70)) == [3]


async def test_total_stored_bytes_follows_appends_expiry_and_deletion(store: Store) -> None:
    """The relay-wide sum the hub's `max_stored_bytes` starts from and refreshes to."""
    assert await store.total_stored_bytes() == 0
    first, second = await new_mailbox(store), await new_mailbox(store)
    await append(store, pending(first, b"a" * 70, expires_at=NOW + 10), pending(second, b"b" * 30))
    assert await store.total_stored_bytes() == 100
    assert await store.delete_expired(NOW + 10) == 1
    assert await store.total_stored_bytes() == 30
    assert await store.delete_mailbox(second)
    assert await store.total_stored_bytes() == 0


async def test_read_after_pages_in_seq_order(store: Store) -> None:
    mailbox = await new_mailbox(store)
    envelopes = [f"message {i}".encode() for i in range(1, 11)]
    await append(store, *(pending(mailbox, e, expires_at=FAR + i) for i, e in enumerate(envelopes)))
    pages = []
    after = 0
    while page := await store.read_after(mailbox, after, limit=3, now=NOW):
        pages.append([e.seq for e in page])
        after = page[-1].seq
    assert pages == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
    first = await store.read_after(mailbox, 4, limit=1, now=NOW)
    assert first == [StoredEnvelope(seq=5, expires_at=FAR + 4, envelope=envelopes[4])]
    assert await store.read_after(mailbox, 0, limit=0, now=NOW) == []
    assert await store.read_after(mailbox, 10, limit=5, now=NOW) == []
    assert await store.read_after(mailbox, 2**64, limit=5, now=NOW) == []
    assert [e.seq for e in await store.read_after(mailbox, -5, limit=2, now=NOW)] == [1, 2]
    assert await store.read_after(new_id(), 0, limit=5, now=NOW) == []
    with pytest.raises(ValueError, match="limit"):
        await store.read_after(mailbox, 0, limit=-1, now=NOW)


async def test_read_after_never_returns_expired_envelopes(store: Store) -> None:
    mailbox = await new_mailbox(store)
    expiries = [NOW + 10, NOW + 5, NOW + 20, NOW + 5, NOW + 30]
    await append(store, *(pending(mailbox, expires_at=t) for t in expiries))
    # No sweeper has run: the filter is in the read itself. expires_at == now is expired.
    assert await all_seqs(store, mailbox, now=NOW + 5) == [1, 3, 5]
    assert await all_seqs(store, mailbox, now=NOW + 9.5) == [1, 3, 5]
    assert await all_seqs(store, mailbox, now=NOW + 10) == [3, 5]
    # The limit counts unexpired envelopes, skipping expired ones in between.
    page = await store.read_after(mailbox, 0, limit=2, now=NOW + 10)
    assert [e.seq for e in page] == [3, 5]
    assert await all_seqs(store, mailbox, now=NOW + 30) == []


async def test_update_admin_needs_a_higher_counter(store: Store) -> None:
    record = make_record(admin_counter=2)
    await store.create_mailbox(record)
    assert not await store.update_admin(record.mailbox, counter=2, max_ttl=5)
    assert not await store.update_admin(record.mailbox, counter=1, max_ttl=5)
    assert await store.get_mailbox(record.mailbox) == record
    assert await store.update_admin(record.mailbox, counter=3)
    assert await store.update_admin(record.mailbox, counter=10, max_ttl=60)
    assert not await store.update_admin(record.mailbox, counter=9, max_ttl=1)
    updated = await store.get_mailbox(record.mailbox)
    assert updated is not None
    assert (updated.admin_counter, updated.max_ttl) == (10, 60)
    assert not await store.update_admin(new_id(), counter=100)


async def test_update_admin_changes_only_the_given_fields(store: Store) -> None:
    record = make_record(max_ttl=60, max_bytes=1000)
    await store.create_mailbox(record)
    mailbox = record.mailbox
    await append(store, pending(mailbox))
    new_write, new_read, new_admin = (secrets.token_bytes(32) for _ in range(3))
    assert await store.update_admin(mailbox, counter=1, write_key=new_write)
    current = await store.get_mailbox(mailbox)
    assert current is not None
    assert current.write_key == new_write
    assert (current.read_key, current.admin_key) == (record.read_key, record.admin_key)
    assert (current.max_ttl, current.max_bytes, current.head) == (60, 1000, 1)
    assert await store.update_admin(
        mailbox, counter=2, read_key=new_read, admin_key=new_admin, max_bytes=7
    )
    current = await store.get_mailbox(mailbox)
    assert current is not None
    assert (current.write_key, current.read_key, current.admin_key) == (
        new_write,
        new_read,
        new_admin,
    )
    assert (current.max_ttl, current.max_bytes, current.admin_counter) == (60, 7, 2)
    assert current.created_at == record.created_at
    with pytest.raises(ValueError, match="read_key"):
        await store.update_admin(mailbox, counter=3, read_key=b"short")
    with pytest.raises(ValueError, match="counter"):
        await store.update_admin(mailbox, counter=2**63)


async def test_lowered_quota_applies_to_the_next_append(store: Store) -> None:
    mailbox = await new_mailbox(store)
    await append(store, pending(mailbox, b"x" * 50))
    assert await store.update_admin(mailbox, counter=1, max_bytes=40)
    assert await append(store, pending(mailbox, b"y")) == [None]


async def test_delete_mailbox_removes_it_and_its_envelopes(store: Store) -> None:
    gone = await new_mailbox(store)
    kept = await new_mailbox(store)
    await append(store, pending(gone), pending(kept), pending(gone))
    assert await store.delete_mailbox(gone)
    assert await store.get_mailbox(gone) is None
    assert await store.read_after(gone, 0, limit=10, now=NOW) == []
    assert await append(store, pending(gone)) == [None]
    assert not await store.delete_mailbox(gone)
    assert not await store.update_admin(gone, counter=1)
    assert await all_seqs(store, kept) == [1]
    assert await store.count_mailboxes() == 1
    # The id can be used again, and starts from the new record's head.
    await store.create_mailbox(make_record(gone))
    assert await append(store, pending(gone)) == [1]
    assert await store.delete_expired(FAR + 1) == 2  # nothing of the old mailbox was left


async def test_delete_expired_counts_and_releases_quota(store: Store) -> None:
    a = await new_mailbox(store)
    b = await new_mailbox(store)
    await append(
        store,
        pending(a, b"1" * 10, NOW + 1),
        pending(b, b"2" * 20, NOW + 2),
        pending(a, b"3" * 30, NOW + 3),
        pending(b, b"4" * 40, NOW + 100),
    )
    assert await store.delete_expired(NOW) == 0
    assert await store.delete_expired(NOW + 2) == 2
    assert await store.delete_expired(NOW + 2) == 0
    record_a = await store.get_mailbox(a)
    record_b = await store.get_mailbox(b)
    assert record_a is not None
    assert record_b is not None
    assert (record_a.stored_bytes, record_b.stored_bytes) == (30, 40)
    assert await store.delete_expired(NOW + 1000) == 2
    record_a = await store.get_mailbox(a)
    assert record_a is not None
    assert (record_a.stored_bytes, record_a.head) == (0, 2)


async def test_delete_expired_goes_through_several_chunks(store: Store) -> None:
    mailboxes = [await new_mailbox(store) for _ in range(3)]
    total = 2 * DELETE_CHUNK_ROWS + 7
    items = [pending(mailboxes[i % 3], b"e" * 5, NOW + 1 + i % 4) for i in range(total)]
    items.append(pending(mailboxes[0], b"stays"))
    await store.append_batch(items, default_max_bytes=QUOTA)
    assert await store.delete_expired(NOW + 10) == total
    for mailbox in mailboxes:
        record = await store.get_mailbox(mailbox)
        assert record is not None
        assert record.stored_bytes == (5 if mailbox == mailboxes[0] else 0)
    assert await all_seqs(store, mailboxes[0]) == [total // 3 + 1]


async def test_a_batch_over_many_mailboxes_keeps_every_head_and_byte_count(store: Store) -> None:
    """More mailboxes and envelopes than one multi-row statement takes (SQLite: 64 rows)."""
    mailboxes = [await new_mailbox(store) for _ in range(70)]
    items = [pending(mailboxes[i % 70], b"e" * (1 + i % 70)) for i in range(3 * 70 + 5)]
    seqs = await append(store, *items)
    assert seqs == [1 + i // 70 for i in range(len(items))]
    for index, mailbox in enumerate(mailboxes):
        record = await store.get_mailbox(mailbox)
        assert record is not None
        count = 4 if index < 5 else 3
        assert (record.head, record.stored_bytes) == (count, count * (1 + index))
        stored = await store.read_after(mailbox, 0, limit=10, now=NOW)
        assert [(e.seq, e.envelope) for e in stored] == [
            (seq, b"e" * (1 + index)) for seq in range(1, count + 1)
        ]


async def test_concurrent_batches_get_distinct_seqs(store: Store) -> None:
    mailbox = await new_mailbox(store)
    seen: list[int | None] = []

    async def publisher(n: int) -> None:
        for _ in range(5):
            seen.extend(await append(store, *(pending(mailbox) for _ in range(n))))

    async with trio.open_nursery() as nursery:
        for n in range(1, 9):
            nursery.start_soon(publisher, n)
    assert sorted(s for s in seen if s is not None) == list(range(1, 5 * 36 + 1))
    assert await all_seqs(store, mailbox) == list(range(1, 181))


async def test_closed_store_refuses_work(store: Store) -> None:
    mailbox = await new_mailbox(store)
    await store.aclose()
    await store.aclose()  # a second close is harmless
    with pytest.raises(trio.ClosedResourceError):
        await store.get_mailbox(mailbox)
    with pytest.raises(trio.ClosedResourceError):
        await append(store, pending(mailbox))
    with pytest.raises(trio.ClosedResourceError):
        await store.delete_expired(NOW)


async def test_invalid_append_is_refused_before_anything_is_stored(store: Store) -> None:
    mailbox = await new_mailbox(store)
    with pytest.raises(ValueError, match="expires_at"):
        await append(store, pending(mailbox), pending(mailbox, expires_at=2**63))
    assert await all_seqs(store, mailbox) == []


async def test_nan_time_is_refused(store: Store) -> None:
    mailbox = await new_mailbox(store)
    await append(store, pending(mailbox, expires_at=NOW))
    with pytest.raises(ValueError, match="NaN"):
        await store.delete_expired(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        await store.read_after(mailbox, 0, limit=5, now=float("nan"))
    assert await store.delete_expired(NOW) == 1


async def test_a_cancelled_append_before_it_starts_stores_nothing(store: Store) -> None:
    mailbox = await new_mailbox(store)
    with trio.CancelScope() as scope:
        scope.cancel()
        await append(store, pending(mailbox))
    assert scope.cancelled_caught
    assert await all_seqs(store, mailbox) == []


# --- SQLite only ---------------------------------------------------------------------------


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    record = make_record(max_bytes=1000)
    async with open_sqlite_store(path) as store:
        await store.create_mailbox(record)
        await append(store, pending(record.mailbox, b"one"), pending(record.mailbox, b"two"))
        assert await store.update_admin(record.mailbox, counter=4, max_ttl=99)
    async with open_sqlite_store(path, durability="normal") as store:
        found = await store.get_mailbox(record.mailbox)
        assert found is not None
        assert (found.head, found.stored_bytes, found.admin_counter, found.max_ttl) == (2, 6, 4, 99)
        assert found.write_key == record.write_key
        envelopes = await store.read_after(record.mailbox, 0, limit=5, now=NOW)
        assert [e.envelope for e in envelopes] == [b"one", b"two"]
        assert await append(store, pending(record.mailbox)) == [3]


async def test_schema_version_and_application_id_are_written(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    async with open_sqlite_store(path):
        pass
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


async def test_a_version_0_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    conn = sqlite3.connect(path)  # an empty database with a header: schema version 0
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("VACUUM")
    conn.close()
    assert path.stat().st_size > 0
    with structlog.testing.capture_logs() as logs:
        async with open_sqlite_store(path) as store:
            mailbox = await new_mailbox(store)
            assert await append(store, pending(mailbox)) == [1]
    migrated = [e for e in logs if e["event"] == "store_migrated"]
    assert [(e["from_version"], e["to_version"]) for e in migrated] == [(0, SCHEMA_VERSION)]


# The version 1 schema exactly as it shipped. Never change this: it is what files written
# by version 1 contain, and the test below checks that such a file still opens.
SCHEMA_V1 = [
    "PRAGMA application_id = 1668443257",
    """CREATE TABLE mailboxes (
        id INTEGER PRIMARY KEY,
        mailbox BLOB NOT NULL UNIQUE CHECK (length(mailbox) = 16),
        write_key BLOB NOT NULL CHECK (length(write_key) = 32),
        read_key BLOB NOT NULL CHECK (length(read_key) = 32),
        admin_key BLOB NOT NULL CHECK (length(admin_key) = 32),
        admin_counter INTEGER NOT NULL CHECK (admin_counter >= 0),
        max_ttl INTEGER NOT NULL CHECK (max_ttl >= 0),
        max_bytes INTEGER NOT NULL CHECK (max_bytes >= 0),
        created_at INTEGER NOT NULL)""",
    """CREATE TABLE heads (
        mailbox_id INTEGER PRIMARY KEY REFERENCES mailboxes (id) ON DELETE CASCADE,
        head INTEGER NOT NULL CHECK (head >= 0),
        stored_bytes INTEGER NOT NULL CHECK (stored_bytes >= 0))""",
    """CREATE TABLE envelopes (
        id INTEGER PRIMARY KEY,
        mailbox_id INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL CHECK (seq > 0),
        expires_at INTEGER NOT NULL,
        envelope BLOB NOT NULL,
        UNIQUE (mailbox_id, seq))""",
    "CREATE INDEX envelopes_by_expiry ON envelopes (expires_at)",
    "PRAGMA user_version = 1",
]


async def test_a_hand_made_version_1_file_opens(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    record = make_record(max_bytes=500, admin_counter=7)
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in SCHEMA_V1:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO mailboxes VALUES (1, ?, ?, ?, ?, 7, 0, 500, ?)",
        (record.mailbox, record.write_key, record.read_key, record.admin_key, NOW),
    )
    conn.execute("INSERT INTO heads VALUES (1, 9, 5)")
    conn.execute("INSERT INTO envelopes VALUES (1, 1, 9, ?, ?)", (FAR, b"hello"))
    conn.close()
    async with open_sqlite_store(path) as store:
        found = await store.get_mailbox(record.mailbox)
        assert found == MailboxRecord(
            mailbox=record.mailbox,
            write_key=record.write_key,
            read_key=record.read_key,
            admin_key=record.admin_key,
            admin_counter=7,
            max_bytes=500,
            created_at=NOW,
            head=9,
            stored_bytes=5,
        )
        assert await store.read_after(record.mailbox, 0, limit=5, now=NOW) == [
            StoredEnvelope(seq=9, expires_at=FAR, envelope=b"hello")
        ]
        assert await append(store, pending(record.mailbox)) == [10]


async def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    async with open_sqlite_store(path):
        pass
    newer = SCHEMA_VERSION + 1
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StorageError, match=rf"schema version {newer}.*up to {SCHEMA_VERSION}"):
        await SQLiteStore.open(path)
    assert path.read_bytes() == before


async def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="not a cellrelay database"):
        await SQLiteStore.open(path)
    conn = sqlite3.connect(path)
    names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
    conn.close()
    assert names == ["notes"]


async def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    path.write_bytes(b"this is not a database, it is a text file. " * 200)
    with pytest.raises(StorageError, match="cannot open"):
        await SQLiteStore.open(path)


async def test_a_missing_table_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    async with open_sqlite_store(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE heads")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="'heads'"):
        await SQLiteStore.open(path)


async def test_a_corrupt_index_fails_the_integrity_check(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    async with open_sqlite_store(path) as store:
        mailbox = await new_mailbox(store)
        await append(store, *(pending(mailbox, expires_at=FAR + i) for i in range(50)))
    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute(
        "SELECT rootpage FROM sqlite_master WHERE name = 'envelopes_by_expiry'"
    ).fetchone()[0]
    conn.close()
    # Scramble the index's root page after its header: its entries no longer match the table.
    with path.open("r+b") as file:
        file.seek((root - 1) * page_size + 100)
        file.write(secrets.token_bytes(page_size - 100))
    with pytest.raises(StorageError, match=r"integrity check|cannot open"):
        await SQLiteStore.open(path)


async def test_a_failed_migration_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        steps = [("CREATE TABLE first (x INTEGER)",), ("CREATE TABLE broken (",)]
        with pytest.raises(sqlite3.OperationalError):
            _migrate(conn, steps, path)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        assert _migrate(conn, steps[:1], path) == 0
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert _migrate(conn, steps[:1], path) is None
    finally:
        conn.close()


async def test_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "relay.sqlite3"
    async with open_sqlite_store(path) as store:
        mailbox = await new_mailbox(store)
        await append(store, pending(mailbox))
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        for name in ("relay.sqlite3", "relay.sqlite3-wal", "relay.sqlite3-shm"):
            assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name


async def test_loose_modes_are_tightened(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    async with open_sqlite_store(path):
        pass
    path.chmod(0o644)
    async with open_sqlite_store(path) as store:
        await new_mailbox(store)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        wal = path.with_name(path.name + "-wal")
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600


def files_containing(directory: Path, needle: bytes) -> list[str]:
    """Name every file under `directory` whose raw bytes contain `needle`."""
    return sorted(p.name for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes())


def canary() -> bytes:
    return b"CANARY-" + secrets.token_hex(16).encode()


async def test_expired_ciphertext_is_gone_from_every_file(tmp_path: Path) -> None:
    directory = tmp_path / "db"
    secret_small, secret_large, keeper = canary(), canary(), canary()
    # The large envelope spans several overflow pages; the canary is at both ends.
    large = secret_large + secrets.token_bytes(20_000) + secret_large
    async with open_sqlite_store(directory / "relay.sqlite3") as store:
        mailbox = await new_mailbox(store)
        other = await new_mailbox(store)
        await append(
            store,
            pending(mailbox, secrets.token_bytes(300) + secret_small, NOW + 10),
            pending(mailbox, keeper, FAR),
            pending(other, large, NOW + 10),
            pending(other, b"dummy", NOW + 1),
        )
        # Deleting the dummy checkpoints: the canaries now sit in the main database file.
        assert await store.delete_expired(NOW + 1) == 1
        assert files_containing(directory, secret_small) == ["relay.sqlite3"]
        await append(store, pending(other, b"more", FAR))  # and the WAL is in use again
        assert await store.delete_expired(NOW + 10) == 2
        assert not store.wal_checkpoint_pending
        for secret in (secret_small, secret_large):
            assert files_containing(directory, secret) == []
        assert files_containing(directory, keeper) == ["relay.sqlite3"]  # the scan works
        assert await all_seqs(store, mailbox) == [2]
    for secret in (secret_small, secret_large):
        assert files_containing(directory, secret) == []


async def test_a_deleted_mailbox_is_gone_from_every_file(tmp_path: Path) -> None:
    directory = tmp_path / "db"
    secret, keeper = canary(), canary()
    async with open_sqlite_store(directory / "relay.sqlite3") as store:
        doomed = make_record()
        await store.create_mailbox(doomed)
        kept = await new_mailbox(store)
        await append(store, pending(doomed.mailbox, secret), pending(kept, keeper))
        assert files_containing(directory, secret) == ["relay.sqlite3-wal"]
        assert await store.delete_mailbox(doomed.mailbox)
        for needle in (secret, doomed.mailbox, doomed.write_key, doomed.admin_key):
            assert files_containing(directory, needle) == []
        assert files_containing(directory, keeper) == ["relay.sqlite3"]


async def test_a_busy_checkpoint_is_reported_and_retried(tmp_path: Path) -> None:
    directory = tmp_path / "db"
    path = directory / "relay.sqlite3"
    secret = canary()
    async with open_sqlite_store(path) as store:
        mailbox = await new_mailbox(store)
        await append(store, pending(mailbox, secret, NOW + 1))
        # Another program reads an old snapshot, so the WAL cannot be truncated under it.
        outsider = sqlite3.connect(path, isolation_level=None)
        try:
            outsider.execute("BEGIN")
            outsider.execute("SELECT count(*) FROM envelopes").fetchall()
            with structlog.testing.capture_logs() as logs:
                assert await store.delete_expired(NOW + 1) == 1
            pending_while_read = store.wal_checkpoint_pending
            assert [e["event"] for e in logs] == ["wal_checkpoint_busy"]
            assert files_containing(directory, secret) != []
        finally:
            outsider.close()
        assert await store.delete_expired(NOW + 1) == 0  # nothing new, but it retries
        assert (pending_while_read, store.wal_checkpoint_pending) == (True, False)
        assert files_containing(directory, secret) == []


async def test_reads_do_not_wait_for_a_write_transaction(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    async with open_sqlite_store(path) as store:
        mailbox = await new_mailbox(store)
        await append(store, pending(mailbox, b"committed"))
        outsider = sqlite3.connect(path, isolation_level=None)
        try:
            outsider.execute("BEGIN IMMEDIATE")  # holds the write lock
            outsider.execute("UPDATE heads SET head = 99")
            # Readers see the last commit; with a rollback journal they would be locked out.
            found = await store.read_after(mailbox, 0, limit=5, now=NOW)
            assert [e.envelope for e in found] == [b"committed"]
            record = await store.get_mailbox(mailbox)
            assert record is not None
            assert record.head == 1
        finally:
            outsider.close()


async def test_a_batch_whose_thread_started_completes_despite_cancellation(
    tmp_path: Path,
) -> None:
    path = tmp_path / "relay.sqlite3"
    async with open_sqlite_store(path) as store:
        mailbox = await new_mailbox(store)
        outsider = sqlite3.connect(path, isolation_level=None)
        outsider.execute("BEGIN IMMEDIATE")  # the store's BEGIN IMMEDIATE now waits
        results: list[int | None] = []

        async def publish(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
            with trio.CancelScope() as scope:
                task_status.started(scope)
                results.extend(await append(store, pending(mailbox), pending(mailbox)))
                await trio.sleep_forever()  # the cancellation lands here

        async with trio.open_nursery() as nursery:
            scope = await nursery.start(publish)
            await trio.testing.wait_all_tasks_blocked()  # the worker thread is waiting
            scope.cancel()
            outsider.execute("ROLLBACK")
            outsider.close()
        assert results == [1, 2]
        assert await all_seqs(store, mailbox) == [1, 2]


CRASH_WRITER = """
import sys
import structlog, trio
from cellrelay.relay._sqlite_store import SQLiteStore
from cellrelay.relay._store import MailboxId, PendingAppend

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

async def main() -> None:
    path, durability, mailbox_hex, size = sys.argv[1:5]
    mailbox = MailboxId(bytes.fromhex(mailbox_hex))
    store = await SQLiteStore.open(path, durability=durability)
    head = 0
    while True:
        items = [
            PendingAppend(mailbox=mailbox, expires_at=2**40, envelope=b"%d:" % (head + i + 1) * 40)
            for i in range(int(size))
        ]
        results = await store.append_batch(items, default_max_bytes=2**40)
        assert [r.seq for r in results] == list(range(head + 1, head + 1 + len(items)))
        head += len(items)
        sys.stdout.write("".join(f"{r.seq}\\n" for r in results))
        sys.stdout.flush()

trio.run(main)
"""


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["full", "normal"])
async def test_acknowledged_appends_survive_sigkill(tmp_path: Path, durability: str) -> None:
    path = tmp_path / "relay.sqlite3"
    async with open_sqlite_store(path) as store:
        mailbox = await new_mailbox(store)
    writer = await trio.lowlevel.open_process(
        [sys.executable, "-c", CRASH_WRITER, str(path), durability, mailbox.hex(), "37"],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert writer.stdout is not None
    output = b""
    try:
        while output.count(b"\n") < 3000:
            chunk = await writer.stdout.receive_some()
            assert chunk, "the writer exited early"
            output += chunk
        writer.send_signal(signal.SIGKILL)  # mid-stream: it never stops appending
        while chunk := await writer.stdout.receive_some():
            output += chunk
    finally:
        writer.kill()
        await writer.wait()
        await writer.stdout.aclose()
    assert writer.returncode == -signal.SIGKILL
    # Only whole lines were acknowledged; a line cut off by the kill was not.
    acknowledged = [int(line) for line in output.split(b"\n")[:-1]]
    assert acknowledged == list(range(1, len(acknowledged) + 1))
    async with open_sqlite_store(path) as store:
        stored = await store.read_after(mailbox, 0, limit=10**6, now=NOW)
        record = await store.get_mailbox(mailbox)
    assert record is not None
    seqs = [e.seq for e in stored]
    assert seqs == list(range(1, record.head + 1))  # whole batches, no gaps
    assert record.head >= acknowledged[-1]
    assert all(e.envelope == b"%d:" % e.seq * 40 for e in stored)
    assert record.stored_bytes == sum(len(e.envelope) for e in stored)


DIE_AFTER_BUSY_CHECKPOINT = """
import os, signal, sqlite3, sys
import structlog, trio
from cellrelay.relay._sqlite_store import SQLiteStore
from cellrelay.relay._store import MailboxId, MailboxRecord, PendingAppend

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

async def main() -> None:
    path, secret = sys.argv[1], sys.argv[2].encode()
    store = await SQLiteStore.open(path)
    mailbox = MailboxId(os.urandom(16))
    await store.create_mailbox(
        MailboxRecord(mailbox=mailbox, write_key=b"w" * 32, read_key=b"r" * 32, admin_key=b"a" * 32)
    )
    await store.append_batch(
        [PendingAppend(mailbox=mailbox, expires_at=10, envelope=secret)], default_max_bytes=1000
    )
    reader = sqlite3.connect(path, isolation_level=None)  # pins the WAL: checkpoint is busy
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM envelopes").fetchall()
    assert await store.delete_expired(20) == 1
    assert store.wal_checkpoint_pending
    os.kill(os.getpid(), signal.SIGKILL)  # no close, no retry: the WAL keeps the secret

trio.run(main)
"""


async def test_opening_clears_ciphertext_a_crash_left_in_the_wal(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    secret = canary()
    result = await trio.run_process(
        [sys.executable, "-c", DIE_AFTER_BUSY_CHECKPOINT, str(path), secret.decode()],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert result.returncode == -signal.SIGKILL
    assert files_containing(tmp_path, secret) == ["relay.sqlite3-wal"]
    async with open_sqlite_store(path) as store:
        assert not store.wal_checkpoint_pending
        assert files_containing(tmp_path, secret) == []
        assert await store.count_mailboxes() == 1


# --- MemoryStore and SQLiteStore agree on random operation sequences -----------------------

SLOTS = 4  # mailbox ids the operations pick from; the last is never created
KEY = b"k" * 32

operation = st.one_of(
    st.tuples(
        st.just("create"),
        st.integers(0, SLOTS - 2),
        st.sampled_from([0, 40, 120]),
        st.sampled_from([0, 0, 5]),
    ),
    st.tuples(
        st.just("append"),
        st.lists(
            st.tuples(st.integers(0, SLOTS - 1), st.integers(0, 50), st.integers(1, 6)),
            max_size=6,
        ),
        st.sampled_from([60, 200]),
    ),
    st.tuples(st.just("read"), st.integers(0, SLOTS - 1), st.integers(-1, 12), st.integers(0, 4)),
    st.tuples(
        st.just("admin"),
        st.integers(0, SLOTS - 1),
        st.integers(0, 6),
        st.booleans(),
        st.none() | st.sampled_from([0, 30, 100]),
    ),
    st.tuples(st.just("delete"), st.integers(0, SLOTS - 1)),
    st.tuples(st.just("sweep")),
    st.tuples(st.just("tick"), st.sampled_from([0.5, 1, 3])),
)


async def apply(store: Store, op: tuple[object, ...], ids: list[MailboxId], now: float) -> object:
    """Run one operation on `store` and return what it answered (or raised)."""
    try:
        match op:
            case ("create", int(slot), int(max_bytes), int(head)):
                await store.create_mailbox(
                    MailboxRecord(
                        mailbox=ids[slot],
                        write_key=KEY,
                        read_key=KEY,
                        admin_key=KEY,
                        max_bytes=max_bytes,
                        head=head,
                    )
                )
                return None
            case ("append", list(spec), int(default)):
                items = [
                    PendingAppend(
                        mailbox=ids[slot], expires_at=int(now) + ttl, envelope=b"e" * size
                    )
                    for slot, size, ttl in spec
                ]
                return await store.append_batch(items, default_max_bytes=default)
            case ("read", int(slot), int(after), int(limit)):
                return await store.read_after(ids[slot], after, limit=limit, now=now)
            case ("admin", int(slot), int(counter), bool(rotate), max_bytes):
                assert max_bytes is None or isinstance(max_bytes, int)
                return await store.update_admin(
                    ids[slot],
                    counter=counter,
                    write_key=bytes([counter]) * 32 if rotate else None,
                    max_bytes=max_bytes,
                )
            case ("delete", int(slot)):
                return await store.delete_mailbox(ids[slot])
            case ("sweep",):
                return await store.delete_expired(now)
    except (MailboxExistsError, ValueError) as exc:
        return type(exc)
    raise AssertionError(op)


@given(operations=st.lists(operation, max_size=25))
async def test_memory_and_sqlite_stores_agree(operations: list[tuple[object, ...]]) -> None:
    ids = [new_id() for _ in range(SLOTS)]
    now = float(NOW)
    memory = MemoryStore()
    with tempfile.TemporaryDirectory() as directory:
        async with open_sqlite_store(
            Path(directory) / "relay.sqlite3", durability="normal"
        ) as sqlite:
            for op in operations:
                if op[0] == "tick":
                    assert isinstance(op[1], (int, float))
                    now += op[1]
                    continue
                expected = await apply(memory, op, ids, now)
                assert await apply(sqlite, op, ids, now) == expected, op
            for mailbox in ids:
                assert await sqlite.get_mailbox(mailbox) == await memory.get_mailbox(mailbox)
                assert await all_seqs(sqlite, mailbox, now) == await all_seqs(memory, mailbox, now)
            assert await sqlite.count_mailboxes() == await memory.count_mailboxes()
