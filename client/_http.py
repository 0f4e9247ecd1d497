"""The daemon's HTTP/1.1 server: h11 on a Unix socket or loopback TCP, nothing else.

Theory of operation
-------------------

`serve_connection` reads one request at a time from a stream with an `h11.Connection`
(keep-alive: then the next), hands it to the application as a `Request` with its whole
body, and writes the `Response` the application returns: a complete body, or a stream
(Server-Sent Events) written chunk by chunk until the application's stream function
returns or the client goes away. The application (client/_api.py) decides everything
about meaning; this module decides what the network may cost:

* the request head is at most `MAX_HEAD` bytes (h11 answers 431 beyond it), the body at
  most `max_body` bytes: a larger `Content-Length` is refused with 413 before a byte of
  the body is read, and a chunked body is cut off at the limit with 413 too;
* a request must arrive within `REQUEST_TIMEOUT` of its first byte (slowloris), an idle
  keep-alive connection is closed after `IDLE_TIMEOUT`, and every write must finish within
  `WRITE_TIMEOUT` or the connection is closed (a client that stopped reading);
* at most `MAX_CONNECTIONS` connections at once; more are closed at once.

Malformed HTTP gets h11's suggested status (400, 431, 501) as problem+json and the
connection is closed. Every response carries the same protective headers (`BASE_HEADERS`):
nothing is cached, nothing may be framed or sniffed, no referrer leaves, and no other
origin may read or embed what we send (no CORS headers, ever).
"""

from __future__ import annotations

import http
import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Final, TypeAlias

import h11
import structlog
import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

__all__ = [
    "BASE_HEADERS",
    "MAX_BODY",
    "MAX_CONNECTIONS",
    "MAX_HEAD",
    "Request",
    "Response",
    "Transport",
    "problem_body",
    "serve_connection",
]

log = structlog.get_logger("cellrelay.daemon")

# A request head from curl or a browser is under 2 KB; 16 KiB is h11's own default and
# leaves room for long cookies a browser may send to localhost.
MAX_HEAD: Final = 16 * 1024
# The largest valid body is an alert of 2,000 characters, each of which JSON may escape
# as a 12-character surrogate pair: 24 KB. 64 KiB leaves room and bounds what we buffer.
MAX_BODY: Final = 64 * 1024
REQUEST_TIMEOUT: Final = 30.0  # seconds from a request's first byte to its last
IDLE_TIMEOUT: Final = 120.0  # seconds a keep-alive connection may wait for its next request
WRITE_TIMEOUT: Final = 10.0  # seconds one write may take before the client counts as gone
# SSE listeners are connections too: the benchmark holds 100 of them; a board, a few apps
# and the command line need a handful. More than this at once is a flood or a leak.
MAX_CONNECTIONS: Final = 512
_RECEIVE_SIZE: Final = 16 * 1024

BASE_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-resource-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
)


class Transport(StrEnum):
    """Where a request came from: the Unix socket (this user only) or loopback TCP."""

    UNIX = "unix"
    TCP = "tcp"


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One complete request: method, path and query as sent, headers by lower-case name."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes = field(repr=False)
    transport: Transport
    http10: bool = False


@dataclass(slots=True, kw_only=True)
class Response:
    """What to send: a complete body, or `stream` writing chunks through its argument."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = field(default=b"", repr=False)
    stream: Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]] | None = None
    close: bool = False  # close the connection after this response


if TYPE_CHECKING:
    Handler: TypeAlias = Callable[[Request], Awaitable[Response]]


def problem_body(status: int, code: str, detail: str | None = None) -> bytes:
    """An RFC 9457 problem document (the application builds richer ones itself)."""
    problem: dict[str, object] = {
        "type": "about:blank",
        "title": http.HTTPStatus(status).phrase,
        "status": status,
        "code": code,
    }
    if detail is not None:
        problem["detail"] = detail
    return json.dumps(problem).encode()


def _problem_response(status: int, code: str, *, close: bool = True) -> Response:
    return Response(
        status=status,
        headers=[("content-type", "application/problem+json")],
        body=problem_body(status, code),
        close=close,
    )


_H11_CODES: Final = {400: "MALFORMED", 413: "TOO_LARGE", 431: "TOO_LARGE", 501: "UNSUPPORTED"}


class _ClosedError(Exception):
    """The client closed the connection (or it failed) between requests."""


class _Connection:
    """One client connection: h11 plus the stream, read and written with deadlines."""

    def __init__(self, stream: trio.abc.Stream, *, max_body: int) -> None:
        self.stream = stream
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.max_body = max_body

    async def send(self, data: bytes) -> None:
        with trio.fail_after(WRITE_TIMEOUT):
            await self.stream.send_all(data)

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        """The next h11 event, reading from the stream as needed (no deadline of its own)."""
        conn = self.conn
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await self.stream.receive_some(_RECEIVE_SIZE)))
                continue
            return event  # type: ignore[return-value]  # NEED_DATA was handled above

    async def read_request(self) -> tuple[h11.Request, bytes] | Response:
        """Read one request and its body; or the error response to send (then close)."""
        with trio.move_on_after(IDLE_TIMEOUT) as idle:
            first = await self.next_event()
        if idle.cancelled_caught or isinstance(first, h11.ConnectionClosed) or first is h11.PAUSED:
            raise _ClosedError
        if not isinstance(first, h11.Request):  # pragma: no cover - h11 yields Request first
            raise _ClosedError
        with trio.fail_after(REQUEST_TIMEOUT):
            length = _content_length(first)
            if length is not None and length > self.max_body:
                return _problem_response(413, "TOO_LARGE")
            if self.conn.they_are_waiting_for_100_continue:
                await self.send(
                    self.conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                )
            body = bytearray()
            while True:
                event = await self.next_event()
                if isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > self.max_body:
                        return _problem_response(413, "TOO_LARGE")
                elif isinstance(event, h11.EndOfMessage):
                    return first, bytes(body)
                else:
                    raise _ClosedError

    async def respond(self, response: Response, *, head: bool) -> None:
        headers = [*BASE_HEADERS, *response.headers]
        if response.close:
            headers.append(("connection", "close"))
        if response.stream is None:
            headers.append(("content-length", str(len(response.body))))
        reason = http.HTTPStatus(response.status).phrase.encode()
        wire = [(name.encode(), value.encode("latin-1")) for name, value in headers]
        out = self.conn.send(h11.Response(status_code=response.status, headers=wire, reason=reason))
        if response.stream is None:
            parts = [out]
            if response.body and not head:
                parts.append(self.conn.send(h11.Data(data=response.body)))
            parts.append(self.conn.send(h11.EndOfMessage()))
            await self.send(b"".join(p for p in parts if p))
            return
        await self.send(out)
        await self._stream(response.stream)
        await self.send(self.conn.send(h11.EndOfMessage()) or b"")

    async def _stream(
        self, stream: Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]]
    ) -> None:
        """Run a streaming body until it ends or the client goes away."""

        async def send_chunk(data: bytes) -> None:
            await self.send(self.conn.send(h11.Data(data=data)) or b"")

        async def watch_for_close(scope: trio.CancelScope) -> None:
            # Whatever the client sends now is a pipelined request we will never
            # answer; all we want to know is when it closes.
            while await self.stream.receive_some(_RECEIVE_SIZE):
                pass
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_for_close, nursery.cancel_scope)
            await stream(send_chunk)
            nursery.cancel_scope.cancel()


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has checked that it is a number
    return None


def _headers(request: h11.Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in request.headers:
        key = name.decode("ascii").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


async def serve_connection(
    stream: trio.abc.Stream, handler: Handler, *, transport: Transport, max_body: int = MAX_BODY
) -> None:
    """Answer requests on `stream` until the client closes it, an error, or a timeout.

    Exceptions from `handler` propagate (the caller logs them and closes the stream);
    the application turns its own errors into responses.
    """
    conn = _Connection(stream, max_body=max_body)
    while True:
        try:
            read = await conn.read_request()
        except _ClosedError:
            return
        except trio.TooSlowError:
            log.info("http_request_timeout")
            return
        except h11.RemoteProtocolError as exc:
            if conn.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                status = exc.error_status_hint
                await conn.respond(
                    _problem_response(status, _H11_CODES.get(status, "MALFORMED")), head=False
                )
            return
        if isinstance(read, Response):  # refused before the body was read
            await conn.respond(read, head=False)
            return
        event, body = read
        target = event.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        request = Request(
            method=event.method.decode("ascii"),
            path=path,
            query=query,
            headers=_headers(event),
            body=body,
            transport=transport,
            http10=event.http_version == b"1.0",
        )
        response = await handler(request)
        await conn.respond(response, head=request.method == "HEAD")
        if response.close or response.stream is not None or conn.conn.our_state is h11.MUST_CLOSE:
            return
        try:
            conn.conn.start_next_cycle()
        except h11.LocalProtocolError:  # the client has not finished its request: give up
            return
