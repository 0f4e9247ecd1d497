"""Every refusal the relay promises (docs/protocol.md §7), each with its code and counted in metrics.

In-process relays on loopback; limits are set low per test so each can be reached in a
few requests. After a refusal the connection goes on (§7: `error` leaves it open), which
the tests check by using it again.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from typing import Literal

import pytest
import trio

from cellrelay.protocol._errors import ErrorCode
from cellrelay.protocol.wire._capability import CapabilityKey, sign_admin
from cellrelay.protocol.wire._messages import (
    Auth,
    Create,
    Created,
    Delete,
    Error,
    Fetch,
    MailboxId,
    Message,
    Ok,
    Published,
    Revoked,
    SetLimits,
    Subscribed,
    Unsubscribe,
)

from ..wire_client import MailboxKeys, WireClient
from .conftest import (
    PATIENCE,
    RelayFactory,
    RunningRelay,
    assert_quiet,
    connect_raw_socket,
    handshake,
    receive_deliveries,
    settle,
)


def _code(reply: Message) -> int:
    assert isinstance(reply, Error), reply
    return reply.code


async def _mailbox(running: RunningRelay) -> tuple[WireClient, MailboxKeys, bytes]:
    client = await running.connect()
    keys = MailboxKeys()
    return client, keys, await client.create(keys)


async def _fetch(client: WireClient, mailbox: bytes) -> Message:
    return await client.request(
        Fetch(id=client.next_id(), mailbox=MailboxId(mailbox), after=0, limit=10)
    )


async def test_each_request_needs_its_capability(relays: RelayFactory) -> None:
    """Publish needs write; subscribe and fetch need read; holding the other role is not enough.

    Catches a relay that lets any authenticated connection (or none) publish or read.
    """
    running = await relays.start()
    with trio.fail_after(PATIENCE):
        _owner, keys, mailbox = await _mailbox(running)
        stranger = await running.connect()
        assert _code(await stranger.publish(mailbox, b"forged alert")) == ErrorCode.UNAUTHORIZED
        assert _code(await stranger.subscribe(mailbox)) == ErrorCode.UNAUTHORIZED
        assert _code(await _fetch(stranger, mailbox)) == ErrorCode.UNAUTHORIZED
        # Unsubscribing needs nothing and is always ok (§7).
        unsubscribed = await stranger.request(
            Unsubscribe(id=stranger.next_id(), mailbox=MailboxId(mailbox))
        )
        assert isinstance(unsubscribed, Ok)

        reader = await running.connect()
        assert isinstance(await reader.auth(keys.read, "read", mailbox), Ok)
        assert _code(await reader.publish(mailbox, b"reader posing as writer")) == (
            ErrorCode.UNAUTHORIZED
        )
        writer = await running.connect()
        assert isinstance(await writer.auth(keys.write, "write", mailbox), Ok)
        assert _code(await writer.subscribe(mailbox)) == ErrorCode.UNAUTHORIZED
        assert _code(await _fetch(writer, mailbox)) == ErrorCode.UNAUTHORIZED
        # The refusals left every connection usable.
        assert isinstance(await writer.publish(mailbox, b"real alert"), Published)
        assert isinstance(await reader.subscribe(mailbox), Subscribed)
        assert [d.envelope for d in await receive_deliveries(reader, 1)] == [b"real alert"]
    assert running.rejections("unauthorized") == 6


async def test_auth_with_a_wrong_key_or_for_a_missing_mailbox_is_refused(
    relays: RelayFactory,
) -> None:
    """A proof by the wrong key, for the wrong role or mailbox, or for no mailbox at all is BAD_PROOF.

    Catches a relay that checks the signature against the wrong key (read for write), does
    not bind the proof to the mailbox id, or answers differently for a mailbox that does
    not exist, which would tell anyone holding an id whether its cell still exists
    (tests/relay/test_existence_oracle.py times the answers too).
    """
    running = await relays.start()
    with trio.fail_after(PATIENCE):
        client, keys, mailbox = await _mailbox(running)
        _, _, other_mailbox = await _mailbox(running)
        random_key = CapabilityKey.generate()
        assert _code(await client.auth(random_key, "write", mailbox)) == ErrorCode.BAD_PROOF
        assert _code(await client.auth(keys.read, "write", mailbox)) == ErrorCode.BAD_PROOF
        assert _code(await client.auth(keys.write, "read", mailbox)) == ErrorCode.BAD_PROOF
        assert _code(await client.auth(keys.admin, "write", mailbox)) == ErrorCode.BAD_PROOF
        # A proof for another mailbox, presented for this one.
        proof = keys.write.prove("write", client.conn.handshake_hash, other_mailbox)
        reply = await client.request(
            Auth(id=client.next_id(), mailbox=MailboxId(mailbox), role="write", proof=proof)
        )
        assert _code(reply) == ErrorCode.BAD_PROOF
        missing = secrets.token_bytes(16)
        assert _code(await client.auth(keys.write, "write", missing)) == ErrorCode.BAD_PROOF
        assert _code(await client.publish(mailbox, b"still not allowed")) == ErrorCode.UNAUTHORIZED
        assert isinstance(await client.auth(keys.write, "write", mailbox), Ok)
        assert isinstance(await client.publish(mailbox, b"now allowed"), Published)
    assert running.rejections("bad_proof") == 6
    assert running.rejections("no_such_mailbox") == 0


async def test_a_proof_captured_on_one_connection_is_useless_on_another(
    relays: RelayFactory,
) -> None:
    """An `auth` copied byte for byte from connection A to connection B is BAD_PROOF on B.

    The proof signs A's handshake hash (a channel binding). Catches a relay that verifies
    proofs without the handshake hash, which would let anyone who sees one proof in a log
    or memory dump write to (or read) the mailbox forever.
    """
    running = await relays.start()
    with trio.fail_after(PATIENCE):
        a, keys, mailbox = await _mailbox(running)
        b = await running.connect()
        roles: tuple[tuple[Literal["read", "write"], CapabilityKey], ...] = (
            ("write", keys.write),
            ("read", keys.read),
        )
        for role, key in roles:
            captured = Auth(
                id=a.next_id(),
                mailbox=MailboxId(mailbox),
                role=role,
                proof=key.prove(role, a.conn.handshake_hash, mailbox),
            )
            assert isinstance(await a.request(captured), Ok)
            assert _code(await b.request(dataclasses.replace(captured, id=b.next_id()))) == (
                ErrorCode.BAD_PROOF
            )
        assert _code(await b.publish(mailbox, b"injected")) == ErrorCode.UNAUTHORIZED
        assert _code(await b.subscribe(mailbox)) == ErrorCode.UNAUTHORIZED


async def test_admin_operations_cannot_be_replayed_or_go_stale(relays: RelayFactory) -> None:
    """A signed admin operation replayed on its connection is STALE_COUNTER, on another BAD_PROOF.

    Also: a counter not above the last accepted (equal, lower, zero) is STALE_COUNTER, a
    signature by another key or for another operation type is BAD_PROOF, and a higher
    counter is accepted. Catches counters that are not checked or not stored, and
    signatures that bind neither the connection nor the operation type.
    """
    running = await relays.start()
    with trio.fail_after(PATIENCE):
        a, keys, mailbox = await _mailbox(running)
        b = await running.connect()
        zero = await a.set_limits(keys.admin, mailbox, max_ttl=60, max_bytes=0, counter=0)
        assert _code(zero) == ErrorCode.STALE_COUNTER  # counters start at 0 and must rise
        signed = sign_admin(
            keys.admin,
            SetLimits(id=a.next_id(), mailbox=MailboxId(mailbox), max_ttl=600, max_bytes=0,
                      counter=1_000, sig=bytes(64)),
            a.conn.handshake_hash,
        )  # fmt: skip
        assert isinstance(await a.request(signed), Ok)
        assert _code(await a.request(dataclasses.replace(signed, id=a.next_id()))) == (
            ErrorCode.STALE_COUNTER
        )
        assert _code(await b.request(dataclasses.replace(signed, id=b.next_id()))) == (
            ErrorCode.BAD_PROOF
        )
        for counter in (1_000, 999, 1):
            reply = await b.set_limits(
                keys.admin, mailbox, max_ttl=60, max_bytes=0, counter=counter
            )
            assert _code(reply) == ErrorCode.STALE_COUNTER
        wrong_key = await b.set_limits(keys.write, mailbox, max_ttl=60, max_bytes=0, counter=2_000)
        assert _code(wrong_key) == ErrorCode.BAD_PROOF
        # A set_limits signature presented as a delete (same mailbox, counter, connection).
        fresh = sign_admin(
            keys.admin,
            SetLimits(id=b.next_id(), mailbox=MailboxId(mailbox), max_ttl=0, max_bytes=0,
                      counter=2_000, sig=bytes(64)),
            b.conn.handshake_hash,
        )  # fmt: skip
        as_delete = Delete(id=b.next_id(), mailbox=MailboxId(mailbox), counter=2_000, sig=fresh.sig)
        assert _code(await b.request(as_delete)) == ErrorCode.BAD_PROOF
        assert isinstance(await b.request(fresh), Ok)
    assert running.rejections("stale_counter") == 5
    assert running.rejections("bad_proof") == 3


async def test_rotation_cuts_off_connections_holding_the_old_keys(relays: RelayFactory) -> None:
    """After `rotate`, old-key holders get `revoked` REVOKED, cannot publish or read, and old keys fail auth.

    This is how a removed member is shut out (docs/protocol.md §7). Catches revocation
    that leaves an old writer able to inject, or an old subscriber still receiving new
    envelopes, or old keys still accepted by `auth`.
    """
    running = await relays.start()
    with trio.fail_after(PATIENCE):
        admin, keys, mailbox = await _mailbox(running)
        old_writer = await running.connect()
        assert isinstance(await old_writer.auth(keys.write, "write", mailbox), Ok)
        old_reader = await running.connect()
        assert isinstance(await old_reader.auth(keys.read, "read", mailbox), Ok)
        assert isinstance(await old_reader.subscribe(mailbox), Subscribed)
        assert isinstance(await old_writer.publish(mailbox, b"before rotation"), Published)
        assert len(await receive_deliveries(old_reader, 1)) == 1
        assert isinstance(await admin.auth(keys.write, "write", mailbox), Ok)

        new = MailboxKeys()
        assert isinstance(await admin.rotate(keys.admin, mailbox, new, counter=1), Ok)
        for holder in (old_writer, old_reader):
            revoked = await holder.receive()
            assert isinstance(revoked, Revoked)
            assert (revoked.mailbox, revoked.code) == (mailbox, ErrorCode.REVOKED)
        # The rotating connection held a capability too: revoked before its `ok`.
        assert [type(m) for m in admin.inbox] == [Revoked]

        assert _code(await old_writer.publish(mailbox, b"removed member")) == ErrorCode.UNAUTHORIZED
        assert _code(await _fetch(old_reader, mailbox)) == ErrorCode.UNAUTHORIZED
        assert _code(await old_writer.auth(keys.write, "write", mailbox)) == ErrorCode.BAD_PROOF
        fresh = await running.connect()
        assert _code(await fresh.auth(keys.read, "read", mailbox)) == ErrorCode.BAD_PROOF
        assert _code(await fresh.rotate(keys.admin, mailbox, MailboxKeys(), counter=2)) == (
            ErrorCode.BAD_PROOF
        )

        assert isinstance(await fresh.auth(new.write, "write", mailbox), Ok)
        assert isinstance(await fresh.auth(new.read, "read", mailbox), Ok)
        assert isinstance(await fresh.subscribe(mailbox, after=1), Subscribed)
        assert isinstance(await fresh.publish(mailbox, b"after rotation"), Published)
        assert [d.envelope for d in await receive_deliveries(fresh, 1)] == [b"after rotation"]
        await assert_quiet(old_reader)  # the old subscription ended with the revocation


async def test_rotation_to_the_same_keys_revokes_nobody(relays: RelayFactory) -> None:
    """A repeated `rotate` (same read and write keys, next counter) is accepted and cuts nobody off.

    A client that lost the answer to its first rotation sends it again; the holders that
    already re-authenticated with the new keys must keep their subscriptions. Catches a
    relay that revokes on every accepted rotation, which would cut a whole cell off twice.
    """
    running = await relays.start()
    with trio.fail_after(PATIENCE):
        admin, keys, mailbox = await _mailbox(running)
        reader = await running.connect()
        assert isinstance(await reader.auth(keys.read, "read", mailbox), Ok)
        assert isinstance(await reader.subscribe(mailbox), Subscribed)
        assert isinstance(await admin.auth(keys.write, "write", mailbox), Ok)

        same = MailboxKeys()  # a new admin key, the same read and write keys
        same.write, same.read = keys.write, keys.read
        assert isinstance(await admin.rotate(keys.admin, mailbox, same, counter=1), Ok)
        assert isinstance(await admin.rotate(same.admin, mailbox, same, counter=2), Ok)
        assert not admin.inbox  # no `revoked`
        assert isinstance(await admin.publish(mailbox, b"still here"), Published)
        assert [d.envelope for d in await receive_deliveries(reader, 1)] == [b"still here"]
        assert _code(await admin.rotate(keys.admin, mailbox, same, counter=3)) == (
            ErrorCode.BAD_PROOF
        )  # the old admin key is gone
        assert _code(await admin.rotate(same.admin, mailbox, same, counter=2)) == (
            ErrorCode.STALE_COUNTER
        )


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_delete_revokes_holders_and_the_mailbox_is_gone(
    relays: RelayFactory, kind: str
) -> None:
    """`delete` sends `revoked` DELETED to holders; afterwards every proof for it is BAD_PROOF.

    Catches a delete that leaves envelopes in the store, keeps serving connections that
    were authorised, or accepts the mailbox's keys again.
    """
    store = await relays.open_sqlite() if kind == "sqlite" else None
    running = await relays.start(store=store)
    assert running.store is not None
    with trio.fail_after(PATIENCE):
        admin, keys, mailbox = await _mailbox(running)
        member = await running.connect()
        assert isinstance(await member.auth(keys.write, "write", mailbox), Ok)
        assert isinstance(await member.auth(keys.read, "read", mailbox), Ok)
        assert isinstance(await member.subscribe(mailbox), Subscribed)
        assert isinstance(await member.publish(mailbox, b"to be deleted"), Published)
        assert len(await receive_deliveries(member, 1)) == 1
        assert running.relay.hub.mailbox_count == 1

        assert isinstance(await admin.delete(keys.admin, mailbox, counter=1), Ok)
        revoked = await member.receive()
        assert isinstance(revoked, Revoked)
        assert (revoked.mailbox, revoked.code) == (mailbox, ErrorCode.DELETED)
        assert _code(await member.publish(mailbox, b"too late")) == ErrorCode.UNAUTHORIZED
        assert _code(await member.auth(keys.write, "write", mailbox)) == ErrorCode.BAD_PROOF
        assert _code(await admin.delete(keys.admin, mailbox, counter=2)) == ErrorCode.BAD_PROOF
        assert _code(await admin.rotate(keys.admin, mailbox, MailboxKeys(), counter=3)) == (
            ErrorCode.BAD_PROOF
        )
        assert await running.store.get_mailbox(MailboxId(mailbox)) is None
        assert await running.store.read_after(MailboxId(mailbox), 0, limit=10, now=0) == []
        assert running.relay.hub.mailbox_count == 0


async def test_the_relay_wide_mailbox_limit_refuses_creation_with_busy(
    relays: RelayFactory,
) -> None:
    """At `max_mailboxes`, `create` is BUSY for everyone; a deletion makes room again.

    Catches a relay whose database an abuser with many addresses can grow without end
    (the creation rate is per address), and a limit that counts deleted mailboxes.
    """
    running = await relays.start(max_mailboxes=2)
    with trio.fail_after(PATIENCE):
        first, second = await running.connect(), await running.connect()
        keys = MailboxKeys()
        mailbox = await first.create(keys)
        await second.create(MailboxKeys())
        for client in (first, second):
            refused = await client.request(
                Create(id=client.next_id(), write_key=keys.write.public, read_key=keys.read.public,
                       admin_key=keys.admin.public, secret=b"")
            )  # fmt: skip
            assert _code(refused) == ErrorCode.BUSY
        assert running.rejections("busy") == 2
        assert isinstance(await first.delete(keys.admin, mailbox, counter=1), Ok)
        await second.create(MailboxKeys())


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_the_relay_wide_storage_limit_refuses_publishes_until_envelopes_expire(
    relays: RelayFactory, kind: str
) -> None:
    """At `max_stored_bytes` over all mailboxes, a publish is MAILBOX_FULL; the sweep frees room.

    Catches a relay whose disk fills with ciphertext until SQLite fails for everyone (the
    per-mailbox quota times the mailboxes bounds nothing), and a limit that never lets go.
    """
    store = await relays.open_sqlite() if kind == "sqlite" else None
    running = await relays.start(store=store, max_stored_bytes=100)
    with trio.fail_after(PATIENCE):
        client, first_keys, first = await _mailbox(running)
        keys = MailboxKeys()
        second = await client.create(keys)
        assert isinstance(await client.auth(first_keys.write, "write", first), Ok)
        assert isinstance(await client.auth(keys.write, "write", second), Ok)
        expires_at = int(time.time()) + 2
        assert isinstance(await client.publish(first, b"a" * 60, expires_at=expires_at), Published)
        assert _code(await client.publish(second, b"b" * 50)) == ErrorCode.MAILBOX_FULL
        assert isinstance(await client.publish(second, b"b" * 40), Published)  # exactly 100
        assert running.relay.hub.stored_bytes == 100
        assert running.rejections("mailbox_full") == 1
        while time.time() <= expires_at:
            await trio.sleep(0.1)
        await running.relay.hub.sweep()
        assert running.relay.hub.stored_bytes == 40
        assert isinstance(await client.publish(second, b"b" * 50), Published)


async def test_envelope_size_limit(relays: RelayFactory) -> None:
    """An envelope one byte over `max_envelope` is ENVELOPE_TOO_LARGE; exactly at it is stored."""
    running = await relays.start(max_envelope=1000)
    with trio.fail_after(PATIENCE):
        client, keys, mailbox = await _mailbox(running)
        assert client.welcome.max_envelope == 1000
        assert isinstance(await client.auth(keys.write, "write", mailbox), Ok)
        assert isinstance(await client.publish(mailbox, b"x" * 1000), Published)
        assert _code(await client.publish(mailbox, b"x" * 1001)) == ErrorCode.ENVELOPE_TOO_LARGE
    assert running.rejections("envelope_too_large") == 1


async def test_creation_secret_is_required_when_configured(relays: RelayFactory) -> None:
    """With a creation secret set, `create` without it or with a wrong one is CREATE_FORBIDDEN."""
    running = await relays.start(creation_secret="cell leads only")  # noqa: S106 - a test value
    with trio.fail_after(PATIENCE):
        client = await running.connect()
        keys = MailboxKeys()
        for secret in (b"", b"cell leads", b"cell leads only!", b"CELL LEADS ONLY"):
            with pytest.raises(AssertionError, match="code=204"):
                await client.create(keys, secret=secret)
        assert isinstance(await client.create(keys, secret=b"cell leads only"), bytes)
    assert running.rejections("create_forbidden") == 4


async def test_rate_limits_per_connection_per_mailbox_and_for_creation(
    relays: RelayFactory,
) -> None:
    """Publishing past a connection's or a mailbox's burst, or creating past the address's, is RATE_LIMITED.

    Refill rates are tiny so no token comes back during the test. Catches a limit that is
    not enforced, or one shared wrongly (a connection's limit must not stop another's).
    """
    running = await relays.start(
        publish_rate=0.0001, publish_burst=3,
        mailbox_publish_rate=0.0001, mailbox_publish_burst=5,
        create_rate=0.0001, create_burst=3,
    )  # fmt: skip
    with trio.fail_after(PATIENCE):
        first, keys, mailbox = await _mailbox(running)
        assert isinstance(await first.auth(keys.write, "write", mailbox), Ok)
        for _ in range(3):
            assert isinstance(await first.publish(mailbox, b"alert"), Published)
        assert _code(await first.publish(mailbox, b"alert")) == ErrorCode.RATE_LIMITED
        second = await running.connect()
        assert isinstance(await second.auth(keys.write, "write", mailbox), Ok)
        for _ in range(2):  # the mailbox had 5 in its burst; 3 are used
            assert isinstance(await second.publish(mailbox, b"alert"), Published)
        assert _code(await second.publish(mailbox, b"alert")) == ErrorCode.RATE_LIMITED
        # Creation: one mailbox so far from this address, two more allowed.
        for _ in range(2):
            assert isinstance(await second.create(MailboxKeys()), bytes)
        with pytest.raises(AssertionError, match="code=304"):
            await second.create(MailboxKeys())
    assert running.rejections("rate_limited") == 3


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_mailbox_quota(relays: RelayFactory, kind: str) -> None:
    """Publishing beyond the mailbox's stored-bytes quota is MAILBOX_FULL; the admin can lower it.

    Catches a quota that is not counted (or counted per connection instead of per mailbox)
    and a `set_limits` that does not take effect.
    """
    store = await relays.open_sqlite() if kind == "sqlite" else None
    running = await relays.start(store=store, mailbox_max_bytes=100)
    with trio.fail_after(PATIENCE):
        client, keys, mailbox = await _mailbox(running)
        assert isinstance(await client.auth(keys.write, "write", mailbox), Ok)
        assert isinstance(await client.publish(mailbox, b"a" * 60), Published)
        assert _code(await client.publish(mailbox, b"b" * 41)) == ErrorCode.MAILBOX_FULL
        assert isinstance(await client.publish(mailbox, b"c" * 40), Published)  # exactly 100
        assert _code(await client.publish(mailbox, b"d")) == ErrorCode.MAILBOX_FULL

        _, other_keys, other = await _mailbox(running)
        assert isinstance(await client.auth(other_keys.write, "write", other), Ok)
        reply = await client.set_limits(other_keys.admin, other, max_ttl=0, max_bytes=10, counter=1)
        assert isinstance(reply, Ok)
        assert isinstance(await client.publish(other, b"e" * 10), Published)
        assert _code(await client.publish(other, b"f")) == ErrorCode.MAILBOX_FULL
    assert running.rejections("mailbox_full") == 3


async def test_too_many_mailboxes_on_one_connection(relays: RelayFactory) -> None:
    """Authorising more mailboxes than `max_mailboxes_per_connection` is TOO_MANY_MAILBOXES.

    A second role on a mailbox the connection already uses is not another mailbox.
    """
    running = await relays.start(max_mailboxes_per_connection=2)
    with trio.fail_after(PATIENCE):
        client = await running.connect()
        boxes = [(keys := MailboxKeys(), await client.create(keys)) for _ in range(3)]
        (k1, m1), (k2, m2), (k3, m3) = boxes
        assert isinstance(await client.auth(k1.write, "write", m1), Ok)
        assert isinstance(await client.auth(k2.read, "read", m2), Ok)
        assert _code(await client.auth(k3.write, "write", m3)) == ErrorCode.TOO_MANY_MAILBOXES
        assert isinstance(await client.auth(k1.read, "read", m1), Ok)
        other = await running.connect()  # the limit is per connection
        assert isinstance(await other.auth(k3.write, "write", m3), Ok)
    assert running.rejections("too_many_mailboxes") == 1


async def test_create_answers_with_a_fresh_random_id(relays: RelayFactory) -> None:
    """Two creates with the same keys get different 16-byte ids (the relay chooses them)."""
    running = await relays.start()
    with trio.fail_after(PATIENCE):
        client = await running.connect()
        keys = MailboxKeys()
        ids = {await client.create(keys) for _ in range(5)}
        assert len(ids) == 5
        assert all(len(i) == 16 for i in ids)
        assert isinstance(Created, type)


async def _refused_before_handshake(running: RunningRelay) -> None:
    stream = await connect_raw_socket(running.port)
    try:
        with pytest.raises((EOFError, trio.BrokenResourceError)):  # closed, or reset
            await handshake(stream, running.public_key)
    finally:
        await stream.aclose()


async def test_connections_per_address_and_handshakes_in_progress_are_capped(
    relays: RelayFactory,
) -> None:
    """Past `max_connections_per_address`, or `max_handshakes` in progress, a new connection is closed unanswered.

    §7: before the handshake there is no key to send a code with, so the relay closes the
    TCP connection; the refusal is counted by its code. Catches caps that are not
    enforced, and slots that are not given back when connections end.
    """
    running = await relays.start(max_connections_per_address=3, max_handshakes=2)
    with trio.fail_after(PATIENCE):
        # Two sockets that never send handshake message 1 hold both handshake slots.
        stalled = [await connect_raw_socket(running.port) for _ in range(2)]
        await settle(
            lambda: running.relay.metrics.handshakes_in_progress.value == 2,
            what="both handshakes to start",
        )
        await _refused_before_handshake(running)
        assert running.rejections("busy") == 1
        for stream in stalled:
            await stream.aclose()
        await settle(
            lambda: running.relay.metrics.handshakes_in_progress.value == 0,
            what="the stalled handshakes to end",
        )

        clients = [await running.connect() for _ in range(3)]
        await _refused_before_handshake(running)
        assert running.rejections("too_many_connections") == 1
        await clients.pop().aclose()
        await settle(
            lambda: running.relay.metrics.connections_open.value == 2, what="the slot to be freed"
        )
        await assert_quiet(await running.connect())
