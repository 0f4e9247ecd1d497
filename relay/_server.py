"""The relay server: listeners, the handshake, one nursery per connection, keepalive, shutdown.

Theory of operation
-------------------

`Relay.serve` runs everything in one nursery: the hub's committer and sweeper, the
keepalive scanner, the optional ops HTTP listener and the client listeners (IPv4 and
IPv6). Each accepted connection runs `_handle`, which serves it inside one
`except Exception`: an unhandled error in a Trio listener's handler would take the whole
server down, so a bug in one connection closes that connection only and is logged as
`connection_crashed`.

A connection passes admission (connection limits per address and in total, handshakes in
progress) before any crypto; refusals close the socket without a message, since there is
no key to send one with yet. The handshake must finish within `handshake_timeout`. Then a
`Session` is created and the connection's task reads frames and hands messages to the
hub until the client leaves, breaks the protocol (it gets `goodbye` with the error code),
or the relay closes it (`Session.close`: slow consumer, idle timeout, shutdown). Each
connection has its own nursery, for its writer task (only while bytes are queued) and
its subscriptions' catch-up tasks; an idle connection runs one task.

Keepalive is one scanner for all connections, not a timer per connection, because at
10,000 connections per-connection deadlines would cost more memory and wakeups than one
pass per second over a set.

Shutdown (`shutdown()`, or SIGTERM through the command line): stop accepting, refuse new
publishes, let every queued publish commit and be acknowledged, say `goodbye`
`SHUTTING_DOWN` to everyone, give writers `shutdown_grace` seconds to flush, stop.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections import Counter as Tally
from typing import TYPE_CHECKING, Final

import structlog
import trio

from cellrelay.protocol._errors import CellrelayError, ErrorCode, RemoteProtocolError
from cellrelay.protocol.wire._connection import (
    Connection,
    EncodedMessage,
    Role,
    State,
    refusal_frame,
)
from cellrelay.protocol.wire._messages import Message, Ping, Publish, Welcome

from ._config import RelayConfig, split_host_port
from ._hub import Hub
from ._listen import open_listeners
from ._metrics import Registry, RelayMetrics
from ._ops import serve_ops
from ._ratelimit import TokenBucket
from ._session import Session

if TYPE_CHECKING:
    from collections.abc import Callable

    from cellrelay.protocol.wire._noise import KeyPair

    from ._store import Store

__all__ = ["Relay"]

log = structlog.get_logger("cellrelay.relay")

# One read's worth: a full frame plus its header, so a burst of coalesced frames is taken
# in as few wakeups as possible without holding much per idle connection.
RECEIVE_SIZE: Final = 65_537
KEEPALIVE_SCAN: Final = 1.0  # seconds between passes over all connections
IDLE_INTERVALS: Final = 3  # pings unanswered for this many intervals close the connection
CLOSE_GRACE: Final = 2.0  # seconds a closing connection's writer gets to flush its goodbye
# Seconds a handshake refusal (17 bytes, docs/protocol.md §3.2) may take to write: a socket
# takes it at once unless the client stopped reading, which is then its loss.
REFUSAL_GRACE: Final = 1.0


class Relay:
    """A cellrelay relay: see the module docstring."""

    def __init__(
        self,
        config: RelayConfig,
        *,
        key: KeyPair,
        store: Store,
        registry: Registry | None = None,
        now: Callable[[], float] = time.time,
        mailbox_count: int = 0,
    ) -> None:
        """Create a relay; `serve` runs it. `now` is the wall clock, injectable for tests."""
        self.config = config
        self.key = key
        self.store = store
        self.registry = registry if registry is not None else Registry()
        self.metrics = RelayMetrics.create(self.registry)
        self.now = now
        self.hub = Hub(store, config, self.metrics, now=now, mailbox_count=mailbox_count)
        self.sessions: set[Session] = set()
        self._per_address: Tally[str] = Tally()
        self._connections = 0
        self._handshakes = 0
        self._ready = False
        self._shutting_down = False
        self._listeners: list[trio.SocketListener] = []
        self._serve_scope: trio.CancelScope | None = None
        self._sessions_gone: trio.Event | None = None
        self.ports: list[tuple[str, int]] = []
        self.ops_port: int | None = None

    @property
    def ready(self) -> bool:
        """True while the relay accepts clients and can store what they publish (for /readyz)."""
        return self._ready and not self._shutting_down and not self.hub.storage_full

    async def serve(
        self, *, task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled or shut down; report the bound (host, port) pairs when listening."""
        async with trio.open_nursery() as nursery:
            # `shutdown` cancels it all once drained, and then `serve` returns.
            self._serve_scope = nursery.cancel_scope
            await self.hub.prepare()
            await nursery.start(self.hub.run_committer)
            nursery.start_soon(self.hub.run_sweeper)
            nursery.start_soon(self.hub.run_storage_probe)
            nursery.start_soon(self._run_keepalive)
            if self.config.ops_listen:
                host, port = split_host_port(self.config.ops_listen, "ops_listen")
                self.ops_port = await nursery.start(
                    lambda task_status: serve_ops(
                        host,
                        port,
                        registry=self.registry,
                        ready=lambda: self.ready,
                        task_status=task_status,
                    )
                )
            try:
                await self._open_listeners()
                async with trio.open_nursery() as connections:
                    for listener in self._listeners:
                        connections.start_soon(self._accept_loop, listener, connections)
                    self._ready = True
                    log.info("relay_listening", addresses=[f"{h}:{p}" for h, p in self.ports])
                    task_status.started(list(self.ports))
                    await trio.sleep_forever()
            finally:
                for listener in self._listeners:
                    await trio.aclose_forcefully(listener)

    async def _open_listeners(self) -> None:
        for address in self.config.listen:
            host, port = split_host_port(address, "listen")
            listeners = await open_listeners("listen", address, host, port)
            if port == 0:  # one listener per family would each get another port
                for extra in listeners[1:]:
                    await extra.aclose()
                del listeners[1:]
            for listener in listeners:
                sockname = listener.socket.getsockname()
                self.ports.append((sockname[0], sockname[1]))
            self._listeners.extend(listeners)

    async def _accept_loop(self, listener: trio.SocketListener, connections: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return
            except OSError as exc:  # EMFILE and friends: back off, do not die
                log.warning("accept_failed", errno=exc.errno)
                await trio.sleep(0.1)
                continue
            connections.start_soon(self._handle, stream)

    async def shutdown(self) -> None:
        """Drain and close: see the module docstring. Returns when everything is flushed."""
        if self._shutting_down:
            return
        self._shutting_down = True
        log.info("relay_shutting_down", connections=len(self.sessions))
        for listener in self._listeners:
            await listener.aclose()
        with trio.move_on_after(self.config.shutdown_grace):
            await self.hub.drain()
        for session in list(self.sessions):
            session.close(ErrorCode.SHUTTING_DOWN)
        with trio.move_on_after(CLOSE_GRACE):
            while self.sessions:
                self._sessions_gone = trio.Event()
                await self._sessions_gone.wait()
        if self._serve_scope is not None:
            self._serve_scope.cancel()  # the committer's work was drained above
        log.info("relay_stopped")

    # -- one connection ------------------------------------------------------------------------

    async def _handle(self, stream: trio.SocketStream) -> None:
        """Serve one connection from admission to close; a bug here closes it, never the relay.

        Admission, the handshake, the session and its nursery are one coroutine, with the
        bookkeeping in plain methods around it, because each coroutine between the
        connection's task and its wait for the next read is a frame that every idle
        connection holds: four of them took about 1.2 KiB per connection, two take half
        of that (docs/design.md).
        """
        try:
            address = str(stream.socket.getpeername()[0])
            refusal = self._admit(address)
            if refusal is not None:
                self.metrics.reject(refusal)
                return
            self._count_in(address)
            try:
                conn = Connection(Role.RELAY, static_key=self.key)
                if not await self._handshake(stream, conn):
                    return
                session = self._open_session(stream, conn, address)
                received, lost = 0, False
                try:
                    async with trio.open_nursery() as nursery:
                        session.nursery = nursery
                        with trio.CancelScope() as read_scope:
                            session.read_scope = read_scope
                            received, lost = await self._read_loop(stream, session)
                        if not session.idle:
                            with trio.move_on_after(CLOSE_GRACE):
                                await session.flush()
                        nursery.cancel_scope.cancel()
                finally:
                    self._close_session(session, received, lost)
            finally:
                self._count_out(address)
        except Exception:
            log.exception("connection_crashed")
        finally:
            await trio.aclose_forcefully(stream)

    def _admit(self, address: str) -> ErrorCode | None:
        config = self.config
        if self._shutting_down:
            return ErrorCode.SHUTTING_DOWN
        if (
            self._connections >= config.max_connections
            or self._per_address[address] >= config.max_connections_per_address
        ):
            return ErrorCode.TOO_MANY_CONNECTIONS
        if self._handshakes >= config.max_handshakes:
            return ErrorCode.BUSY
        return None

    def _count_in(self, address: str) -> None:
        self._connections += 1
        self._per_address[address] += 1
        self.metrics.connections_open.inc()
        self.metrics.connections_total.inc()

    def _count_out(self, address: str) -> None:
        self._connections -= 1
        self._per_address[address] -= 1
        if not self._per_address[address]:
            del self._per_address[address]
        self.metrics.connections_open.dec()

    async def _handshake(self, stream: trio.SocketStream, conn: Connection) -> bool:
        """Run the handshake within the deadline; True when the connection is open."""
        metrics = self.metrics
        self._handshakes += 1
        metrics.handshakes_in_progress.inc()
        result = "failed"
        try:
            with trio.move_on_after(self.config.handshake_timeout) as deadline:
                while conn.state is State.IDLE:
                    data = await stream.receive_some(RECEIVE_SIZE)
                    if not data:
                        return False
                    metrics.bytes_received.inc(len(data))
                    conn.receive_data(data)  # only Hello can open it: the transition table says so
                welcome = Welcome(
                    time_ms=int(self.now() * 1000),
                    max_envelope=self.config.max_envelope,
                    max_ttl=self.config.max_ttl,
                    ping_interval=self.config.ping_interval,
                )
                wire = conn.send(welcome)
                await stream.send_all(wire)
                metrics.bytes_sent.inc(len(wire))
                result = "ok"
            if deadline.cancelled_caught:
                result = "timeout"
                await _refuse_handshake(stream, refusal_frame(ErrorCode.HANDSHAKE_TIMEOUT))
        except RemoteProtocolError as exc:
            # docs/protocol.md §3.2: say why, unauthenticated (HANDSHAKE_FAILED: the client
            # pinned another key), so a client can tell its user at once.
            await _refuse_handshake(stream, conn.farewell(exc.code))
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        finally:
            self._handshakes -= 1
            metrics.handshakes_in_progress.dec()
            metrics.handshakes.labels(result=result).inc()
        return result == "ok"

    def _open_session(self, stream: trio.SocketStream, conn: Connection, address: str) -> Session:
        config = self.config
        now = trio.current_time()
        session = Session(
            conn,
            stream,
            conn_id=secrets.token_hex(4),
            address=address,
            queue_limit=config.send_queue_bytes,
            publish_bucket=TokenBucket(config.publish_rate, config.publish_burst, now),
            now=now,
            metrics=self.metrics,
        )
        log.info("connection_opened", conn_id=session.conn_id)
        self.sessions.add(session)
        return session

    def _close_session(self, session: Session, received: int, lost: bool) -> None:
        self.sessions.discard(session)
        if not self.sessions and self._sessions_gone is not None:
            self._sessions_gone.set()
        self.hub.forget_session(session)
        code = ErrorCode(session.close_code) if session.close_code >= 0 else None
        if lost:
            self.metrics.drop("connection_lost")
        elif code is not None and code is not ErrorCode.NORMAL:
            self.metrics.drop(code)
        reason = "connection_lost" if lost else (code.name.lower() if code is not None else "eof")
        log.info("connection_closed", conn_id=session.conn_id, reason=reason, messages=received)

    async def _read_loop(self, stream: trio.SocketStream, session: Session) -> tuple[int, bool]:
        """Read and handle messages until the stream ends or the protocol breaks.

        Returns how many messages were handled and whether the connection was lost.
        """
        conn = session.conn
        metrics = self.metrics
        sock = stream.socket
        fd = sock.fileno()
        received = 0
        while True:
            # The socket directly, as Session writes it, rather than `stream.receive_some`:
            # that tries the read first and then yields anyway (two trips through Trio's
            # scheduler and two `recv` calls per frame when the client is keeping up), and
            # its await chain held about 1.3 KiB per idle connection (docs/design.md).
            # Waiting first costs one trip and one read, and waiting is where this task
            # yields to the others, once per read as before.
            try:
                await trio.lowlevel.wait_readable(sock)
                data = os.read(fd, RECEIVE_SIZE)
            except BlockingIOError:  # readable, then not: nothing to read after all
                continue
            except (OSError, trio.ClosedResourceError):
                session.abort()
                return received, True
            if not data:
                try:
                    conn.receive_eof()
                except CellrelayError:
                    return received, True  # ended inside a frame
                return received, False
            metrics.bytes_received.inc(len(data))
            session.last_receive = trio.current_time()
            session.ping_outstanding = False
            try:
                messages = conn.receive_data(data)
                received += await self._handle_messages(session, messages)
                if conn.failing and not session.closing:
                    # A fault after those messages (docs/protocol.md §8.1): raise it now.
                    conn.receive_data(b"")
            except RemoteProtocolError as exc:
                # The peer broke the protocol: one last goodbye with the code, then close.
                metrics.reject(exc.code)
                session.fail(conn.farewell(exc.code), exc.code)
                return received, False
            if session.closing:
                return received, False
            # Not kept while waiting for the next read: an idle connection would hold its
            # last chunk and messages, about 0.4 KiB (docs/design.md).
            del data, messages

    async def _handle_messages(self, session: Session, messages: list[Message]) -> int:
        """Hand messages to the hub in order; return how many, fewer if the session closed."""
        hub = self.hub
        handled = 0
        for message in messages:
            handled += 1
            if type(message) is Publish:  # the hot path: see Hub.publish
                if hub.publish(session, message):
                    await hub.wait_publish_room(session)
            else:
                await hub.handle(session, message)
            if session.closing:
                break
        return handled

    async def _run_keepalive(self) -> None:
        """Ping silent connections and close those silent for too long (module docstring)."""
        interval = float(self.config.ping_interval)
        ping_id = 0
        while True:
            await trio.sleep(KEEPALIVE_SCAN)
            now = trio.current_time()
            for session in list(self.sessions):
                silent = now - session.last_receive
                if silent >= IDLE_INTERVALS * interval:
                    session.close(ErrorCode.IDLE_TIMEOUT)
                elif silent >= interval and not session.ping_outstanding:
                    ping_id = (ping_id + 1) & 0xFFFFFFFF
                    session.ping_outstanding = True
                    session.send([EncodedMessage.of(Ping(id=ping_id))])


async def _refuse_handshake(stream: trio.SocketStream, refusal: bytes) -> None:
    """Send a handshake refusal if the client takes it at once; never wait on a client for it."""
    with (
        trio.move_on_after(REFUSAL_GRACE),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await stream.send_all(refusal)
