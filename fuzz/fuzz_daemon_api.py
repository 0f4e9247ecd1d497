"""Fuzz what the daemon's API takes from a client: request decoding, the Host and credential checks, HTTP.

Run from the repository root (libFuzzer flags go before the corpus directories):

    .venv/bin/python fuzz/fuzz_daemon_api.py -max_total_time=20 fuzz/seeds/daemon_api

Each input picks one of three targets:

* **decoding**: an operation of the route table, a content type, a query string and a
  body; `decode_query` and `decode_body` (client/_app.py) must return the declared types
  or raise `FieldError` (400) or `ApiError` (415), nothing else;
* **checks**: arbitrary Host, Origin and Authorization headers on either transport;
  `Gatekeeper` must answer True or False, never raise, and never let a wrong token in;
* **HTTP**: arbitrary bytes on a connection to the daemon's HTTP server (client/_http.py)
  with a handler that answers 200; the server must end the connection cleanly, and every
  response it writes must be a complete HTTP/1.1 response with a status we produce.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Imported before instrumentation so only our code and h11 are instrumented.
import structlog  # noqa: E402, F401
import trio  # noqa: E402
import trio.testing  # noqa: E402

with atheris.instrument_imports():
    from cellrelay.client._api import ROUTES, ApiError
    from cellrelay.client._app import decode_body, decode_query
    from cellrelay.client._auth import Gatekeeper
    from cellrelay.client._http import Request, Response, Transport, serve_connection
    from cellrelay.client._openapi import api_registry
    from cellrelay.client._schema import FieldError

REGISTRY = api_registry()
DECODED = [r for r in ROUTES if r.body is not None or r.query is not None]
MEDIA = [
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "",
    "application/problem+json",
    "image/png",
]
TOKEN = "T" * 43
GATEKEEPER = Gatekeeper(TOKEN, tcp_port=8765)
STATUSES = {200, 400, 413, 431, 501}


def decoding(data: atheris.FuzzedDataProvider) -> None:
    route = DECODED[data.ConsumeIntInRange(0, len(DECODED) - 1)]
    media = MEDIA[data.ConsumeIntInRange(0, len(MEDIA) - 1)]
    query = data.ConsumeUnicodeNoSurrogates(200)
    body = data.ConsumeBytes(data.remaining_bytes())
    request = Request(method=route.method, path=route.path, query=query, headers={"content-type": media},
                      body=body, transport=Transport.UNIX)  # fmt: skip
    try:
        decoded_query = decode_query(REGISTRY, route, request)
        decoded_body = decode_body(REGISTRY, route, request)
    except FieldError as exc:
        if not exc.code.isupper():
            raise AssertionError(f"not a stable code: {exc.code!r}") from exc
        return
    except ApiError as exc:
        if exc.status != 415:
            raise AssertionError(f"decoding refused with {exc.status}") from exc
        return
    if route.query is not None:
        assert isinstance(decoded_query, route.query)
    if route.body is not None and decoded_body is not None:
        assert isinstance(decoded_body, route.body)
        # What was accepted encodes and decodes to itself.
        assert (
            REGISTRY.decode(REGISTRY.encode(decoded_body, route.body), route.body) == decoded_body
        )


def checks(data: atheris.FuzzedDataProvider) -> None:
    headers = {}
    for name in ("host", "origin", "authorization", "sec-fetch-site"):
        if data.ConsumeBool():
            headers[name] = data.ConsumeUnicodeNoSurrogates(80)
    transport = Transport.UNIX if data.ConsumeBool() else Transport.TCP
    allowed = GATEKEEPER.host_allowed(headers, transport)
    authorized = GATEKEEPER.authorized(headers, transport)
    assert isinstance(allowed, bool)
    browser = "origin" in headers or "sec-fetch-site" in headers
    if authorized and (transport is Transport.TCP or browser):
        assert headers.get("authorization", "").split(" ", 1)[-1].strip() == TOKEN


async def _serve(wire: bytes) -> bytes:
    client, server = trio.testing.memory_stream_pair()

    async def handler(request: Request) -> Response:
        return Response(status=200, headers=[("content-type", "text/plain")], body=b"ok")

    async def run_server() -> None:
        try:
            await serve_connection(server, handler, transport=Transport.UNIX)
        finally:
            await server.aclose()  # what the daemon's listener does when it returns

    received = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_server)
        await client.send_all(wire)
        await client.send_eof()
        with trio.move_on_after(5):
            while chunk := await client.receive_some(65536):
                received += chunk
        nursery.cancel_scope.cancel()
    return bytes(received)


def http(data: atheris.FuzzedDataProvider) -> None:
    wire = data.ConsumeBytes(data.remaining_bytes())
    received = b""
    try:
        received = trio.run(_serve, wire)
    except* (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the server closed while we still wrote: allowed
    while received:
        assert received.startswith(b"HTTP/1.1 "), received[:40]
        status = int(received[9:12])
        assert status in STATUSES, status
        head, _, rest = received.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        received = rest[length:]


def TestOneInput(raw: bytes) -> None:  # noqa: N802 - atheris's name
    data = atheris.FuzzedDataProvider(raw)
    [decoding, checks, http][data.ConsumeIntInRange(0, 2)](data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
