"""The daemon's own problem codes: each stable `code` its API answers with, its status, what it means.

The protocol's codes (docs/protocol.md §8) are the others an API client meets: what a relay
or the content rules refused. docs/daemon.md §6 renders this table
(tests/client/docgen_daemon.py) and the OpenAPI document carries it as `x-problem-codes`
(client/_openapi.py); tests/client/test_daemon_docs.py checks that the daemon gives no
code missing here, and tests/client/test_daemon_errors.py that every error class the
library raises has one.
"""

from __future__ import annotations

from typing import Final

__all__ = ["PROBLEM_CODES"]

PROBLEM_CODES: Final[dict[str, tuple[int, str]]] = {
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
    "ALREADY": (409, "That member has that role already."),
    "NOT_VERIFIER": (403, "Only a dispatcher or an admin of the cell can verify a report."),
    "NOT_POSTER": (
        403,
        "The cell is a broadcast channel: only its admins and dispatchers send alerts and messages.",
    ),
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
    "RELAY_UNAVAILABLE": (
        502,
        "The relay to put the cell on did not answer in time, or refused to make its mailboxes.",
    ),
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
