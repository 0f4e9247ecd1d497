"""Relay addresses: where a relay listens and the static key that proves it is that relay.

The text form, carried in invites and printed by `cellrelay relay init`, follows SimpleX's
server addresses: `cellrelay://KEY@HOST:PORT`, where KEY is the relay's 32-byte static
X25519 public key in unpadded base64url (43 characters), HOST a DNS name, an IPv4 address
or a bracketed IPv6 address, and PORT a decimal port (docs/protocol.md §1.1). The key is
pinned: a client that reached HOST:PORT but finds another key fails the Noise handshake.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final

from .._errors import CellrelayError

__all__ = ["DEFAULT_PORT", "AddressError", "RelayAddress"]

SCHEME: Final = "cellrelay://"
DEFAULT_PORT: Final = 7446
_KEY_CHARS: Final = 43  # base64 of 32 bytes, unpadded
# A conservative hostname: labels of letters, digits and hyphens (RFC 1123), dots between.
_HOSTNAME: Final = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


class AddressError(CellrelayError, ValueError):
    """A relay address string is malformed; check that it was copied whole."""


@dataclass(frozen=True, slots=True)
class RelayAddress:
    """A relay's host, port and pinned static public key."""

    host: str
    port: int
    public_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.public_key) != 32:
            raise AddressError("a relay key is 32 bytes")
        if not 0 < self.port < 65536:
            raise AddressError("the port must be 1..65535")
        _check_host(self.host)

    @classmethod
    def parse(cls, text: str) -> RelayAddress:
        """Parse `cellrelay://KEY@HOST:PORT` (`:PORT` may be omitted for the default).

        Raises:
            AddressError: the string is not a relay address.
        """
        text = text.strip()
        if not text.startswith(SCHEME):
            raise AddressError(f"a relay address starts with {SCHEME}")
        rest = text[len(SCHEME) :].rstrip("/")
        key_text, at, location = rest.partition("@")
        if not at or len(key_text) != _KEY_CHARS:
            raise AddressError("a relay address has a 43-character key before @")
        try:
            key = base64.urlsafe_b64decode(key_text + "=")
        except (binascii.Error, ValueError):
            raise AddressError("the relay key is not base64url") from None
        if base64.urlsafe_b64encode(key).rstrip(b"=").decode() != key_text:
            raise AddressError("the relay key is not canonical base64url")
        host, port = _split_host_port(location)
        return cls(host, port, key)

    def __str__(self) -> str:
        key = base64.urlsafe_b64encode(self.public_key).rstrip(b"=").decode()
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{SCHEME}{key}@{host}:{self.port}"


def _split_host_port(location: str) -> tuple[str, int]:
    if location.startswith("["):
        host, close, tail = location[1:].partition("]")
        if not close:
            raise AddressError("an IPv6 address needs a closing ]")
    else:
        host, _, tail = location.partition(":")
        tail = ":" + tail if _ else ""
    if not tail:
        return host, DEFAULT_PORT
    if not tail.startswith(":") or not tail[1:].isdigit() or len(tail) > 6:
        raise AddressError("the port must be a decimal number")
    return host, int(tail[1:])


def _check_host(host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise AddressError("the host is not a hostname or IP address") from None
