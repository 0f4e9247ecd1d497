"""The ops HTTP listener: `/healthz`, `/readyz` and `/metrics` for the operator's tooling.

Theory of operation, sans-IO first (STYLE.md section 3): `handle_ops_request` turns one parsed
`h11.Request` into an `OpsResponse` and does nothing else; `OpsHttpConnection` owns one
`h11.Connection` and turns received bytes into bytes to send, answering malformed input with
h11's suggested status (400; 431 for an oversized head; 501 for a transfer coding other than
chunked, per RFC 9112 §6.1) and then asking to close. `serve_ops` is the thin Trio part: it
moves bytes between sockets and `OpsHttpConnection`s and decides the policy: a deadline per
request (slowloris), a cap on concurrent connections, and closing on any failure.

The listener binds to loopback by default: metrics reveal traffic volumes, so exposing them
is the operator's explicit choice. Responses never echo request data, and logs never include
h11's error messages (they quote the offending bytes).
"""

from __future__ import annotations

import http
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import h11
import structlog
import trio

from cellrelay.relay._listen import open_listeners
from cellrelay.relay._metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from collections.abc import Callable

    from cellrelay.relay._metrics import Registry

__all__ = [
    "DEFAULT_OPS_HOST",
    "MAX_OPS_CONNECTIONS",
    "MAX_REQUEST_HEAD_BYTES",
    "OPS_REQUEST_TIMEOUT",
    "OpsHttpConnection",
    "OpsResponse",
    "handle_ops_request",
    "serve_ops",
]

log = structlog.get_logger(__name__)

DEFAULT_OPS_HOST: Final = "127.0.0.1"
# A scraper sends a request of a few hundred bytes; 8 KiB matches the per-line limit of
# common servers (Apache's LimitRequestLine 8190) and halves h11's 16 KiB default.
MAX_REQUEST_HEAD_BYTES: Final = 8 * 1024
# Each request, including its response being written, must finish within this many
# seconds of the previous one (or of the connection opening). Prometheus' default scrape
# timeout is 10 s; a scrape needs far less, and an idle keep-alive connection is closed too.
OPS_REQUEST_TIMEOUT: Final = 10.0
# One or two scrapers and a health checker need a handful; more is a flood.
MAX_OPS_CONNECTIONS: Final = 16
# Bytes read per receive; small, so h11's buffer holds at most this past its head limit.
_RECEIVE_SIZE: Final = 4096

_ALLOWED_METHODS: Final = (b"GET", b"HEAD")
_ALLOW_HEADER: Final = b"GET, HEAD"
_TEXT: Final = b"text/plain; charset=utf-8"
_CLOSE: Final = (b"connection", b"close")


@dataclass(frozen=True, slots=True, kw_only=True)
class OpsResponse:
    """One complete response: status, extra headers and body (empty for HEAD)."""

    status: int
    content_type: bytes = _TEXT
    body: bytes = b""
    content_length: int = 0  # of the GET body, also for HEAD (RFC 9110 §9.3.2)
    extra_headers: tuple[tuple[bytes, bytes], ...] = ()


def _text(
    status: int,
    body: bytes | None = None,
    *,
    head: bool = False,
    content_type: bytes = _TEXT,
    extra_headers: tuple[tuple[bytes, bytes], ...] = (),
) -> OpsResponse:
    """Build a response; the body defaults to the status phrase, and HEAD drops it."""
    if body is None:
        body = http.HTTPStatus(status).phrase.lower().encode() + b"\n"
    return OpsResponse(
        status=status,
        content_type=content_type,
        body=b"" if head else body,
        content_length=len(body),
        extra_headers=extra_headers,
    )


def handle_ops_request(
    request: h11.Request, *, registry: Registry, ready: Callable[[], bool]
) -> OpsResponse:
    """Decide the response to one request; pure apart from calling `ready` and `render`.

    Exceptions from `ready` or `registry.render` propagate (the caller logs and closes).
    """
    path = request.target.split(b"?", 1)[0]
    head = request.method == b"HEAD"
    # Our endpoints take no body. Rather than read one (of any length) to reach the next
    # request, answer any other method and close the connection.
    closing = () if request.method in _ALLOWED_METHODS else (_CLOSE,)
    if path not in (b"/healthz", b"/readyz", b"/metrics"):
        return _text(404, head=head, extra_headers=closing)
    if closing:
        return _text(405, extra_headers=((b"allow", _ALLOW_HEADER), *closing))
    if path == b"/healthz":
        return _text(200, b"ok\n", head=head)
    if path == b"/readyz":
        return _text(200, b"ready\n", head=head) if ready() else _text(503, head=head)
    return _text(200, registry.render(), head=head, content_type=CONTENT_TYPE.encode())


class OpsHttpConnection:
    """One HTTP/1.1 server connection, sans-IO: bytes in, bytes out.

    After `receive_data` returns, send what it returned, then close the connection if
    `must_close` is set. Exceptions from the handler propagate; the connection is then
    unusable and must be closed.
    """

    __slots__ = ("_conn", "_handler", "must_close", "responses")

    def __init__(self, handler: Callable[[h11.Request], OpsResponse]) -> None:
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES)
        self._handler = handler
        self.must_close = False
        self.responses = 0  # complete responses produced so far

    def receive_data(self, data: bytes) -> bytes:
        """Feed received bytes (b"" for end of stream) and return the bytes to send."""
        if self.must_close:
            return b""
        conn = self._conn
        conn.receive_data(data)
        out: list[bytes] = []
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                # The peer sent something h11 cannot parse. Answer with h11's hint (400,
                # 431 or 501, see the module docstring) unless a response is under way; close.
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    error = _text(exc.error_status_hint, extra_headers=(_CLOSE,))
                    out.append(self._respond(error))
                self.must_close = True
                break
            if event is h11.NEED_DATA:
                break
            if isinstance(event, h11.Request):
                out.append(self._respond(self._handler(event)))
            elif isinstance(event, h11.ConnectionClosed):
                self.must_close = True
                break
            # Data (the body of a GET or HEAD) is discarded; EndOfMessage falls through.
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()  # keep-alive: the next request may already be buffered
            elif conn.our_state is h11.MUST_CLOSE or event is h11.PAUSED:
                # PAUSED with a cycle we cannot finish (a protocol switch we never grant)
                # would otherwise spin here: close instead.
                self.must_close = True
                break
        return b"".join(out)

    def _respond(self, response: OpsResponse) -> bytes:
        headers = [
            (b"content-type", response.content_type),
            (b"content-length", str(response.content_length).encode()),
            (b"cache-control", b"no-store"),
            *response.extra_headers,
        ]
        reason = http.HTTPStatus(response.status).phrase.encode()
        conn = self._conn
        parts = [
            conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        ]
        if response.body:
            parts.append(conn.send(h11.Data(data=response.body)))
        parts.append(conn.send(h11.EndOfMessage()))
        self.responses += 1
        return b"".join(parts)


async def _serve_connection(
    stream: trio.SocketStream, http_conn: OpsHttpConnection, request_timeout: float
) -> None:
    """Move bytes between `stream` and `http_conn` until either side ends or time runs out."""
    with trio.CancelScope(deadline=trio.current_time() + request_timeout) as scope:
        while not http_conn.must_close:
            answered = http_conn.responses
            out = http_conn.receive_data(await stream.receive_some(_RECEIVE_SIZE))
            if out:
                await stream.send_all(out)
            if http_conn.responses != answered:
                # Each request gets its own deadline, measured from the previous response.
                scope.deadline = trio.current_time() + request_timeout
    if scope.cancelled_caught:
        log.debug("ops_request_timeout")


async def serve_ops(
    host: str,
    port: int,
    *,
    registry: Registry,
    ready: Callable[[], bool],
    request_timeout: float = OPS_REQUEST_TIMEOUT,
    max_connections: int = MAX_OPS_CONNECTIONS,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ops endpoints on `host`:`port` until cancelled; report the bound port.

    Port 0 picks a free port. `host` should be a literal address (`DEFAULT_OPS_HOST`
    unless the operator chose otherwise): a name that resolves to several addresses with
    port 0 would get a different port on each, so then only the first one is kept.
    """
    active = 0
    saturated = False  # log the first refusal of a burst, not every one (no log flood)

    def handler(request: h11.Request) -> OpsResponse:
        return handle_ops_request(request, registry=registry, ready=ready)

    async def serve_one(stream: trio.SocketStream) -> None:
        nonlocal active, saturated
        if active >= max_connections:
            if not saturated:
                saturated = True
                log.warning("ops_connections_saturated", limit=max_connections)
            await trio.aclose_forcefully(stream)
            return
        active += 1
        try:
            await _serve_connection(stream, OpsHttpConnection(handler), request_timeout)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away mid-request: nothing to answer
        except Exception:
            # Trio's Cancelled is a BaseException and passes through untouched.
            log.exception("ops_request_failed")
        finally:
            active -= 1
            saturated = False
            await trio.aclose_forcefully(stream)

    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    listeners = await open_listeners("ops_listen", address, host, port)
    if port == 0:
        for extra in listeners[1:]:
            await extra.aclose()
        del listeners[1:]
    bound_port: int = listeners[0].socket.getsockname()[1]
    log.info("ops_listening", host=host, port=bound_port)
    task_status.started(bound_port)
    await trio.serve_listeners(serve_one, listeners)
