"""A small HTTP/1.1 client for the daemon's API (h11 over the Unix socket or loopback TCP).

The command line talks to a running daemon with it (client/_cli_daemon.py), and so do the
tests and the benchmark. One `DaemonConnection` is one keep-alive connection: requests go
one after the other on it; `events` turns a `GET /events` response into parsed events.

    async with open_daemon(socket_path(home)) as daemon:
        answer = await daemon.request("POST", "/cells/Eastside/alerts", json={"text": "..."})
"""

from __future__ import annotations

import json
import socket
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import h11
import trio

from ._daemon import unix_address

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path

__all__ = ["DaemonConnection", "DaemonResponse", "EventStream", "SseEvent", "open_daemon"]

_RECEIVE_SIZE: Final = 65_536


@dataclass(frozen=True, slots=True)
class DaemonResponse:
    """A complete response: status, headers by lower-case name, body."""

    status: int
    headers: dict[str, str]
    body: bytes = field(repr=False)

    def json(self) -> Any:  # noqa: ANN401 - whatever JSON the body holds
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One Server-Sent Event: its id (None if it had none) and its data as JSON."""

    id: str | None
    data: Any


class DaemonConnection:
    """One connection to the daemon; see the module docstring."""

    def __init__(self, stream: trio.abc.Stream, *, host: str, token: str | None) -> None:
        """Speak HTTP on `stream`; `host` is sent as the Host header."""
        self._stream = stream
        self._host = host
        self._token = token
        self._conn = h11.Connection(h11.CLIENT)

    def _headers(self, extra: Mapping[str, str]) -> list[tuple[str, str]]:
        headers = [("host", extra.get("host", self._host)), ("user-agent", "cellrelay")]
        if self._token is not None:
            headers.append(("authorization", f"Bearer {self._token}"))
        headers.extend((k, v) for k, v in extra.items() if k != "host")
        return headers

    async def _send_request(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        if self._conn.our_state is h11.DONE:
            self._conn.start_next_cycle()
        all_headers = self._headers(headers)
        if method not in ("GET", "HEAD") or body:
            all_headers.append(("content-length", str(len(body))))
        wire = self._conn.send(h11.Request(method=method, target=path, headers=all_headers))
        if body:
            wire += self._conn.send(h11.Data(data=body))
        wire += self._conn.send(h11.EndOfMessage())
        await self._stream.send_all(wire)

    async def _next(self) -> h11.Event | type[h11.PAUSED]:
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                self._conn.receive_data(bytes(await self._stream.receive_some(_RECEIVE_SIZE)))
                continue
            return event  # type: ignore[return-value]  # NEED_DATA was handled above

    async def _head(self) -> h11.Response:
        while True:
            event = await self._next()
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):
                raise ConnectionError("the daemon closed the connection")

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: object = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> DaemonResponse:
        """Send a request and read the whole response."""
        extra = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            content_type = "application/json"
        if content_type is not None:
            extra["content-type"] = content_type
        await self._send_request(method, path, body or b"", extra)
        head = await self._head()
        chunks = []
        while True:
            event = await self._next()
            if isinstance(event, h11.Data):
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                raise ConnectionError("the daemon closed the connection")
        response_headers = {k.decode().lower(): v.decode("latin-1") for k, v in head.headers}
        return DaemonResponse(head.status_code, response_headers, b"".join(chunks))

    async def open_events(
        self, path: str = "/events", *, headers: Mapping[str, str] | None = None
    ) -> EventStream:
        """Open an event stream; return once the daemon has registered it (its `retry:`).

        Raises:
            ConnectionError: the daemon answered with something else than a stream.
        """
        await self._send_request("GET", path, b"", dict(headers or {}))
        head = await self._head()
        if head.status_code != 200:
            raise ConnectionError(f"the daemon answered {head.status_code} to {path}")
        stream = EventStream(self)
        await stream.wait_open()
        return stream

    async def _chunk(self) -> bytes:
        """The next piece of a streamed body; b"" at its end."""
        event = await self._next()
        return event.data if isinstance(event, h11.Data) else b""

    async def aclose(self) -> None:
        """Close the connection."""
        await self._stream.aclose()


class EventStream:
    """The events of an open stream, parsed (`async for event in stream`)."""

    def __init__(self, connection: DaemonConnection) -> None:
        """Read from `connection`, whose response head has been read."""
        self._connection = connection
        self._buffer = b""
        self.retry: int | None = None
        self.comments = 0  # keep-alive comments seen

    async def wait_open(self) -> None:
        """Read up to the end of the daemon's first block (`retry:`)."""
        while self.retry is None:
            event = await self._block()
            if event is not None:  # pragma: no cover - the daemon sends retry first
                raise ConnectionError("the stream did not start with retry:")

    async def _block(self) -> SseEvent | None:
        """Read one block (up to a blank line); its event, if it held data."""
        event_id: str | None = None
        data: list[str] = []
        while True:
            while b"\n" not in self._buffer:
                chunk = await self._connection._chunk()
                if not chunk:
                    raise StopAsyncIteration
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\n", 1)
            line = raw.decode("utf-8").removesuffix("\r")
            if not line:
                return SseEvent(event_id, json.loads("\n".join(data))) if data else None
            if line.startswith(":"):
                self.comments += 1
            elif line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif line.startswith("retry:"):
                self.retry = int(line[6:].strip())

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> SseEvent:
        while True:
            event = await self._block()
            if event is not None:
                return event


@asynccontextmanager
async def open_daemon(
    socket_file: Path | None = None,
    *,
    url: str | None = None,
    token: str | None = None,
) -> AsyncIterator[DaemonConnection]:
    """Connect to the daemon's socket, or to its TCP `url` (http://127.0.0.1:PORT) with `token`.

    Raises:
        OSError: nothing listens there (FileNotFoundError, ConnectionRefusedError...).
    """
    if url is not None:
        hostport = url.removeprefix("http://").rstrip("/")
        host, _, port = hostport.rpartition(":")
        stream: trio.abc.Stream = await trio.open_tcp_stream(host.strip("[]"), int(port))
        host_header = hostport
    else:
        if socket_file is None:
            raise ValueError("give the daemon's socket or its URL")
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with unix_address(socket_file) as address:
                await sock.connect(address)
        except BaseException:
            sock.close()
            raise
        stream = trio.SocketStream(sock)
        host_header = "cellrelay"
    connection = DaemonConnection(stream, host=host_header, token=token)
    try:
        yield connection
    finally:
        await connection.aclose()
