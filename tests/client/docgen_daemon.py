"""The generated sections of docs/daemon.md: the operations, the events and the error codes.

Each section sits between `<!-- generated: NAME -->` and `<!-- end: NAME -->` and is
rendered from the code (the route table, the stream's event union, the API's own error
codes); tests/client/test_daemon_docs.py fails when the document drifts. Rewrite them with

    python -m tests.client.docgen_daemon
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable
from pathlib import Path

from cellrelay.client._api import ROUTES
from cellrelay.client._api_types import StreamEvent
from cellrelay.client._problems import PROBLEM_CODES
from cellrelay.client._schema import type_name

DOC = Path(__file__).resolve().parents[2] / "docs" / "daemon.md"
SECTION = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- end: \2 -->)", re.DOTALL)

# The daemon's own error codes (the protocol's are in docs/protocol.md §8), with what each
# means: client/_problems.py. tests/client/test_daemon_docs.py checks that the code raises no other.
API_CODES = PROBLEM_CODES


def render_routes() -> str:
    rows = ["| Method | Path | What it does |", "| --- | --- | --- |"]
    rows += [f"| `{r.method}` | `{r.path}` | {r.summary} |" for r in ROUTES]
    return "\n".join(rows) + "\n"


def render_events() -> str:
    rows = ["| `type` | What happened |", "| --- | --- |"]
    for event in typing.get_args(StreamEvent):
        doc = (event.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        rows.append(f"| `{type_name(event)}` | {doc} |")
    return "\n".join(rows) + "\n"


def render_codes() -> str:
    rows = ["| `code` | Status | Meaning |", "| --- | --- | --- |"]
    rows += [f"| `{code}` | {status} | {text} |" for code, (status, text) in API_CODES.items()]
    return "\n".join(rows) + "\n"


RENDERERS: dict[str, Callable[[], str]] = {
    "routes": render_routes,
    "events": render_events,
    "codes": render_codes,
}


def render_document(text: str) -> str:
    """The document with every generated section rendered afresh."""
    return SECTION.sub(lambda m: m.group(1) + RENDERERS[m.group(2)]() + m.group(4), text)


if __name__ == "__main__":
    DOC.write_text(render_document(DOC.read_text()))
