"""The OpenAPI document: current in docs/, true to what the daemon sends, and fuzzed by schemathesis.

* docs/openapi.json is exactly what the code renders (regenerate it with the command in
  client/_openapi.py), and the daemon serves the same document.
* Every event and content the library can produce, drawn by Hypothesis, encodes to JSON
  that the document's schema accepts and decodes back to the same value: the schema, the
  encoder and the decoder come from one declaration and cannot disagree.
* schemathesis (from PyPI, run as its command line) generates requests from the document
  against a running daemon on a real relay: no response is a 5xx, and every response
  matches the document (status, content type, headers, body schema).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

import jsonschema_rs
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import cellrelay.protocol.cell as cell_protocol
from cellrelay.client import _events
from cellrelay.client._api_types import API_TYPES, MAX_ALERT_TTL, StreamEvent
from cellrelay.client._openapi import api_registry, openapi_document, render
from cellrelay.protocol.cell._content import ContentFieldSpec, _Content

from ..protocol.content_strategies import contents_of
from ..relay.conftest import RelayFactory, relays
from .daemons import admit, make_cell, start_daemon

__all__ = ["relays"]  # the fixture, imported for pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "openapi.json"
ST = str(Path(sys.executable).with_name("st"))
# schemathesis's whole run: a bounded number of examples per operation, well under a minute
# on an idle machine; the bound is for a loaded one.
SCHEMATHESIS_BOUND = 300.0


def test_the_document_in_docs_is_current() -> None:
    assert DOCUMENT.read_text(encoding="utf-8") == render(), (
        "docs/openapi.json is stale: run python -m cellrelay.client._openapi docs/openapi.json"
    )


def test_the_document_is_openapi_3_1_with_problem_documents_everywhere() -> None:
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses = {int(s) for s in operation["responses"]}
            assert 421 in statuses, (method, path)
            failures = [s for s in statuses if s >= 400]
            for status in failures:
                assert operation["responses"][str(status)]["$ref"].startswith(
                    "#/components/responses/"
                )
    # The whole document is valid JSON Schema where it holds schemas.
    for name, schema in document["components"]["schemas"].items():
        jsonschema_rs.Draft202012Validator({**schema, "components": document["components"]})
        assert name


# -- the schema, the encoder and the decoder agree ---------------------------------------------

_NAMESPACE = {**vars(collections.abc), **vars(typing), **vars(cell_protocol), **vars(_events)}
_TEXT = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=20)


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:  # noqa: ANN401 - any annotation
    """Values of an annotation as the library makes them (contents through their own strategies)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *metadata = typing.get_args(tp)
        spec = next((m for m in metadata if isinstance(m, ContentFieldSpec)), None)
        return strategy_for(base) if spec is None else st.nothing()
    if isinstance(tp, typing.NewType):
        return strategy_for(tp.__supertype__)
    if tp is type(None):
        return st.none()
    if origin in (typing.Union, types.UnionType):
        return st.one_of([strategy_for(a) for a in typing.get_args(tp)])
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(tp))
    if origin in (list, collections.abc.Sequence):
        return st.lists(strategy_for(typing.get_args(tp)[0]), max_size=3)
    if origin is tuple:
        return st.lists(strategy_for(typing.get_args(tp)[0]), max_size=3).map(tuple)
    if origin in (dict, collections.abc.Mapping):
        key, value = typing.get_args(tp)
        return st.dictionaries(strategy_for(key), strategy_for(value), max_size=3)
    if isinstance(tp, type) and issubclass(tp, _Content):
        return contents_of(tp)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return st.sampled_from(list(tp))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        module = sys.modules[tp.__module__]
        hints = typing.get_type_hints(
            tp, globalns={**_NAMESPACE, **vars(module)}, include_extras=True
        )
        fields = {f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(tp) if f.init}
        return st.builds(tp, **fields)
    scalars: dict[Any, st.SearchStrategy[Any]] = {
        str: _TEXT,
        bytes: st.binary(min_size=16, max_size=16),
        bool: st.booleans(),
        int: st.integers(0, 2**53),
        float: st.floats(0, 2**40, allow_nan=False, allow_infinity=False),
    }
    return scalars[tp]


_REGISTRY = api_registry()
_DOCUMENT = openapi_document()


def _validator(reference: dict[str, Any]) -> Any:  # noqa: ANN401 - a jsonschema_rs validator
    return jsonschema_rs.Draft202012Validator({**reference, "components": _DOCUMENT["components"]})


_EVENT_VALIDATOR = _validator({"$ref": "#/components/schemas/Event"})


@settings(max_examples=60)
@given(st.one_of([strategy_for(t) for t in typing.get_args(StreamEvent)]))
def test_every_event_matches_the_schema_and_decodes_to_itself(event: object) -> None:
    encoded = _REGISTRY.encode(event, StreamEvent)
    wire = json.loads(json.dumps(encoded))
    _EVENT_VALIDATOR.validate(wire)
    assert _REGISTRY.decode(wire, StreamEvent) == event


@settings(max_examples=40)
@given(st.one_of([contents_of(t) for t in API_TYPES]))
def test_every_content_matches_the_schema_and_decodes_to_itself(content: object) -> None:
    validator = _validator({"$ref": f"#/components/schemas/{type(content).__name__}"})
    wire = json.loads(json.dumps(_REGISTRY.encode(content, type(content))))
    validator.validate(wire)
    assert _REGISTRY.decode(wire, type(content)) == content


# -- schemathesis against a running daemon ---------------------------------------------------


async def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    nursery: trio.Nursery, relays: RelayFactory, tmp_path: Path
) -> None:
    # A relay that keeps as long as the schema allows: a lifetime's bound is the cell's
    # relay's (TTL_TOO_LONG beyond it, tests/client/test_daemon_hardening.py), so on a
    # relay of 7 days most drawn lifetimes would be refused, as they should be.
    running_relay = await relays.start(max_ttl=MAX_ALERT_TTL)
    lead = await start_daemon(nursery, tmp_path, "lead")
    ana = await start_daemon(nursery, tmp_path, "ana", tcp=False)
    await make_cell(lead, running_relay)
    await admit(lead, ana)
    await lead.ok(
        "POST", "/cells/Eastside/alerts", 201, json_body={"text": "Agents at 14th & Main"}
    )
    served = await lead.tcp("GET", "/openapi.json", token=None)
    assert served.json() == openapi_document()
    assert lead.address.url is not None
    command = [
        ST, "run", f"{lead.address.url}/openapi.json",
        "--header", f"Authorization: Bearer {lead.token}",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_headers_conformance,response_schema_conformance,negative_data_rejection",
        # Not generated: creating a cell, joining one or adding a relay to one would reach
        # relays at whatever address was drawn (anywhere on the network; dropping one is
        # its pair, tests/client/test_relay_changes.py runs both through the daemon), the
        # event stream never ends, and leaving or burning would remove the cell the other
        # operations are exercised on (tests/client/test_cli_burn.py burns through the daemon).
        "--exclude-operation-id", "create_cell",
        "--exclude-operation-id", "join_cell",
        "--exclude-operation-id", "add_relay",
        "--exclude-operation-id", "drop_relay",
        "--exclude-operation-id", "events",
        "--exclude-operation-id", "leave_cell",
        "--exclude-operation-id", "burn_cell",
        "--max-examples", "12",
        "--phases", "examples,coverage,fuzzing",
        "--workers", "1",
        "--seed", "20261107",
        "--generation-database", "none",
        "--request-timeout", "30",
        "--no-color",
        "--report", "junit",
        "--report-dir", str(tmp_path / "schemathesis"),
    ]  # fmt: skip
    with trio.fail_after(SCHEMATHESIS_BOUND):
        done = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False, cwd=tmp_path
        )
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, output[-6000:]
    assert "Unresolvable references" not in output, output[-6000:]
    assert "Schema validation mismatch" not in output, output[-6000:]
    # The daemon is still there and still serving.
    assert (await lead.ok("GET", "/daemon"))["identity"]["name"] == "lead"
