"""Group messages: round trips, every rejection with its own error, ordering, forward secrecy.

docs/protocol.md, Part 2. Every envelope here is sealed and opened by the real code; the
"attacker" edits bytes, replays, reorders or builds envelopes with keys it really holds.
"""

from __future__ import annotations

import struct

import pytest

from cellrelay.protocol._crypto import XChaChaKey, random_bytes
from cellrelay.protocol._errors import CryptoError
from cellrelay.protocol.cell._envelope import (
    BODY_OFFSET,
    CLEAR_SIZE,
    ENVELOPE_OVERHEAD,
    GROUP_KINDS,
    MAX_GROUP_PLAINTEXT,
    Kind,
    seal_envelope,
)
from cellrelay.protocol.cell._errors import (
    BadSignatureError,
    ExpiredError,
    MalformedError,
    NotAMemberError,
    OutOfWindowError,
    RemovedError,
    ReplayError,
    StaleEpochError,
    TamperedError,
    UnknownEpochError,
)
from cellrelay.protocol.cell._group import CellCrypto
from cellrelay.protocol.cell._keys import message_material, step_chain
from cellrelay.protocol.cell._padding import BUCKETS
from cellrelay.protocol.cell._receiver import MAX_SKIP, MAX_SKIPPED_PER_SENDER

from .group_harness import TTL, Cell, Opened, Own, Pending

HEADER = struct.Struct(">16sI16sIBQ")


def test_every_kind_round_trips(cell: Cell) -> None:
    kinds = [Kind.ALERT, Kind.REPLY, Kind.RECEIPT, Kind.MESSAGE, 16, 200, 255]
    for n, kind in enumerate(kinds):
        cell.send("alice", b"text %d" % n, kind=kind)
    cell.sync()
    for name in ("admin", "bob"):
        opened = cell.members[name].opened()
        assert [o.kind for o in opened] == kinds
        assert [o.plaintext for o in opened] == [b"text %d" % n for n in range(len(kinds))]
        assert {o.sender.name for o in opened} == {"alice"}
        assert [o.counter for o in opened] == list(range(len(kinds)))
        assert all(o.expires_at == int(cell.now) + TTL for o in opened)
        assert all(o.epoch == cell["alice"].epoch for o in opened)


def test_empty_and_largest_plaintexts_round_trip(cell: Cell) -> None:
    for size in (0, 1, MAX_GROUP_PLAINTEXT):
        plaintext = random_bytes(size)
        envelope = cell.send("admin", plaintext)
        assert cell["bob"].open(envelope, now=cell.now).plaintext == plaintext  # type: ignore[union-attr]


@pytest.mark.parametrize("kind", [0, *GROUP_KINDS, 256])
def test_seal_refuses_kinds_that_are_not_content(cell: Cell, kind: int) -> None:
    with pytest.raises(ValueError, match="content kind"):
        cell["alice"].seal(kind, b"x", expires_at=int(cell.now) + 60, now=cell.now)


def test_seal_refuses_oversized_plaintext_and_past_expiry(cell: Cell) -> None:
    alice = cell["alice"]
    with pytest.raises(ValueError, match="plaintext"):
        alice.seal(1, bytes(MAX_GROUP_PLAINTEXT + 1), expires_at=int(cell.now) + 60, now=cell.now)
    with pytest.raises(ValueError, match="expires_at"):
        alice.seal(1, b"x", expires_at=int(cell.now), now=cell.now)


# -- padding and what the relay sees ---------------------------------------------------


@pytest.mark.parametrize("bucket", BUCKETS)
def test_envelopes_land_exactly_on_padding_buckets(cell: Cell, bucket: int) -> None:
    largest = bucket - ENVELOPE_OVERHEAD - 1
    assert len(cell.send("alice", bytes(largest))) == bucket
    if bucket > BUCKETS[0]:
        assert len(cell.send("alice", bytes(largest - bucket // 2 + 1))) == bucket


def test_clear_part_shows_only_version_epoch_and_a_random_nonce(cell: Cell) -> None:
    """Two envelopes of different senders and kinds, same size: only the epoch is shared."""
    first = cell.send("alice", b"agents at 14th & Main", kind=Kind.ALERT)
    second = cell.send("bob", b"on my way", kind=Kind.REPLY)
    assert len(first) == len(second) == BUCKETS[0]
    assert first[:5] == second[:5] == bytes([1]) + cell["alice"].epoch.to_bytes(4, "big")
    # The nonce is random; nothing after the epoch depends on who sent what in a way an
    # observer can compare: no byte position past the clear epoch is equal in all of 64
    # envelopes from both senders (it would be, were a sender id or kind in clear).
    envelopes = [
        cell.send(name, b"x", kind=k)
        for name in ("alice", "bob")
        for k in (1, 2)
        for _ in range(16)
    ]
    for position in range(5, len(first)):
        assert len({e[position] for e in envelopes}) > 1, position
    assert cell["alice"].me.member_id not in first
    assert cell["bob"].me.member_id not in second


# -- rejections ------------------------------------------------------------------------


def test_flipping_any_byte_is_rejected_and_changes_nothing(cell: Cell) -> None:
    envelope = cell.send("alice", b"agents at 14th & Main")
    bob = cell["bob"]
    for position in range(len(envelope)):
        forged = bytearray(envelope)
        forged[position] ^= 0x01
        with pytest.raises((TamperedError, BadSignatureError, MalformedError, UnknownEpochError)):
            bob.open(bytes(forged), now=cell.now)
    # None of that moved bob's chain: the genuine envelope still opens, once.
    assert bob.open(envelope, now=cell.now).plaintext == b"agents at 14th & Main"  # type: ignore[union-attr]


def test_tampered_header_is_a_tampered_error_and_a_crypto_error(cell: Cell) -> None:
    envelope = bytearray(cell.send("alice", b"x"))
    envelope[CLEAR_SIZE + 3] ^= 0x80
    with pytest.raises(TamperedError) as caught:
        cell["bob"].open(bytes(envelope), now=cell.now)
    assert isinstance(caught.value, CryptoError)


def test_tampered_body_fails_the_signature(cell: Cell) -> None:
    envelope = bytearray(cell.send("alice", b"x"))
    envelope[BODY_OFFSET + 2] ^= 0x01
    with pytest.raises(BadSignatureError):
        cell["bob"].open(bytes(envelope), now=cell.now)


def _reseal(cell: Cell, envelope: bytes, reader: str, **changes: object) -> bytes:
    """Open `envelope`'s header with `reader`'s keys, change fields, reseal it as it was.

    What a member (who holds the epoch's header key) can do: it cannot sign as another.
    """
    state = cell[reader]._s
    epoch = state.epochs[state.current]
    nonce = envelope[5:CLEAR_SIZE]
    inner = epoch.keys.header.decrypt(nonce, envelope[:5], envelope[CLEAR_SIZE:BODY_OFFSET])
    fields = dict(
        zip(
            ("cell_id", "epoch", "sender", "counter", "kind", "expires_at"),
            HEADER.unpack(inner[:49]),
            strict=True,
        )
    )
    fields.update(changes)
    header = HEADER.pack(*fields.values())
    sealed = epoch.keys.header.encrypt(nonce, envelope[:5], header + inner[49:])
    return envelope[:CLEAR_SIZE] + sealed + envelope[BODY_OFFSET:]


def test_a_member_cannot_claim_to_be_another_sender(cell: Cell) -> None:
    envelope = cell.send("bob", b"false alarm, go home")
    alice_id = cell["alice"].me.member_id
    forged = _reseal(cell, envelope, "admin", sender=alice_id)
    with pytest.raises(BadSignatureError):
        cell["admin"].open(forged, now=cell.now)


def test_a_member_cannot_change_counter_kind_or_expiry(cell: Cell) -> None:
    envelope = cell.send("alice", b"x")
    for change in ({"counter": 1}, {"kind": 2}, {"expires_at": int(cell.now) + 99999}):
        with pytest.raises(BadSignatureError):
            cell["bob"].open(_reseal(cell, envelope, "bob", **change), now=cell.now)


def test_missing_signature_is_rejected(cell: Cell) -> None:
    envelope = cell.send("alice", b"x")
    state = cell["bob"]._s
    epoch = state.epochs[state.current]
    nonce = envelope[5:CLEAR_SIZE]
    inner = epoch.keys.header.decrypt(nonce, envelope[:5], envelope[CLEAR_SIZE:BODY_OFFSET])
    unsigned = epoch.keys.header.encrypt(nonce, envelope[:5], inner[:49] + bytes(64))
    with pytest.raises(BadSignatureError):
        cell["bob"].open(envelope[:CLEAR_SIZE] + unsigned + envelope[BODY_OFFSET:], now=cell.now)


def test_header_naming_another_cell_is_malformed(cell: Cell) -> None:
    envelope = cell.send("alice", b"x")
    with pytest.raises(MalformedError):
        cell["bob"].open(_reseal(cell, envelope, "bob", cell_id=bytes(16)), now=cell.now)


def test_sender_not_in_the_membership_is_rejected(cell: Cell) -> None:
    envelope = cell.send("alice", b"x")
    with pytest.raises(NotAMemberError):
        cell["bob"].open(_reseal(cell, envelope, "bob", sender=bytes(16)), now=cell.now)


def test_replay_and_duplicate_are_rejected(cell: Cell) -> None:
    envelope = cell.send("alice", b"x")
    bob = cell["bob"]
    assert isinstance(bob.open(envelope, now=cell.now), Opened)
    with pytest.raises(ReplayError):
        bob.open(envelope, now=cell.now)
    with pytest.raises(ReplayError):
        bob.open(envelope, now=cell.now)


def test_expired_message_is_rejected_and_its_key_burned(cell: Cell) -> None:
    envelope = cell.send("alice", b"x", ttl=60)
    bob = cell["bob"]
    with pytest.raises(ExpiredError):
        bob.open(envelope, now=cell.now + 60)  # expires_at <= now
    with pytest.raises(ReplayError):
        bob.open(envelope, now=cell.now)  # even with an earlier clock: the key is gone
    late = cell.send("alice", b"y", ttl=60)
    cell.send("alice", b"z")
    assert cell["bob"].open(cell.group[-1], now=cell.now).plaintext == b"z"  # type: ignore[union-attr]
    with pytest.raises(ExpiredError):
        bob.open(late, now=cell.now + 61)  # a skipped key, expired when it came


def test_lateness_opens_a_message_that_expired_a_moment_ago_and_no_longer(cell: Cell) -> None:
    """§G10 step 12 with a client's lateness (§C7): within it an expired message opens (the
    client shows it marked late); beyond it, it is refused and its key burned as before."""
    bob = cell["bob"]
    bob.lateness = 900
    shown = cell.send("alice", b"late", ttl=60)
    dropped = cell.send("alice", b"too late", ttl=60)
    assert bob.open(shown, now=cell.now + 60 + 899).plaintext == b"late"  # type: ignore[union-attr]
    with pytest.raises(ExpiredError):
        bob.open(dropped, now=cell.now + 60 + 900)
    with pytest.raises(ValueError, match="within a day"):
        bob.lateness = -1


def test_wrong_sizes_and_versions_are_malformed(cell: Cell) -> None:
    envelope = cell.send("alice", b"x")
    bob = cell["bob"]
    for bad in (b"", envelope[:-1], envelope + b"\x00", b"\x02" + envelope[1:], bytes(256)):
        with pytest.raises(MalformedError):
            bob.open(bad, now=cell.now)


def test_a_signed_body_with_bad_padding_is_malformed(cell: Cell) -> None:
    """Only a sender can do this (it signs the body); the receiver's chain stays put."""
    alice = cell["alice"]
    state = alice._s
    epoch = state.epochs[state.current]
    assert epoch.own is not None
    counter, material = epoch.own.step()
    header = HEADER.pack(state.cell_id, state.current, alice.me.member_id, counter, 1, 2**40)
    body_key, body_nonce = material[:32], material[32:]
    good = seal_envelope(
        header=header,
        epoch=state.current,
        header_key=epoch.keys.header,
        header_nonce=random_bytes(24),
        signing_key=epoch.own.signing_key,
        body_key=body_key,
        body_nonce=body_nonce,
        plaintext=b"x",
    )
    # Re-seal the same header with an all-zero body (no 0x80 marker) under the same key.
    body = XChaChaKey(body_key).encrypt(body_nonce, header, bytes(len(good) - ENVELOPE_OVERHEAD))
    signature = epoch.own.signing_key.sign(b"cellrelay/1 group-envelope\x00" + header + body)
    nonce = random_bytes(24)
    sealed = epoch.keys.header.encrypt(nonce, good[:5], header + signature)
    with pytest.raises(MalformedError):
        cell["bob"].open(good[:5] + nonce + sealed + body, now=cell.now)
    assert cell["bob"].open(good, now=cell.now).plaintext == b"x"  # type: ignore[union-attr]


def test_unknown_and_far_future_epochs(cell: Cell) -> None:
    envelope = bytearray(cell.send("alice", b"x"))
    envelope[1:5] = (cell["bob"].epoch + 9).to_bytes(4, "big")
    with pytest.raises(UnknownEpochError):
        cell["bob"].open(bytes(envelope), now=cell.now)
    envelope[1:5] = (0).to_bytes(4, "big")  # before bob joined
    with pytest.raises(UnknownEpochError):
        cell["bob"].open(bytes(envelope), now=cell.now)


# -- ordering, windows, pending --------------------------------------------------------


def test_out_of_order_within_the_window_decrypts_each_once(cell: Cell) -> None:
    envelopes = [cell.send("alice", b"m%d" % i) for i in range(50)]
    bob = cell["bob"]
    order = [49, 0, 25, 1, 48, *range(2, 25), *range(26, 48)]
    texts = [bob.open(envelopes[i], now=cell.now).plaintext for i in order]  # type: ignore[union-attr]
    assert texts == [b"m%d" % i for i in order]
    for i in (0, 25, 49):
        with pytest.raises(ReplayError):
            bob.open(envelopes[i], now=cell.now)


def test_a_jump_beyond_the_window_is_refused_but_the_window_edge_is_not(cell: Cell) -> None:
    alice, bob = cell["alice"], cell["bob"]
    envelopes = [
        alice.seal(1, b"m", expires_at=int(cell.now) + 60, now=cell.now)
        for _ in range(MAX_SKIP + 2)
    ]
    with pytest.raises(OutOfWindowError):
        bob.open(envelopes[MAX_SKIP + 1], now=cell.now)
    assert isinstance(bob.open(envelopes[MAX_SKIP], now=cell.now), Opened)
    assert isinstance(bob.open(envelopes[0], now=cell.now), Opened)  # a kept skipped key
    assert isinstance(bob.open(envelopes[MAX_SKIP + 1], now=cell.now), Opened)


def test_skipped_keys_per_sender_are_bounded_oldest_first(cell: Cell) -> None:
    alice, bob = cell["alice"], cell["bob"]
    total = MAX_SKIPPED_PER_SENDER + 500
    envelopes = [
        alice.seal(1, b"m", expires_at=int(cell.now) + 60, now=cell.now) for _ in range(total + 1)
    ]
    bob.open(envelopes[MAX_SKIP], now=cell.now)
    bob.open(envelopes[total], now=cell.now)  # skips 499 more: the oldest 499 are dropped
    with pytest.raises(ReplayError):
        bob.open(envelopes[0], now=cell.now)
    assert isinstance(bob.open(envelopes[total - 1], now=cell.now), Opened)


def test_message_before_its_distribution_is_pending_then_released(cell: Cell) -> None:
    cell.join("carol")
    carol = cell.members["carol"]
    # A new epoch: bob has applied it, admin not yet; bob's distribution and message arrive
    # at admin before the epoch change does.
    cell.post_control(cell["admin"].rotate(now=cell.now))
    cell.sync(["admin", "alice", "carol"])  # they post distributions
    bob = cell.members["bob"]
    update = bob.cell.open_control(cell.control[-1], now=cell.now)
    bob.control_cursor += 1
    assert update.distribution is not None
    message = bob.cell.seal(1, b"early", expires_at=int(cell.now) + 60, now=cell.now)
    # carol gets the message first, then the distribution
    assert isinstance(carol.cell.open(message, now=cell.now), Pending)
    released = carol.cell.open(update.distribution, now=cell.now)
    assert isinstance(released, Opened)
    assert released.kind == Kind.SENDER_KEY
    assert [r.plaintext for r in released.released if isinstance(r, Opened)] == [b"early"]


def test_envelope_of_a_future_epoch_waits_for_the_epoch_change(cell: Cell) -> None:
    cell.post_control(cell["admin"].rotate(now=cell.now))
    admin = cell.members["admin"]
    update = admin.cell.open_control(cell.control[-1], now=cell.now)
    admin.control_cursor += 1
    assert update.distribution is not None
    message = admin.cell.seal(1, b"next epoch", expires_at=int(cell.now) + 60, now=cell.now)
    bob = cell["bob"]
    assert bob.open(update.distribution, now=cell.now) == Pending(bob.epoch + 1)
    assert bob.open(message, now=cell.now) == Pending(bob.epoch + 1)
    bob_update = bob.open_control(cell.control[-1], now=cell.now)
    opened = [r for r in bob_update.released if isinstance(r, Opened)]
    assert [(r.kind, r.plaintext) for r in opened] == [(Kind.SENDER_KEY, b""), (1, b"next epoch")]


def test_own_envelopes_come_back_as_own(cell: Cell) -> None:
    envelope = cell.send("alice", b"x", kind=Kind.REPLY)
    assert cell["alice"].open(envelope, now=cell.now) == Own(cell["alice"].epoch, 0, Kind.REPLY)


# -- old epochs and the grace window ---------------------------------------------------


def test_old_epoch_messages_open_within_the_grace_window_only(cell: Cell) -> None:
    alice, expires = cell["alice"], int(cell.now) + 3600
    early = alice.seal(1, b"sent before the rotation", expires_at=expires, now=cell.now)
    later = alice.seal(1, b"also before", expires_at=expires, now=cell.now)
    cell.post_control(cell["admin"].rotate(now=cell.now))
    cell.sync(["admin", "bob"])  # bob applies the new epoch at cell.now
    bob = cell["bob"]
    assert bob.open(early, now=cell.now + 600).plaintext == b"sent before the rotation"  # type: ignore[union-attr]
    with pytest.raises(StaleEpochError):
        bob.open(later, now=cell.now + 600.5)


def test_after_the_grace_window_the_old_keys_are_gone_from_the_saved_state(cell: Cell) -> None:
    late = cell["alice"].seal(1, b"x", expires_at=int(cell.now) + 3600, now=cell.now)
    cell.post_control(cell["admin"].rotate(now=cell.now))
    cell.sync(["admin", "bob"])
    bob = cell.members["bob"]
    bob.cell.open(cell.send("admin", b"tick"), now=cell.now + 601)  # any call expires
    restored = CellCrypto.from_bytes(bob.cell.to_bytes(), bob.identity)
    with pytest.raises(StaleEpochError):
        restored.open(late, now=cell.now)


# -- forward secrecy -------------------------------------------------------------------


def test_saved_state_cannot_decrypt_messages_already_read(cell: Cell) -> None:
    """A seized phone: restore the state and try every captured ciphertext it has read."""
    bob = cell.members["bob"]
    before = bob.cell.to_bytes()
    captured = [cell.send("alice", b"secret %d" % i) for i in range(5)]
    for i in (4, 0, 2):  # read out of order: 1 and 3 stay as skipped keys
        bob.cell.open(captured[i], now=cell.now)
    saved = bob.cell.to_bytes()
    restored = CellCrypto.from_bytes(saved, bob.identity)
    for i in (0, 2, 4):
        with pytest.raises(ReplayError):
            restored.open(captured[i], now=cell.now)
    # The unread ones still open: forward secrecy does not lose messages.
    assert restored.open(captured[1], now=cell.now).plaintext == b"secret 1"  # type: ignore[union-attr]
    # An oracle: the state from before the messages derives every key. None of the keys
    # of a read message, and none of the chain keys up to the last one read, is in `saved`.
    earlier = CellCrypto.from_bytes(before, bob.identity)
    assert earlier.open(captured[0], now=cell.now).plaintext == b"secret 0"  # type: ignore[union-attr]
    earlier = CellCrypto.from_bytes(before, bob.identity)
    epoch = earlier._s.epochs[earlier.epoch]
    chain = epoch.chains[cell["alice"].me.member_id].chain_key.copy()
    materials, chain_keys = [], []
    for _ in range(5):
        chain_keys.append(chain.export())
        materials.append(message_material(chain))
        step_chain(chain)
    for i in (0, 2, 4):
        assert materials[i][:32] not in saved
    for i in (1, 3):
        assert materials[i][:32] in saved  # skipped keys are kept until used
    for chain_key in chain_keys:
        assert chain_key not in saved


def test_removed_member_cannot_seal(cell: Cell) -> None:
    cell.remove("bob")
    with pytest.raises(RemovedError):
        cell["bob"].seal(1, b"x", expires_at=int(cell.now) + 60, now=cell.now)
