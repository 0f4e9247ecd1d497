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
from cellrelay.client._schema import type_name

DOC = Path(__file__).resolve().parents[2] / "docs" / "daemon.md"
SECTION = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- end: \2 -->)", re.DOTALL)

# The daemon's own error codes (the protocol's are in docs/protocol.md §8), with what each
# means. tests/client/test_daemon_docs.py checks that the code raises no other.
API_CODES: dict[str, tuple[int, str]] = {
    "UNAUTHORIZED": (401, "No token, a wrong one, or an expired session (no detail is given)."),
    "BAD_HOST": (
        421,
        "The Host header does not name the daemon (DNS rebinding, or a misconfigured proxy).",
    ),
    "NOT_FOUND": (404, "No such operation."),
    "METHOD_NOT_ALLOWED": (405, "The path exists with other methods (see Allow)."),
    "NO_SUCH_CELL": (404, "No cell has that name or id prefix."),
    "NO_SUCH_MEMBER": (404, "No member (or waiting requester) has that name or id prefix."),
    "NO_SUCH_ALERT": (404, "No unexpired alert has that id prefix."),
    "AMBIGUOUS": (409, "Several cells, members or alerts match: give more of the id."),
    "REMOVED": (409, "You were removed from the cell."),
    "NOT_ADMIN": (403, "Only an admin of the cell can do that."),
    "ALREADY_ADMIN": (409, "That member is an admin already."),
    "ONLY_ADMIN": (409, "You are the cell's only admin: leaving needs `force`."),
    "SELF": (409, "Removing yourself is leaving the cell."),
    "EXISTS": (409, "You already have a cell of that name."),
    "REFUSED": (
        409,
        "The library refused the operation in the cell's present state; `detail` says why.",
    ),
    "BAD_ADDRESS": (422, "The relay address is malformed."),
    "BAD_INVITE": (422, "The invite link is malformed or damaged; `detail` says how."),
    "INVITE_TYPO": (
        422,
        "The invite link's checksum does not match: a typo; check it was copied exactly.",
    ),
    "INVITE_EXPIRED": (410, "The invite has expired: ask the cell's admin for a new one."),
    "INVITE_USED": (
        410,
        "The invite was used or has expired (the relay no longer has its join mailbox): ask for a new one.",
    ),
    "RELAY_KEY_MISMATCH": (
        502,
        "The relay refused the handshake: it does not hold the key the address or invite names.",
    ),
    "RELAY_PROTOCOL": (502, "The relay broke the protocol (a bug, or a hostile relay)."),
    "KEYSTORE": (500, "The keystore or the saved state could not be read or written."),
    "TOO_LARGE": (413, "The body is over the limit (64 KiB), or a field over its bound (400)."),
    "MALFORMED": (400, "The body is not JSON in UTF-8 (or the request not HTTP)."),
    "UNSUPPORTED": (501, "A transfer coding other than chunked (RFC 9112 §6.1)."),
    "UNSUPPORTED_MEDIA_TYPE": (
        415,
        "Send application/json (or text/plain where the operation takes text).",
    ),
    "RELAY_TIMEOUT": (
        504,
        "The relay did not answer within `Prefer: wait`; `detail` says what was not done.",
    ),
    "LINK_CLOSED": (503, "The connection to the relay closed before it answered; try again."),
    "RELAY_REFUSED": (502, "The relay refused with a code this version does not know."),
    "DISK_FULL": (507, "The disk holding the keystore is full."),
    "INTERNAL": (500, "A bug in the daemon: its log says where. The daemon keeps running."),
}


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
