"""The OpenAPI 3.1 document of the daemon's API, rendered from the route table and the declarations.

`openapi_document()` builds it from `ROUTES` (client/_api.py) and the declarations of
client/_api_types.py through the same `Registry` the handlers decode and encode with
(client/_schema.py): the daemon serves it at `/openapi.json`, and docs/openapi.json is a
copy that tests/client/test_openapi.py keeps current. Regenerate the copy with

    python -m cellrelay.client._openapi docs/openapi.json
"""

from __future__ import annotations

import http
import json
import sys
from pathlib import Path
from typing import Any, Final, Union

import cellrelay.protocol.cell as cell_protocol
from cellrelay.protocol import ErrorCode
from cellrelay.protocol._errors import DESCRIPTIONS
from cellrelay.protocol.cell import AlertRollup, ReceiptCounts, VerificationRecord

from . import _events
from ._api import ROUTES, Route
from ._api_types import API_TYPES, RECEIVED, Problem, StreamEvent
from ._http import MAX_BODY
from ._problems import PROBLEM_CODES
from ._schema import BYTES_ENCODING, Computed, Registry

__all__ = ["OPENAPI_VERSION", "api_registry", "openapi_document"]

OPENAPI_VERSION: Final = "3.1.0"
# Statuses any operation may answer besides its own.
_ALWAYS: Final = (421,)
_AUTH: Final = (401,)
_BODY: Final = (400, 413, 415)
_WAITS: Final = (429, 502, 503, 504, 507)
# Examples for path parameters: the guides' running example (a cell called Eastside).
_PATH_EXAMPLES: Final = {"cell": ["Eastside"], "member": ["ana"], "alert": ["5f3a9c1e"],
                          "neighbour": ["Westside"]}  # fmt: skip

_DESCRIPTION: Final = """\
The local API of `cellrelay daemon`: one process per identity that keeps every cell's relay
connections up and serves this API on a Unix socket (no token needed: the socket is yours,
mode 0600) and, when asked, on loopback TCP (every request needs `Authorization: Bearer
TOKEN`, the token being in `daemon.token` beside the keystore). docs/daemon.md is the guide.

* JSON in and out. Byte strings (ids) are lowercase hex (JSON Schema `contentEncoding:
  base16`); times are unix seconds, or milliseconds where the name ends in `_ms`.
* Errors are RFC 9457 problem documents (`application/problem+json`) whose `code` is
  stable: the protocol's error codes (docs/protocol.md §8) for what a relay or the content
  rules refused, and the daemon's own for the rest; `x-problem-codes` lists them all.
* Operations that wait for a relay honour `Prefer: wait=SECONDS` (RFC 7240; default 20,
  at most 600) and answer 504 `RELAY_TIMEOUT` when it runs out; a send that timed out may
  still go out, as the client keeps retrying it.
* Cells, members and alerts in paths are named by name (case-insensitive) or by a prefix
  of their hex id.
* Objects the daemon sends may gain members in later versions: ignore those you do not
  know. Objects it receives must not hold unknown members.
"""


def api_registry() -> Registry:
    """A registry set up for the API's declarations (names, computed members, request bodies)."""
    namespace = {**vars(cell_protocol), **vars(_events)}
    registry = Registry(namespace=namespace)
    registry.computed(
        AlertRollup,
        Computed("resolved", bool, "closed as resolved, by the close rule (protocol §C2)"),
        Computed("false_alarm", bool, "closed as a false alarm, by the close rule"),
        Computed("closed", bool, "resolved or a false alarm"),
        Computed("last_update_ms", int, "the latest send time of the alert and its statuses"),
        Computed("confirmed", bool, "a verifier confirmed it (protocol §C2 rule 7)"),
        Computed("unverified", bool, "reported or verifying: no verifier has said yet"),
        Computed("verified_by", VerificationRecord | None, "the step that set `verification`"),
    )
    registry.computed(
        ReceiptCounts,
        Computed("exact", bool, "every member reports: the counts are not estimates"),
        Computed("estimated_delivered", int, "about how many members have the alert"),
        Computed("estimated_read", int, "about how many members have read it"),
    )
    registry.received(*RECEIVED)
    # Content classes form a union (RecentMessage.content), so each always carries `type`.
    registry.converter(Union[API_TYPES])  # noqa: UP007 - built from a tuple
    registry.converter(StreamEvent)
    return registry


def _problem_name(status: int) -> str:
    return http.HTTPStatus(status).phrase.title().replace(" ", "").replace("-", "")


def _problem_responses(registry: Registry, statuses: set[int]) -> dict[str, Any]:
    """Every problem response the document uses, as components."""
    return {
        _problem_name(status): {
            "description": http.HTTPStatus(status).phrase + " (a problem document)",
            "content": {"application/problem+json": {"schema": registry.schema(Problem)}},
        }
        for status in sorted(statuses)
    }


def _parameters(registry: Registry, route: Route) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in route.pattern.groupindex:
        out.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "description": f"the {name}'s name or a prefix of its hex id",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 200,
                    "examples": _PATH_EXAMPLES[name],
                },
            }
        )
    if route.query is not None:
        registry.converter(route.query)
        component = registry.components[route.query.__name__]
        required = component.get("required", [])
        for name, schema in component["properties"].items():
            parameter: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": schema,
            }
            if route.text_field is not None:
                parameter["description"] = "with a text/plain body only"
            out.append(parameter)
    return out


def _request_body(registry: Registry, route: Route) -> dict[str, Any] | None:
    if route.body is None:
        return None
    content: dict[str, Any] = {"application/json": {"schema": registry.schema(route.body)}}
    if route.text_field is not None:
        registry.converter(route.body)
        field_schema = registry.components[route.body.__name__]["properties"][route.text_field]
        content["text/plain"] = {"schema": field_schema}
    return {"required": route.body_required, "content": content}


def _operation(registry: Registry, route: Route, used: set[int]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if route.stream:
        responses[str(route.status)] = {
            "description": "An event stream: one JSON object per `data:` line, with an `id:`;"
            " each is an `Event` (see x-event-schema).",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "x-event-schema": {"$ref": "#/components/schemas/Event"},
        }
    else:
        responses[str(route.status)] = {
            "description": http.HTTPStatus(route.status).phrase,
            "content": {"application/json": {"schema": registry.schema(route.response)}},
        }
    statuses = set(_ALWAYS) | set(route.errors)
    if not route.public:
        statuses |= set(_AUTH)
    if route.body is not None or route.query is not None:
        statuses |= set(_BODY)
    if route.waits:
        statuses |= set(_WAITS)
    if route.name == "open_session":  # public, but a wrong code is refused like a token
        statuses.add(401)
    for status in sorted(statuses):
        responses[str(status)] = {"$ref": f"#/components/responses/{_problem_name(status)}"}
    used |= statuses
    operation: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "tags": [route.tag],
        "responses": responses,
    }
    parameters = _parameters(registry, route)
    if parameters:
        operation["parameters"] = parameters
    body = _request_body(registry, route)
    if body is not None:
        operation["requestBody"] = body
    if route.public:
        operation["security"] = []
    return operation


def _problem_codes() -> dict[str, Any]:
    """Every stable `code` a problem document may carry: the daemon's own, then the protocol's."""
    codes: dict[str, Any] = {
        code: {"status": status, "description": text}
        for code, (status, text) in PROBLEM_CODES.items()
    }
    for code in ErrorCode:
        if code.name not in codes and code in DESCRIPTIONS:
            codes[code.name] = {"description": DESCRIPTIONS[code], "protocol": int(code)}
    return codes


def openapi_document() -> dict[str, Any]:
    """The whole document (a fresh dict each time)."""
    registry = api_registry()
    registry.converter(Problem)
    paths: dict[str, dict[str, Any]] = {}
    used: set[int] = set()
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(registry, route, used)
    schemas = dict(sorted(registry.components.items()))
    schemas["Event"] = {
        "description": "One event of GET /events, tagged by `type`.",
        **registry.schema(StreamEvent),
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "cellrelay daemon",
            "version": "1",
            "description": _DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {}],
        "tags": [
            {"name": "daemon", "description": "The daemon itself, relays, board sessions."},
            {"name": "cells", "description": "Cells: list, create, leave, rotate."},
            {"name": "members", "description": "Members, invites and join requests."},
            {"name": "alerts", "description": "Alerts, replies, messages and receipts."},
            {"name": "events", "description": "Server-Sent Events."},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": _problem_responses(registry, used),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The token in daemon.token, or a board session. Not needed on the Unix socket.",
                }
            },
        },
        "x-problem-codes": _problem_codes(),
        "x-byte-encoding": BYTES_ENCODING,
        "x-max-body-bytes": MAX_BODY,
    }


def render() -> str:
    """The document as docs/openapi.json holds it."""
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    if target is None:
        sys.stdout.write(render())
    else:
        target.write_text(render(), encoding="utf-8")
