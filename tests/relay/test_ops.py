"""Tests for relay/_ops.py over real loopback sockets, plus its sans-IO core on its own."""

from __future__ import annotations

import contextlib
import re
import secrets
import urllib.error
import urllib.request
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import h11
import pytest
import trio
from structlog.testing import capture_logs

from cellrelay.relay._metrics import CONTENT_TYPE, Registry
from cellrelay.relay._ops import (
    MAX_OPS_CONNECTIONS,
    OPS_REQUEST_TIMEOUT,
    OpsHttpConnection,
    OpsResponse,
    handle_ops_request,
    serve_ops,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

# Every test is bounded by this, so a hang fails instead of stalling CI. It is a safety
# net, not a speed assertion: each test needs well under a second.
SAFETY_TIMEOUT = 20.0
HOST = "127.0.0.1"


@dataclass
class Ops:
    """A running ops listener: its port, registry and the flag behind `ready()`."""

    port: int
    registry: Registry
    readiness: list[bool] = field(default_factory=lambda: [False])


@asynccontextmanager
async def running_ops(
    *, request_timeout: float = OPS_REQUEST_TIMEOUT, max_connections: int = MAX_OPS_CONNECTIONS
) -> AsyncIterator[Ops]:
    """Run `serve_ops` on a free loopback port for the duration of the block."""
    registry = Registry()
    registry.counter("cellrelay_test_total", "A test counter.").inc(7)
    ops = Ops(port=0, registry=registry)
    with trio.fail_after(SAFETY_TIMEOUT):
        async with trio.open_nursery() as nursery:
            ops.port = await nursery.start(
                partial(
                    serve_ops,
                    HOST,
                    0,
                    registry=registry,
                    ready=lambda: ops.readiness[0],
                    request_timeout=request_timeout,
                    max_connections=max_connections,
                )
            )
            yield ops
            nursery.cancel_scope.cancel()


@dataclass
class RawResponse:
    """One response as read off the wire by hand."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes


class RawClient:
    """A TCP client that writes raw bytes and reads responses with a minimal parser."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def _fill(self) -> bool:
        chunk = await self.stream.receive_some(65536)
        self.buffer += chunk
        return bool(chunk)

    async def response(self, *, head: bool = False) -> RawResponse:
        """Read one response; HEAD responses carry Content-Length but no body."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise EOFError(f"closed mid-response after {bytes(self.buffer)!r}")
        end = self.buffer.index(b"\r\n\r\n")
        status_line, *lines = bytes(self.buffer[:end]).split(b"\r\n")
        del self.buffer[: end + 4]
        version, status, _reason = status_line.split(b" ", 2)
        assert version == b"HTTP/1.1"
        headers = {}
        for line in lines:
            name, value = line.split(b":", 1)
            headers[name.strip().lower()] = value.strip()
        length = 0 if head else int(headers[b"content-length"])
        while len(self.buffer) < length:
            if not await self._fill():
                raise EOFError("closed mid-body")
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return RawResponse(int(status), headers, body)

    async def request(self, raw: bytes, *, head: bool = False) -> RawResponse:
        await self.stream.send_all(raw)
        return await self.response(head=head)

    async def closed_by_server(self) -> bool:
        """Wait for the server to close; True if it did so without sending anything more."""
        try:
            while await self._fill():
                pass
        except trio.BrokenResourceError:  # a reset also means closed
            pass
        return not self.buffer


@asynccontextmanager
async def connected(port: int) -> AsyncIterator[RawClient]:
    """Open a loopback connection to `port`, closed when the block ends."""
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        yield RawClient(stream)


def get(path: str, *extra: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", *extra, "", ""]
    return "\r\n".join(lines).encode()


async def test_endpoints() -> None:
    async with running_ops() as ops, connected(ops.port) as client:
        health = await client.request(get("/healthz"))
        assert (health.status, health.body) == (200, b"ok\n")
        not_ready = await client.request(get("/readyz"))
        assert not_ready.status == 503
        ops.readiness[0] = True
        assert (await client.request(get("/readyz"))).status == 200
        metrics = await client.request(get("/metrics"))
        assert metrics.status == 200
        assert metrics.headers[b"content-type"] == CONTENT_TYPE.encode()
        assert metrics.body == ops.registry.render()
        assert b"cellrelay_test_total 7.0\n" in metrics.body
        with_query = await client.request(get("/metrics?name[]=x"))
        assert with_query.body == metrics.body


async def test_head_sends_headers_only() -> None:
    async with running_ops() as ops, connected(ops.port) as client:
        head = await client.request(get("/metrics", method="HEAD"), head=True)
        assert head.status == 200
        assert int(head.headers[b"content-length"]) == len(ops.registry.render())
        # Had a body been sent, it would now be read as the next status line and fail.
        assert (await client.request(get("/healthz"))).body == b"ok\n"
        assert (await client.request(get("/nope", method="HEAD"), head=True)).status == 404
        assert (await client.request(get("/healthz"))).status == 200


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (get("/"), 404),
        (get("/", method="HEAD"), 404),
        (get("/metrics/"), 404),
        (get("/healthz2"), 404),
        (get("/nope", method="POST"), 404),
        (get("/metrics", "Content-Length: 0", method="POST"), 405),
        (get("/healthz", method="DELETE"), 405),
        (get("/readyz", method="OPTIONS"), 405),
    ],
)
async def test_unknown_path_and_wrong_method(raw: bytes, status: int) -> None:
    async with running_ops() as ops, connected(ops.port) as client:
        response = await client.request(raw, head=raw.startswith(b"HEAD "))
        assert response.status == status
        if status == 405:
            assert response.headers[b"allow"] == b"GET, HEAD"
        if raw.startswith((b"GET ", b"HEAD ")):
            assert (await client.request(get("/healthz"))).status == 200  # still usable
        else:
            # Methods that may carry a body are answered, then the connection is closed.
            assert response.headers[b"connection"] == b"close"
            assert await client.closed_by_server()


async def test_request_body_is_not_read() -> None:
    async with running_ops() as ops, connected(ops.port) as client:
        raw = get("/metrics", "Content-Length: 1000000000", method="PUT")
        response = await client.request(raw + b"x" * 3000)
        assert response.status == 405
        assert await client.closed_by_server()


async def test_body_of_a_get_is_discarded() -> None:
    async with running_ops() as ops, connected(ops.port) as client:
        body = b"x" * 3000
        raw = get("/healthz", f"Content-Length: {len(body)}")
        assert (await client.request(raw + body)).body == b"ok\n"
        assert (await client.request(get("/readyz"))).status == 503


async def test_keep_alive_and_pipelining() -> None:
    async with running_ops() as ops, connected(ops.port) as client:
        assert (await client.request(get("/healthz"))).status == 200
        assert (await client.request(get("/metrics"))).status == 200
        # Two requests in one write: both answered, in order.
        await client.stream.send_all(get("/readyz") + get("/healthz"))
        assert (await client.response()).status == 503
        assert (await client.response()).body == b"ok\n"


async def test_connection_close_is_honoured() -> None:
    async with running_ops() as ops:
        async with connected(ops.port) as client:
            response = await client.request(get("/healthz", "Connection: close"))
            assert response.status == 200
            assert response.headers[b"connection"] == b"close"
            assert await client.closed_by_server()
        # HTTP/1.0 without keep-alive closes too.
        async with connected(ops.port) as client:
            response = await client.request(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert response.status == 200
            assert await client.closed_by_server()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\xff\xfe garbage \r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n\r\n",  # no Host header
        b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nbad header line\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    ],
)
async def test_garbage_gets_400_and_the_listener_keeps_serving(garbage: bytes) -> None:
    async with running_ops() as ops:
        async with connected(ops.port) as client:
            assert (await client.request(garbage)).status == 400
            assert await client.closed_by_server()
        async with connected(ops.port) as other:
            assert (await other.request(get("/healthz"))).status == 200


async def test_oversized_head_is_refused() -> None:
    async with running_ops() as ops, connected(ops.port) as client:
        await client.stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
        # The server answers and closes while we are still writing: that may break our send.
        with contextlib.suppress(trio.BrokenResourceError):
            for _ in range(64):  # 64 KB, far past the limit
                await client.stream.send_all(filler)
        assert (await client.response()).status == 431
        assert await client.closed_by_server()


async def test_slowloris_is_cut_off() -> None:
    """Dribbling bytes does not extend the deadline: the server closes mid-request."""
    request = get("/healthz")
    sent = 0

    async def dribble(stream: trio.SocketStream) -> None:
        nonlocal sent
        with contextlib.suppress(trio.BrokenResourceError):
            for i in range(len(request)):
                await stream.send_all(request[i : i + 1])
                sent += 1
                await trio.sleep(0.05)  # the whole request takes ~2 s, the deadline 0.3 s

    async with running_ops(request_timeout=0.3) as ops, connected(ops.port) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dribble, client.stream)
            closed_silently = await client.closed_by_server()
            nursery.cancel_scope.cancel()
        assert closed_silently
        assert sent < len(request)


async def test_idle_keep_alive_connection_is_closed() -> None:
    async with running_ops(request_timeout=0.3) as ops, connected(ops.port) as client:
        assert (await client.request(get("/healthz"))).status == 200
        assert await client.closed_by_server()


async def test_each_request_gets_a_fresh_deadline() -> None:
    """A keep-alive client that asks promptly each time is served past one deadline."""
    async with running_ops(request_timeout=0.5) as ops, connected(ops.port) as client:
        for _ in range(8):  # 8 x 0.1 s > 0.5 s
            assert (await client.request(get("/healthz"))).status == 200
            await trio.sleep(0.1)


async def test_connection_cap() -> None:
    async with running_ops(max_connections=2) as ops:
        with capture_logs() as logs:
            async with connected(ops.port) as first, connected(ops.port) as second:
                # A completed request proves each connection is being served (and counted).
                assert (await first.request(get("/healthz"))).status == 200
                assert (await second.request(get("/healthz"))).status == 200
                async with connected(ops.port) as third:
                    with contextlib.suppress(trio.BrokenResourceError):  # may be closed already
                        await third.stream.send_all(get("/healthz"))
                    assert await third.closed_by_server()
                await first.stream.aclose()
                # A slot is free again once the server notices that close.
                while True:
                    async with connected(ops.port) as fourth:
                        try:
                            response = await fourth.request(get("/healthz"))
                        except (EOFError, trio.BrokenResourceError):
                            await trio.sleep(0.01)
                            continue
                    break
                assert response.status == 200
                assert (await second.request(get("/healthz"))).status == 200
        assert [e["event"] for e in logs].count("ops_connections_saturated") >= 1


async def test_failing_request_is_logged_and_closed_not_fatal() -> None:
    async with running_ops() as ops:

        def broken() -> float:
            raise RuntimeError("store is gone")

        ops.registry.callback_gauge("cellrelay_broken", "Fails at scrape time.", broken)
        with capture_logs() as logs:
            async with connected(ops.port) as client:
                await client.stream.send_all(get("/metrics"))
                assert await client.closed_by_server()
        assert [e["event"] for e in logs] == ["ops_request_failed"]
        async with connected(ops.port) as other:
            assert (await other.request(get("/healthz"))).status == 200


async def test_peer_data_never_reaches_the_logs() -> None:
    canary = secrets.token_hex(16)
    async with running_ops() as ops:
        with capture_logs() as logs:
            for raw in (
                f"{canary} / HTTP/1.1\r\n\r\n".encode(),
                get(f"/{canary}"),
                get("/healthz", f"X-Secret: {canary}"),
                get("/healthz", f"Bad{canary}"),
                b"GET /healthz HTTP/1.1\r\nX: " + canary.encode() * 1000 + b"\r\n\r\n",
            ):
                async with connected(ops.port) as client:
                    with contextlib.suppress(trio.BrokenResourceError, EOFError):
                        await client.request(raw)
    assert canary not in repr(logs)


async def test_listener_binds_loopback_and_reports_its_port() -> None:
    async with running_ops() as ops, connected(ops.port) as client:
        assert ops.port > 0
        assert client.stream.socket.getpeername() == (HOST, ops.port)


async def test_urllib_as_an_independent_client() -> None:
    async with running_ops() as ops:
        ops.readiness[0] = True
        base = f"http://{HOST}:{ops.port}"

        def fetch(path: str, method: str = "GET") -> tuple[int, str, bytes]:
            request = urllib.request.Request(base + path, method=method)  # noqa: S310 -- http only
            try:
                with urllib.request.urlopen(request, timeout=SAFETY_TIMEOUT) as response:  # noqa: S310
                    return response.status, response.headers["Content-Type"], response.read()
            except urllib.error.HTTPError as error:
                with error:
                    return error.code, error.headers["Content-Type"], error.read()

        status, content_type, body = await trio.to_thread.run_sync(fetch, "/metrics")
        assert (status, content_type) == (200, CONTENT_TYPE)
        assert body == ops.registry.render()
        assert await trio.to_thread.run_sync(fetch, "/readyz") == (
            200,
            "text/plain; charset=utf-8",
            b"ready\n",
        )
        assert (await trio.to_thread.run_sync(fetch, "/missing"))[0] == 404
        assert (await trio.to_thread.run_sync(fetch, "/metrics", "POST"))[0] == 405
        assert (await trio.to_thread.run_sync(fetch, "/healthz", "HEAD"))[:2] == (
            200,
            "text/plain; charset=utf-8",
        )


# -- The sans-IO core alone ----------------------------------------------------------------


def _connection(ready: bool = True) -> OpsHttpConnection:
    registry = Registry()
    registry.gauge("g", "G.").set(1)
    return OpsHttpConnection(
        lambda request: handle_ops_request(request, registry=registry, ready=lambda: ready)
    )


def test_byte_at_a_time_equals_all_at_once() -> None:
    wire = get("/healthz") + get("/metrics") + get("/nope") + get("/readyz", "Connection: close")
    whole = _connection()
    all_at_once = whole.receive_data(wire)
    trickle = _connection()
    pieces = b"".join(trickle.receive_data(wire[i : i + 1]) for i in range(len(wire)))
    assert pieces == all_at_once
    assert whole.must_close
    assert trickle.must_close
    assert whole.responses == 4


def test_responses_parse_with_an_h11_client() -> None:
    """An h11 client, a parser independent of our framing code, reads every response."""
    server = _connection(ready=False)
    client = h11.Connection(h11.CLIENT)
    expected = {"/healthz": 200, "/metrics": 200, "/readyz": 503, "/x": 404}
    for method in ("GET", "HEAD"):
        for path, status in expected.items():
            request = h11.Request(method=method, target=path, headers=[("Host", "x")])
            wire = client.send(request) + client.send(h11.EndOfMessage())
            client.receive_data(server.receive_data(wire))
            response = client.next_event()
            assert isinstance(response, h11.Response)
            assert response.status_code == status
            body = b""
            while not isinstance(event := client.next_event(), h11.EndOfMessage):
                assert isinstance(event, h11.Data)
                body += event.data
            assert (method == "HEAD") == (body == b"")
            client.start_next_cycle()
    assert server.responses == 8
    assert not server.must_close


def test_error_then_silence() -> None:
    conn = _connection()
    out = conn.receive_data(b"NOT HTTP\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\nconnection: close\r\n" in out
    assert conn.must_close
    assert conn.receive_data(get("/healthz")) == b""


def test_unknown_transfer_coding_is_501() -> None:
    """Found by fuzz/fuzz_ops_http.py: h11 hints 501 here (RFC 9112 section 6.1)."""
    conn = _connection()
    raw = b"PUT /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunk\r\n\r\n"
    assert conn.receive_data(raw).startswith(b"HTTP/1.1 501 Not Implemented\r\n")
    assert conn.must_close


def test_end_of_stream_closes() -> None:
    conn = _connection()
    assert conn.receive_data(get("/healthz")).startswith(b"HTTP/1.1 200 ")
    assert conn.receive_data(b"") == b""
    assert conn.must_close


def test_eof_mid_request_is_a_400() -> None:
    conn = _connection()
    conn.receive_data(b"GET /healthz HTTP/1.1\r\nHo")
    assert conn.receive_data(b"").startswith(b"HTTP/1.1 400 ")
    assert conn.must_close


def test_upgrade_is_declined() -> None:
    """An Upgrade request gets a plain response (no 101) and the connection goes on."""
    conn = _connection()
    out = conn.receive_data(
        get("/healthz", "Connection: upgrade", "Upgrade: websocket") + get("/healthz")
    )
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", out) == [b"200", b"200"]
    assert not conn.must_close


def test_connect_is_answered_and_closed() -> None:
    conn = _connection()
    raw = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    out = conn.receive_data(raw + get("/healthz"))
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", out) == [b"404"]
    assert conn.must_close


def test_handle_ops_request_is_pure() -> None:
    registry = Registry()
    request = h11.Request(method="GET", target="/readyz", headers=[("Host", "x")])
    assert handle_ops_request(request, registry=registry, ready=lambda: False).status == 503
    response = handle_ops_request(request, registry=registry, ready=lambda: True)
    assert response == OpsResponse(status=200, body=b"ready\n", content_length=6)
    head = h11.Request(method="HEAD", target="/healthz", headers=[("Host", "x")])
    assert handle_ops_request(head, registry=registry, ready=lambda: True) == OpsResponse(
        status=200, body=b"", content_length=3
    )
