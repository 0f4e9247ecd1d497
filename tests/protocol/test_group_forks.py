"""The hash rule for competing epoch changes on a cell on several relays (issue 13).

docs/design.md, "A cell on several relays": two admins cut off from each other's relays
both change epoch E; every member applies the first it reads, and within the settle window
goes back to E for a sibling whose envelope has the lower BLAKE2b-256.
"""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellrelay.protocol._crypto import blake2b
from cellrelay.protocol.cell._errors import (
    BadSignatureError,
    ForkedEpochError,
    GroupError,
    StaleControlError,
    TamperedError,
)
from cellrelay.protocol.cell._group import GRACE_PERIOD, CellCrypto
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._membership import Role

from .group_harness import Cell

NAMES = ("admin", "carol", "alice", "bob")


@pytest.fixture
def cell() -> Cell:
    """A cell of two admins (admin, carol) and two members (alice, bob)."""
    c = Cell()
    c.join("carol", role=Role.ADMIN)
    c.join("alice")
    c.join("bob")
    return c


def _siblings(cell: Cell) -> tuple[bytes, bytes, Identity, Identity]:
    """Admin adds eve and carol adds fred, both on epoch E: (winner, loser, their subjects)."""
    for name in NAMES:
        cell[name].settle_window = GRACE_PERIOD
    eve, fred = Identity.generate("eve"), Identity.generate("fred")
    by_admin = cell["admin"].add_member(eve.info, now=cell.now)
    by_carol = cell["carol"].add_member(fred.info, now=cell.now)
    if blake2b(by_admin) < blake2b(by_carol):
        return by_admin, by_carol, eve, fred
    return by_carol, by_admin, fred, eve


def test_every_member_settles_on_the_lowest_hash_whichever_it_read_first(cell: Cell) -> None:
    winner, loser, won, lost = _siblings(cell)
    loser_admin = "carol" if won.name == "eve" else "admin"
    epoch = cell["alice"].epoch
    # Alice and the loser's author read the loser first (their relay had it), Bob and the
    # winner's author the winner: each then reads the other.
    for name in NAMES:
        member = cell[name]
        first, second = (loser, winner) if name in ("alice", loser_admin) else (winner, loser)
        update = member.open_control(first, now=cell.now)
        assert update.epoch == epoch + 1
        assert update.superseded is None
        if first is loser:
            switched = member.open_control(second, now=cell.now + 5)
            assert switched.epoch == epoch + 1
            assert switched.superseded == blake2b(loser)
            assert switched.subject == won.info
            assert switched.lost_ours == (name == loser_admin)
        else:
            with pytest.raises(StaleControlError) as caught:
                member.open_control(second, now=cell.now + 5)
            assert not isinstance(caught.value, ForkedEpochError)
            assert not caught.value.ours
    heads = {cell[name].membership.head_hash for name in NAMES}
    assert len(heads) == 1
    assert all(lost.member_id not in {m.member_id for m in cell[n].members} for n in NAMES)
    # The converged state works: a message sealed by one opens for every other.
    announced = cell["alice"].announcement(now=cell.now + 6)
    for name in ("admin", "carol", "bob"):
        cell[name].open(announced, now=cell.now + 6)
    sent = cell["alice"].seal(1, b"after the fork", expires_at=int(cell.now) + 60, now=cell.now + 6)
    for name in ("admin", "carol", "bob"):
        assert cell[name].open(sent, now=cell.now + 6).plaintext == b"after the fork"  # type: ignore[union-attr]
    # The loser read again is a quiet re-delivery, also for its author.
    for name in NAMES:
        with pytest.raises(StaleControlError) as again:
            cell[name].open_control(loser, now=cell.now + 7)
        assert not again.value.ours
        assert not isinstance(again.value, ForkedEpochError)
    # Its author redoes the operation on the settled state, and it applies.
    redo = cell[loser_admin].add_member(lost.info, now=cell.now + 8)
    assert cell["bob"].open_control(redo, now=cell.now + 8).subject == lost.info


def test_a_sibling_after_the_settle_window_is_reported_not_applied(cell: Cell) -> None:
    winner, loser, _, _ = _siblings(cell)
    alice = cell["alice"]
    alice.open_control(loser, now=cell.now)
    head = alice.membership.head_hash
    alice.check(cell.now + GRACE_PERIOD + 1)
    with pytest.raises(ForkedEpochError):
        alice.open_control(winner, now=cell.now + GRACE_PERIOD + 2)
    assert alice.membership.head_hash == head


def test_without_a_settle_window_the_first_change_read_stays(cell: Cell) -> None:
    """A cell on one relay: the relay's order decides, as before (settle_window 0)."""
    winner, loser, _, _ = _siblings(cell)
    alice = cell["alice"]
    alice.settle_window = 0.0
    alice.open_control(loser, now=cell.now)
    with pytest.raises(StaleControlError) as caught:
        alice.open_control(winner, now=cell.now + 1)
    assert not isinstance(caught.value, ForkedEpochError)


def test_a_forged_sibling_changes_nothing(cell: Cell) -> None:
    winner, loser, _, _ = _siblings(cell)
    bob = cell["bob"]
    bob.open_control(loser, now=cell.now)
    before = bob.to_bytes()
    # Damaged at byte 200, 201, ...: the first with a lower hash than the change applied
    # is opened under the kept state and refused; one with a higher hash loses anyway and
    # is dropped unopened (stale). Neither changes anything.
    forgeries: dict[bool, bytes] = {}
    for position in range(200, 400):
        forged = bytearray(winner)
        forged[position] ^= 0x04
        forgeries.setdefault(blake2b(forged) < blake2b(loser), bytes(forged))
    with pytest.raises((TamperedError, BadSignatureError)):
        bob.open_control(forgeries[True], now=cell.now + 1)
    with pytest.raises(StaleControlError):
        bob.open_control(forgeries[False], now=cell.now + 1)
    assert bob.to_bytes() == before
    # The state kept for the window is intact: the real sibling still wins.
    assert bob.open_control(winner, now=cell.now + 2).superseded == blake2b(loser)


def test_the_state_kept_for_the_window_survives_nothing_but_memory(cell: Cell) -> None:
    """A restart within the window forgets E: the sibling is then reported (docs/design.md)."""
    winner, loser, _, _ = _siblings(cell)
    alice = cell.members["alice"]
    alice.cell.open_control(loser, now=cell.now)
    restored = CellCrypto.from_bytes(alice.cell.to_bytes(), alice.identity)
    restored.settle_window = GRACE_PERIOD
    with pytest.raises(StaleControlError):
        restored.open_control(winner, now=cell.now + 1)


@functools.cache
def _fixed() -> tuple[bytes, bytes, bytes, Identity, float]:
    """Two siblings and Alice's state before either, made once for the property below."""
    c = Cell()
    c.join("carol", role=Role.ADMIN)
    c.join("alice")
    c.join("bob")
    winner, loser, _, _ = _siblings(c)
    alice = c.members["alice"]
    return winner, loser, alice.cell.to_bytes(), alice.identity, c.now


@given(position=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
@settings(max_examples=50, deadline=None)
def test_a_damaged_sibling_is_refused_and_changes_nothing(position: int, bit: int) -> None:
    winner, loser, alice_state, identity, now = _fixed()
    alice = CellCrypto.from_bytes(alice_state, identity)
    alice.settle_window = GRACE_PERIOD
    alice.open_control(loser, now=now)
    before = alice.to_bytes()
    damaged = bytearray(winner)
    damaged[position % len(damaged)] ^= 1 << bit
    with pytest.raises(GroupError):
        alice.open_control(bytes(damaged), now=now)
    assert alice.to_bytes() == before
    assert alice.open_control(winner, now=now).superseded == blake2b(loser)


def test_a_late_sibling_that_loses_anyway_is_quiet_and_one_that_would_win_is_reported(
    cell: Cell,
) -> None:
    """After a later change, a sibling of an earlier epoch cannot be switched to: one with a
    higher hash than the change applied lost under the rule anyway (no alarm), one with a
    lower hash means the other side settled on it (a fork, reported)."""
    winner, loser, _, _ = _siblings(cell)
    bob, alice = cell["bob"], cell["alice"]
    bob.open_control(winner, now=cell.now)
    alice.open_control(loser, now=cell.now)
    cell["admin"].open_control(winner, now=cell.now)
    later = cell["admin"].rotate(now=cell.now)
    bob.open_control(later, now=cell.now + 1)
    with pytest.raises(StaleControlError) as quiet:
        bob.open_control(loser, now=cell.now + 2)
    assert not isinstance(quiet.value, ForkedEpochError)
    # Alice read the loser first and a later change on top of it would not open for her:
    # she switches to the winner within the window instead; Bob's side is the same.
    assert alice.open_control(winner, now=cell.now + 2).superseded == blake2b(loser)
    alice.open_control(later, now=cell.now + 3)
    assert alice.membership.head_hash == bob.membership.head_hash
    carol = cell["carol"]
    carol.open_control(loser, now=cell.now)
    with pytest.raises(ForkedEpochError):  # her window is over: the winner cannot apply
        carol.open_control(winner, now=cell.now + GRACE_PERIOD + 5)
