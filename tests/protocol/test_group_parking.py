"""Parked envelopes (docs/protocol.md §G10 step 2 and 9, §G14): bounded per claim and in total.

Nobody, the relay included, can take the room genuine envelopes need: envelopes of a
future epoch, which the relay can make up without any key, share half the buffer; each
sender a member's header key names gets a quarter. What does not fit is refused and
changes nothing, so the caller can offer it again once the epoch or the key has come.
"""

from __future__ import annotations

import pytest

from cellrelay.protocol._crypto import random_bytes
from cellrelay.protocol.cell._envelope import Kind
from cellrelay.protocol.cell._errors import PendingOverflowError, TamperedError
from cellrelay.protocol.cell._group import CellCrypto
from cellrelay.protocol.cell._outcomes import EpochUpdate, Opened, Pending
from cellrelay.protocol.cell._receiver import (
    MAX_PENDING,
    MAX_PENDING_PER_SENDER,
    MAX_PENDING_UNAUTHENTICATED,
)

from .group_harness import Cell

EXPIRES = 2**40


@pytest.fixture
def cell() -> Cell:
    """A cell of admin, alice, carol, dave and bob; bob is the one who parks."""
    c = Cell()
    for name in ("alice", "carol", "dave", "bob"):
        c.join(name)
    return c


def _rotate_without_keys_for_bob(cell: Cell) -> dict[str, bytes]:
    """Everyone, bob included, enters the next epoch; bob gets nobody's distribution.

    Returns each member's distribution, for the test to hand bob later.
    """
    change = cell["admin"].rotate(now=cell.now)
    distributions = {}
    for name, member in cell.members.items():
        update = member.cell.open_control(change, now=cell.now)
        assert update.distribution is not None
        distributions[name] = update.distribution
    for name, member in cell.members.items():
        for sender, distribution in distributions.items():
            if sender != name and name != "bob":
                member.cell.open(distribution, now=cell.now)
    return distributions


def _fake_future(cell: Cell, size: int = 512) -> bytes:
    """What a relay can make up without any key: a version, an epoch, random bytes."""
    epoch = cell["bob"].epoch + 1
    return b"\x01" + epoch.to_bytes(4, "big") + random_bytes(size - 5)


def test_a_relay_fills_only_the_unauthenticated_share(cell: Cell) -> None:
    bob = cell["bob"]
    for n in range(MAX_PENDING_UNAUTHENTICATED):
        assert bob.open(_fake_future(cell), now=cell.now, ref=n + 1) == Pending(bob.epoch + 1)
    before = bob.to_bytes()
    with pytest.raises(PendingOverflowError, match="claim"):
        bob.open(_fake_future(cell), now=cell.now, ref=999)
    assert bob.to_bytes() == before  # refused: nothing changed
    assert bob.parked_refs() == list(range(1, MAX_PENDING_UNAUTHENTICATED + 1))
    # Genuine envelopes whose header a member's key opened still have their own room.
    distributions = _rotate_without_keys_for_bob(cell)
    message = cell["alice"].seal(Kind.ALERT, b"genuine", expires_at=EXPIRES, now=cell.now)
    # Entering the epoch released the made-up ones: refused (tampered), and gone.
    assert bob.parked_refs() == []
    assert bob.open(message, now=cell.now, ref=2000) == Pending(bob.epoch)
    released = bob.open(distributions["alice"], now=cell.now)
    assert isinstance(released, Opened)
    assert [r.plaintext for r in released.released if isinstance(r, Opened)] == [b"genuine"]


def test_made_up_envelopes_come_out_as_refusals_when_their_epoch_arrives(cell: Cell) -> None:
    bob = cell["bob"]
    for _ in range(3):
        bob.open(_fake_future(cell), now=cell.now)
    change = cell["admin"].rotate(now=cell.now)
    cell["admin"].open_control(change, now=cell.now)
    update = bob.open_control(change, now=cell.now)
    assert isinstance(update, EpochUpdate)
    assert [type(r) for r in update.released] == [TamperedError] * 3


def test_each_claimed_sender_gets_a_quarter_and_all_together_the_whole(cell: Cell) -> None:
    distributions = _rotate_without_keys_for_bob(cell)
    bob = cell["bob"]
    kept: dict[str, list[bytes]] = {}
    ref = 0
    for sender in ("admin", "alice", "carol", "dave"):
        kept[sender] = []
        for _ in range(MAX_PENDING_PER_SENDER):
            envelope = cell[sender].seal(
                Kind.ALERT, sender.encode(), expires_at=EXPIRES, now=cell.now
            )
            ref += 1
            assert bob.open(envelope, now=cell.now, ref=ref) == Pending(bob.epoch)
            kept[sender].append(envelope)
        if sender == "admin":  # one over the share: refused, whatever room is left
            extra = cell["admin"].seal(Kind.ALERT, b"admin", expires_at=EXPIRES, now=cell.now)
            with pytest.raises(PendingOverflowError, match="claim"):
                bob.open(extra, now=cell.now, ref=10_000)
            kept["admin"].append(extra)
    assert len(bob.parked_refs()) == MAX_PENDING
    # Full: even an envelope of a future epoch, whose share is empty, is refused.
    with pytest.raises(PendingOverflowError, match=r"too many parked envelopes$"):
        bob.open(_fake_future(cell), now=cell.now)
    # Nothing is lost: a refused envelope opens when offered again once its key came.
    result = bob.open(distributions["admin"], now=cell.now)
    assert isinstance(result, Opened)
    assert len(result.released) == MAX_PENDING_PER_SENDER
    again = bob.open(kept["admin"][-1], now=cell.now)
    assert isinstance(again, Opened)
    assert again.plaintext == b"admin"


def test_refs_follow_parked_envelopes_through_release_and_reparking(cell: Cell) -> None:
    bob = cell["bob"]
    # Two epochs ahead: released at the first change, parked again (its epoch is still ahead).
    change_1 = cell["admin"].rotate(now=cell.now)
    cell["admin"].open_control(change_1, now=cell.now)
    change_2 = cell["admin"].rotate(now=cell.now)
    cell["admin"].open_control(change_2, now=cell.now)
    far = cell["admin"].seal(Kind.ALERT, b"far", expires_at=EXPIRES, now=cell.now)
    near = _fake_future(cell)
    bob.open(far, now=cell.now, ref=7)
    bob.open(near, now=cell.now, ref=8)
    assert bob.parked_refs() == [7, 8]
    bob.open_control(change_1, now=cell.now)
    assert bob.parked_refs() == [7]  # 8 came out (a refusal); 7 waits for the next epoch


def test_a_state_saved_without_parked_envelopes_is_otherwise_the_same(cell: Cell) -> None:
    member = cell.members["bob"]
    for _ in range(5):
        member.cell.open(_fake_future(cell, 4096), now=cell.now, ref=3)
    full, light = member.cell.to_bytes(), member.cell.to_bytes(parked=False)
    assert len(full) - len(light) > 5 * 4096
    restored = CellCrypto.from_bytes(light, member.identity)
    assert restored.parked_refs() == []
    assert restored.to_bytes() == light


def test_keyed_senders_are_the_members_whose_key_arrived(cell: Cell) -> None:
    distributions = _rotate_without_keys_for_bob(cell)
    bob, ids = cell["bob"], {n: m.identity.member_id for n, m in cell.members.items()}
    assert bob.keyed_senders() == {ids["bob"]}
    bob.open(distributions["carol"], now=cell.now)
    assert bob.keyed_senders() == {ids["bob"], ids["carol"]}
    assert cell["admin"].keyed_senders() == set(ids.values())
