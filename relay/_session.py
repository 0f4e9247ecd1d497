"""One client connection's relay-side state and its send path.

Theory of operation: the send path (why it looks like this)
-----------------------------------------------------------

Fan-out is the relay's hot path. Measured here with a bare Trio relay and 1,000 idle
subscribers, handing each delivery to a per-connection writer task through a memory
channel cost 30-70 µs per delivery, while a non-blocking `send` straight from the fan-out
loop, queueing only what the kernel refuses, cost a fraction of that (docs/design.md).
So `Session.send` does this:

* **Direct** when the connection is idle (no writer running, nothing queued): encrypt the
  messages into one frame now and `os.write` them to the socket, which is non-blocking
  (Trio made it so). Whatever the kernel refuses goes into `_out` and a writer task is
  started to drain it.
* **Coalesced** when it is busy (a writer is running or bytes are queued): append the
  encoded messages to `_pending`. When the writer next wakes it encrypts everything
  pending into as few frames as fit (one AEAD per 64 KiB, not one per message) and writes
  it in one call.

Invariants, which the ordering of Noise nonces depends on:

* Bytes reach the socket in the order they were encrypted: `_out` (already encrypted)
  always precedes `_pending` (not yet encrypted), and only one party writes at a time. The
  direct path runs only when `_out` and `_pending` are empty and no writer is running; the
  writer task is the only other writer. Nothing awaits between encrypting and writing in
  the direct path, so no other task can interleave there.
* The queue is bounded: when `_out` plus `_pending` exceed `queue_limit` bytes the
  subscriber is too slow; it is closed with `SLOW_CONSUMER` and resumes from its cursor.
  Responses and deliveries both count; backlog streaming sends a frame's worth at a
  time, each only once the queue is below min(`LOW_WATER`, `queue_limit` / 4), so it
  never trips the limit itself (Hub._catch_up).
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Final

import trio

from cellrelay.protocol._errors import CellrelayError, ErrorCode
from cellrelay.protocol.wire._connection import Connection, EncodedMessage
from cellrelay.protocol.wire._messages import Goodbye

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._metrics import RelayMetrics
    from ._ratelimit import TokenBucket

__all__ = ["LOW_WATER", "READ", "WRITE", "Session"]

READ: Final = 1
WRITE: Final = 2
# Backlog streaming pauses while more than this is queued for the connection: four full
# frames keep the socket busy without holding much memory per catching-up subscriber.
LOW_WATER: Final = 4 * 65_537
GOODBYE_CODE_NONE: Final = -1


class Session:
    """The relay's state for one open connection: capabilities, subscriptions, queue."""

    __slots__ = (
        "__weakref__",
        "_drained",
        "_fd",
        "_frames_reported",
        "_inflight_event",
        "_metrics",
        "_out",
        "_pending",
        "_pending_bytes",
        "_socket",
        "_writer_running",
        "address",
        "close_code",
        "closing",
        "conn",
        "conn_id",
        "inflight",
        "last_receive",
        "nursery",
        "ping_outstanding",
        "publish_bucket",
        "queue_limit",
        "read_scope",
    )

    def __init__(
        self,
        conn: Connection,
        stream: trio.SocketStream,
        *,
        conn_id: str,
        address: str,
        queue_limit: int,
        publish_bucket: TokenBucket,
        now: float,
        metrics: RelayMetrics,
    ) -> None:
        """Wrap an open `conn` speaking over `stream`."""
        self.conn = conn
        self._metrics = metrics
        self._frames_reported = conn.frames_sent
        self._socket = stream.socket
        self._fd = stream.socket.fileno()
        self.conn_id = conn_id
        self.address = address
        self.queue_limit = queue_limit
        self.publish_bucket = publish_bucket
        self.last_receive = now
        self.ping_outstanding = False
        self.inflight = 0  # publishes awaiting their commit
        self._inflight_event: trio.Event | None = None
        self._out = bytearray()
        self._pending: list[EncodedMessage] = []
        self._pending_bytes = 0
        self._writer_running = False
        self._drained: trio.Event | None = None
        self.closing = False
        self.close_code: int = GOODBYE_CODE_NONE
        self.nursery: trio.Nursery | None = None
        self.read_scope: trio.CancelScope | None = None

    def __repr__(self) -> str:
        return f"<Session {self.conn_id}>"

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting to be written, encrypted or not."""
        return len(self._out) + self._pending_bytes

    @property
    def idle(self) -> bool:
        """True when nothing is queued and no writer is running."""
        return not self._writer_running and not self._out and not self._pending

    # -- sending ----------------------------------------------------------------------------

    def send(self, messages: Sequence[EncodedMessage]) -> None:
        """Queue `messages` for the client without blocking (see the module docstring)."""
        if self.closing or not messages:
            return
        self._send(messages)

    def _send(self, messages: Sequence[EncodedMessage]) -> None:
        if self._writer_running or self._out:
            self._pending.extend(messages)
            self._pending_bytes += sum(len(m.data) for m in messages)
            if self.queued_bytes > self.queue_limit and not self.closing:
                self.close(ErrorCode.SLOW_CONSUMER)
            return
        # Direct path: nothing is queued and no writer runs, so these bytes go next.
        try:
            data = self.conn.send_encoded(messages)
        except CellrelayError:
            self.abort()
            return
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.abort()
            return
        # `_count`, inlined: this runs once per subscriber per alert.
        metrics = self._metrics
        metrics.bytes_sent.inc(sent)
        metrics.frames_sent.inc(self.conn.frames_sent - self._frames_reported)
        self._frames_reported = self.conn.frames_sent
        if sent < len(data):
            self._out += memoryview(data)[sent:]
            self._start_writer()

    def _count(self, sent: int) -> None:
        """Report bytes written and frames sealed since the last report."""
        metrics = self._metrics
        metrics.bytes_sent.inc(sent)
        frames = self.conn.frames_sent
        if frames != self._frames_reported:
            metrics.frames_sent.inc(frames - self._frames_reported)
            self._frames_reported = frames

    def _start_writer(self) -> None:
        if not self._writer_running and self.nursery is not None:
            self._writer_running = True
            self.nursery.start_soon(self._writer)

    async def _writer(self) -> None:
        """Drain the queue: encrypt everything pending at once, write, repeat."""
        try:
            while True:
                if self._pending:
                    pending, self._pending, self._pending_bytes = self._pending, [], 0
                    self._out += self.conn.send_encoded(pending)
                if not self._out:
                    return
                self._metrics.send_queue_depth.observe(self.queued_bytes)
                await trio.lowlevel.wait_writable(self._socket)
                try:
                    sent = os.write(self._fd, self._out)
                except BlockingIOError:
                    continue
                self._count(sent)
                del self._out[:sent]
                if self._drained is not None and self.queued_bytes < LOW_WATER:
                    self._drained.set()
                    self._drained = None
        except (OSError, CellrelayError):
            self.abort()
        finally:
            self._writer_running = False
            if self._drained is not None:
                self._drained.set()
                self._drained = None
            if self.closing and self.read_scope is not None:
                self.read_scope.cancel()

    async def wait_drained(self, threshold: int = LOW_WATER) -> None:
        """Wait until fewer than `threshold` bytes are queued (backlog flow control)."""
        while self.queued_bytes >= threshold and self._writer_running:
            if self._drained is None:
                self._drained = trio.Event()
            await self._drained.wait()

    async def flush(self) -> None:
        """Wait until the writer has written everything queued (or failed)."""
        while self._writer_running:
            if self._drained is None:
                self._drained = trio.Event()
            await self._drained.wait()

    # -- publishes in flight ------------------------------------------------------------------

    def publish_done(self, limit: int) -> None:
        """Note that one of this connection's publishes was committed or refused."""
        self.inflight -= 1
        if self._inflight_event is not None and self.inflight < limit:
            self._inflight_event.set()
            self._inflight_event = None

    async def wait_inflight_below(self, limit: int) -> None:
        """Stop reading from this client while too many of its publishes await commit."""
        while self.inflight >= limit:
            if self._inflight_event is None:
                self._inflight_event = trio.Event()
            await self._inflight_event.wait()

    # -- closing -----------------------------------------------------------------------------

    def close(self, code: ErrorCode) -> None:
        """Say Goodbye with `code`, stop reading, and let the writer flush before the end."""
        if self.closing:
            return
        self.close_code = int(code)
        # Mark the session closing before queueing the goodbye: `_send` closes a session
        # whose queue is over its limit unless it is already closing, so a goodbye queued
        # behind a full queue (SLOW_CONSUMER) would call close again, and again, until a
        # RecursionError escaped into the committer and stopped the whole relay (found by
        # tests/relay/test_slow_consumer.py).
        self.closing = True
        with contextlib.suppress(CellrelayError):
            self._send([EncodedMessage.of(Goodbye(code=code))])
        if self.read_scope is not None:
            self.read_scope.cancel()

    def fail(self, farewell: bytes, code: ErrorCode) -> None:
        """The client broke the protocol: write `farewell` if the socket takes it now, and stop."""
        self.close_code = int(code)
        self.abort()
        if farewell:
            with contextlib.suppress(OSError):  # best effort: the connection closes either way
                os.write(self._fd, farewell)

    def abort(self) -> None:
        """The socket or the connection failed: stop everything at once, send nothing more."""
        self.closing = True
        self._pending.clear()
        self._pending_bytes = 0
        self._out.clear()
        if self.read_scope is not None:
            self.read_scope.cancel()
