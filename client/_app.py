"""From an HTTP request to an operation and back: checks, routing, decoding, errors.

Every request goes through the same steps, in this order, and stops at the first that
refuses (so nobody learns anything about a path before being allowed to use it):

1. **Host**: it must name the daemon (client/_auth.py) or it is refused with 421.
2. **Static and public**: the board's files (`/`, `/board.js`, `/board.css`),
   `/openapi.json` and `POST /session` need no credentials.
3. **Credentials** (client/_auth.py): otherwise 401 with no detail.
4. **Route**: 404 for an unknown path, 405 for a known path with another method
   (OPTIONS included: the daemon answers no CORS preflight, ever).
5. **Decoding** the query and body against their declarations (client/_schema.py):
   400 naming the field, 415 for a content type the operation does not take.
6. **The operation** (client/_api.py), under its deadline if it waits for a relay.

Errors become RFC 9457 problem documents with a stable `code` (`problem_for`); anything
unexpected is a 500 INTERNAL that is logged (without the request's data) and never ends
the daemon.
"""

from __future__ import annotations

import errno
import http
import json
import time
import urllib.parse
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

import structlog
import trio

from cellrelay.protocol import CellrelayError, CryptoError, ErrorCode, RemoteProtocolError
from cellrelay.protocol._errors import DESCRIPTIONS
from cellrelay.protocol.cell import (
    ContentError,
    GroupError,
    InviteChecksumError,
    InviteError,
    InviteExpiredError,
    NotAdminError,
    RemovedError,
)
from cellrelay.protocol.wire import AddressError

from ._api import DEFAULT_WAIT, ROUTES, Api, ApiError, Call, Route
from ._api_types import MAX_WAIT, Problem
from ._cell_admin import RelayUnavailableError
from ._cell_member import CellError, MailboxFullError, TooManyReadersError
from ._http import Request, Response
from ._keystore import KeystoreError
from ._link import LinkClosedError, RelayKeyMismatchError, RelayRefusedError
from ._openapi import openapi_document
from ._schema import FieldError
from ._sse import serve_stream
from ._state import StateError

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._schema import Registry

__all__ = ["BOARD_CSP", "App", "decode_body", "decode_query", "problem_for"]

log = structlog.get_logger("cellrelay.daemon")

# The board's policy: its own scripts and styles only (no inline script, no eval), images
# from itself or data: URLs (the invite's QR code), requests to itself only, and Trusted
# Types required, so that assigning HTML to the DOM throws instead of parsing it: alert
# text is attacker-controlled and must only ever be set as text.
BOARD_CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'"
)
# Everything else is data, never a document to render.
_DATA_CSP: Final = "default-src 'none'; frame-ancestors 'none'; sandbox"
_JSON: Final = "application/json"
_STATIC: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/board.js": ("board.js", "text/javascript; charset=utf-8"),
    "/board.css": ("board.css", "text/css; charset=utf-8"),
}
# How each relay refusal reads over HTTP: limits that pass are 429/503, what the relay
# will never accept 422, what only its operator can change 403/507; the rest 502.
_REFUSAL_STATUS: Final = {
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.BUSY: 503,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.TOO_MANY_CONNECTIONS: 503,
    ErrorCode.TOO_MANY_MAILBOXES: 503,
    ErrorCode.EXPIRED: 422,
    ErrorCode.TTL_TOO_LONG: 422,
    ErrorCode.ENVELOPE_TOO_LARGE: 422,
    ErrorCode.CREATE_FORBIDDEN: 403,
    ErrorCode.MAILBOX_FULL: 507,
    ErrorCode.STORAGE_FULL: 507,
}


def problem_for(exc: BaseException, call: Call | None = None) -> Problem:
    """The problem document for an exception an operation raised.

    Every error class the library raises on purpose has its stable code here (docs/daemon.md
    §6; tests/client/test_daemon_errors.py enumerates them): only a bug is a 500 INTERNAL.
    """
    if isinstance(exc, ApiError):
        return _problem(exc.status, exc.code, exc.detail)
    if isinstance(exc, FieldError):
        return _problem(400, exc.code, str(exc), field=exc.path or None)
    if isinstance(exc, ContentError):
        return _problem(400, exc.code.name, str(exc))
    if isinstance(exc, InviteExpiredError):
        return _problem(410, "INVITE_EXPIRED", str(exc))
    if isinstance(exc, InviteChecksumError):
        return _problem(422, "INVITE_TYPO", str(exc))
    if isinstance(exc, InviteError):
        return _problem(422, "BAD_INVITE", str(exc))
    if isinstance(exc, AddressError):
        return _problem(422, "BAD_ADDRESS", str(exc))
    if isinstance(exc, MailboxFullError):
        # A member flooding the cell (issue 15): what an admin does about it is in detail.
        return _problem(507, ErrorCode.MAILBOX_FULL.name, str(exc))
    if isinstance(exc, NotAdminError):
        return _problem(403, "NOT_ADMIN", "only an admin of the cell can do that")
    if isinstance(exc, RemovedError):
        return _problem(409, "REMOVED", "you were removed from this cell")
    if isinstance(exc, RelayUnavailableError):
        return _problem(502, "RELAY_UNAVAILABLE", str(exc))
    if isinstance(exc, TooManyReadersError):
        return _problem(409, "TOO_MANY_READERS", str(exc))
    if isinstance(exc, CellError | GroupError):
        # The library refused the operation in this cell's state (already an admin, the
        # last admin, nobody waiting...); its message says why.
        return _problem(409, "REFUSED", str(exc))
    if isinstance(exc, RelayRefusedError):
        try:
            code = ErrorCode(exc.code)
        except ValueError:
            return _problem(502, "RELAY_REFUSED", f"the relay refused with code {exc.code}")
        return _problem(_REFUSAL_STATUS.get(code, 502), code.name, DESCRIPTIONS.get(code))
    if isinstance(exc, RelayKeyMismatchError):
        where = f"{exc.address.host}:{exc.address.port}"
        return _problem(502, "RELAY_KEY_MISMATCH",
                        f"the relay's key does not match the invite or address you have ({where} "
                        "refused the handshake): check it was copied exactly, or ask whoever gave it to you for a new one")  # fmt: skip
    if isinstance(exc, LinkClosedError):
        return _problem(503, "LINK_CLOSED", "the connection to the relay closed; try again")
    if isinstance(exc, RemoteProtocolError | CryptoError):
        # A relay that broke the protocol, or a key that would not work with it.
        return _problem(
            502, "RELAY_PROTOCOL", f"the relay broke the protocol ({type(exc).__name__})"
        )
    if isinstance(exc, KeystoreError | StateError):
        return _problem(
            500,
            "KEYSTORE",
            "the keystore or the saved state could not be read or written; the daemon's log says more",
        )
    if isinstance(exc, trio.TooSlowError):
        waiting_for = call.waiting_for if call is not None else "the relay did not answer"
        return _problem(504, "RELAY_TIMEOUT", waiting_for)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return _problem(507, "DISK_FULL", "the disk holding the keystore is full")
    return _problem(500, "INTERNAL", "the daemon failed; its log says where")


def _problem(status: int, code: str, detail: str | None, *, field: str | None = None) -> Problem:
    return Problem(type="about:blank", title=http.HTTPStatus(status).phrase, status=status,
                   code=code, detail=detail, field=field)  # fmt: skip


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FieldError(key, "DUPLICATE_FIELD", "appears twice")
        out[key] = value
    return out


def _loads(body: bytes) -> Any:  # noqa: ANN401 - any JSON value
    try:
        return json.loads(
            body.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_reject_constant
        )
    except FieldError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise FieldError("", "MALFORMED", "the body is not JSON (UTF-8)") from None


def _media_type(headers: dict[str, str] | Any) -> str:  # noqa: ANN401 - a headers mapping
    return str(headers.get("content-type", "")).split(";", 1)[0].strip().lower()


def _wait(headers: Any) -> float:  # noqa: ANN401 - a headers mapping
    """Seconds from `Prefer: wait=N` (RFC 7240 §4.3), bounded; the default without it."""
    for preference in str(headers.get("prefer", "")).split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() == "wait" and value.strip().isdigit():
            return float(min(int(value.strip()), MAX_WAIT))
    return DEFAULT_WAIT


class App:
    """The request handler the HTTP server calls (`await app(request)`)."""

    def __init__(self, api: Api) -> None:
        """Route to `api`'s operations; load the board's files and the OpenAPI document."""
        self.api = api
        self.registry = api.registry
        self._openapi = json.dumps(openapi_document()).encode()
        board = resources.files("cellrelay.client") / "board"
        self._static = {
            path: ((board / name).read_bytes(), media) for path, (name, media) in _STATIC.items()
        }
        self._by_path: dict[str, list[Route]] = {}
        for route in ROUTES:
            self._by_path.setdefault(route.path, []).append(route)

    async def __call__(self, request: Request) -> Response:
        """Answer one request (never raises for anything the request holds)."""
        started = time.perf_counter()
        route_name = "-"
        try:
            response, route_name = await self._answer(request)
        except Exception:
            log.exception("request_failed", method=request.method)
            response = self._problem(problem_for(Exception()))
        log.debug("request", method=request.method, route=route_name, status=response.status,
                  ms=round((time.perf_counter() - started) * 1000, 2))  # fmt: skip
        return response

    async def _answer(self, request: Request) -> tuple[Response, str]:
        gatekeeper = self.api.gatekeeper
        headers = request.headers
        if not gatekeeper.host_allowed(headers, request.transport):
            return self._problem(
                _problem(421, "BAD_HOST", "this is not the host you asked for")
            ), "-"
        method = "GET" if request.method == "HEAD" else request.method
        if method == "GET" and request.path in _STATIC:
            body, media = self._static[request.path]
            csp = BOARD_CSP if media.startswith("text/html") else _DATA_CSP
            return Response(status=200, headers=[("content-type", media),
                                                 ("content-security-policy", csp)], body=body), "static"  # fmt: skip
        if method == "GET" and request.path == "/openapi.json":
            return self._json(200, self._openapi), "openapi"
        route, params = self._match(request.path, method)
        public = route is not None and route.public
        if (
            not public
            and not gatekeeper.authorized(headers, request.transport)
            and (route is None or not route.ticket or not self._ticket_ok(request))
        ):
            return self._unauthorized(), route.name if route is not None else "-"
        if route is None:
            if params:  # the path exists, with other methods
                allow = ", ".join(r.method for r in self._by_path[params["__path__"]])
                response = self._problem(_problem(405, "METHOD_NOT_ALLOWED", None))
                response.headers.append(("allow", allow))
                return response, "-"
            return self._problem(_problem(404, "NOT_FOUND", "no such resource")), "-"
        call = Call(request=request, params=params, wait=_wait(headers))
        try:
            call.query = decode_query(self.registry, route, request)
            call.body = decode_body(self.registry, route, request)
            if route.stream:
                return self._stream(call), route.name
            handler: Callable[[Call], Any] = getattr(self.api, route.name)
            if route.waits:
                with trio.fail_after(call.wait):
                    result = await handler(call)
            else:
                result = await handler(call)
        except (CellrelayError, CellError, FieldError, ApiError, trio.TooSlowError, OSError) as exc:
            problem = problem_for(exc, call)
            if problem.status == 401:
                return self._unauthorized(), route.name
            if problem.status >= 500:
                log.warning("request_refused", route=route.name, code=problem.code)
            return self._problem(problem), route.name
        text = json.dumps(self.registry.encode(result, route.response), ensure_ascii=False)
        return self._json(route.status, text.encode()), route.name

    def _match(self, path: str, method: str) -> tuple[Route | None, dict[str, str]]:
        """The route for a path and method, with its parameters (percent-decoded).

        No route but the path exists: `(None, {"__path__": template})`.
        """
        other: str | None = None
        for template, routes in self._by_path.items():
            match = routes[0].pattern.match(path)
            if match is None:
                continue
            params = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
            for route in routes:
                if route.method == method:
                    return route, params
            other = template
        return None, ({"__path__": other} if other is not None else {})

    def _ticket_ok(self, request: Request) -> bool:
        values = urllib.parse.parse_qs(request.query).get("ticket", [])
        return len(values) == 1 and self.api.gatekeeper.redeem_ticket(values[0])

    def _stream(self, call: Call) -> Response:
        api = self.api
        cell_id = api.stream_cell_id(call.query)
        last = call.request.headers.get("last-event-id") or call.query.last_event_id
        hub = api.hub

        async def stream(send: Callable[[bytes], Any]) -> None:
            listener = hub.listen(last, cell_id=cell_id)
            try:
                await serve_stream(hub, listener, send)
            finally:
                hub.forget(listener)

        return Response(
            status=200,
            headers=[("content-type", "text/event-stream; charset=utf-8"),
                     ("content-security-policy", _DATA_CSP), ("x-accel-buffering", "no")],
            stream=stream,
        )  # fmt: skip

    def _json(self, status: int, body: bytes) -> Response:
        return Response(
            status=status,
            headers=[("content-type", _JSON), ("content-security-policy", _DATA_CSP)],
            body=body,
        )

    def _problem(self, problem: Problem) -> Response:
        body = json.dumps(self.registry.encode(problem, Problem), ensure_ascii=False).encode()
        return Response(
            status=problem.status,
            headers=[("content-type", "application/problem+json"),
                     ("content-security-policy", _DATA_CSP)],
            body=body,
        )  # fmt: skip

    def _unauthorized(self) -> Response:
        response = self._problem(_problem(401, "UNAUTHORIZED", None))
        response.headers.append(("www-authenticate", 'Bearer realm="cellrelay"'))
        return response


def decode_query(registry: Registry, route: Route, request: Request) -> Any:  # noqa: ANN401 - the route's query type
    """The route's query, decoded and checked (None if it takes none).

    Raises:
        FieldError: names the parameter.
    """
    if route.query is None:
        return None
    try:
        raw = urllib.parse.parse_qs(request.query, keep_blank_values=True, strict_parsing=False)
    except ValueError:
        raise FieldError("", "MALFORMED", "the query is not URL-encoded") from None
    registry.converter(route.query)
    properties = registry.components[route.query.__name__]["properties"]
    data: dict[str, Any] = {}
    for name, values in raw.items():
        if name not in properties:
            continue  # unknown parameters are ignored (cache busters, a ticket)
        if len(values) != 1:
            raise FieldError(name, "DUPLICATE_FIELD", "appears more than once")
        data[name] = _coerce(name, values[0], properties[name])
    return registry.decode(data, route.query)


def decode_body(registry: Registry, route: Route, request: Request) -> Any:  # noqa: ANN401 - the route's body type
    """The route's body, decoded and checked (None if it takes none, or may be empty).

    Raises:
        FieldError: names the field; ApiError: 415 for a media type it does not take.
    """
    if route.body is None:
        return None
    media = _media_type(request.headers)
    if not request.body and not route.body_required:
        return None
    if media == _JSON or (media.endswith("+json") and media.startswith("application/")):
        return registry.decode(_loads(request.body), route.body)
    if route.text_field is not None and media in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
    ):
        # The ntfy-style one-liner: the whole body is the text (`curl -d` sends it as
        # a form, but it is not one); the other fields come from the query.
        try:
            text = request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise FieldError(route.text_field, "MALFORMED", "the body is not UTF-8") from None
        text = text.removesuffix("\n").removesuffix("\r")
        options: dict[str, Any] = {}
        if route.query is not None:
            options = registry.encode(decode_query(registry, route, request), route.query)
        return registry.decode({**options, route.text_field: text}, route.body)
    raise ApiError(415, "UNSUPPORTED_MEDIA_TYPE",
                   "send application/json" + (" or text/plain" if route.text_field else ""))  # fmt: skip


def _coerce(name: str, text: str, schema: dict[str, Any]) -> Any:  # noqa: ANN401 - a JSON value
    """A query string value as the JSON value its schema expects (numbers, booleans)."""
    kinds = schema.get("type", "string")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "integer" in kinds:
        stripped = text.strip()
        if stripped.lstrip("-").isdigit() and len(stripped) < 20:
            return int(stripped)
        raise FieldError(name, "WRONG_TYPE", "expected an integer")
    if "boolean" in kinds:
        if text in ("true", "false"):
            return text == "true"
        raise FieldError(name, "WRONG_TYPE", "expected true or false")
    return text
