"""A planted member's flood: alerts sealed with its own keys, published from raw connections.

A hostile member does not use its client: it holds the group mailbox's write key and its
own sender key, and publishes as fast as the relay lets it, from several connections so
that the per-connection rate limit does not hold it back (the per-mailbox one does). The
envelopes are genuine (every member opens them, and sees who sent them), as large as an
envelope gets (16 KiB) and as long-lived as the relay allows (7 days by default), which
is what fills a mailbox's quota fastest and keeps it full longest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import trio

from cellrelay.protocol._errors import ErrorCode
from cellrelay.protocol.cell._content import Alert, PlainMessage, Priority
from cellrelay.protocol.wire._capability import CapabilityKey
from cellrelay.protocol.wire._messages import Error, Published

from ..wire_client import WireClient
from .cells import announce

if TYPE_CHECKING:
    from cellrelay.client._cell_admin import Cell

__all__ = ["WEEK", "flood", "flood_alert"]

WEEK: Final = 7 * 86_400
# 2,000 four-byte characters: the largest alert text, which pads to a 16 KiB envelope.
_TEXT: Final = "\U0001f6a8" * 2000
_KIND_ALERT: Final = 1
_KIND_MESSAGE: Final = 4


def flood_alert(cell: Cell, *, ttl: int = WEEK, big: bool | None = True) -> tuple[bytes, int]:
    """Seal one alert from `cell`'s member with its own keys: (envelope, expires_at)."""
    now = cell.link.relay_time()
    expires_at = int(now) + ttl - 5  # a little under the relay's maximum, as clocks drift
    if big is None:  # the smallest envelope there is (256 bytes): tops a quota off
        tiny = PlainMessage(sent_at_ms=int(now * 1000), text="x")
        return cell.crypto.seal(
            _KIND_MESSAGE, tiny.encode(), expires_at=expires_at, now=now
        ), expires_at
    alert = Alert(
        sent_at_ms=int(now * 1000),
        text=_TEXT if big else "flood",
        priority=Priority.EMERGENCY,
        place=None,
        expires_at=expires_at,
    )
    envelope = cell.crypto.seal(_KIND_ALERT, alert.encode(), expires_at=expires_at, now=now)
    return envelope, expires_at


async def flood(
    port: int,
    relay_key: bytes,
    cell: Cell,
    *,
    count: int | None = None,
    connections: int = 3,
    ttl: int = WEEK,
    big: bool = True,
) -> int:
    """Publish alerts from `cell`'s member until `count` are stored, or the mailbox is full.

    Returns how many were stored. RATE_LIMITED is waited out, as a flooder would. Without
    a `count`, once 16 KiB alerts no longer fit the flooder tops the quota off with the
    smallest envelopes, so that nothing at all fits any more.
    """
    await announce(cell)  # as its own client would first: else members park the flood
    stored = await _flood(
        port, relay_key, cell, count=count, connections=connections, ttl=ttl, big=big
    )
    if count is None:
        stored += await _flood(port, relay_key, cell, count=None, connections=1, ttl=ttl, big=None)
    return stored


async def _flood(
    port: int,
    relay_key: bytes,
    cell: Cell,
    *,
    count: int | None,
    connections: int,
    ttl: int,
    big: bool | None,
) -> int:
    mailbox = cell.record.group_mailbox
    write = CapabilityKey.from_seed(cell.crypto.group_keys[1])
    stored = 0
    full = trio.Event()

    async def one_connection() -> None:
        nonlocal stored
        client = await WireClient.connect(port, relay_key)
        try:
            await client.auth(write, "write", mailbox)
            while not full.is_set() and (count is None or stored < count):
                envelope, expires_at = flood_alert(cell, ttl=ttl, big=big)
                while True:
                    reply = await client.publish(mailbox, envelope, expires_at=expires_at)
                    if isinstance(reply, Published):
                        stored += 1
                        break
                    assert isinstance(reply, Error), reply
                    if reply.code == ErrorCode.MAILBOX_FULL:
                        full.set()
                        return
                    assert reply.code == ErrorCode.RATE_LIMITED, reply
                    await trio.sleep(0.05)
        finally:
            await client.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one_connection)
    return stored
