"""Who may use the daemon's API: the token, board sessions, one-time codes and tickets, the Host check.

The rules (docs/daemon.md, "Security"; docs/threat-model.md §3.8):

* **The Unix socket** is the user's own: mode 0600 in the 0700 data directory, and the
  peer's uid is checked (SO_PEERCRED) as well. A request on it needs no token, unless it
  carries the headers every browser adds (`Origin`, `Sec-Fetch-Site`): then it came
  through some proxy from a web page, and it needs a token like any TCP request.
* **Loopback TCP** (only when asked for) needs `Authorization: Bearer TOKEN` on every
  request but the board's static files, `/openapi.json` and the redemption of a one-time
  code. The token is 256 random bits in `daemon.token` (0600) and is compared in constant
  time. A wrong or missing token gets 401 and no detail.
* **Host**: every request must name the daemon as a loopback host (`127.0.0.1`,
  `localhost`, `[::1]`, or `cellrelay` on the socket); on TCP, with the daemon's own port.
  A web page whose name was made to resolve to 127.0.0.1 (DNS rebinding) sends its own
  name, and is refused with 421 before anything else is looked at.
* **The board** gets a session without ever holding the token: the daemon prints a URL
  whose *fragment* holds a one-time code (fragments are not sent in requests nor in
  `Referer`); the board's script redeems it (`POST /session`) for a session token that it
  keeps in `sessionStorage` and sends as a bearer token. Cookies were rejected: browsers
  send a cookie for `localhost` to every port on it (RFC 6265 §8.5), so any other local
  web server the user visits would receive the session, and a cookie would need CSRF
  defences that a header does not.
* **Event tickets**: `EventSource` cannot send headers, so a client first asks for a
  ticket (one use, `TICKET_TTL` seconds) and opens `/events?ticket=...`.

Codes, sessions and tickets live in memory only: a daemon restart ends every session.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ._http import Transport

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

__all__ = [
    "CODE_TTL",
    "SESSION_TTL",
    "TICKET_TTL",
    "TOKEN_NAME",
    "Gatekeeper",
    "load_or_create_token",
]

TOKEN_NAME: Final = "daemon.token"  # noqa: S105 - a file name, not a secret
TOKEN_BYTES: Final = 32  # 256 bits, as base64url: 43 characters
CODE_TTL: Final = 600  # seconds a one-time board code is valid: time to open the link
SESSION_TTL: Final = 12 * 3600  # a dispatcher's shift; then open a new link
TICKET_TTL: Final = 60  # seconds between asking for an event ticket and using it
# Bounds on what the daemon remembers: a flood of requests for codes or tickets (by
# someone who holds the token anyway) cannot grow memory; the oldest are forgotten.
MAX_CODES: Final = 16
MAX_SESSIONS: Final = 64
MAX_TICKETS: Final = 256
_LOOPBACK_NAMES: Final = ("127.0.0.1", "localhost", "[::1]")
_SOCKET_NAMES: Final = (*_LOOPBACK_NAMES, "cellrelay")


def load_or_create_token(home: Path) -> str:
    """The API token in `home/daemon.token`, created (mode 0600) on first use.

    Delete the file and restart the daemon to revoke every copy of the token.
    """
    path = home / TOKEN_NAME
    try:
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        token = ""
    if len(token) >= 32:
        os.chmod(path, 0o600)
        return token
    token = secrets.token_urlsafe(TOKEN_BYTES)
    temporary = path.with_name(TOKEN_NAME + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    os.replace(temporary, path)
    return token


@dataclass(slots=True)
class _Secret:
    value: str
    expires_at: float


def _take(items: list[_Secret], value: str, now: float) -> _Secret | None:
    """Find and remove a live secret, comparing every one in constant time."""
    found: _Secret | None = None
    for item in items:
        # Compared as bytes (compare_digest refuses non-ASCII str); no early exit.
        if hmac.compare_digest(item.value.encode(), value.encode()) and item.expires_at > now:
            found = item
    if found is not None:
        items.remove(found)
    return found


class Gatekeeper:
    """Checks every request's Host and credentials; issues codes, sessions and tickets."""

    def __init__(self, token: str, *, tcp_port: int | None = None) -> None:
        """Guard with `token`; `tcp_port` is the loopback port, if the daemon listens on one."""
        self._token = token.encode()
        self.tcp_port = tcp_port
        self._codes: list[_Secret] = []
        self._sessions: list[_Secret] = []
        self._tickets: list[_Secret] = []

    # -- checks ----------------------------------------------------------------------------

    def host_allowed(self, headers: Mapping[str, str], transport: Transport) -> bool:
        """Whether the Host header names this daemon (see the module docstring)."""
        host = headers.get("host", "").strip().lower()
        if not host or "," in host:
            return False
        name, port = host, ""
        if host.startswith("["):
            end = host.find("]")
            name, port = host[: end + 1], host[end + 1 :]
        elif ":" in host:
            name, _, rest = host.partition(":")
            port = ":" + rest
        if port and not (port[1:].isdigit() and len(port) <= 6):
            return False
        if transport is Transport.UNIX:
            return name in _SOCKET_NAMES
        return name in _LOOPBACK_NAMES and port == f":{self.tcp_port}"

    @staticmethod
    def from_browser(headers: Mapping[str, str]) -> bool:
        """Whether a request carries the headers browsers add to every request they make."""
        return "origin" in headers or "sec-fetch-site" in headers

    def authorized(self, headers: Mapping[str, str], transport: Transport) -> bool:
        """Whether a request may use the API: the socket's own user, or a valid bearer token."""
        if transport is Transport.UNIX and not self.from_browser(headers):
            return True
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            return False
        return self.bearer_valid(credential.strip())

    def bearer_valid(self, credential: str) -> bool:
        """Whether a bearer credential is the token or a live session (constant time)."""
        offered = credential.encode()
        valid = hmac.compare_digest(self._token, offered)
        now = time.time()
        for session in self._sessions:
            if hmac.compare_digest(session.value.encode(), offered) and session.expires_at > now:
                valid = True
        return valid

    # -- codes, sessions, tickets ------------------------------------------------------------

    @staticmethod
    def _issue(items: list[_Secret], ttl: float, limit: int) -> _Secret:
        now = time.time()
        items[:] = [i for i in items if i.expires_at > now][-(limit - 1) :]
        item = _Secret(secrets.token_urlsafe(TOKEN_BYTES), now + ttl)
        items.append(item)
        return item

    def new_code(self) -> tuple[str, int]:
        """A one-time board code and when it expires (unix seconds)."""
        code = self._issue(self._codes, CODE_TTL, MAX_CODES)
        return code.value, int(code.expires_at)

    def redeem_code(self, code: str) -> tuple[str, int] | None:
        """Trade a live one-time code for a session token; None if the code is not valid."""
        if _take(self._codes, code, time.time()) is None:
            return None
        session = self._issue(self._sessions, SESSION_TTL, MAX_SESSIONS)
        return session.value, int(session.expires_at)

    def new_ticket(self) -> tuple[str, int]:
        """A one-time ticket for opening an event stream."""
        ticket = self._issue(self._tickets, TICKET_TTL, MAX_TICKETS)
        return ticket.value, int(ticket.expires_at)

    def redeem_ticket(self, ticket: str) -> bool:
        """Use up a ticket; whether it was valid."""
        return _take(self._tickets, ticket, time.time()) is not None
