"""The mailbox hub: requests, group commit, fan-out and subscriptions with resume.

Theory of operation
-------------------

The hub owns one `MailboxState` per mailbox in use (authenticated or subscribed on some
connection, or with publishes awaiting commit); it forgets a mailbox when none of that
holds. The state caches the store's record (keys, limits, counter) and the last committed
sequence number (`head`). The relay keeps no per-member state: a `MailboxState` knows
connections, not members.

Publishing (group commit). A `publish` is checked (capability, size, expiry, rates) and
appended to `_commit_queue`; the connection goes on reading. One committer task takes
everything queued (up to `commit_batch`) and hands it to `Store.append_batch`, one
transaction. While that commits, new publishes queue up and form the next batch, so the
batch size adapts to the load with no timer. After the commit returns, in one synchronous
step (no await, so nothing interleaves): each publisher gets `published` (or `error`),
each mailbox's `head` advances, and every live subscriber gets the new envelopes, all of a
batch's messages for one connection in one frame. A publish is acknowledged only after its
commit, and fan-out follows seq order because batches commit one at a time.

Subscriptions, and why there is no gap or duplicate at the seam. A subscription starts
"catching up": its task reads the backlog from the store, page by page, and queues it,
while the committer puts new envelopes for it into a bounded buffer instead of sending
them. Before each read the task notes `head`; every envelope with seq <= that head was
committed before the read began, so the read sees it. When a read comes back short, the
subscription's cursor becomes max(last seq sent, noted head), the buffered envelopes with
seq above the cursor are sent, and the subscription turns live: all without an await, so
no commit can slip between. Every envelope above the noted head was committed after the
subscription was registered, hence is in the buffer. If the buffer overflowed (or holds
more bytes than the backlog's flow-control threshold), it is dropped and the task reads
the store again instead; the envelopes are there. Live delivery sends only seq > cursor,
so nothing is sent twice. The backlog goes out a frame at a time, each frame only once
the connection's queue has drained below that threshold, so a large backlog never counts
as slow consumption; the awaits this adds all come before the final, synchronous step.

A full disk. A write that fails with `StorageFullError` puts the hub in the *storage full*
state (`storage_full`): it logs `storage_full` once, asks the store to release its reserve
(room for deletions, relay/_sqlite_store.py), and from then on refuses publishes and
creations with `STORAGE_FULL` at once, without touching the store and without a log line
each. Reads, subscriptions and admin operations go on (a delete or a rotation must work
when the disk is full: they make room and cut off removed members), and so does the
sweeper. A probe task asks the store every `STORAGE_PROBE_INTERVAL` seconds, and at once
after a sweep or a delete freed something, whether there is room again; when there is, the
hub logs `storage_recovered` with how many writes it refused and for how long, and takes
writes again. /readyz is 503 meanwhile. The state is the hub's, not the store's: a write
that found no room is an outcome of the store's calls, and the hub decides what to refuse.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import structlog
import trio

from cellrelay.protocol._errors import ErrorCode
from cellrelay.protocol.wire._capability import CapabilityKey, verify_admin, verify_auth
from cellrelay.protocol.wire._codec import encode_deliver, encode_error, encode_ok, encode_published
from cellrelay.protocol.wire._connection import MAX_PLAINTEXT, EncodedMessage
from cellrelay.protocol.wire._messages import (
    MAX_PAGE_ITEMS,
    TTL_TOLERANCE,
    Auth,
    Create,
    Created,
    Delete,
    Deliver,
    Error,
    Fetch,
    Goodbye,
    MailboxId,
    Message,
    Ok,
    Page,
    PageItem,
    Ping,
    Pong,
    Publish,
    Published,
    Revoked,
    Rotate,
    SetLimits,
    Subscribe,
    Subscribed,
    Unsubscribe,
)

from ._logging import tag_mailbox
from ._ratelimit import AddressBuckets, TokenBucket
from ._session import LOW_WATER, READ, WRITE, Session
from ._store import (
    MailboxExistsError,
    MailboxRecord,
    PendingAppend,
    StorageError,
    StorageFullError,
    Store,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._config import RelayConfig
    from ._metrics import RelayMetrics

__all__ = ["Hub", "MailboxState", "Subscription"]

log = structlog.get_logger("cellrelay.relay")

# Backlog pages: the protocol's page size; 256 alerts of ~1 KiB is a quarter of the queue.
BACKLOG_PAGE: Final = MAX_PAGE_ITEMS
# Live envelopes buffered for one catching-up subscription before it falls back to
# re-reading the store. 1,024 covers several seconds of a busy cell's traffic.
CATCH_UP_BUFFER: Final = 1024
# A page must fit one frame: per item, the array header, two uints and the bin header
# take at most 1 + 9 + 9 + 5 bytes; the map around it under 64.
PAGE_ITEM_OVERHEAD: Final = 24
PAGE_BUDGET: Final = MAX_PLAINTEXT - 64

# While the storage is full, how often the hub asks the store whether there is room again
# (a statvfs and a few pragmas): a relay recovers within this long of space returning.
STORAGE_PROBE_INTERVAL: Final = 2.0
# What the `storage_full` line tells the operator (docs/operator-guide.md, "A full disk").
STORAGE_FULL_ADVICE: Final = (
    "free space on the database's filesystem, or lower max_stored_bytes; reads go on, and"
    " the relay takes writes again by itself once there is room"
)

STORE_ERRORS: Final = {
    "no_such_mailbox": ErrorCode.NO_SUCH_MAILBOX,
    "mailbox_full": ErrorCode.MAILBOX_FULL,
    "storage_full": ErrorCode.STORAGE_FULL,
}


def _store_failed(store: Store) -> bool:
    """Whether the store says it refuses all further work (a `failed` attribute, if it has one).

    Such a failure is not retried: the committer and sweeper let it stop the relay, so the
    service manager restarts it and SQLite recovers the file. Other storage errors (a lock
    held by another program, a full disk) refuse the requests involved and the relay goes on.
    """
    return getattr(store, "failed", False) is True


@dataclass(eq=False, slots=True)
class Subscription:
    """One connection's subscription to one mailbox."""

    state: MailboxState
    session: Session
    cursor: int  # the highest seq queued to the client, or its resume cursor
    live: bool = False
    buffer: list[tuple[int, int, EncodedMessage]] | None = field(default_factory=list)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


@dataclass(eq=False, slots=True)
class Holdings:
    """What one connection holds on the hub: the mailboxes it proved a key for, its subscriptions.

    Kept by the hub, keyed by session, rather than on `Session`: the send path knows nothing
    of mailboxes, so `_session` does not import this module and the two form no circle.
    """

    mailboxes: dict[MailboxId, MailboxState] = field(default_factory=dict)
    subs: dict[MailboxId, Subscription] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class MailboxState:
    """What the hub holds for a mailbox in use."""

    record: MailboxRecord
    head: int
    bucket: TokenBucket
    holders: dict[Session, int] = field(default_factory=dict)  # capability bits per connection
    subs: dict[Session, Subscription] = field(default_factory=dict)
    pending: int = 0  # publishes queued or committing

    @property
    def mailbox(self) -> MailboxId:
        """The mailbox id."""
        return self.record.mailbox


class Hub:
    """Handles every request of every connection; see the module docstring."""

    def __init__(
        self,
        store: Store,
        config: RelayConfig,
        metrics: RelayMetrics,
        *,
        now: Callable[[], float],
        mailbox_count: int,
    ) -> None:
        """Create a hub over `store`; `now` returns the wall clock (Unix seconds)."""
        self.store = store
        self.config = config
        self.metrics = metrics
        self.now = now
        self.mailbox_count = mailbox_count
        self._states: dict[MailboxId, MailboxState] = {}
        self._holdings: dict[Session, Holdings] = {}
        self._commit_queue: list[tuple[PendingAppend, Session, int]] = []
        self._commit_wakeup = trio.Event()
        self._committing = False
        self._accepting = True
        self._idle = trio.Event()
        self._create_buckets = AddressBuckets(config.create_rate, config.create_burst)
        # Envelope bytes stored over all mailboxes, against `max_stored_bytes`: read from
        # the store when the committer starts and after each sweep, and added to at each
        # commit in between. A deletion counts at the next sweep, and publishes queued for
        # one commit may pass the limit together: it bounds the disk, not to the byte.
        self.stored_bytes = 0
        # The storage full state (module docstring): when it began, writes refused since.
        self.storage_full = False
        self._full_since = 0.0
        self._full_refused = 0
        self._full_begun = trio.Event()  # wakes the probe
        self._room_made = trio.Event()  # a sweep or delete freed something: probe now
        # What a proof for a mailbox that does not exist is checked against (`_lookup`): a
        # real Ed25519 public key, so its check costs what a real one does (libsodium
        # refuses a malformed or small-order key before doing the work).
        self._absent_key = CapabilityKey.generate().public
        metrics.mailboxes.set_function(lambda: self.mailbox_count)
        metrics.stored_bytes.set_function(lambda: self.stored_bytes)

    # -- background tasks ------------------------------------------------------------------

    async def prepare(self) -> None:
        """Get ready to serve: count what is stored, claim the disk reserve, sweep.

        The sweep runs before the relay listens: envelopes that expired while it was
        stopped would otherwise stay on disk until the first interval passed (issue 10).
        Reads never return them either way. A store too full for its reserve starts the
        relay in the storage full state (module docstring); a sweep that fails is logged,
        and the sweeper tries again.
        """
        self.stored_bytes = await self.store.total_stored_bytes()
        if not await self.store.restore_reserve():
            await self._enter_full("open")
        try:
            await self.sweep()
        except StorageFullError:
            await self._enter_full("sweep")
        except StorageError as exc:
            if _store_failed(self.store):
                raise
            log.error("storage_error", operation="sweep", error=str(exc))  # noqa: TRY400

    async def run_committer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Commit queued publishes in batches until cancelled or shut down and drained."""
        task_status.started()
        config = self.config
        while True:
            if not self._commit_queue:
                if not self._accepting:
                    self._idle.set()
                    return
                self._commit_wakeup = trio.Event()
                await self._commit_wakeup.wait()
                continue
            batch = self._commit_queue[: config.commit_batch]
            del self._commit_queue[: config.commit_batch]
            self._committing = True
            started = trio.current_time()
            results: list[tuple[int | None, str | None]]
            try:
                appended = await self.store.append_batch(
                    [item for item, _, _ in batch], default_max_bytes=config.mailbox_max_bytes
                )
                results = [(r.seq, r.error) for r in appended]
            except StorageFullError:
                # Nothing was stored; refuse the batch as full and stop taking writes until
                # there is room (module docstring). One log line, from _enter_full.
                results = [(None, "storage_full")] * len(batch)
                await self._enter_full("append_batch", refused=len(batch))
            except StorageError as exc:
                # A failed batch stored nothing (the Store contract): answer each publish
                # with INTERNAL and go on. Letting the error escape would cancel the relay's
                # whole nursery: one locked database or full disk would disconnect everyone
                # (found by tests/relay/test_storage_failure.py). A store that refuses all
                # further work (after an I/O error or corruption) is different: stop, so a
                # restart lets SQLite recover (docs/operator-guide.md, `store_failed`).
                if _store_failed(self.store):
                    raise
                log.error("storage_error", operation="append_batch", error=str(exc))  # noqa: TRY400
                results = [(None, "storage_error")] * len(batch)
            finally:
                self._committing = False
            self.metrics.store_commit_seconds.observe(trio.current_time() - started)
            self.metrics.store_batch_size.observe(len(batch))
            self._after_commit(batch, results)

    def _after_commit(
        self,
        batch: list[tuple[PendingAppend, Session, int]],
        results: list[tuple[int | None, str | None]],
    ) -> None:
        """Acknowledge and fan out one committed batch, all in one synchronous step.

        Each publisher's acknowledgements go out in one frame, together with whatever its
        own subscriptions receive from the batch. A `deliver` is encoded (once, for every
        subscriber) only for a mailbox that has subscribers, live or catching up: with
        nobody listening, as for a cell whose members are offline, it would cost 9 µs per
        publish for nothing (docs/design.md).
        """
        outgoing: dict[Session, list[EncodedMessage]] = {}
        fresh: dict[MailboxState, list[tuple[int, int, EncodedMessage]]] = {}
        touched: dict[MailboxState, None] = {}
        limit = self.config.max_inflight_publishes
        metrics = self.metrics
        states = self._states
        published = stored = 0
        for (item, session, request_id), (seq, error) in zip(batch, results, strict=True):
            session.publish_done(limit)
            if seq is None:
                code = STORE_ERRORS.get(error or "", ErrorCode.INTERNAL)
                metrics.reject(code)
                reply = EncodedMessage(Error, encode_error(request_id, code))
            else:
                published += 1
                stored += len(item.envelope)
                reply = EncodedMessage(Published, encode_published(request_id, seq))
            replies = outgoing.get(session)
            if replies is None:
                outgoing[session] = [reply]
            else:
                replies.append(reply)
            state = states.get(item.mailbox)
            if state is None:  # deleted while this batch committed: nobody to deliver to
                continue
            state.pending -= 1
            touched[state] = None
            if seq is None:
                continue
            if seq > state.head:
                state.head = seq
            if state.subs:
                deliver = EncodedMessage(
                    Deliver, encode_deliver(item.mailbox, seq, item.expires_at, item.envelope)
                )
                entries = fresh.get(state)
                if entries is None:
                    fresh[state] = [(seq, item.expires_at, deliver)]
                else:
                    entries.append((seq, item.expires_at, deliver))
        if published:
            metrics.publishes.inc(published)
            self.stored_bytes += stored
        deliveries = 0
        direct = len(fresh) == 1
        for state, entries in fresh.items():
            deliveries += self._fan_out(state, entries, outgoing, direct=direct)
        for session, messages in outgoing.items():
            session.send(messages)
        if deliveries:
            metrics.deliveries.inc(deliveries)
        for state in touched:
            self._maybe_forget(state.mailbox)

    @staticmethod
    def _fan_out(
        state: MailboxState,
        entries: list[tuple[int, int, EncodedMessage]],
        outgoing: dict[Session, list[EncodedMessage]],
        *,
        direct: bool,
    ) -> int:
        """Give a mailbox's new envelopes to each subscriber; return how many were delivered.

        A catching-up subscription buffers them (module docstring). A live one gets those
        above its cursor. With `direct`, a connection that has nothing in `outgoing` is
        sent them at once; otherwise they join its entry in `outgoing`, so everything the
        batch gives one connection goes out in one frame. Sending at once is the fan-out
        fast path: one alert to 1,000 idle subscribers is 1,000 calls of `Session.send`
        with one shared list, where building a list and a dict entry per subscriber was a
        measurable part of the relay's CPU per delivery (docs/design.md). The caller
        passes `direct` only when this is the batch's one mailbox with subscribers, so no
        connection is sent twice. Nothing here awaits: the order of frames on each
        connection is the order of these calls.
        """
        first_seq, last_seq = entries[0][0], entries[-1][0]
        shared = [encoded for _, _, encoded in entries]
        delivered = 0
        for sub in state.subs.values():
            if not sub.live:
                buffer = sub.buffer
                if buffer is not None:
                    buffer.extend(entries)
                    if len(buffer) > CATCH_UP_BUFFER:
                        sub.buffer = None  # overflow: the catch-up task re-reads the store
                continue
            cursor = sub.cursor
            if cursor >= last_seq:
                continue
            new = shared if cursor < first_seq else [e for s, _, e in entries if s > cursor]
            sub.cursor = last_seq
            delivered += len(new)
            queued = outgoing.get(sub.session)
            if queued is not None:
                queued.extend(new)
            elif direct:
                sub.session.send(new)
            else:
                outgoing[sub.session] = list(new)
        return delivered

    async def run_sweeper(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Delete expired envelopes every `sweep_interval` seconds."""
        task_status.started()
        while True:
            await trio.sleep(self.config.sweep_interval)
            try:
                await self.sweep()
            except StorageFullError:
                await self._enter_full("sweep")  # logs only if it is news
            except StorageError as exc:
                # Try again next interval; an escaping error would stop the relay (see
                # run_committer). Expired envelopes are still never delivered meanwhile:
                # reads filter on expires_at.
                if _store_failed(self.store):
                    raise
                log.error("storage_error", operation="sweep", error=str(exc))  # noqa: TRY400

    async def sweep(self) -> int:
        """Delete expired envelopes now; return how many."""
        deleted = await self.store.delete_expired(self.now())
        self.stored_bytes = await self.store.total_stored_bytes()
        if deleted:
            self.metrics.expired_deleted.inc(deleted)
            log.info("expired_deleted", count=deleted)
            self._room_made.set()
        if not self.storage_full:
            # Writes may have resumed without the reserve (relay/_sqlite_store.py): take it
            # back once there is room for it.
            await self.store.restore_reserve()
        return deleted

    # -- the storage full state (module docstring) -------------------------------------------

    async def _enter_full(self, operation: str, *, refused: int = 0) -> None:
        """A write found no room: refuse writes from now on, log it once, free the reserve.

        `refused` counts the writes this failure refused, in the state's total.
        """
        if self.storage_full:
            self._full_refused += refused
            return
        self.storage_full = True
        self._full_since = trio.current_time()
        self._full_refused = refused
        self.metrics.storage_full.set(1)
        log.warning(
            "storage_full",
            operation=operation,
            stored_bytes=self.stored_bytes,
            advice=STORAGE_FULL_ADVICE,
        )
        self._full_begun.set()
        try:
            await self.store.release_reserve()
        except StorageError as exc:
            log.error("storage_error", operation="release_reserve", error=str(exc))  # noqa: TRY400

    def _refuse_full(self, session: Session, request_id: int) -> None:
        self._full_refused += 1
        self._refuse(session, request_id, ErrorCode.STORAGE_FULL)

    async def run_storage_probe(self) -> None:
        """While the storage is full, take writes again once the store has room (module docstring)."""
        while True:
            if not self.storage_full:
                self._full_begun = trio.Event()
                await self._full_begun.wait()
                continue
            with trio.move_on_after(STORAGE_PROBE_INTERVAL):
                await self._room_made.wait()
            self._room_made = trio.Event()
            try:
                room = await self.store.restore_reserve()
            except StorageError as exc:
                if _store_failed(self.store):
                    raise
                log.error("storage_error", operation="restore_reserve", error=str(exc))  # noqa: TRY400
                continue
            if room and self.storage_full:
                self.storage_full = False
                self.metrics.storage_full.set(0)
                log.info(
                    "storage_recovered",
                    refused=self._full_refused,
                    seconds=round(trio.current_time() - self._full_since, 1),
                    stored_bytes=self.stored_bytes,
                )

    async def drain(self) -> None:
        """Stop taking publishes and wait until every queued one is committed and answered."""
        self._accepting = False
        self._commit_wakeup.set()
        if self._commit_queue or self._committing:
            await self._idle.wait()

    # -- requests ----------------------------------------------------------------------------

    async def handle(self, session: Session, message: Message) -> None:
        """Handle one message from a client; a storage failure refuses it with INTERNAL.

        A write that found the storage full is refused with STORAGE_FULL instead, and puts
        the hub in the storage full state (module docstring).
        """
        try:
            await self._dispatch(session, message)
        except StorageFullError:
            request_id = getattr(message, "id", None)
            if isinstance(request_id, int):
                self._refuse(session, request_id, ErrorCode.STORAGE_FULL)
            await self._enter_full(message.TYPE, refused=1)
        except StorageError as exc:
            # docs/protocol.md §8: INTERNAL, "retry later"; the connection goes on, as for
            # any other refusal, instead of ending as a crash without a word to the client.
            # No traceback (log.error, not log.exception): a rendered one can show locals.
            log.error("storage_error", operation=message.TYPE, error=str(exc))  # noqa: TRY400
            request_id = getattr(message, "id", None)
            if isinstance(request_id, int):
                self._refuse(session, request_id, ErrorCode.INTERNAL)

    async def _dispatch(self, session: Session, message: Message) -> None:
        match message:
            case Publish():
                if self.publish(session, message):
                    await self.wait_publish_room(session)
            case Subscribe():
                await self._subscribe(session, message)
            case Auth():
                await self._auth(session, message)
            case Fetch():
                await self._fetch(session, message)
            case Unsubscribe():
                await self._unsubscribe(session, message)
            case Create():
                await self._create(session, message)
            case Rotate():
                await self._rotate(session, message)
            case SetLimits():
                await self._set_limits(session, message)
            case Delete():
                await self._delete(session, message)
            case Ping():
                self._reply(session, Pong(id=message.id))
            case Pong():
                session.ping_outstanding = False
            case Goodbye():
                session.close(ErrorCode.NORMAL)
            case _:  # pragma: no cover - the connection's transition table forbids the rest
                session.close(ErrorCode.UNEXPECTED_MESSAGE)

    def _reply(self, session: Session, message: Message) -> None:
        session.send([EncodedMessage.of(message)])

    @staticmethod
    def _ok(session: Session, request_id: int) -> None:
        # `request_id` came in a validated request, so the trusted encoder may take it.
        session.send([EncodedMessage(Ok, encode_ok(request_id))])

    def _refuse(self, session: Session, request_id: int, code: ErrorCode) -> None:
        self.metrics.reject(code)
        session.send([EncodedMessage(Error, encode_error(request_id, code))])

    async def _create(self, session: Session, message: Create) -> None:
        config = self.config
        if config.creation_secret and not hmac.compare_digest(
            message.secret, config.creation_secret.encode()
        ):
            self._refuse(session, message.id, ErrorCode.CREATE_FORBIDDEN)
            return
        if not self._create_buckets.take(session.address, trio.current_time()):
            self._refuse(session, message.id, ErrorCode.RATE_LIMITED)
            return
        # A bound on what creations can add to the disk, whoever makes them (the rate is
        # per source address). Creations in flight together may pass it by a few.
        if self.mailbox_count >= config.max_mailboxes:
            self._refuse(session, message.id, ErrorCode.BUSY)
            return
        if self.storage_full:
            self._refuse_full(session, message.id)
            return
        max_ttl = min(message.max_ttl or config.max_ttl, config.max_ttl)
        while True:
            record = MailboxRecord(
                mailbox=MailboxId(secrets.token_bytes(16)),
                write_key=message.write_key,
                read_key=message.read_key,
                admin_key=message.admin_key,
                max_ttl=max_ttl if max_ttl != config.max_ttl else 0,
                created_at=int(self.now()),
            )
            try:
                await self.store.create_mailbox(record)
            except MailboxExistsError:  # 2^-128 per try; the loop is for correctness only
                continue
            break
        self.mailbox_count += 1
        self.metrics.mailboxes_created.inc()
        log.info(
            "mailbox_created", conn_id=session.conn_id, mailbox_tag=tag_mailbox(record.mailbox)
        )
        self._reply(session, Created(id=message.id, mailbox=record.mailbox))

    def _state_for(self, record: MailboxRecord) -> MailboxState:
        """The hub's state of a mailbox that exists: the one in use, or a new one from `record`."""
        state = self._states.get(record.mailbox)
        if state is None:
            config = self.config
            bucket = TokenBucket(
                config.mailbox_publish_rate, config.mailbox_publish_burst, trio.current_time()
            )
            state = self._states[record.mailbox] = MailboxState(
                record=record, head=record.head, bucket=bucket
            )
        return state

    def _maybe_forget(self, mailbox: MailboxId) -> None:
        state = self._states.get(mailbox)
        if state is not None and not state.holders and not state.subs and state.pending == 0:
            del self._states[mailbox]

    async def _lookup(self, mailbox: MailboxId) -> MailboxRecord | None:
        """Read the mailbox's record from the store, whether or not the hub holds it in use.

        A proof is always checked against a record read now, never against the cached one
        alone, and a mailbox that does not exist is checked against `_absent_key`: an auth
        or admin request then costs one store lookup and one signature check whatever the
        mailbox's state, and is refused with one code, so neither the answer nor its time
        tells whether the mailbox exists or is in use (issue 10; docs/threat-model.md).
        """
        return await self.store.get_mailbox(mailbox)

    async def _auth(self, session: Session, message: Auth) -> None:
        record = await self._lookup(message.mailbox)
        if session.closing:
            return
        holdings = self._holdings.get(session)
        if holdings is None:
            holdings = self._holdings[session] = Holdings()
        if (
            message.mailbox not in holdings.mailboxes
            and len(holdings.mailboxes) >= self.config.max_mailboxes_per_connection
        ):
            self._refuse(session, message.id, ErrorCode.TOO_MANY_MAILBOXES)
            return
        if record is None:
            key = self._absent_key
        else:
            key = record.read_key if message.role == "read" else record.write_key
        valid = verify_auth(
            key, message.proof, message.role, session.conn.handshake_hash, message.mailbox
        )
        if record is None or not valid:
            self._refuse(session, message.id, ErrorCode.BAD_PROOF)
            return
        state = self._state_for(record)
        state.holders[session] = state.holders.get(session, 0) | (
            READ if message.role == "read" else WRITE
        )
        holdings.mailboxes[message.mailbox] = state
        self._ok(session, message.id)

    def _holding(self, session: Session, mailbox: MailboxId, bit: int) -> MailboxState | None:
        holdings = self._holdings.get(session)
        state = None if holdings is None else holdings.mailboxes.get(mailbox)
        if state is None or not state.holders.get(session, 0) & bit:
            return None
        return state

    def publish(self, session: Session, message: Publish) -> bool:
        """Check one publish and queue it for the next group commit, without blocking.

        The connection's read loop calls this directly for every `publish` rather than
        going through `handle`: the coroutines of `handle` and `_dispatch` cost more than
        the checks here, on the relay's busiest path. Returns True when the connection has
        as many publishes awaiting their commit as it may have: the caller must then await
        `wait_publish_room` before reading on.
        """
        config = self.config
        state = self._holding(session, message.mailbox, WRITE)
        if state is None:
            self._refuse(session, message.id, ErrorCode.UNAUTHORIZED)
            return False
        if len(message.envelope) > config.max_envelope:
            self._refuse(session, message.id, ErrorCode.ENVELOPE_TOO_LARGE)
            return False
        now = self.now()
        if message.expires_at <= now:
            self._refuse(session, message.id, ErrorCode.EXPIRED)
            return False
        max_ttl = min(state.record.max_ttl or config.max_ttl, config.max_ttl)
        if message.expires_at > now + max_ttl + TTL_TOLERANCE:
            self._refuse(session, message.id, ErrorCode.TTL_TOO_LONG)
            return False
        if self.stored_bytes + len(message.envelope) > config.max_stored_bytes:
            self._refuse(session, message.id, ErrorCode.MAILBOX_FULL)  # the relay's, here
            return False
        if self.storage_full:
            self._refuse_full(session, message.id)
            return False
        tick = trio.current_time()
        if not session.publish_bucket.take(tick) or not state.bucket.take(tick):
            self._refuse(session, message.id, ErrorCode.RATE_LIMITED)
            return False
        if not self._accepting:
            self._refuse(session, message.id, ErrorCode.SHUTTING_DOWN)
            return False
        item = PendingAppend(
            mailbox=message.mailbox, expires_at=message.expires_at, envelope=message.envelope
        )
        self._commit_queue.append((item, session, message.id))
        state.pending += 1
        session.inflight += 1
        self._commit_wakeup.set()
        return session.inflight >= config.max_inflight_publishes

    async def wait_publish_room(self, session: Session) -> None:
        """Wait until the connection has room for another publish awaiting its commit."""
        await session.wait_inflight_below(self.config.max_inflight_publishes)

    async def _subscribe(self, session: Session, message: Subscribe) -> None:
        state = self._holding(session, message.mailbox, READ)
        if state is None:
            self._refuse(session, message.id, ErrorCode.UNAUTHORIZED)
            return
        self._drop_subscription(session, message.mailbox)
        sub = Subscription(state=state, session=session, cursor=message.after)
        state.subs[session] = sub
        self._holdings[session].subs[message.mailbox] = sub  # _holding found it there
        self.metrics.subscriptions.inc()
        self._reply(session, Subscribed(id=message.id, mailbox=message.mailbox, head=state.head))
        if session.nursery is not None:
            session.nursery.start_soon(self._catch_up, sub)

    async def _catch_up(self, sub: Subscription) -> None:
        """Stream the backlog, then turn the subscription live (see the module docstring)."""
        state, session = sub.state, sub.session
        # Flow control for the backlog: it goes out a frame's worth at a time, each chunk
        # only once the connection's queue is below `threshold`. A chunk is at most one
        # frame and `queue_limit` is at least two (config check), so backlog alone never
        # pushes the queue past `queue_limit`, and replies queued meanwhile still fit.
        # Sending a whole page at once (up to 256 envelopes of 16 KiB: 4 MiB) tripped
        # SLOW_CONSUMER for healthy readers, who then reconnected and tripped it again
        # (found by tests/relay/test_slow_consumer.py).
        threshold = min(LOW_WATER, session.queue_limit // 4)
        with sub.scope:
            while True:
                head = state.head
                try:
                    items = await self.store.read_after(
                        state.mailbox, sub.cursor, limit=BACKLOG_PAGE, now=self.now()
                    )
                except StorageError as exc:
                    # The subscription cannot go on without its backlog; the client is told
                    # and resumes from its cursor on a new connection.
                    log.error("storage_error", operation="catch_up", error=str(exc))  # noqa: TRY400
                    session.close(ErrorCode.INTERNAL)
                    return
                # The subscription may have ended during the read (re-subscribe, unsubscribe,
                # rotate, delete): its scope is cancelled, but a store read that runs in a
                # worker thread (SQLite) returns its rows anyway and the cancellation only
                # lands at the next checkpoint. Sending them would put this old
                # subscription's envelopes after the new `subscribed` or after `revoked`
                # (found by tests/relay/test_resume_property.py).
                if session.closing or sub.scope.cancel_called:
                    return
                chunk: list[tuple[int, EncodedMessage]] = []
                size = 0
                for item in items:
                    # The store's envelopes were validated when they were published.
                    encoded = EncodedMessage(
                        Deliver,
                        encode_deliver(state.mailbox, item.seq, item.expires_at, item.envelope),
                    )
                    if chunk and size + len(encoded.data) > MAX_PLAINTEXT:
                        if not await self._send_backlog(sub, chunk, threshold):
                            return
                        chunk, size = [], 0
                    chunk.append((item.seq, encoded))
                    size += len(encoded.data)
                if chunk and not await self._send_backlog(sub, chunk, threshold):
                    return
                if len(items) < BACKLOG_PAGE:
                    sub.cursor = max(sub.cursor, head)
                    if sub.buffer is None:  # overflowed while we read: read again
                        sub.buffer = []
                        continue
                    now = self.now()
                    fresh = [
                        (seq, encoded)
                        for seq, expires_at, encoded in sub.buffer
                        if seq > sub.cursor and expires_at > now
                    ]
                    if sum(len(encoded.data) for _, encoded in fresh) > threshold:
                        # Too much arrived during the catch-up to send in one go without
                        # risking the queue limit: it is all committed, so read it from the
                        # store, flow-controlled like the rest of the backlog.
                        sub.buffer = []
                        continue
                    sub.buffer = None
                    sub.live = True
                    if fresh:
                        sub.cursor = fresh[-1][0]
                        session.send([encoded for _, encoded in fresh])
                        self.metrics.deliveries.inc(len(fresh))
                    return

    async def _send_backlog(
        self, sub: Subscription, chunk: list[tuple[int, EncodedMessage]], threshold: int
    ) -> bool:
        """Send one chunk of backlog once the queue is below `threshold`.

        Returns False, sending nothing, if the subscription or connection ended meanwhile.
        """
        session = sub.session
        await session.wait_drained(threshold)
        if session.closing or sub.scope.cancel_called:
            return False
        sub.cursor = chunk[-1][0]
        session.send([encoded for _, encoded in chunk])
        self.metrics.deliveries.inc(len(chunk))
        return True

    def _drop_subscription(self, session: Session, mailbox: MailboxId) -> bool:
        holdings = self._holdings.get(session)
        sub = None if holdings is None else holdings.subs.pop(mailbox, None)
        if sub is None:
            return False
        sub.scope.cancel()
        sub.state.subs.pop(session, None)
        self.metrics.subscriptions.dec()
        return True

    async def _unsubscribe(self, session: Session, message: Unsubscribe) -> None:
        self._drop_subscription(session, message.mailbox)
        self._ok(session, message.id)

    async def _fetch(self, session: Session, message: Fetch) -> None:
        state = self._holding(session, message.mailbox, READ)
        if state is None:
            self._refuse(session, message.id, ErrorCode.UNAUTHORIZED)
            return
        stored = await self.store.read_after(
            message.mailbox, message.after, limit=message.limit + 1, now=self.now()
        )
        # A rotate or delete on another connection may have revoked the read capability
        # while the store read ran; this connection has been sent `revoked`, so a page of
        # envelopes after it would outlive the revocation. Answer as if the fetch came later.
        if self._holding(session, message.mailbox, READ) is None:
            self._refuse(session, message.id, ErrorCode.UNAUTHORIZED)
            return
        items: list[PageItem] = []
        budget = PAGE_BUDGET
        for entry in stored[: message.limit]:
            budget -= len(entry.envelope) + PAGE_ITEM_OVERHEAD
            if budget < 0:
                break
            items.append(
                PageItem(seq=entry.seq, expires_at=entry.expires_at, envelope=entry.envelope)
            )
        more = len(stored) > len(items)
        self._reply(
            session, Page(id=message.id, mailbox=message.mailbox, items=tuple(items), more=more)
        )
        self.metrics.deliveries.inc(len(items))

    async def _admin(
        self, session: Session, message: Rotate | SetLimits | Delete
    ) -> MailboxState | None:
        """Check an admin message's signature and counter; refuse and return None if bad.

        An absent mailbox is BAD_PROOF after the same work as a present one (`_lookup`).
        """
        record = await self._lookup(message.mailbox)
        if session.closing:
            return None
        key = self._absent_key if record is None else record.admin_key
        valid = verify_admin(key, message, session.conn.handshake_hash)
        if record is None or not valid:
            self._refuse(session, message.id, ErrorCode.BAD_PROOF)
            return None
        if message.counter <= record.admin_counter:
            self._refuse(session, message.id, ErrorCode.STALE_COUNTER)
            return None
        return self._state_for(record)

    async def _rotate(self, session: Session, message: Rotate) -> None:
        state = await self._admin(session, message)
        if state is None:
            return
        before = state.record
        changed = await self.store.update_admin(
            message.mailbox,
            counter=message.counter,
            write_key=message.write_key,
            read_key=message.read_key,
            admin_key=message.admin_key,
        )
        if not changed:
            self._refuse(session, message.id, ErrorCode.STALE_COUNTER)
            self._maybe_forget(message.mailbox)
            return
        record = await self.store.get_mailbox(message.mailbox)
        if record is not None:
            state.record = record
        # A rotation that keeps the read and write keys (a repeated one, after a client
        # lost the answer to the first; or an admin key change alone) leaves every proof
        # made with them valid, so nobody is cut off for it.
        if (message.write_key, message.read_key) != (before.write_key, before.read_key):
            self._revoke(state, ErrorCode.REVOKED)
        self._maybe_forget(message.mailbox)
        log.info(
            "mailbox_rotated", conn_id=session.conn_id, mailbox_tag=tag_mailbox(message.mailbox)
        )
        self._ok(session, message.id)

    async def _set_limits(self, session: Session, message: SetLimits) -> None:
        state = await self._admin(session, message)
        if state is None:
            return
        config = self.config
        max_ttl = min(message.max_ttl, config.max_ttl)
        max_bytes = min(message.max_bytes, config.mailbox_max_bytes)
        changed = await self.store.update_admin(
            message.mailbox, counter=message.counter, max_ttl=max_ttl, max_bytes=max_bytes
        )
        if not changed:
            self._refuse(session, message.id, ErrorCode.STALE_COUNTER)
            self._maybe_forget(message.mailbox)
            return
        record = await self.store.get_mailbox(message.mailbox)
        if record is not None:
            state.record = record
        self._maybe_forget(message.mailbox)
        self._ok(session, message.id)

    async def _delete(self, session: Session, message: Delete) -> None:
        state = await self._admin(session, message)
        if state is None:
            return
        # Advance the counter first so the same signed message cannot be replayed against a
        # mailbox that a failure left half-deleted; then delete.
        if not await self.store.update_admin(message.mailbox, counter=message.counter):
            self._refuse(session, message.id, ErrorCode.STALE_COUNTER)
            self._maybe_forget(message.mailbox)
            return
        await self.store.delete_mailbox(message.mailbox)
        self._room_made.set()
        self.mailbox_count -= 1
        self._revoke(state, ErrorCode.DELETED)
        self._states.pop(message.mailbox, None)
        log.info(
            "mailbox_deleted", conn_id=session.conn_id, mailbox_tag=tag_mailbox(message.mailbox)
        )
        self._ok(session, message.id)

    def _revoke(self, state: MailboxState, code: ErrorCode) -> None:
        """Take every connection's capabilities and subscription on this mailbox, telling each."""
        mailbox = state.mailbox
        notice = [EncodedMessage.of(Revoked(mailbox=mailbox, code=code))]
        for holder in list(state.holders):
            self._drop_subscription(holder, mailbox)
            holdings = self._holdings.get(holder)
            if holdings is not None:
                holdings.mailboxes.pop(mailbox, None)
            holder.send(notice)
        state.holders.clear()
        self._maybe_forget(mailbox)

    def is_subscribed(self, session: Session, mailbox: MailboxId) -> bool:
        """Whether `session` has a subscription to `mailbox` (for tests and diagnostics)."""
        holdings = self._holdings.get(session)
        return holdings is not None and mailbox in holdings.subs

    def forget_session(self, session: Session) -> None:
        """Drop everything a closed connection held."""
        holdings = self._holdings.get(session)
        if holdings is None:
            return
        for mailbox in list(holdings.subs):
            self._drop_subscription(session, mailbox)
        del self._holdings[session]
        for mailbox, state in holdings.mailboxes.items():
            state.holders.pop(session, None)
            self._maybe_forget(mailbox)
