"""A wrong proof gets one answer, in one time, whether or not its mailbox exists or is in use.

Issue 10, item 4: `auth` with a wrong proof answered `BAD_PROOF` on an existing mailbox
and `NO_SUCH_MAILBOX` on an absent one, and a mailbox with a live subscriber answered
about 50 % faster than an absent one (its state was cached, so no store lookup). Either
tells someone who learned a mailbox id, but holds no key, whether that cell still exists
and whether it is active right now. SimpleX's servers were measured against the same
oracle with the same bar: over at least 200 interleaved tries, the total times of the
three cases within 30 % of each other.

This is a measurement in a test, so it is built to hold on a loaded 2-core machine: the
three cases are interleaved in a shuffled order in every round (drift in the machine's
load hits all three alike), on one connection, against a relay with the SQLite store (a
real thread hop per lookup). A few samples that met a descheduling are clipped to the
pooled 95th percentile before summing, which keeps one stall from deciding the total; the
medians are compared as well. The bound is the issue's 30 %; the relay does the same
work in all three cases, so the measured ratios sit far inside it (docs/threat-model.md).
"""

from __future__ import annotations

import random
import secrets
import statistics
import time

import trio

from cellrelay.protocol._errors import ErrorCode
from cellrelay.protocol.wire._capability import CapabilityKey, sign_admin
from cellrelay.protocol.wire._messages import Auth, Delete, Error, MailboxId, Ok, Subscribed

from ..wire_client import MailboxKeys
from .conftest import PATIENCE, RelayFactory

ROUNDS = 240  # tries of each case, interleaved
BOUND = 1.30  # the "within 30 % of each other"


def _code(reply: object) -> int:
    assert isinstance(reply, Error), reply
    return reply.code


async def test_a_wrong_proof_gets_bad_proof_in_the_same_time_for_absent_idle_and_busy_mailboxes(
    relays: RelayFactory,
) -> None:
    store = await relays.open_sqlite()
    running = await relays.start(store=store)
    with trio.fail_after(6 * PATIENCE):
        owner = await running.connect()
        idle_keys, busy_keys = MailboxKeys(), MailboxKeys()
        idle = await owner.create(idle_keys)
        busy = await owner.create(busy_keys)
        subscriber = await running.connect()
        assert isinstance(await subscriber.auth(busy_keys.read, "read", busy), Ok)
        assert isinstance(await subscriber.subscribe(busy), Subscribed)
        targets = {"absent": MailboxId(secrets.token_bytes(16)), "idle": idle, "in use": busy}

        prober = await running.connect()
        wrong = CapabilityKey.generate()
        proofs = {
            kind: wrong.prove("write", prober.conn.handshake_hash, mailbox)
            for kind, mailbox in targets.items()
        }
        samples: dict[str, list[float]] = {kind: [] for kind in targets}
        codes: dict[str, set[int]] = {kind: set() for kind in targets}
        order = list(targets)
        shuffle = random.Random(1).shuffle
        for _ in range(ROUNDS):
            shuffle(order)
            for kind in order:
                request = Auth(
                    id=prober.next_id(), mailbox=targets[kind], role="write", proof=proofs[kind]
                )
                started = time.perf_counter()
                reply = await prober.request(request)
                samples[kind].append(time.perf_counter() - started)
                codes[kind].add(_code(reply))

        # Admin operations answer the same way: a signature is checked either way.
        admin = CapabilityKey.generate()
        for mailbox in targets.values():
            reply = await prober.request(
                _signed_delete(admin, mailbox, prober.next_id(), prober.conn.handshake_hash)
            )
            assert _code(reply) == ErrorCode.BAD_PROOF

    assert codes == {kind: {ErrorCode.BAD_PROOF} for kind in targets}, codes
    ceiling = sorted(t for times in samples.values() for t in times)[int(0.95 * 3 * ROUNDS)]
    totals = {kind: sum(min(t, ceiling) for t in times) for kind, times in samples.items()}
    medians = {kind: statistics.median(times) for kind, times in samples.items()}
    report = ", ".join(
        f"{kind}: total {totals[kind] * 1e3:.1f} ms, median {medians[kind] * 1e6:.0f} us"
        for kind in samples
    )
    assert max(totals.values()) / min(totals.values()) <= BOUND, report
    assert max(medians.values()) / min(medians.values()) <= BOUND, report
    assert running.rejections("bad_proof") == 3 * ROUNDS + 3
    assert running.rejections("no_such_mailbox") == 0


def _signed_delete(
    key: CapabilityKey, mailbox: MailboxId, request_id: int, handshake_hash: bytes
) -> Delete:
    unsigned = Delete(id=request_id, mailbox=mailbox, counter=1, sig=bytes(64))
    return sign_admin(key, unsigned, handshake_hash)
