"""Fan-out to many subscribers, and members catching up from their cursors (real sockets, SQLite)."""

from __future__ import annotations

import time

import trio

from cellrelay.protocol.wire._messages import (
    Fetch,
    MailboxId,
    Ok,
    Page,
    Publish,
    Published,
    Subscribed,
)

from ..wire_client import MailboxKeys, WireClient
from .conftest import (
    PATIENCE,
    RelayFactory,
    RunningRelay,
    assert_quiet,
    publish_many,
    receive_deliveries,
)

SUBSCRIBERS = 20
PER_ROUND = 30


async def _reader(running: RunningRelay, keys: MailboxKeys, mailbox: bytes) -> WireClient:
    client = await running.connect()
    assert isinstance(await client.auth(keys.read, "read", mailbox), Ok)
    return client


async def test_every_subscriber_gets_every_envelope_in_seq_order(relays: RelayFactory) -> None:
    """20 connections subscribed to one mailbox each get all 60 envelopes, seq 1..60, in order.

    Half subscribe before anything is published; the other half subscribe while the second
    round is being published, so they cross the backlog/live seam. Catches lost, reordered or
    duplicated fan-out, a subscriber left out, and envelopes mixed up between mailboxes.
    """
    running = await relays.start(store=await relays.open_sqlite())
    with trio.fail_after(PATIENCE):
        writer = await running.connect()
        keys = MailboxKeys()
        mailbox = await writer.create(keys)
        assert isinstance(await writer.auth(keys.write, "write", mailbox), Ok)
        # A second mailbox with traffic of its own: none of it may reach the first's readers.
        other_keys = MailboxKeys()
        other = await writer.create(other_keys)
        assert isinstance(await writer.auth(other_keys.write, "write", other), Ok)
        envelopes = [f"alert {i:03d}".encode() * 5 for i in range(1, 2 * PER_ROUND + 1)]

        early = [await _reader(running, keys, mailbox) for _ in range(SUBSCRIBERS // 2)]
        for client in early:
            assert isinstance(await client.subscribe(mailbox), Subscribed)
        answers = await publish_many(writer, mailbox, envelopes[:PER_ROUND])
        assert [a.seq for a in answers if isinstance(a, Published)] == list(range(1, PER_ROUND + 1))
        await publish_many(writer, other, [b"other mailbox"] * 5)

        late = [await _reader(running, keys, mailbox) for _ in range(SUBSCRIBERS // 2)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_many, writer, mailbox, envelopes[PER_ROUND:])
            for client in late:
                assert isinstance(await client.subscribe(mailbox), Subscribed)

        for client in early + late:
            got = await receive_deliveries(client, len(envelopes))
            assert [d.seq for d in got] == list(range(1, len(envelopes) + 1))
            assert [d.envelope for d in got] == envelopes
            assert all(d.mailbox == mailbox for d in got)
            await assert_quiet(client)
    assert running.relay.metrics.publishes.value == len(envelopes) + 5


async def test_offline_member_catches_up_from_its_cursor(relays: RelayFactory) -> None:
    """Subscribing with after=N gives N+1.. only, backlog then live; a reconnect resumes.

    Catches a backlog that starts at the wrong seq (re-sending what the member has, or
    skipping one), a live delivery repeated after the backlog, and fetch paging errors.
    """
    running = await relays.start(store=await relays.open_sqlite())
    with trio.fail_after(PATIENCE):
        writer = await running.connect()
        keys = MailboxKeys()
        mailbox = await writer.create(keys)
        assert isinstance(await writer.auth(keys.write, "write", mailbox), Ok)
        envelopes = {seq: f"envelope {seq}".encode() for seq in range(1, 21)}
        await publish_many(writer, mailbox, [envelopes[s] for s in range(1, 11)])

        member = await _reader(running, keys, mailbox)
        subscribed = await member.subscribe(mailbox, after=4)
        assert isinstance(subscribed, Subscribed)
        assert subscribed.head == 10
        got = await receive_deliveries(member, 6)
        assert [(d.seq, d.envelope) for d in got] == [(s, envelopes[s]) for s in range(5, 11)]
        await assert_quiet(member)
        await publish_many(writer, mailbox, [envelopes[11]])
        (live,) = await receive_deliveries(member, 1)
        assert (live.seq, live.envelope) == (11, envelopes[11])
        await assert_quiet(member)
        cursor = live.seq

        # Offline while 12..20 are published, then back on a new connection.
        await member.aclose()
        await publish_many(writer, mailbox, [envelopes[s] for s in range(12, 21)])
        member = await _reader(running, keys, mailbox)
        subscribed = await member.subscribe(mailbox, after=cursor)
        assert isinstance(subscribed, Subscribed)
        assert subscribed.head == 20
        got = await receive_deliveries(member, 9)
        assert [(d.seq, d.envelope) for d in got] == [(s, envelopes[s]) for s in range(12, 21)]
        await assert_quiet(member)

        # Subscribing again on the same connection restarts from the new cursor.
        assert isinstance(await member.subscribe(mailbox, after=17), Subscribed)
        assert [d.seq for d in await receive_deliveries(member, 3)] == [18, 19, 20]
        await assert_quiet(member)

        # A cursor at the head: nothing until something new.
        assert isinstance(await member.subscribe(mailbox, after=20), Subscribed)
        await assert_quiet(member)

        # Fetch pages: after=15, 3 at a time.
        page = await member.request(
            Fetch(id=member.next_id(), mailbox=MailboxId(mailbox), after=15, limit=3)
        )
        assert isinstance(page, Page)
        assert [(i.seq, i.envelope) for i in page.items] == [
            (s, envelopes[s]) for s in (16, 17, 18)
        ]
        assert page.more
        page = await member.request(
            Fetch(id=member.next_id(), mailbox=MailboxId(mailbox), after=18, limit=10)
        )
        assert isinstance(page, Page)
        assert [i.seq for i in page.items] == [19, 20]
        assert not page.more


async def test_one_batch_over_two_mailboxes_reaches_each_subscriber_once_in_order(
    relays: RelayFactory,
) -> None:
    """Publishes to two mailboxes in one frame: each subscriber gets each envelope once, in order.

    One reader holds both mailboxes and the publisher reads the first itself, so a batch
    gives them acknowledgements and deliveries from two mailboxes at once: the relay's
    coalescing path, where a connection must get one frame and no envelope twice. A third
    reader of one mailbox takes the direct path beside them.
    """
    running = await relays.start(store=await relays.open_sqlite())
    with trio.fail_after(PATIENCE):
        writer = await running.connect()
        keys_a, keys_b = MailboxKeys(), MailboxKeys()
        box_a, box_b = await writer.create(keys_a), await writer.create(keys_b)
        assert isinstance(await writer.auth(keys_a.write, "write", box_a), Ok)
        assert isinstance(await writer.auth(keys_b.write, "write", box_b), Ok)
        assert isinstance(await writer.auth(keys_a.read, "read", box_a), Ok)
        assert isinstance(await writer.subscribe(box_a), Subscribed)
        both = await _reader(running, keys_a, box_a)
        assert isinstance(await both.auth(keys_b.read, "read", box_b), Ok)
        assert isinstance(await both.subscribe(box_a), Subscribed)
        assert isinstance(await both.subscribe(box_b), Subscribed)
        only_b = await _reader(running, keys_b, box_b)
        assert isinstance(await only_b.subscribe(box_b), Subscribed)

        rounds = 5
        for round_ in range(rounds):
            expires_at = int(time.time()) + 3600
            await writer.send(
                *(
                    Publish(
                        id=writer.next_id(),
                        mailbox=MailboxId(box),
                        expires_at=expires_at,
                        envelope=b"%c%d" % (name, round_),
                    )
                    for box, name in ((box_a, ord("a")), (box_b, ord("b")), (box_a, ord("a")))
                )
            )
        per_a, per_b = 2 * rounds, rounds
        got = await receive_deliveries(both, per_a + per_b)
        assert [d.seq for d in got if d.mailbox == box_a] == list(range(1, per_a + 1))
        assert [d.seq for d in got if d.mailbox == box_b] == list(range(1, per_b + 1))
        own = await receive_deliveries(writer, per_a)
        assert [(d.mailbox, d.seq) for d in own] == [(box_a, seq) for seq in range(1, per_a + 1)]
        only = await receive_deliveries(only_b, per_b)
        assert [d.envelope for d in only] == [b"b%d" % r for r in range(rounds)]
        for client in (both, writer, only_b):
            await assert_quiet(client)
