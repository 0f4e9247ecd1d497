"""Expiry: never deliver an expired envelope, refuse bad expiry times, and erase expired bytes.

The first tests run the relay under trio's MockClock (the `mock_clock` fixture: virtual
time that moves only when the test jumps it), with the relay's wall clock tied to it
(`now=lambda: BASE + trio.current_time()`), so expiry boundaries are exact. They talk
to the relay over real loopback sockets; waits are bounded on the real clock
(`real_time_limit`, `settle`), because virtual deadlines never fire by themselves.

The last test uses the real clock, a SQLite file and a 2-second TTL, and then searches
every file in the database directory (the WAL included) for the envelope's bytes.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
import trio.testing

from cellrelay.protocol._errors import ErrorCode
from cellrelay.protocol.wire._messages import (
    TTL_TOLERANCE,
    Deliver,
    Error,
    Fetch,
    MailboxId,
    Ok,
    Page,
    Published,
    Subscribed,
)
from cellrelay.relay._sqlite_store import SQLiteStore
from cellrelay.relay._store import Store

from ..wire_client import MailboxKeys, WireClient
from .conftest import (
    PATIENCE,
    RelayFactory,
    RunningRelay,
    assert_quiet,
    real_time_limit,
    receive_deliveries,
    settle,
)

if TYPE_CHECKING:
    from collections.abc import Callable

BASE = 1_800_000_000  # the relay's wall clock when virtual time is 0: a whole second
SWEEP = 600.0
# Under the mock clock nothing should time out by accident while the test jumps hours
# ahead: no keepalive pings, idle or handshake timeouts.
NEVER = 10**9  # ping_interval and handshake_timeout: seconds that never pass here


def mock_now() -> Callable[[], float]:
    """The relay's wall clock under MockClock: BASE plus virtual time."""
    return lambda: BASE + trio.current_time()


async def _store(relays: RelayFactory, kind: str) -> Store | None:
    return await relays.open_sqlite() if kind == "sqlite" else None


async def _setup(running: RunningRelay) -> tuple[WireClient, MailboxKeys, bytes]:
    writer = await running.connect()
    keys = MailboxKeys()
    mailbox = await writer.create(keys)
    assert isinstance(await writer.auth(keys.write, "write", mailbox), Ok)
    return writer, keys, mailbox


async def _reader(running: RunningRelay, keys: MailboxKeys, mailbox: bytes) -> WireClient:
    reader = await running.connect()
    assert isinstance(await reader.auth(keys.read, "read", mailbox), Ok)
    return reader


async def _fetch_seqs(client: WireClient, mailbox: bytes) -> list[int]:
    page = await client.request(
        Fetch(id=client.next_id(), mailbox=MailboxId(mailbox), after=0, limit=100)
    )
    assert isinstance(page, Page)
    return [item.seq for item in page.items]


async def _stored_seqs(store: Store, mailbox: bytes) -> list[int]:
    """What the store still holds, expired or not (now=0 hides nothing)."""
    return [e.seq for e in await store.read_after(MailboxId(mailbox), 0, limit=100, now=0)]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_expired_envelope_is_never_delivered_and_the_sweeper_deletes_it(
    mock_clock: trio.testing.MockClock, relays: RelayFactory, kind: str
) -> None:
    """An envelope stops being delivered (subscribe and fetch) exactly at expires_at; the sweeper erases it.

    Catches an off-by-one at the boundary (`expires_at == now` must not be delivered), a
    backlog or fetch that forgets the expiry filter, and a sweeper that never deletes.
    The unexpired neighbour shows the filter drops only what has expired.
    """
    async with real_time_limit(PATIENCE):
        store = await _store(relays, kind)
        running = await relays.start(
            store=store,
            now=mock_now(),
            ping_interval=NEVER,
            handshake_timeout=NEVER,
            sweep_interval=SWEEP,
        )
        assert running.store is not None
        writer, keys, mailbox = await _setup(running)
        short = await writer.publish(mailbox, b"short-lived", expires_at=BASE + 100)
        long = await writer.publish(mailbox, b"long-lived", expires_at=BASE + 100_000)
        assert isinstance(short, Published)
        assert isinstance(long, Published)

        mock_clock.jump(99.5)  # half a second before the short one expires: both delivered
        before = await _reader(running, keys, mailbox)
        assert isinstance(await before.subscribe(mailbox), Subscribed)
        assert [d.seq for d in await receive_deliveries(before, 2)] == [short.seq, long.seq]
        assert await _fetch_seqs(before, mailbox) == [short.seq, long.seq]

        mock_clock.jump(0.5)  # now == expires_at: expired
        after = await _reader(running, keys, mailbox)
        assert isinstance(await after.subscribe(mailbox), Subscribed)
        (only,) = await receive_deliveries(after, 1)
        assert (only.seq, only.envelope) == (long.seq, b"long-lived")
        await assert_quiet(after)
        assert await _fetch_seqs(after, mailbox) == [long.seq]
        # Not yet swept: still in the store, only filtered out.
        assert await _stored_seqs(running.store, mailbox) == [short.seq, long.seq]

        mock_clock.jump(SWEEP)  # the sweeper's turn
        metrics = running.relay.metrics
        await settle(lambda: metrics.expired_deleted.value >= 1, what="the sweeper")
        assert await _stored_seqs(running.store, mailbox) == [long.seq]
        assert metrics.expired_deleted.value == 1


async def test_publish_expiry_rules(
    mock_clock: trio.testing.MockClock, relays: RelayFactory
) -> None:
    """Publish refuses expires_at <= now (EXPIRED) and beyond now + max TTL + slack (TTL_TOO_LONG).

    The bounds are checked on both sides, for the relay's max TTL, a mailbox created with a
    lower one, and a lower one set later by the admin. Catches off-by-one errors and a
    mailbox limit that is ignored or allowed to exceed the relay's.
    """
    async with real_time_limit(PATIENCE):
        running = await relays.start(
            now=mock_now(),
            max_ttl=3600,
            ping_interval=NEVER,
            handshake_timeout=NEVER,
            sweep_interval=SWEEP,
        )
        writer, keys, mailbox = await _setup(running)
        mock_clock.jump(10)
        now = BASE + 10

        async def code(box: bytes, expires_at: int) -> int | None:
            reply = await writer.publish(box, b"x", expires_at=expires_at)
            if isinstance(reply, Published):
                return None
            assert isinstance(reply, Error)
            return reply.code

        assert await code(mailbox, 0) == ErrorCode.EXPIRED
        assert await code(mailbox, now - 1) == ErrorCode.EXPIRED
        assert await code(mailbox, now) == ErrorCode.EXPIRED
        assert await code(mailbox, now + 1) is None
        assert await code(mailbox, now + 3600 + TTL_TOLERANCE) is None
        assert await code(mailbox, now + 3600 + TTL_TOLERANCE + 1) == ErrorCode.TTL_TOO_LONG
        assert await code(mailbox, 2**64 - 1) == ErrorCode.TTL_TOO_LONG

        # A mailbox created with a lower maximum TTL; and one asking for more than the relay's.
        short_keys = MailboxKeys()
        short = await writer.create(short_keys, max_ttl=100)
        assert isinstance(await writer.auth(short_keys.write, "write", short), Ok)
        assert await code(short, now + 100 + TTL_TOLERANCE) is None
        assert await code(short, now + 100 + TTL_TOLERANCE + 1) == ErrorCode.TTL_TOO_LONG
        long_keys = MailboxKeys()
        greedy = await writer.create(long_keys, max_ttl=10**6)
        assert isinstance(await writer.auth(long_keys.write, "write", greedy), Ok)
        assert await code(greedy, now + 3600 + TTL_TOLERANCE + 1) == ErrorCode.TTL_TOO_LONG

        # The admin lowers the first mailbox's maximum TTL to 50 s.
        reply = await writer.set_limits(keys.admin, mailbox, max_ttl=50, max_bytes=0, counter=1)
        assert isinstance(reply, Ok)
        assert await code(mailbox, now + 50 + TTL_TOLERANCE) is None
        assert await code(mailbox, now + 50 + TTL_TOLERANCE + 1) == ErrorCode.TTL_TOO_LONG
        assert running.rejections("expired") == 3
        assert running.rejections("ttl_too_long") == 5


async def test_envelope_delivered_live_is_not_in_a_later_backlog_once_expired(
    mock_clock: trio.testing.MockClock, relays: RelayFactory
) -> None:
    """A live subscriber gets an envelope published now; a later subscriber never gets it once expired.

    Catches the live path and the backlog path disagreeing about expiry: after the jump
    the envelope is expired for everyone, including a connection that subscribes from a
    cursor before it.
    """
    async with real_time_limit(PATIENCE):
        running = await relays.start(
            now=mock_now(), ping_interval=NEVER, handshake_timeout=NEVER, sweep_interval=SWEEP
        )
        writer, keys, mailbox = await _setup(running)
        live = await _reader(running, keys, mailbox)
        assert isinstance(await live.subscribe(mailbox), Subscribed)
        published = await writer.publish(mailbox, b"brief", expires_at=BASE + 5)
        assert isinstance(published, Published)
        (got,) = await receive_deliveries(live, 1)
        assert got.seq == published.seq
        mock_clock.jump(5)
        late = await _reader(running, keys, mailbox)
        assert isinstance(await late.subscribe(mailbox, after=0), Subscribed)
        await assert_quiet(late)
        assert await _fetch_seqs(late, mailbox) == []


def _files_containing(directory: Path, needle: bytes) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file() and needle in p.read_bytes())


async def test_expired_ciphertext_is_erased_from_every_database_file(relays: RelayFactory) -> None:
    """After a 2-second TTL and a sweep, the envelope is undelivered and its bytes are in no file.

    Real clock and a SQLite file. Before expiry the canary is found in the database
    directory (so the search works); afterwards it is delivered to nobody and is absent
    from the database, the WAL and the shared-memory file. Catches a sweeper that deletes
    without `secure_delete` or without checkpointing and truncating the WAL.
    """
    store: SQLiteStore = await relays.open_sqlite()
    directory = store.path.parent
    running = await relays.start(store=store, sweep_interval=0.25)
    canary = b"CANARY-" + secrets.token_hex(24).encode()
    with trio.fail_after(PATIENCE):
        writer, keys, mailbox = await _setup(running)
        expires_at = int(time.time()) + 2
        short = await writer.publish(mailbox, canary * 8, expires_at=expires_at)
        keeper = await writer.publish(mailbox, b"keeper", ttl=3600)
        assert isinstance(short, Published)
        assert isinstance(keeper, Published)
        assert _files_containing(directory, canary), "the canary should be on disk before expiry"
        early = await _reader(running, keys, mailbox)
        assert isinstance(await early.subscribe(mailbox), Subscribed)
        assert [d.seq for d in await receive_deliveries(early, 2)] == [short.seq, keeper.seq]

        await trio.sleep(max(0.0, expires_at - time.time()) + 0.05)
        late = await _reader(running, keys, mailbox)
        assert isinstance(await late.subscribe(mailbox), Subscribed)
        (only,) = await receive_deliveries(late, 1)
        assert isinstance(only, Deliver)
        assert only.seq == keeper.seq
        await assert_quiet(late)
        assert await _fetch_seqs(late, mailbox) == [keeper.seq]

        metrics = running.relay.metrics
        await settle(lambda: metrics.expired_deleted.value >= 1, what="the sweeper")
    assert not store.wal_checkpoint_pending
    assert _files_containing(directory, canary) == []
    assert _files_containing(directory, b"keeper"), "the unexpired envelope must still be there"
