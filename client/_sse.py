"""Server-Sent Events for the daemon: numbered events, a bounded replay ring, listeners that never stall each other.

Theory of operation
-------------------

`EventHub.publish` takes one event (already JSON), gives it the next id, encodes its SSE
frame once, appends it to the replay ring and offers the same bytes to every listener
with `send_nowait`. Publishing never waits, so no listener, however slow or gone, can
hold up the cells, the other listeners or the daemon.

Each listener has a bounded queue (`LISTENER_BUFFER` frames). A listener whose queue is
full when an event comes is *dropped*: its queue is closed, its stream ends after what it
holds, and the client (an `EventSource` does this by itself) reconnects with the id of the
last event it got in `Last-Event-ID`. `listen` then replays from the ring what came after
that id, registering the new listener in the same step, so nothing is missed or sent twice.
A client that comes back after the ring has moved past its id, or after the daemon
restarted (the id names the daemon's run), first gets an `events_missed` event, without
an id, saying that it must fetch the state again; then whatever the ring holds.

Ids are `RUN-SEQ`: `RUN` is random per daemon run, `SEQ` counts from 1. The ring holds at
most `RING_EVENTS` events and `RING_BYTES` bytes, whichever is reached first.

Writing to the socket is the HTTP layer's (client/_http.py); `serve_stream` here turns a
listener into frames for it: `retry:` first, the replay, then events as they come, several
per write when they queue up, and a keep-alive comment after `KEEPALIVE` seconds of
silence, so that proxies and NAT do not cut an idle stream and a vanished client is
noticed within `KEEPALIVE` plus the write timeout.
"""

from __future__ import annotations

import json
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import structlog
import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = [
    "KEEPALIVE",
    "LISTENER_BUFFER",
    "RING_BYTES",
    "RING_EVENTS",
    "EventHub",
    "Frame",
    "Listener",
    "serve_stream",
]

log = structlog.get_logger("cellrelay.daemon")

# Events kept for resuming. A busy cell sees a few events a second (alerts, every reply,
# receipts); 4,096 covers many minutes of that, and a board that reconnects within
# seconds never needs more.
RING_EVENTS: Final = 4096
# ... and never more than this many bytes: an event is at most ~12 KB of JSON (an alert of
# 2,000 characters, with its roll-up), so 8 MiB bounds the ring whatever members send.
RING_BYTES: Final = 8 * 1024 * 1024
# Frames a listener may have queued. A client reading at all keeps it near zero; one that
# stopped reading fills it in a burst of 256 events, is dropped and resumes from the ring.
LISTENER_BUFFER: Final = 256
# Seconds of silence before a keep-alive comment: under the 30 s that common proxies and
# load balancers allow an idle connection, and EventSource needs no reply to it.
KEEPALIVE: Final = 15.0
# How long an EventSource waits before reconnecting, in milliseconds (the `retry:` field).
RETRY_MS: Final = 2000
# Frames joined into one write when a listener has several queued.
MAX_BATCH: Final = 64


@dataclass(frozen=True, slots=True)
class Frame:
    """One event as it goes on the wire, encoded once for every listener."""

    seq: int
    cell_id: bytes | None  # the cell it belongs to, for filtered streams; None: everyone's
    data: bytes


def _frame(event_id: str | None, payload: object) -> bytes:
    # ensure_ascii: a JSON line then holds no line separator a client could split on
    # (json escapes \n itself; U+2028 would otherwise go through raw).
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=True)
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {body}\n\n".encode()


@dataclass(eq=False, slots=True)
class Listener:
    """One stream's queue: the replay to send first, then frames as they are published."""

    replay: list[bytes]
    receive: trio.MemoryReceiveChannel[bytes]
    send: trio.MemorySendChannel[bytes] = field(repr=False)
    cell_id: bytes | None
    dropped: bool = False


class EventHub:
    """See the module docstring."""

    def __init__(self, *, run: str | None = None, keepalive: float = KEEPALIVE) -> None:
        """Start an empty ring; `run` names this daemon run in every id (random by default)."""
        self.run = run or secrets.token_hex(4)
        self.keepalive = keepalive
        self._seq = 0
        self._ring: deque[Frame] = deque()
        self._ring_bytes = 0
        self._listeners: set[Listener] = set()
        self.published = 0
        self.dropped = 0  # listeners dropped for falling behind

    @property
    def listeners(self) -> int:
        """How many streams are open."""
        return len(self._listeners)

    @property
    def last_id(self) -> str:
        """The id of the latest event (`RUN-0` before the first)."""
        return f"{self.run}-{self._seq}"

    def publish(self, payload: object, *, cell_id: bytes | None = None) -> None:
        """Number an event, keep it for replay and offer it to every listener; never waits."""
        self._seq += 1
        frame = Frame(self._seq, cell_id, _frame(f"{self.run}-{self._seq}", payload))
        self._ring.append(frame)
        self._ring_bytes += len(frame.data)
        while len(self._ring) > RING_EVENTS or self._ring_bytes > RING_BYTES:
            self._ring_bytes -= len(self._ring.popleft().data)
        self.published += 1
        for listener in list(self._listeners):
            if listener.cell_id is not None and cell_id is not None and cell_id != listener.cell_id:
                continue
            try:
                listener.send.send_nowait(frame.data)
            except trio.WouldBlock:
                # Behind by a whole buffer: drop it rather than wait for it. It ends
                # after what it holds and resumes from the ring with Last-Event-ID.
                self._drop(listener)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._listeners.discard(listener)

    def _drop(self, listener: Listener) -> None:
        listener.dropped = True
        listener.send.close()
        self._listeners.discard(listener)
        self.dropped += 1
        log.info("event_listener_dropped", reason="slow", buffer=LISTENER_BUFFER)

    def listen(self, last_event_id: str | None, *, cell_id: bytes | None = None) -> Listener:
        """Register a listener; its replay holds what came after `last_event_id`.

        Registration and the replay snapshot happen together, with no await between:
        every event is either in the replay or will be queued, exactly once.
        """
        send, receive = trio.open_memory_channel[bytes](LISTENER_BUFFER)
        listener = Listener(replay=self._replay(last_event_id, cell_id), receive=receive,
                            send=send, cell_id=cell_id)  # fmt: skip
        self._listeners.add(listener)
        return listener

    def forget(self, listener: Listener) -> None:
        """Unregister a listener whose stream ended."""
        self._listeners.discard(listener)
        listener.send.close()

    def _replay(self, last_event_id: str | None, cell_id: bytes | None) -> list[bytes]:
        if last_event_id is None:
            return []
        run, _, seq_text = last_event_id.strip().rpartition("-")
        missed: str | None = None
        after = 0
        if run != self.run:
            missed = "daemon_restarted" if run and seq_text.isdigit() else "unknown_id"
        elif not seq_text.isdigit() or int(seq_text) > self._seq:
            return [_frame(None, {"type": "events_missed", "reason": "unknown_id"})]
        else:
            after = int(seq_text)
            oldest = self._ring[0].seq if self._ring else self._seq + 1
            if after < oldest - 1:
                missed = "too_old"
        frames = [
            f.data
            for f in self._ring
            if f.seq > after and (cell_id is None or f.cell_id is None or f.cell_id == cell_id)
        ]
        if missed is not None:
            frames.insert(0, _frame(None, {"type": "events_missed", "reason": missed}))
        return frames


async def serve_stream(
    hub: EventHub, listener: Listener, send: Callable[[bytes], Awaitable[None]]
) -> None:
    """Write a listener's frames with `send` until it is dropped or `send` fails.

    The caller cancels this when the client goes away, and calls `hub.forget` after.
    """
    await send(f"retry: {RETRY_MS}\n\n".encode())
    replay = listener.replay
    for start in range(0, len(replay), MAX_BATCH):
        await send(b"".join(replay[start : start + MAX_BATCH]))
    receive = listener.receive
    while True:
        first: bytes | None = None
        # Only the wait is bounded: cancelling a write halfway would leave half a frame.
        with trio.move_on_after(hub.keepalive):
            try:
                first = await receive.receive()
            except trio.EndOfChannel:
                return  # dropped for being slow: it resumes with Last-Event-ID
        if first is None:
            await send(b": keep-alive\n\n")
            continue
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                batch.append(receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        await send(b"".join(batch))
