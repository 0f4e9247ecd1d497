"""RelayLink against a real relay: requests, watches, publishes, reconnect and resume."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest
import trio

from cellrelay.client._link import (
    Delivery,
    LinkClosedError,
    RelayLink,
    RelayRefusedError,
    Revocation,
)
from cellrelay.protocol import ErrorCode
from cellrelay.protocol.wire import CapabilityKey, Create, Created, MailboxId, RelayAddress

from ..wire_client import MailboxKeys, WireClient
from .conftest import RunningRelay


class Keys:
    def __init__(self) -> None:
        self.write, self.read, self.admin = (CapabilityKey.generate() for _ in range(3))


async def create_mailbox(link: RelayLink, keys: Keys) -> MailboxId:
    reply = await link.request(
        Create(
            id=0,
            write_key=keys.write.public,
            read_key=keys.read.public,
            admin_key=keys.admin.public,
            secret=b"",
        )
    )
    assert isinstance(reply, Created)
    return reply.mailbox


def address_of(relay: RunningRelay) -> RelayAddress:
    return RelayAddress("127.0.0.1", relay.port, relay.public_key)


async def next_delivery(link: RelayLink) -> Delivery:
    with trio.fail_after(10):
        event = await link.events.receive()
    assert isinstance(event, Delivery), event
    return event


async def test_watch_and_publish(running_relay: RunningRelay, nursery: trio.Nursery) -> None:
    link = RelayLink(address_of(running_relay))
    await nursery.start(link.run)
    keys = Keys()
    mailbox = await create_mailbox(link, keys)
    await link.authorize_writer(mailbox, keys.write)
    expires = int(link.relay_time()) + 600
    assert await link.publish(mailbox, b"one", expires) == 1
    assert await link.watch(mailbox, keys.read, cursor=0) == 1
    first = await next_delivery(link)
    assert (first.seq, first.envelope) == (1, b"one")
    assert await link.publish(mailbox, b"two", expires) == 2
    second = await next_delivery(link)
    assert (second.seq, second.envelope) == (2, b"two")
    await link.aclose()


async def test_refusal_raises_with_the_code(
    running_relay: RunningRelay, nursery: trio.Nursery
) -> None:
    link = RelayLink(address_of(running_relay))
    await nursery.start(link.run)
    keys = Keys()
    mailbox = await create_mailbox(link, keys)
    with pytest.raises(RelayRefusedError) as info:
        await link.watch(mailbox, Keys().read, cursor=0)  # a read key the mailbox does not have
    assert info.value.code == ErrorCode.BAD_PROOF
    await link.aclose()


async def test_reconnect_resumes_without_gap_or_duplicate(
    running_relay: RunningRelay, nursery: trio.Nursery
) -> None:
    reader = RelayLink(address_of(running_relay), rng=__import__("random").Random(1))
    writer = RelayLink(address_of(running_relay))
    await nursery.start(reader.run)
    await nursery.start(writer.run)
    keys = Keys()
    mailbox = await create_mailbox(writer, keys)
    await writer.authorize_writer(mailbox, keys.write)
    await reader.watch(mailbox, keys.read, cursor=0)
    expires = int(time.time()) + 600
    seen: list[int] = []
    for round_number in range(3):
        for i in range(5):
            await writer.publish(mailbox, f"{round_number}-{i}".encode(), expires)
        # Cut the reader off from the relay's side, mid-stream.
        for session in list(running_relay.relay.sessions):
            if running_relay.relay.hub.is_subscribed(session, mailbox):
                session.close(ErrorCode.SHUTTING_DOWN)
        for i in range(5, 8):
            await writer.publish(mailbox, f"{round_number}-{i}".encode(), expires)
        while len(seen) < 8 * (round_number + 1):
            seen.append((await next_delivery(reader)).seq)
    assert seen == list(range(1, 25))
    assert reader.connections >= 2
    await reader.aclose()
    await writer.aclose()


async def test_rotation_is_reported(
    running_relay: RunningRelay, nursery: trio.Nursery, connect: Callable[[], Awaitable[WireClient]]
) -> None:
    link = RelayLink(address_of(running_relay))
    await nursery.start(link.run)
    keys = Keys()
    mailbox = await create_mailbox(link, keys)
    await link.watch(mailbox, keys.read, cursor=0)
    admin = await connect()
    fresh = MailboxKeys()
    await admin.rotate(keys.admin, mailbox, fresh, counter=1)
    with trio.fail_after(10):
        event = await link.events.receive()
    assert isinstance(event, Revocation)
    assert event.code == ErrorCode.REVOKED
    assert link.cursor(mailbox) is None
    await link.aclose()


async def test_relay_that_lost_envelopes_is_followed_from_its_head(
    running_relay: RunningRelay, nursery: trio.Nursery
) -> None:
    """A cursor past the relay's head (a restored backup) must not hide new envelopes."""
    link = RelayLink(address_of(running_relay))
    await nursery.start(link.run)
    keys = Keys()
    mailbox = await create_mailbox(link, keys)
    await link.authorize_writer(mailbox, keys.write)
    await link.watch(mailbox, keys.read, cursor=50)  # as if we had seen seqs up to 50
    expires = int(link.relay_time()) + 600
    assert await link.publish(mailbox, b"after the restore", expires) == 1
    delivery = await next_delivery(link)
    assert (delivery.seq, delivery.envelope) == (1, b"after the restore")
    await link.aclose()


async def test_an_unwatch_while_the_watch_proves_its_key_wins(
    running_relay: RunningRelay, nursery: trio.Nursery
) -> None:
    """A relay dropped just as a client starts on it: the unwatch comes while the watch's
    read proof is on its way. The watch gives up with LinkClosedError (it used to raise
    KeyError, which ended the whole client), and the mailbox is not watched after."""
    link = RelayLink(address_of(running_relay))
    await nursery.start(link.run)
    keys = Keys()
    mailbox = await create_mailbox(link, keys)
    outcome: list[BaseException | int] = []

    async def watch() -> None:
        try:
            outcome.append(await link.watch(mailbox, keys.read, cursor=0))
        except LinkClosedError as exc:
            outcome.append(exc)

    async with trio.open_nursery() as both:
        both.start_soon(watch)
        while mailbox not in link._watches:  # registered: its proof is now on its way
            await trio.lowlevel.checkpoint()
        await link.unwatch(mailbox)
    assert len(outcome) == 1
    assert isinstance(outcome[0], LinkClosedError)
    assert mailbox not in link._watches
