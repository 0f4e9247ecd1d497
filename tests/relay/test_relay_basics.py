"""The relay end to end, in-process on loopback: create, authorise, publish, subscribe, fetch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from cellrelay.protocol._errors import ErrorCode
from cellrelay.protocol.wire._messages import Deliver, Error, Ok, Published, Subscribed

from ..wire_client import MailboxKeys, WireClient

Connect = Callable[[], Awaitable[WireClient]]


async def test_publish_reaches_a_subscriber(connect: Connect) -> None:
    writer = await connect()
    reader = await connect()
    keys = MailboxKeys()
    mailbox = await writer.create(keys)
    assert isinstance(await writer.auth(keys.write, "write", mailbox), Ok)
    assert isinstance(await reader.auth(keys.read, "read", mailbox), Ok)
    first = await writer.publish(mailbox, b"first")
    assert isinstance(first, Published)
    assert first.seq == 1
    subscribed = await reader.subscribe(mailbox)
    assert isinstance(subscribed, Subscribed)
    assert subscribed.head == 1
    backlog = await reader.receive()
    assert isinstance(backlog, Deliver)
    assert (backlog.seq, backlog.envelope) == (1, b"first")
    second = await writer.publish(mailbox, b"second")
    assert isinstance(second, Published)
    live = await reader.receive()
    assert isinstance(live, Deliver)
    assert (live.seq, live.envelope) == (2, b"second")


async def test_publish_without_write_capability_is_refused(connect: Connect) -> None:
    client = await connect()
    keys = MailboxKeys()
    mailbox = await client.create(keys)
    reply = await client.publish(mailbox, b"forged alert")
    assert isinstance(reply, Error)
    assert reply.code == ErrorCode.UNAUTHORIZED
