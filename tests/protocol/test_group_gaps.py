"""What should have arrived and has not, and what was signed twice (issue 9, findings 4 to 7).

docs/protocol.md §G10.1-§G10.3, driven through `CellCrypto` as a client drives it: a
relay that withholds a message from one member (`Missing` after the grace period, the
message still accepted if it comes later), a withheld epoch change (`Behind`), a sender
that signs two different bodies for one counter (`EquivocationError` naming it, while a
second copy stays a quiet `ReplayError`), and skipped keys that leave the saved state
once their envelope can no longer be live.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cellrelay.protocol.cell._envelope import Kind
from cellrelay.protocol.cell._errors import (
    BadSignatureError,
    EquivocationError,
    ExpiredError,
    ReplayError,
)
from cellrelay.protocol.cell._group import CellCrypto
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._outcomes import Behind, Missing
from cellrelay.protocol.cell._receiver import (
    BEHIND_GRACE,
    DEFAULT_MAX_TTL,
    DIGEST_WINDOW,
    GAP_GRACE,
    SKIPPED_KEY_SLACK,
)
from cellrelay.protocol.cell._state import STATE_VERSION, read_state

from .group_harness import NOW, TTL, Cell, Opened, Pending, new_keys

DAY = 24 * 3600.0
VECTORS = Path(__file__).parent.parent / "vectors"


def withhold_from(cell: Cell, sender: str, victim: str, text: bytes) -> bytes:
    """Seal a message that the relay delivers to everyone but `victim`; return it."""
    envelope = cell[sender].seal(Kind.ALERT, text, expires_at=int(cell.now) + TTL, now=cell.now)
    for name, member in cell.members.items():
        if name not in (sender, victim):
            member.results.append(member.cell.open(envelope, now=cell.now))
    return envelope


def skipped_keys(cell: CellCrypto, identity: Identity) -> dict[bytes, list[int]]:
    """The skipped counters in a member's *saved* state, by sender (every epoch)."""
    state = read_state(cell.to_bytes(), identity.member_id)
    found: dict[bytes, list[int]] = {}
    for epoch in state.epochs.values():
        for sender, chain in epoch.chains.items():
            if chain.skipped:
                found.setdefault(sender, []).extend(chain.skipped)
    return found


# -- finding 4: withheld messages are reported ----------------------------------------------


def test_a_message_withheld_from_one_member_is_reported_after_the_grace_period(
    cell: Cell,
) -> None:
    admin = cell.members["admin"].identity
    cell.send("admin", b"m0")
    cell.sync()
    withheld = withhold_from(cell, "admin", "bob", b"m1 withheld from bob")
    cell.send("admin", b"m2")
    cell.sync()
    bob = cell["bob"]
    assert cell.members["bob"].texts() == [b"m0", b"m2"]
    assert cell.members["alice"].texts() == [b"m0", b"m1 withheld from bob", b"m2"]
    # Within the grace period: it may still come (a fetch-again, a reconnect).
    assert bob.check(NOW + GAP_GRACE - 1) == ()
    (notice,) = bob.check(NOW + GAP_GRACE)
    assert notice == Missing(sender=admin.info, epoch=bob.epoch, count=1)
    assert bob.check(NOW + GAP_GRACE + 60) == ()  # once
    for name in ("admin", "alice"):
        assert cell[name].check(NOW + GAP_GRACE) == ()
    # It comes after all: accepted normally, marked as one that had been reported.
    late = bob.open(withheld, now=NOW + GAP_GRACE + 61)
    assert isinstance(late, Opened)
    assert late.plaintext == b"m1 withheld from bob"
    assert late.recovered
    with pytest.raises(ReplayError):
        bob.open(withheld, now=NOW + GAP_GRACE + 62)


def test_a_reported_gap_survives_a_restart_without_being_reported_again(cell: Cell) -> None:
    withhold_from(cell, "admin", "bob", b"m0 withheld")
    withhold_from(cell, "admin", "bob", b"m1 withheld")
    cell.send("admin", b"m2")
    cell.sync()
    bob = cell.members["bob"]
    (notice,) = bob.cell.check(NOW + GAP_GRACE)
    assert isinstance(notice, Missing)
    assert notice.count == 2
    restored = CellCrypto.from_bytes(bob.cell.to_bytes(), bob.identity)
    assert restored.check(NOW + GAP_GRACE + 1) == ()


def test_reordering_within_the_grace_period_reports_nothing(cell: Cell) -> None:
    first = cell["admin"].seal(Kind.ALERT, b"first", expires_at=int(NOW) + TTL, now=NOW)
    cell.send("admin", b"second")
    cell.sync()
    bob = cell["bob"]
    assert isinstance(bob.open(first, now=NOW + GAP_GRACE - 1), Opened)
    assert bob.check(NOW + 10 * GAP_GRACE) == ()


def test_a_gap_that_may_have_expired_while_away_is_not_reported(cell: Cell) -> None:
    """The sender's previous message came before this member's presence began: excused."""
    cell.send("admin", b"m0")
    cell.sync()
    withhold_from(cell, "admin", "bob", b"m1 expired while bob was away")
    m2 = cell["admin"].seal(Kind.ALERT, b"m2", expires_at=int(NOW) + TTL, now=NOW)
    bob = cell["bob"]
    assert isinstance(bob.open(m2, now=NOW + 5, present_since=NOW + 1), Opened)
    assert bob.check(NOW + 10 * GAP_GRACE) == ()
    # The next gap, with the previous message read while present, is owed again.
    withhold_from(cell, "admin", "bob", b"m3 withheld while bob reads")
    m4 = cell["admin"].seal(Kind.ALERT, b"m4", expires_at=int(NOW) + TTL, now=NOW)
    assert isinstance(bob.open(m4, now=NOW + 6, present_since=NOW + 1), Opened)
    (notice,) = bob.check(NOW + 6 + GAP_GRACE)
    assert isinstance(notice, Missing)
    assert notice.count == 1


# -- finding 5: a withheld epoch change is noticed -----------------------------------------


def test_envelopes_of_a_newer_epoch_that_cannot_open_raise_behind(cell: Cell) -> None:
    """The relay keeps the removal of alice from bob: bob sees the new epoch's envelopes."""
    alice_id = cell.members["alice"].identity.member_id
    change = cell["admin"].remove_member(alice_id, now=NOW, new_group_keys=new_keys(9))
    cell.post_control(change)
    cell.sync(["admin"])  # admin moves on; bob's control mailbox is withheld
    new_epoch = cell["admin"].epoch
    envelope = cell.send("admin", b"in the new epoch")
    bob = cell["bob"]
    assert isinstance(bob.open(envelope, now=NOW), Pending)
    assert bob.check(NOW + BEHIND_GRACE - 1) == ()
    assert bob.check(NOW + BEHIND_GRACE) == (Behind(epoch=new_epoch - 1, newer=new_epoch, count=1),)
    assert bob.check(NOW + BEHIND_GRACE + 1) == ()  # once per newer epoch
    # Once the change arrives, the envelope opens and nothing more is said.
    cell.members["bob"].group_cursor = len(cell.group)
    cell.sync(["bob"])
    assert bob.epoch == new_epoch
    assert bob.check(NOW + 2 * BEHIND_GRACE) == ()


# -- finding 6: equivocation ---------------------------------------------------------------


def test_two_signed_bodies_for_one_counter_name_the_sender(cell: Cell) -> None:
    admin = cell.members["admin"]
    # A restored backup of the admin's device: the same chain, sealing again.
    backup = CellCrypto.from_bytes(admin.cell.to_bytes(), admin.identity)
    first = cell.send("admin", b"resolved: false alarm")
    cell.sync()
    second = backup.seal(Kind.ALERT, b"agents at the school", expires_at=int(NOW) + TTL, now=NOW)
    for name in ("alice", "bob"):
        with pytest.raises(EquivocationError) as caught:
            cell[name].open(second, now=NOW)
        assert caught.value.sender == admin.identity.info
        assert caught.value.counter == 0
        assert caught.value.epoch == cell[name].epoch
        # The same envelope again is a duplicate: quiet, as before.
        with pytest.raises(ReplayError):
            cell[name].open(first, now=NOW)


def test_equivocation_is_seen_after_a_restart_and_also_for_a_late_message(cell: Cell) -> None:
    admin = cell.members["admin"]
    backup = CellCrypto.from_bytes(admin.cell.to_bytes(), admin.identity)
    late = withhold_from(cell, "admin", "bob", b"m0 late")
    cell.send("admin", b"m1")
    cell.sync()
    bob = cell.members["bob"]
    assert isinstance(bob.cell.open(late, now=NOW), Opened)  # from its skipped key
    restored = CellCrypto.from_bytes(bob.cell.to_bytes(), bob.identity)
    other = backup.seal(Kind.ALERT, b"m0 other", expires_at=int(NOW) + TTL, now=NOW)
    with pytest.raises(EquivocationError):
        restored.open(other, now=NOW)


def test_a_second_envelope_not_signed_by_the_sender_is_a_bad_signature(cell: Cell) -> None:
    envelope = bytearray(cell.send("admin", b"m0"))
    cell.sync()
    envelope[-1] ^= 1  # a different body; the signature no longer matches
    with pytest.raises(BadSignatureError):
        cell["bob"].open(bytes(envelope), now=NOW)


def test_digests_are_kept_for_a_window_of_counters(cell: Cell) -> None:
    admin = cell.members["admin"]
    backup = CellCrypto.from_bytes(admin.cell.to_bytes(), admin.identity)
    for n in range(DIGEST_WINDOW + 1):
        cell.send("admin", b"m%d" % n)
    cell.sync()
    state = read_state(cell["bob"].to_bytes(), cell.members["bob"].identity.member_id)
    chain = state.epochs[cell["bob"].epoch].chains[admin.identity.member_id]
    assert sorted(chain.digests) == list(range(1, DIGEST_WINDOW + 1))
    # Counter 0 is out of the window: its second body is refused as before, quietly.
    other = backup.seal(Kind.ALERT, b"other m0", expires_at=int(NOW) + TTL, now=NOW)
    with pytest.raises(ReplayError):
        cell["bob"].open(other, now=NOW)


# -- finding 7: skipped keys expire --------------------------------------------------------


def test_skipped_keys_leave_the_saved_state_once_their_envelope_cannot_be_live(
    cell: Cell,
) -> None:
    admin_id = cell.members["admin"].identity.member_id
    bob = cell.members["bob"]
    withhold_from(cell, "admin", "bob", b"m0 withheld")
    cell.send("admin", b"m1")
    cell.sync()
    assert skipped_keys(bob.cell, bob.identity) == {admin_id: [0]}
    bob.cell.check(NOW + 6 * DAY)
    assert skipped_keys(bob.cell, bob.identity) == {admin_id: [0]}
    bob.cell.check(NOW + 8 * DAY)  # the relay's 7 days plus slack have passed
    assert skipped_keys(bob.cell, bob.identity) == {}
    assert DEFAULT_MAX_TTL + SKIPPED_KEY_SLACK < 8 * DAY


def test_opening_anything_also_deletes_skipped_keys_past_their_life(cell: Cell) -> None:
    bob = cell.members["bob"]
    bob.cell.set_max_ttl(3600)
    withhold_from(cell, "admin", "bob", b"m0 withheld")
    cell.send("admin", b"m1")
    cell.sync()
    assert skipped_keys(bob.cell, bob.identity)
    later = NOW + 3600 + SKIPPED_KEY_SLACK
    envelope = cell["alice"].seal(Kind.ALERT, b"later", expires_at=int(later) + TTL, now=later)
    assert isinstance(bob.cell.open(envelope, now=later), Opened)
    assert skipped_keys(bob.cell, bob.identity) == {}


def test_a_skipped_key_deleted_on_time_loses_nothing_live(cell: Cell) -> None:
    """What arrives after the deadline had expired anyway: refused as expired, not missing."""
    bob = cell.members["bob"]
    bob.cell.set_max_ttl(TTL)
    late = withhold_from(cell, "admin", "bob", b"m0 withheld")
    cell.send("admin", b"m1")
    cell.sync()
    after = NOW + TTL + SKIPPED_KEY_SLACK
    bob.cell.check(after)
    with pytest.raises(ReplayError):  # its key is gone; it had expired (NOW + TTL) anyway
        bob.cell.open(late, now=after)
    with pytest.raises(ExpiredError):
        cell["alice"].open(
            cell["admin"].seal(Kind.ALERT, b"x", expires_at=int(NOW) + TTL, now=NOW), now=after
        )


def test_a_late_message_within_the_lateness_keeps_its_skipped_key_across_two_hour_skews(
    cell: Cell,
) -> None:
    """Findings 1 and 7 together: the relay two hours fast stamps expiries, Bob's earlier
    clock (his device) is two hours slow, and his client allows 900 s of lateness (§C7).
    A withheld message that the relay delivers just inside that lateness opens from its
    skipped key: the key outlives every envelope that can still open (§G10.2), whatever
    the two clocks' disagreement within the ±2 h the issue allows."""
    bob = cell.members["bob"]
    bob.cell.set_max_ttl(TTL)
    bob.cell.lateness = 900
    stamp = cell.now + 2 * 3600  # the relay's (and so the sender's) clock
    bob_now = cell.now - 2 * 3600  # Bob's earlier clock
    expires_at = int(stamp) + TTL
    withheld = cell["admin"].seal(Kind.ALERT, b"m0 withheld", expires_at=expires_at, now=stamp)
    after = cell["admin"].seal(Kind.ALERT, b"m1", expires_at=expires_at, now=stamp)
    assert isinstance(bob.cell.open(after, now=bob_now), Opened)  # the gap, noticed
    for now in range(int(bob_now), expires_at + 900, 600):  # the client checks every minute
        bob.cell.check(now)
    last = expires_at + 899
    bob.cell.check(last)
    late = bob.cell.open(withheld, now=last)
    assert isinstance(late, Opened)
    assert late.plaintext == b"m0 withheld"
    # Its key is burned now; anything past the lateness is refused as before.
    with pytest.raises(ExpiredError):
        cell["alice"].open(withheld, now=expires_at + 900)


def test_a_version_1_state_loads_and_its_skipped_keys_get_a_lifetime() -> None:
    """A state saved before issue 9 (tests/vectors/cell-state-v1.json, made by commit 412a0a6)."""
    vector = json.loads((VECTORS / "cell-state-v1.json").read_text())
    identity = Identity.from_seeds(
        bytes.fromhex(vector["sign_seed"]), bytes.fromhex(vector["dh_private"]), "bob"
    )
    data = bytes.fromhex(vector["state"])
    assert data[0] == 1
    now = vector["now"]
    bob = CellCrypto.from_bytes(data, identity)
    assert bob.to_bytes()[0] == STATE_VERSION
    assert bob.check(now + 10 * GAP_GRACE) == ()  # an old gap is not news
    late = bob.open(bytes.fromhex(vector["withheld"]), now=now + 10)
    assert isinstance(late, Opened)
    assert late.plaintext == b"m1 withheld"
    assert not late.recovered
    # Another load: the unknown times are set at the first look, then run a full lifetime.
    again = CellCrypto.from_bytes(data, identity)
    upgraded = now + 30 * DAY
    again.check(upgraded)
    assert skipped_keys(again, identity)
    again.check(upgraded + DEFAULT_MAX_TTL + SKIPPED_KEY_SLACK)
    assert skipped_keys(again, identity) == {}


def test_a_distribution_again_moves_the_chain_past_counters_never_used(cell: Cell) -> None:
    """§G8.2: a sender that skipped counters (after a crash) says so; no gap, no report."""
    cell.send("admin", b"m0")
    cell.sync()
    admin = cell["admin"]
    epoch, counter = admin.send_position()
    assert admin.skip_sending_to(epoch, counter + 31) == 31
    again = admin.distribution(now=NOW)
    cell.group.append(again)
    cell.send("admin", b"m32")
    cell.sync()
    bob = cell.members["bob"]
    assert bob.texts()[-1] == b"m32"
    assert skipped_keys(bob.cell, bob.identity) == {}
    assert bob.cell.check(NOW + 10 * GAP_GRACE) == ()
    # The same distribution once more, or an older one, changes nothing: a replay.
    with pytest.raises(ReplayError):
        bob.cell.open(again, now=NOW)


def test_a_distribution_whose_chain_key_does_not_follow_is_a_replay(cell: Cell) -> None:
    """A second distribution with another chain (a restored backup's fresh epoch state).

    Only an epoch without a sender tree (entered before state version 3) has distributions
    carrying chain keys; in one with a tree every chain is derived, so none can diverge.
    """
    for member in cell.members.values():
        member.cell._s.epochs[member.cell.epoch].tree = None  # as if entered before version 3
    cell.send("admin", b"m0")
    cell.sync()
    admin = cell.members["admin"]
    fork = CellCrypto.from_bytes(admin.cell.to_bytes(), admin.identity)
    epoch, counter = fork.send_position()
    fork.skip_sending_to(epoch, counter + 5)
    state = fork._s.epochs[fork.epoch].own
    assert state is not None
    state.chain_key.step(b"not the chain")  # a chain that does not continue the real one
    with pytest.raises(ReplayError):
        cell["bob"].open(fork.distribution(now=NOW), now=NOW)
    cell.send("admin", b"m1")
    cell.sync()
    assert cell.members["bob"].texts()[-1] == b"m1"
