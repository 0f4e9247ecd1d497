"""Fixtures that run a real relay: in-process on loopback, or as a separate process.

* `running_relay` / `connect`: one in-process relay with default limits on a MemoryStore.
* `relays`: a factory for in-process relays with any settings, on a MemoryStore or a
  SQLiteStore file in `tmp_path`, plus `RunningRelay.connect` for clients that are closed
  when the test ends. Relays run on the real clock unless a test passes `now=` (for
  trio's MockClock: `now=lambda: base + trio.current_time()`).
* Helpers for reading what a relay sends until it closes, and for publishing many
  envelopes at once.

The subprocess helper lives in tests/relay/process.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from cellrelay.protocol._errors import CellrelayError
from cellrelay.protocol.wire._connection import Connection, Role
from cellrelay.protocol.wire._messages import (
    Deliver,
    Error,
    Goodbye,
    Hello,
    MailboxId,
    Message,
    Ping,
    Pong,
    Publish,
    Published,
    Welcome,
)
from cellrelay.protocol.wire._noise import KeyPair
from cellrelay.relay._config import RelayConfig
from cellrelay.relay._memory_store import MemoryStore
from cellrelay.relay._server import Relay
from cellrelay.relay._sqlite_store import SQLiteStore
from cellrelay.relay._store import Store

from ..independent_client import IndependentClient
from ..wire_client import WireClient

# A delivery or an answer on loopback takes milliseconds; on a loaded 2-core machine
# shared with other test runs, seconds. Waits are bounded by this, not expected to last.
PATIENCE = 20.0


@dataclass
class RunningRelay:
    """A relay serving on loopback, with what tests need to reach it."""

    relay: Relay
    port: int
    key: KeyPair
    store: Store | None = None
    clients: list[WireClient] = field(default_factory=list)

    @property
    def public_key(self) -> bytes:
        return self.key.public

    async def connect(self) -> WireClient:
        """Open a client to this relay; it is closed when the test ends."""
        client = await WireClient.connect(self.port, self.key.public)
        self.clients.append(client)
        return client

    def rejections(self, reason: str) -> float:
        """How many requests this relay refused with the code named `reason` (lower case)."""
        return self.relay.metrics.rejections.labels(reason=reason).value

    def dropped(self, reason: str) -> float:
        """How many connections this relay dropped for `reason` (lower case)."""
        return self.relay.metrics.connections_dropped.labels(reason=reason).value


def relay_config(**overrides: object) -> RelayConfig:
    """A config for tests: loopback, free ports, memory store unless told otherwise."""
    settings: dict[str, object] = {
        "listen": ("127.0.0.1:0",),
        "ops_listen": "127.0.0.1:0",
        "store": "memory",
    }
    settings.update(overrides)
    return RelayConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture
async def running_relay(nursery: trio.Nursery) -> RunningRelay:
    """An in-process relay on a MemoryStore, cancelled at the end of the test."""
    key = KeyPair.generate()
    relay = Relay(relay_config(), key=key, store=MemoryStore())
    ports = await nursery.start(relay.serve)
    return RunningRelay(relay=relay, port=ports[0][1], key=key)


@pytest.fixture
async def connect(
    running_relay: RunningRelay,
) -> AsyncIterator[Callable[[], Awaitable[WireClient]]]:
    """Open WireClients to `running_relay`; all are closed when the test ends."""
    opened: list[WireClient] = []

    async def open_client() -> WireClient:
        client = await WireClient.connect(running_relay.port, running_relay.public_key)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.aclose()


class RelayFactory:
    """Starts in-process relays for one test; see `relays`."""

    def __init__(self, nursery: trio.Nursery, tmp_path: Path) -> None:
        self._nursery = nursery
        self._tmp_path = tmp_path
        self.started: list[RunningRelay] = []
        self.stores: list[SQLiteStore] = []

    async def open_sqlite(
        self, name: str = "relay.sqlite3", *, reserve_bytes: int = 0
    ) -> SQLiteStore:
        """Open a SQLiteStore file under the test's tmp_path (closed when the test ends).

        No disk reserve unless asked for: 32 MiB of zeros per test would only cost time.
        """
        store = await SQLiteStore.open(
            self._tmp_path / "db" / name, durability="full", reserve_bytes=reserve_bytes
        )
        self.stores.append(store)
        return store

    async def start(
        self,
        *,
        store: Store | None = None,
        now: Callable[[], float] = time.time,
        **overrides: object,
    ) -> RunningRelay:
        """Start a relay with these settings on `store` (a new MemoryStore by default)."""
        store = MemoryStore() if store is None else store
        key = KeyPair.generate()
        relay = Relay(
            relay_config(**overrides),
            key=key,
            store=store,
            now=now,
            mailbox_count=await store.count_mailboxes(),
        )
        ports = await self._nursery.start(relay.serve)
        running = RunningRelay(relay=relay, port=ports[0][1], key=key, store=store)
        self.started.append(running)
        return running


@pytest.fixture
async def relays(tmp_path: Path) -> AsyncIterator[RelayFactory]:
    """A factory of in-process relays; all are stopped and their stores closed at the end."""
    factory: RelayFactory | None = None
    try:
        async with trio.open_nursery() as nursery:
            factory = RelayFactory(nursery, tmp_path)
            yield factory
            for running in factory.started:
                for client in running.clients:
                    await client.aclose()
            nursery.cancel_scope.cancel()
    finally:
        if factory is not None:
            for store in factory.stores:
                await store.aclose()


# -- helpers -------------------------------------------------------------------------------


async def connect_raw_socket(port: int, *, receive_buffer: int | None = None) -> trio.SocketStream:
    """Open a TCP stream to loopback, optionally with a small receive buffer set before connecting.

    A small SO_RCVBUF set before the SYN bounds the TCP window, so a client that stops
    reading makes the relay's socket refuse bytes after a few kilobytes, not megabytes.
    """
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        await sock.connect(("127.0.0.1", port))
    except BaseException:
        sock.close()  # never leave a socket to the garbage collector (see handshake)
        raise
    return trio.SocketStream(sock)


async def handshake(stream: trio.SocketStream, relay_key: bytes) -> WireClient:
    """Run the client side of the handshake on an open stream; return the WireClient."""
    conn = Connection(Role.CLIENT, relay_public_key=relay_key)
    messages: list[Message] = []
    try:
        await stream.send_all(conn.send(Hello()))
        while not messages:
            data = await stream.receive_some(65_536)
            if not data:
                raise EOFError("relay closed during the handshake")
            messages = conn.receive_data(data)
    except BaseException:
        # An unclosed socket's ResourceWarning fails whichever test the garbage collector
        # happens to run in (filterwarnings = error): close it here, on every failure.
        await trio.aclose_forcefully(stream)
        raise
    welcome = messages[0]
    assert isinstance(welcome, Welcome)
    client = WireClient(stream, conn, welcome)
    client.inbox.extend(messages[1:])
    return client


@dataclass
class Ending:
    """What a client saw until the relay closed its connection."""

    messages: list[Message]
    how: str  # "eof", "reset" or "truncated" (the stream ended inside a frame)

    @property
    def goodbye(self) -> Goodbye | None:
        """The relay's goodbye, if one arrived."""
        found = [m for m in self.messages if isinstance(m, Goodbye)]
        return found[-1] if found else None

    @property
    def deliveries(self) -> list[Deliver]:
        return [m for m in self.messages if isinstance(m, Deliver)]


async def read_until_closed(client: WireClient) -> Ending:
    """Read and decode everything until the relay closes the stream (bounded by the caller)."""
    messages: list[Message] = list(client.inbox)
    client.inbox.clear()
    while True:
        try:
            data = await client.stream.receive_some(65_536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return Ending(messages, "reset")
        if not data:
            try:
                client.conn.receive_eof()
            except CellrelayError:
                return Ending(messages, "truncated")
            return Ending(messages, "eof")
        messages.extend(client.conn.receive_data(data))


async def receive_deliveries(client: WireClient, count: int) -> list[Deliver]:
    """Return the next `count` deliveries, skipping other messages (bounded by the caller)."""
    out: list[Deliver] = []
    while len(out) < count:
        message = await client.receive()
        if isinstance(message, Deliver):
            out.append(message)
    return out


async def publish_many(
    client: WireClient, mailbox: bytes, envelopes: Sequence[bytes], *, ttl: int = 3600
) -> list[Message]:
    """Send every publish at once (pipelined, a few frames); return the answers in request order."""
    expires_at = int(time.time()) + ttl
    requests = [
        Publish(id=client.next_id(), mailbox=MailboxId(mailbox), expires_at=expires_at, envelope=e)
        for e in envelopes
    ]
    await client.send(*requests)
    wanted = {r.id: i for i, r in enumerate(requests)}
    answers: list[Message | None] = [None] * len(requests)
    skipped: list[Message] = []
    missing = len(requests)
    while missing:
        message = await client.receive()
        index = None
        if isinstance(message, Published | Error):
            index = wanted.pop(message.id, None)
        if index is None:
            skipped.append(message)
            continue
        answers[index] = message
        missing -= 1
    client.inbox.extendleft(reversed(skipped))
    return [a for a in answers if a is not None]


async def assert_quiet(client: WireClient) -> None:
    """Round-trip a ping and check that no delivery arrives before its pong.

    The relay answers in order, so a duplicate or stray delivery already queued for this
    connection shows up here.
    """
    ping_id = client.next_id()
    await client.send(Ping(id=ping_id))
    while True:
        message = await client.receive()
        assert not isinstance(message, Deliver), f"unexpected delivery seq={message.seq}"
        if isinstance(message, Pong) and message.id == ping_id:
            return


@asynccontextmanager
async def real_time_limit(seconds: float) -> AsyncIterator[None]:
    """Fail the block if it takes more than `seconds` of real time.

    For tests under trio's MockClock, where `trio.fail_after` counts virtual seconds that
    only pass when the test jumps the clock. A worker thread waits on the real clock.
    """
    done = threading.Event()

    async def watchdog() -> None:
        if not await trio.to_thread.run_sync(done.wait, seconds, abandon_on_cancel=True):
            raise TimeoutError(f"took more than {seconds} s of real time")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watchdog)
        try:
            yield
        finally:
            done.set()


async def settle(condition: Callable[[], bool], *, what: str, seconds: float = PATIENCE) -> None:
    """Wait, on the real clock (so also under MockClock), until `condition()` holds."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        await trio.to_thread.run_sync(time.sleep, 0.005)


class IndependentWire:
    """tests/independent_client.py (noiseprotocol + msgpack, written from the doc) on a real socket.

    Messages are plain dicts as docs/protocol.md describes them, so tests can also send
    what our own encoder refuses to produce.
    """

    def __init__(self, stream: trio.SocketStream, client: IndependentClient) -> None:
        self.stream = stream
        self.client = client
        self.inbox: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] = {}
        self._next_id = 0

    @classmethod
    async def connect(cls, port: int, relay_key: bytes) -> IndependentWire:
        """Open a connection and run the handshake."""
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        wire = cls(stream, IndependentClient(relay_key))
        try:
            await stream.send_all(wire.client.hello())
            while not wire.client.handshake_done:
                data = await stream.receive_some(65_536)
                if not data:
                    raise EOFError("relay closed during the handshake")
                wire.inbox.extend(wire.client.receive(data))
        except BaseException:
            await trio.aclose_forcefully(stream)  # see handshake()
            raise
        wire.welcome = wire.inbox.pop(0)
        return wire

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def send(self, *messages: dict[str, Any]) -> None:
        await self.stream.send_all(self.client.send(*messages))

    async def send_plaintext(self, plaintext: bytes) -> None:
        """Send one transport frame carrying exactly `plaintext` (valid or not)."""
        body = self.client.noise.encrypt(plaintext)
        self.client.sent += 1
        await self.stream.send_all(self.client.frame(body))

    async def receive(self) -> dict[str, Any]:
        while not self.inbox:
            data = await self.stream.receive_some(65_536)
            if not data:
                raise EOFError("relay closed the connection")
            self.inbox.extend(self.client.receive(data))
        return self.inbox.pop(0)

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send a request and return the answer with its id; other messages stay queued."""
        await self.send(message)
        skipped: list[dict[str, Any]] = []
        try:
            while True:
                reply = await self.receive()
                # A relay's own ping may carry the same id; it is not an answer.
                if reply.get("id") == message["id"] and reply["t"] != "ping":
                    return reply
                skipped.append(reply)
        finally:
            self.inbox[:0] = skipped

    async def read_until_closed(self) -> list[dict[str, Any]]:
        """Every message until the relay closes the stream (bounded by the caller)."""
        out = list(self.inbox)
        self.inbox.clear()
        while True:
            try:
                data = await self.stream.receive_some(65_536)
            except trio.BrokenResourceError:
                return out
            if not data:
                return out
            out.extend(self.client.receive(data))

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)
