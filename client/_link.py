"""A resilient connection to one relay: reconnect, re-authenticate, resume, retry.

Theory of operation
-------------------

`RelayLink.run` owns one TCP connection at a time and keeps trying to have one: connect,
handshake, re-prove every capability the link holds, resubscribe every watched mailbox
from its cursor, then read until the connection ends; then wait (exponential backoff with
full jitter, reset after a connection that lasted) and start again. Nothing above the link
sees a reconnect except as a short delay.

* **Requests** (`request`) wait until a connection is up, get a fresh id, and resolve with
  the relay's response or raise `RelayRefusedError` with the code. A request whose
  connection dies is retried on the next connection when it is idempotent (auth, fetch,
  subscribe...); `publish` is retried too, because delivery is at least once and readers
  de-duplicate by message id (docs/protocol.md §7).
* **Watches** (`watch`) are the link's subscriptions: mailbox, read key and cursor. Every
  delivery moves the watch's cursor to its seq *before* it is handed on, so a resubscribe
  never asks for what was already handed on; a consumer that must not lose messages across
  process restarts persists its own cursor after processing and passes it to `watch`.
  Deliveries come out of `deliveries` in per-mailbox seq order, each at most once per link
  (a seq not above the cursor is dropped here).
* **Keepalive**: the relay pings a silent client; the link answers. If nothing at all
  arrives for three ping intervals (from `Welcome.ping_interval`) the link gives up on the
  connection and reconnects.
* **Clock**: the link keeps the offset between the relay's clock (`Welcome.time_ms`) and
  the device's (`device_time`), so callers compute times in the relay's (`relay_time`).
  What it believes of the relay's clock is bounded: never more than `MAX_RELAY_SKEW` from
  the device's, whatever a welcome says (a misconfigured or hostile relay); `clock_offset`
  is the offset measured, unbounded, for warnings (docs/protocol.md §C7).
* **Status**: `statuses()` gives a stream of `LinkStatus` changes for people to see
  (`cellrelay listen` shows them, issue 10): the connection was `lost` (with why), the link
  is `retrying` in N seconds, it is `connected` again, and it has `caught_up`: every watched
  mailbox has delivered up to the head the relay reported when it was watched again.
* **A relay that refuses the handshake** for the key (docs/protocol.md §3.2,
  `HANDSHAKE_FAILED`: it does not hold the key the address pins) makes every waiting
  request and `wait_connected` fail at once with `RelayKeyMismatchError`, and so does
  every new one until a connection succeeds: waiting out a timeout would only hide the
  cause (issue 10). The link goes on retrying with backoff, in case the key comes back
  (a relay restored with its old key); the refusal is unauthenticated, and a forged one
  costs nothing more than a blocked connection would.

The link is a Trio object: one task runs it (`run`, started in the caller's nursery);
every other method is called from tasks in the same Trio run.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import trio

from cellrelay.protocol import CellrelayError, ErrorCode, RemoteProtocolError
from cellrelay.protocol.wire import (
    Auth,
    CapabilityKey,
    Connection,
    Create,
    Created,
    Delete,
    Deliver,
    Error,
    Goodbye,
    HandshakeRefusedError,
    Hello,
    MailboxId,
    Message,
    Ping,
    Pong,
    Publish,
    Published,
    RelayAddress,
    Revoked,
    Role,
    Rotate,
    SetLimits,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Welcome,
    sign_admin,
)

from ._log import library_logger

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "Delivery",
    "LinkClosedError",
    "LinkState",
    "LinkStatus",
    "RelayKeyMismatchError",
    "RelayLink",
    "RelayRefusedError",
    "Revocation",
]

log = library_logger("cellrelay.client")

CONNECT_TIMEOUT: Final = 10.0
HANDSHAKE_TIMEOUT: Final = 10.0
BACKOFF_BASE: Final = 0.5  # seconds; the first retry waits up to this
BACKOFF_CAP: Final = (
    30.0  # no wait is longer: alerts must get through soon after the network returns
)
STABLE_AFTER: Final = 10.0  # a connection that lasted this long resets the backoff
DEAD_AFTER_PINGS: Final = 3  # silence for this many ping intervals means a dead link
RECEIVE_SIZE: Final = 65_537
DELIVERY_BUFFER: Final = 4096  # deliveries not yet taken by the consumer; beyond it the link waits
ADMIN_ATTEMPTS: Final = 3  # connections an admin operation is tried on before giving up
# The most the link believes the relay's clock differs from the device's (seconds). Phones
# and relays may each be two hours off (issue 9: a phone set to the wrong zone, a relay
# without NTP), so honest clocks can disagree by four; a relay that claims more is believed
# only this far (docs/protocol.md §C7), which bounds how much it can stretch or shorten
# what this member sends or keeps.
MAX_RELAY_SKEW: Final = 4 * 3600.0
A = TypeVar("A", Rotate, SetLimits, Delete)


class RelayRefusedError(CellrelayError):
    """The relay refused a request; `code` says why (see docs/protocol.md §8)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class LinkClosedError(CellrelayError):
    """The link was closed while a request was waiting."""


class RelayKeyMismatchError(CellrelayError):
    """The relay refused the handshake: it does not hold the key its address (or invite) names.

    Check that the address or invite was copied exactly; if it was, the relay's key has
    changed (a new `relay init`) or something between you and the relay answers for it:
    ask whoever gave it to you.
    """

    def __init__(self, address: RelayAddress) -> None:
        super().__init__(
            f"the relay at {address.host}:{address.port} does not hold the key its address "
            "names (it refused the handshake)"
        )
        self.address = address


@dataclass(frozen=True, slots=True)
class Delivery:
    """One envelope from a watched mailbox, in seq order."""

    mailbox: MailboxId = field(repr=False)
    seq: int
    expires_at: int
    envelope: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Revocation:
    """The relay revoked this link's capabilities on a mailbox (keys rotated, or deleted)."""

    mailbox: MailboxId = field(repr=False)
    code: int


Event = Delivery | Revocation

LinkState = Literal["lost", "retrying", "connected", "caught_up"]
STATUS_BUFFER: Final = 64  # status changes not yet read; past it the oldest are dropped


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """A change in a link's connection, for people to see (module docstring, "Status")."""

    state: LinkState
    reason: str = ""  # why it was lost, or why the last attempt failed ("" if not known)
    retry_in: float | None = None  # for "retrying": seconds until the next attempt


@dataclass(slots=True)
class _Watch:
    mailbox: MailboxId
    key: CapabilityKey
    cursor: int
    catch_up_to: int | None = None  # the head the relay reported when watched again


@dataclass(slots=True)
class _Pending:
    message: Message
    retry: bool
    background: bool = False  # sent by the link itself on reconnect; nobody awaits it
    done: trio.Event = field(default_factory=trio.Event)
    result: Message | None = None
    error: BaseException | None = None


class RelayLink:
    """One relay, kept connected; see the module docstring."""

    def __init__(
        self,
        address: RelayAddress,
        *,
        rng: random.Random | None = None,
        on_connected: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Create a link to `address`; nothing happens until `run` is started.

        `clock` is the device's clock (unix seconds; tests give a skewed one).
        """
        self.address = address
        self.device_time = clock
        self._rng = rng or random.SystemRandom()
        self._on_connected = on_connected
        self._watches: dict[MailboxId, _Watch] = {}
        self._writers: dict[MailboxId, CapabilityKey] = {}
        # Mailboxes whose write key the relay revoked (a rotation): a publish to one is
        # refused as REVOKED, so the cell can tell a send that raced a rotation (issue 9).
        self._revoked: set[MailboxId] = set()
        self._readers: dict[MailboxId, CapabilityKey] = {}  # read without a subscription
        self._pending: dict[int, _Pending] = {}
        self._queue: list[_Pending] = []  # waiting for a connection
        self._next_id = 0
        self._conn: Connection | None = None
        self._stream: trio.SocketStream | None = None
        self._changed = trio.Event()  # set (and replaced) on each connection or refusal
        self._refusal: RelayKeyMismatchError | None = None  # since the last connection
        self._closed = False
        self._send_lock = trio.Lock()
        self._offset = 0.0  # relay clock minus ours, seconds
        self._admin_counter = 0
        self.welcome: Welcome | None = None
        self.connections = 0  # how many times a connection was established
        self.status: LinkStatus | None = None  # the last change reported (None: none yet)
        # Device time the last connection was lost (None: never), and how long the link
        # was without one before the current connection came up (inf for the first):
        # cells use them to tell a gap that may have expired while away (issue 9).
        self.lost_at: float | None = None
        self.away_before: float = math.inf
        self._status_channels: list[trio.MemorySendChannel[LinkStatus]] = []
        self._goodbye: str | None = None  # the code of the relay's last goodbye, by name
        self._catching_up = False  # after a reconnect, until every watch reached its head
        self._state_changed = trio.Event()  # set (and replaced) when connected comes or goes
        send, receive = trio.open_memory_channel[Event](DELIVERY_BUFFER)
        self._events_send = send
        self.events = receive  # consume with `async for event in link.events`

    def __repr__(self) -> str:
        state = "connected" if self._conn is not None else "disconnected"
        return f"<RelayLink {self.address.host}:{self.address.port} {state}>"

    @property
    def closed(self) -> bool:
        """True once `aclose` was called or `run` ended."""
        return self._closed

    @property
    def connected(self) -> bool:
        """True while a connection is open."""
        return self._conn is not None

    async def wait_state_change(self) -> None:
        """Wait until a connection comes up or goes down (then look at `connected`)."""
        await self._state_changed.wait()

    def _note_state_change(self) -> None:
        self._state_changed.set()
        self._state_changed = trio.Event()

    def relay_time(self) -> float:
        """Now, by the relay's clock as last seen (for expires_at), within MAX_RELAY_SKEW of ours."""
        return self.device_time() + max(-MAX_RELAY_SKEW, min(MAX_RELAY_SKEW, self._offset))

    @property
    def clock_offset(self) -> float:
        """The relay's clock minus the device's, as measured at the last welcome (seconds)."""
        return self._offset

    def statuses(self) -> trio.MemoryReceiveChannel[LinkStatus]:
        """A new stream of this link's status changes from now on (module docstring)."""
        send, receive = trio.open_memory_channel[LinkStatus](STATUS_BUFFER)
        self._status_channels.append(send)
        return receive

    def _report(self, status: LinkStatus) -> None:
        self.status = status
        for channel in list(self._status_channels):
            try:
                channel.send_nowait(status)
            except trio.WouldBlock:
                pass  # a reader that fell behind misses a change; it is only for display
            except trio.BrokenResourceError:
                self._status_channels.remove(channel)

    # -- running ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a connection up until cancelled; report started at once (not when connected)."""
        task_status.started()
        failures = 0
        try:
            while not self._closed:
                started = trio.current_time()
                before = self.connections
                reason = "closed by the relay"
                try:
                    await self._connect_and_serve()
                except OSError as exc:
                    reason = (exc.strerror or type(exc).__name__).lower()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    reason = "connection broken"
                except trio.TooSlowError:
                    reason = "no answer"
                except EOFError:
                    pass
                except HandshakeRefusedError as exc:
                    reason = "the relay's key does not match"
                    self._refused(exc)
                except RemoteProtocolError as exc:
                    reason = f"protocol error {exc.code.name}"
                    log.warning("relay_protocol_error", code=exc.code.name)
                finally:
                    self._drop_connection()
                if self.closed:
                    break
                if self._goodbye is not None:
                    reason = f"the relay said goodbye ({self._goodbye})"
                    self._goodbye = None
                if self.connections != before:
                    self._report(LinkStatus("lost", reason))
                failures = 0 if trio.current_time() - started >= STABLE_AFTER else failures + 1
                delay = self._backoff(failures)
                self._report(LinkStatus("retrying", reason, retry_in=delay))
                await trio.sleep(delay)
        finally:
            self._closed = True
            self._fail_all(LinkClosedError("the link was closed"))
            self._events_send.close()
            for channel in self._status_channels:
                channel.close()

    def _refused(self, exc: HandshakeRefusedError) -> None:
        """The relay refused the handshake (module docstring): fail what waits, once per streak."""
        if exc.code is not ErrorCode.HANDSHAKE_FAILED:
            log.info("relay_refused_handshake", code=exc.code.name)  # timeout, say: retry
            return
        if self._refusal is None:
            log.info("relay_key_mismatch", host=self.address.host, port=self.address.port)
        self._refusal = RelayKeyMismatchError(self.address)
        queued, self._queue = self._queue, []
        for pending in queued:
            pending.error = self._refusal
            pending.done.set()
        self._changed.set()
        self._changed = trio.Event()

    def _backoff(self, failures: int) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, min(cap, base * 2^n)]."""
        return self._rng.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * math.pow(2, failures)))

    async def aclose(self) -> None:
        """Stop reconnecting, say goodbye if connected, and fail waiting requests."""
        self._closed = True
        conn, stream = self._conn, self._stream
        if conn is not None and stream is not None:
            try:
                async with self._send_lock:
                    await stream.send_all(conn.send(Goodbye()))
            except (CellrelayError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            await trio.aclose_forcefully(stream)
        self._fail_all(LinkClosedError("the link was closed"))

    async def _connect_and_serve(self) -> None:
        address = self.address
        with trio.fail_after(CONNECT_TIMEOUT):
            stream = await trio.open_tcp_stream(address.host, address.port)
        try:
            conn = Connection(Role.CLIENT, relay_public_key=address.public_key)
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await stream.send_all(conn.send(Hello()))
                welcome = await self._read_welcome(stream, conn)
            self._offset = welcome.time_ms / 1000 - self.device_time()
            self.welcome = welcome
            self._conn, self._stream = conn, stream
            self.connections += 1
            self.away_before = math.inf if self.lost_at is None else time.time() - self.lost_at
            self._refusal = None
            self._catching_up = self.connections > 1 and bool(self._watches)
            for watch in self._watches.values():
                watch.catch_up_to = None
            await self._restore(conn, stream)
            if self.connections > 1:
                self._report(LinkStatus("connected"))
            self._changed.set()
            self._changed = trio.Event()
            self._note_state_change()
            if self._on_connected is not None:
                self._on_connected()
            log.debug("relay_connected", host=address.host, port=address.port)
            await self._read_loop(conn, stream, welcome)
        finally:
            await trio.aclose_forcefully(stream)

    async def _read_welcome(self, stream: trio.SocketStream, conn: Connection) -> Welcome:
        while True:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise EOFError("the relay closed the connection during the handshake")
            messages = conn.receive_data(data)
            if messages:
                welcome = messages[0]
                if not isinstance(welcome, Welcome):  # pragma: no cover - the connection forbids it
                    raise RemoteProtocolError("no welcome", ErrorCode.UNEXPECTED_MESSAGE)
                for extra in messages[1:]:
                    self._dispatch(extra)
                return welcome

    async def _restore(self, conn: Connection, stream: trio.SocketStream) -> None:
        """On a new connection: re-prove capabilities, resubscribe, resend what was pending."""
        hh = conn.handshake_hash
        out: list[Message] = []

        def background(message: Message) -> None:
            out.append(self._assign(_Pending(message=message, retry=False, background=True)))

        for mailbox, key in self._writers.items():
            background(
                Auth(id=0, mailbox=mailbox, role="write", proof=key.prove("write", hh, mailbox))
            )
        for mailbox, key in self._readers.items():
            background(
                Auth(id=0, mailbox=mailbox, role="read", proof=key.prove("read", hh, mailbox))
            )
        for watch in self._watches.values():
            background(
                Auth(
                    id=0,
                    mailbox=watch.mailbox,
                    role="read",
                    proof=watch.key.prove("read", hh, watch.mailbox),
                )
            )
            background(Subscribe(id=0, mailbox=watch.mailbox, after=watch.cursor))
        retry, self._queue = self._queue, []
        for pending in retry:
            out.append(self._assign(pending))
        if out:
            async with self._send_lock:
                await stream.send_all(conn.send_many(out))

    async def _read_loop(
        self, conn: Connection, stream: trio.SocketStream, welcome: Welcome
    ) -> None:
        silence = DEAD_AFTER_PINGS * welcome.ping_interval
        while True:
            with trio.fail_after(silence):
                data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                conn.receive_eof()
                return
            replies: list[Message] = []
            for message in conn.receive_data(data):
                if isinstance(message, Ping):
                    replies.append(Pong(id=message.id))
                elif isinstance(message, Goodbye):
                    log.info("relay_goodbye", code=message.code)
                    self._goodbye = _code_name(message.code)
                    return
                else:
                    await self._handle(message)
            if replies:
                async with self._send_lock:
                    await stream.send_all(conn.send_many(replies))
            if conn.failing:  # a fault after those messages (docs/protocol.md §8.1)
                conn.receive_data(b"")

    async def _handle(self, message: Message) -> None:
        if isinstance(message, Deliver):
            watch = self._watches.get(message.mailbox)
            if watch is None or message.seq <= watch.cursor:
                return  # unwatched meanwhile, or already handed on
            watch.cursor = message.seq
            await self._events_send.send(
                Delivery(
                    mailbox=message.mailbox,
                    seq=message.seq,
                    expires_at=message.expires_at,
                    envelope=message.envelope,
                )
            )
            self._check_caught_up()
        elif isinstance(message, Revoked):
            self._watches.pop(message.mailbox, None)
            if self._writers.pop(message.mailbox, None) is not None:
                self._revoked.add(message.mailbox)
            self._readers.pop(message.mailbox, None)
            await self._events_send.send(Revocation(mailbox=message.mailbox, code=message.code))
        else:
            if isinstance(message, Subscribed):
                await self._check_rewind(message)
                watch = self._watches.get(message.mailbox)
                if watch is not None:
                    watch.catch_up_to = message.head
                self._check_caught_up()
            pending = self._dispatch(message)
            if (
                pending is not None
                and pending.background
                and isinstance(pending.error, RelayRefusedError)
            ):
                # A capability proven again after a reconnect no longer works: the keys were
                # rotated (or the mailbox deleted) while we were away. Tell the consumer.
                mailbox = getattr(pending.message, "mailbox", None)
                if isinstance(pending.message, Auth) and mailbox is not None:
                    self._watches.pop(mailbox, None)
                    if self._writers.pop(mailbox, None) is not None:
                        self._revoked.add(mailbox)
                    await self._events_send.send(
                        Revocation(mailbox=mailbox, code=pending.error.code)
                    )

    def _check_caught_up(self) -> None:
        """After a reconnect, report `caught_up` once every watch delivered up to its head."""
        if not self._catching_up:
            return
        for watch in self._watches.values():
            if watch.catch_up_to is None or watch.cursor < watch.catch_up_to:
                return
        self._catching_up = False
        self._report(LinkStatus("caught_up"))

    async def _check_rewind(self, message: Subscribed) -> None:
        """A relay whose head is below our cursor lost envelopes (restored from a backup, or
        a power cut with durability=normal) and will reuse their seqs for new ones, which
        our cursor would skip. Start over from its head; the cell layer de-duplicates what
        it has already seen by message id.
        """
        watch = self._watches.get(message.mailbox)
        conn, stream = self._conn, self._stream
        if watch is None or message.head >= watch.cursor or conn is None or stream is None:
            return
        log.warning("relay_rewound", cursor=watch.cursor, head=message.head)
        watch.cursor = message.head
        retry = _Pending(
            message=Subscribe(id=0, mailbox=message.mailbox, after=message.head),
            retry=False,
            background=True,
        )
        async with self._send_lock:
            await stream.send_all(conn.send(self._assign(retry)))

    def _dispatch(self, message: Message) -> _Pending | None:
        """Resolve the request a response answers; return it."""
        request_id = getattr(message, "id", None)
        if request_id is None:
            return None
        pending = self._pending.pop(request_id, None)
        if pending is None:
            return None
        if isinstance(message, Error):
            pending.error = RelayRefusedError(
                f"the relay refused {pending.message.TYPE}: code {message.code}", message.code
            )
        else:
            pending.result = message
        pending.done.set()
        return pending

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self.lost_at = time.time()
            self._note_state_change()
        self._conn = self._stream = None
        # Requests in flight on the dead connection: retry the retryable, fail the rest.
        for pending in self._pending.values():
            if pending.retry and not self._closed:
                self._queue.append(pending)
            else:
                pending.error = LinkClosedError("the connection closed before the relay answered")
                pending.done.set()
        self._pending.clear()

    def _fail_all(self, error: BaseException) -> None:
        for pending in [*self._pending.values(), *self._queue]:
            if not pending.done.is_set():
                pending.error = error
                pending.done.set()
        self._pending.clear()
        self._queue.clear()

    # -- requests -----------------------------------------------------------------------------

    def _assign(self, pending: _Pending) -> Message:
        """Give a pending request a fresh id on the current connection and return the message."""
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        self._pending[self._next_id] = pending
        message = dataclasses.replace(pending.message, id=self._next_id)  # type: ignore[type-var]
        pending.message = message
        return message

    async def request(self, message: Message, *, retry: bool = True) -> Message:
        """Send a request (its `id` is replaced) and return the relay's response.

        Raises:
            RelayRefusedError: the relay answered with an error code.
            LinkClosedError: the link was closed first (or, with retry=False, the connection).
        """
        if self._closed:
            raise LinkClosedError("the link is closed")
        pending = _Pending(message=message, retry=retry)
        conn, stream = self._conn, self._stream
        if conn is None or stream is None:
            if self._refusal is not None:
                raise self._refusal
            self._queue.append(pending)
        else:
            wire = conn.send(self._assign(pending))
            try:
                async with self._send_lock:
                    await stream.send_all(wire)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # the reader notices; the request is retried or failed with the rest
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None  # noqa: S101 - set together with done
        return pending.result

    async def wait_connected(self) -> None:
        """Wait until a connection is up (and restored).

        Raises:
            RelayKeyMismatchError: the relay refused the last handshake for the key.
            LinkClosedError: the link was closed.
        """
        while self._conn is None:
            if self._closed:
                raise LinkClosedError("the link is closed")
            if self._refusal is not None:
                raise self._refusal
            await self._changed.wait()

    # -- mailboxes ----------------------------------------------------------------------------

    async def authorize_writer(self, mailbox: MailboxId, key: CapabilityKey) -> None:
        """Prove the write key now and after every reconnect."""
        self._writers[mailbox] = key
        self._revoked.discard(mailbox)
        await self._auth(mailbox, key, "write")

    async def authorize_reader(self, mailbox: MailboxId, key: CapabilityKey) -> None:
        """Prove the read key now and after every reconnect, for `fetch` without a watch."""
        self._readers[mailbox] = key
        await self._auth(mailbox, key, "read")

    def forget_reader(self, mailbox: MailboxId) -> None:
        """Stop proving a read key given to `authorize_reader` after reconnects."""
        self._readers.pop(mailbox, None)

    async def _auth(
        self, mailbox: MailboxId, key: CapabilityKey, role: Literal["read", "write"]
    ) -> None:
        await self.wait_connected()
        conn = self._conn
        assert conn is not None  # noqa: S101 - wait_connected returned
        proof = key.prove(role, conn.handshake_hash, mailbox)
        await self.request(Auth(id=0, mailbox=mailbox, role=role, proof=proof), retry=False)

    async def publish(self, mailbox: MailboxId, envelope: bytes, expires_at: int) -> int:
        """Store an envelope durably (retrying across reconnects) and return its seq."""
        if mailbox not in self._writers:
            if mailbox in self._revoked:
                raise RelayRefusedError(
                    "the relay revoked this mailbox's write key (the keys were rotated)",
                    ErrorCode.REVOKED,
                )
            raise LinkClosedError("authorize_writer first")
        reply = await self.request(
            Publish(id=0, mailbox=mailbox, expires_at=expires_at, envelope=envelope)
        )
        if not isinstance(reply, Published):  # pragma: no cover - the relay answers publish so
            raise RemoteProtocolError("unexpected answer to publish", ErrorCode.UNEXPECTED_MESSAGE)
        return reply.seq

    async def watch(self, mailbox: MailboxId, key: CapabilityKey, cursor: int) -> int:
        """Subscribe from `cursor`, now and after every reconnect; return the relay's head."""
        self._watches[mailbox] = watch = _Watch(mailbox=mailbox, key=key, cursor=cursor)
        await self._auth(mailbox, key, "read")
        if self._watches.get(mailbox) is not watch:
            # An `unwatch` (a relay dropped, a cell left) came while the proof was on its way.
            raise LinkClosedError("the mailbox was unwatched while it was being watched")
        reply = await self.request(
            Subscribe(id=0, mailbox=mailbox, after=watch.cursor), retry=False
        )
        return reply.head if isinstance(reply, Subscribed) else 0

    async def unwatch(self, mailbox: MailboxId) -> None:
        """Stop watching a mailbox (deliveries in flight may still arrive, and are dropped)."""
        if self._watches.pop(mailbox, None) is not None and self._conn is not None:
            await self.request(Unsubscribe(id=0, mailbox=mailbox), retry=False)

    async def create_mailbox(
        self,
        write: CapabilityKey,
        read: CapabilityKey,
        admin: CapabilityKey,
        *,
        secret: bytes = b"",
    ) -> MailboxId:
        """Create a mailbox guarded by these keys; return its id."""
        reply = await self.request(
            Create(
                id=0,
                write_key=write.public,
                read_key=read.public,
                admin_key=admin.public,
                secret=secret,
            )
        )
        if not isinstance(reply, Created):  # pragma: no cover - the relay answers create so
            raise RemoteProtocolError("unexpected answer to create", ErrorCode.UNEXPECTED_MESSAGE)
        return reply.mailbox

    async def admin(self, key: CapabilityKey, message: A) -> Message:
        """Send an admin operation signed for the current connection; return the answer.

        Its counter is the current time in milliseconds (above the last one this link
        used); its signature binds the connection, so a resend is signed again.

        Raises:
            RelayRefusedError: refused (BAD_PROOF, STALE_COUNTER, NO_SUCH_MAILBOX...).
        """
        for _ in range(ADMIN_ATTEMPTS):
            await self.wait_connected()
            conn = self._conn
            if conn is None:  # pragma: no cover - wait_connected returned
                continue
            self._admin_counter = max(int(time.time() * 1000), self._admin_counter + 1)
            unsigned = dataclasses.replace(message, counter=self._admin_counter)
            try:
                return await self.request(
                    sign_admin(key, unsigned, conn.handshake_hash), retry=False
                )
            except LinkClosedError:
                if self.closed:
                    raise
        raise LinkClosedError("the connection kept failing; the admin operation was not confirmed")

    def forget_writer(self, mailbox: MailboxId, key: CapabilityKey | None = None) -> None:
        """Stop proving the write key after reconnects (e.g. after a rotation).

        With `key`, only if that is still the key held for the mailbox.
        """
        if key is None or self._writers.get(mailbox) is key:
            self._writers.pop(mailbox, None)

    def watch_head(self, mailbox: MailboxId) -> int | None:
        """The head the relay reported when the current connection watched `mailbox` again.

        None on the first connection (the head `watch` returned holds), or when unwatched.
        """
        watch = self._watches.get(mailbox)
        return None if watch is None else watch.catch_up_to

    def cursor(self, mailbox: MailboxId) -> int | None:
        """The last seq handed on for a watched mailbox."""
        watch = self._watches.get(mailbox)
        return None if watch is None else watch.cursor


def _code_name(code: int) -> str:
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)
