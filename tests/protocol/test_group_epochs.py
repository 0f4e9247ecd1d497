"""Epochs: joining, removal, promotion, rotation, races between admins, welcomes, saved state.

docs/protocol.md, Part 2, "Epoch changes" and "Welcome".
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest

from cellrelay.protocol._crypto import random_bytes
from cellrelay.protocol.cell._control import KEYS_OFFSET_V3, seal_welcome
from cellrelay.protocol.cell._envelope import Kind
from cellrelay.protocol.cell._epochs import welcome_content
from cellrelay.protocol.cell._errors import (
    BadSignatureError,
    EpochGapError,
    MalformedError,
    MembershipError,
    NotAdminError,
    RemovedError,
    StaleControlError,
    StaleEpochError,
    TamperedError,
    UnknownEpochError,
    WelcomeRefusedError,
)
from cellrelay.protocol.cell._group import CellCrypto
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._invite import WELCOME_LINGER
from cellrelay.protocol.cell._membership import Op, Role
from cellrelay.protocol.cell._state import STATE_VERSION

if TYPE_CHECKING:
    from collections.abc import Callable

from .group_harness import (
    CONTROL_READ_KEY,
    GROUP_KEYS,
    Cell,
    Opened,
    Pending,
    invite_of,
    new_keys,
)


def test_everyone_agrees_after_joins(cell: Cell) -> None:
    epochs = {cell[name].epoch for name in cell.members}
    assert epochs == {3}
    members = {tuple(m.member_id for m in cell[name].members) for name in cell.members}
    assert len(members) == 1
    assert {m.name for m in cell["bob"].members} == {"admin", "alice", "bob"}
    assert cell["bob"].name == "test cell"
    assert cell["bob"].group_keys == GROUP_KEYS
    assert cell["bob"].control_read_key == CONTROL_READ_KEY
    assert cell["bob"].admin_secrets == b""
    assert not cell["bob"].is_admin
    assert cell["bob"].membership.head_hash == cell["admin"].membership.head_hash
    cell.send("bob", b"hello")
    cell.sync()
    assert cell.members["alice"].texts() == [b"hello"]


def test_an_admin_joiner_gets_the_admin_secrets(cell: Cell) -> None:
    cell.join("carol", role=Role.ADMIN)
    assert cell["carol"].is_admin
    assert cell["carol"].admin_secrets == b"admin-secrets"
    assert cell["carol"].role_of(cell["alice"].me.member_id) is Role.MEMBER


def test_control_envelopes_have_one_size_class_for_small_cells(cell: Cell) -> None:
    """Version 3 pads a change to an envelope size class (§G6.2): 8,192 bytes from 1 to
    about 90 members, so small cells' changes all look alike."""
    assert {len(e) for e in cell.control} == {8192}
    big = Cell()
    for n in range(6):
        big.join(f"m{n}")
    assert {len(e) for e in big.control} == {8192}


def test_removed_member_reads_nothing_of_the_next_epoch(cell: Cell) -> None:
    bob = cell.members["bob"]
    bob_before_removal = CellCrypto.from_bytes(bob.cell.to_bytes(), bob.identity)
    cell.remove("bob")
    update = bob.updates[-1]
    assert not isinstance(update, Exception)
    assert update.removed_self
    assert update.distribution is None
    assert bob.cell.removed
    assert not bob.cell.is_admin
    alice_update = cell.members["alice"].updates[-1]
    assert not isinstance(alice_update, Exception)
    assert alice_update.change is Op.REMOVE
    assert alice_update.subject == bob.cell.me
    assert alice_update.group_keys == new_keys(7)
    assert cell["alice"].group_keys == new_keys(7)
    assert bob.cell.group_keys == GROUP_KEYS  # bob never saw the new mailbox keys
    secret = cell.send("alice", b"after the removal")
    cell.sync()
    assert b"after the removal" in cell.members["admin"].texts()
    # Bob, removed, and a copy of bob that never processed its removal: neither opens the
    # new epoch's distributions or messages.
    new_epoch = [e for e in cell.group if e[1:5] == cell["alice"].epoch.to_bytes(4, "big")]
    assert secret in new_epoch
    assert len(new_epoch) == 3  # admin's and alice's distributions, then the message
    for envelope in new_epoch:
        with pytest.raises(UnknownEpochError):
            bob.cell.open(envelope, now=cell.now)
    # The copy cannot tell yet: it parks them, learns from the change it has no box, and
    # never opens them.
    for envelope in new_epoch:
        assert isinstance(bob_before_removal.open(envelope, now=cell.now), Pending)
    late_update = bob_before_removal.open_control(cell.control[-1], now=cell.now)
    assert late_update.removed_self
    assert late_update.released == ()
    for envelope in new_epoch:
        with pytest.raises(UnknownEpochError):
            bob_before_removal.open(envelope, now=cell.now)


def test_removed_member_cannot_produce_a_message_others_accept(cell: Cell) -> None:
    bob = cell.members["bob"]
    before = CellCrypto.from_bytes(bob.cell.to_bytes(), bob.identity)
    sent_while_member = before.seal(1, b"answer", expires_at=int(cell.now) + 60, now=cell.now)
    cell.remove("bob")
    # What he sealed while a member stays valid for that epoch's history (issue 9,
    # finding 3): judged by the envelope's epoch, so a member catching up after the
    # removal computes the same roll-up as one that read it before.
    assert isinstance(cell["alice"].open(sent_while_member, now=cell.now + 1), Opened)
    # Bob still holds the old epoch's keys and his chain in it, and seals with them. The
    # relay closed the old mailbox to him (§C6 item 4); only a relay colluding with him
    # can still deliver this, and only within the grace window (threat model §3.5).
    old_epoch_message = before.seal(1, b"fake alert", expires_at=int(cell.now) + 60, now=cell.now)
    with pytest.raises(StaleEpochError):  # after the window: the old epoch is gone altogether
        cell["alice"].open(old_epoch_message, now=cell.now + 601)
    with pytest.raises(RemovedError):
        bob.cell.seal(1, b"x", expires_at=int(cell.now) + 60, now=cell.now)
    # He cannot forge a new-epoch envelope: he does not have its header key. A guess
    # (his old header key, relabelled with the new epoch number) fails to authenticate.
    relabelled = bytearray(old_epoch_message)
    relabelled[1:5] = cell["alice"].epoch.to_bytes(4, "big")
    with pytest.raises(TamperedError):
        cell["alice"].open(bytes(relabelled), now=cell.now)


def test_removed_admin_cannot_change_the_cell(cell: Cell) -> None:
    cell.join("carol", role=Role.ADMIN)
    carol = cell.members["carol"]
    before = CellCrypto.from_bytes(carol.cell.to_bytes(), carol.identity)
    cell.remove("carol")
    with pytest.raises(RemovedError):
        carol.cell.rotate(now=cell.now)
    with pytest.raises(RemovedError):
        carol.cell.open_control(cell.control[-1], now=cell.now)
    # With her old state she can still sign an epoch change for the epoch she knew;
    # the others have moved past it.
    stale = before.add_member(Identity.generate("eve").info, now=cell.now)
    with pytest.raises(StaleControlError) as caught:
        cell["alice"].open_control(stale, now=cell.now)
    assert not caught.value.ours


def test_an_admin_can_leave_while_another_remains(cell: Cell) -> None:
    cell.join("carol", role=Role.ADMIN)
    envelope = cell["carol"].remove_member(
        cell["admin"].me.member_id, now=cell.now, new_group_keys=new_keys(9)
    )
    cell.post_control(envelope)
    cell.sync()
    assert cell["admin"].removed
    assert cell["alice"].admins == {cell["carol"].me.member_id}


def test_the_last_admin_cannot_leave_or_step_down(cell: Cell) -> None:
    admin = cell["admin"]
    with pytest.raises(MembershipError):
        admin.remove_member(admin.me.member_id, now=cell.now, new_group_keys=new_keys(1))
    with pytest.raises(MembershipError):
        admin.demote(admin.me.member_id, now=cell.now)


def test_only_admins_change_the_cell(cell: Cell) -> None:
    alice = cell["alice"]
    eve = Identity.generate("eve").info
    operations: list[Callable[[], bytes]] = [
        lambda: alice.add_member(eve, now=cell.now),
        lambda: alice.rotate(now=cell.now),
        lambda: alice.promote(alice.me.member_id, now=cell.now),
        lambda: alice.welcome_for(alice.me.member_id, now=cell.now, invite=cell.invite()),
        lambda: alice.remove_member(
            cell["bob"].me.member_id, now=cell.now, new_group_keys=new_keys(1)
        ),
    ]
    for operation in operations:
        with pytest.raises(NotAdminError):
            operation()


def test_a_member_forging_an_epoch_change_is_refused(cell: Cell) -> None:
    """Alice holds the control-header key of the epoch; she is not an admin."""
    alice = cell.members["alice"]
    alice.cell._s.membership = dataclasses.replace(
        alice.cell.membership, admins=frozenset({alice.identity.member_id})
    )
    forged = alice.cell.rotate(now=cell.now)  # her copy believes she is an admin
    with pytest.raises(MembershipError, match="admin"):
        cell["bob"].open_control(forged, now=cell.now)


def test_promotion_hands_over_the_admin_secrets_to_that_member_only(cell: Cell) -> None:
    cell.post_control(cell["admin"].promote(cell["alice"].me.member_id, now=cell.now))
    cell.sync()
    alice_update = cell.members["alice"].updates[-1]
    bob_update = cell.members["bob"].updates[-1]
    assert not isinstance(alice_update, Exception)
    assert not isinstance(bob_update, Exception)
    assert alice_update.change is Op.PROMOTE
    assert alice_update.admin_secrets == b"admin-secrets"
    assert bob_update.admin_secrets is None
    promoted = cell["alice"]
    assert (promoted.is_admin, promoted.admin_secrets) == (True, b"admin-secrets")
    # And back: a demoted admin's state forgets them.
    cell.post_control(cell["admin"].demote(cell["alice"].me.member_id, now=cell.now))
    cell.sync()
    demoted = cell["alice"]
    assert (demoted.is_admin, demoted.admin_secrets) == (False, b"")


def test_rotation_refreshes_every_key_and_optionally_the_mailbox_keys(cell: Cell) -> None:
    epoch = cell["bob"].epoch
    cell.post_control(cell["admin"].rotate(now=cell.now))
    cell.sync()
    cell.post_control(cell["admin"].rotate(now=cell.now, new_group_keys=new_keys(40)))
    cell.sync()
    assert cell["bob"].epoch == epoch + 2
    updates = [u for u in cell.members["bob"].updates[-2:] if not isinstance(u, Exception)]
    assert [u.change for u in updates] == [None, None]
    assert [u.group_keys for u in updates] == [None, new_keys(40)]
    cell.send("alice", b"after two rotations")
    cell.sync()
    assert cell.members["bob"].texts()[-1] == b"after two rotations"


def test_concurrent_admin_changes_are_settled_by_mailbox_order(cell: Cell) -> None:
    cell.join("carol", role=Role.ADMIN)
    eve, fred = Identity.generate("eve"), Identity.generate("fred")
    first = cell["admin"].add_member(eve.info, now=cell.now)
    second = cell["carol"].add_member(fred.info, now=cell.now)
    cell.post_control(first)
    cell.post_control(second)
    for name in ("admin", "carol", "alice", "bob"):
        member = cell.members[name]
        update = member.cell.open_control(first, now=cell.now)
        assert update.subject == eve.info
        with pytest.raises(StaleControlError) as caught:
            member.cell.open_control(second, now=cell.now)
        assert caught.value.ours == (name == "carol")
    assert {cell[name].membership.head_hash for name in ("admin", "carol", "alice", "bob")} == {
        cell["admin"].membership.head_hash
    }
    # Carol redoes hers on the new state, and it applies.
    again = cell["carol"].add_member(fred.info, now=cell.now)
    assert cell["alice"].open_control(again, now=cell.now).subject == fred.info


def test_a_missed_epoch_change_is_a_gap(cell: Cell) -> None:
    first = cell["admin"].rotate(now=cell.now)
    cell["admin"].open_control(first, now=cell.now)
    second = cell["admin"].rotate(now=cell.now)
    with pytest.raises(EpochGapError):
        cell["bob"].open_control(second, now=cell.now)


def test_tampered_epoch_changes_are_refused_and_change_nothing(cell: Cell) -> None:
    envelope = cell["admin"].rotate(now=cell.now)
    bob = cell["bob"]
    before = bob.to_bytes()
    # Every part: clear, sealed header, body, key section, bucket table, filler.
    positions = (0, 3, 10, 40, 200, 2000, KEYS_OFFSET_V3 + 40, 5000, 6500, len(envelope) - 1)
    for position in positions:
        forged = bytearray(envelope)
        forged[position] ^= 0x04
        with pytest.raises((MalformedError, TamperedError, BadSignatureError, EpochGapError)):
            bob.open_control(bytes(forged), now=cell.now)
    with pytest.raises(MalformedError):
        bob.open_control(envelope[:-1], now=cell.now)
    assert bob.to_bytes() == before
    assert bob.open_control(envelope, now=cell.now).epoch == bob.epoch


def test_a_redelivered_epoch_change_is_stale(cell: Cell) -> None:
    with pytest.raises(StaleControlError):
        cell["bob"].open_control(cell.control[-1], now=cell.now)


# -- welcomes ---------------------------------------------------------------------------


def test_a_welcome_opens_only_for_its_joiner(cell: Cell) -> None:
    carol = Identity.generate("carol")
    cell.post_control(cell["admin"].add_member(carol.info, now=cell.now))
    cell.sync()
    welcome = cell["admin"].welcome_for(
        carol.member_id, now=cell.now, invite=cell.invite(), extra=b"mailboxes"
    )
    with pytest.raises(TamperedError):
        CellCrypto.from_welcome(
            Identity.generate("carol"), welcome, now=cell.now, invite=cell.invite()
        )
    for position in (0, 5, 40, 100, len(welcome) - 1):
        forged = bytearray(welcome)
        forged[position] ^= 0x01
        with pytest.raises((TamperedError, MalformedError)):
            CellCrypto.from_welcome(carol, bytes(forged), now=cell.now, invite=cell.invite())
    with pytest.raises(MembershipError, match="inviter"):
        CellCrypto.from_welcome(
            carol, welcome, now=cell.now, invite=cell.invite(), inviter=cell["alice"].me.member_id
        )
    state, distribution = CellCrypto.from_welcome(
        carol, welcome, now=cell.now, invite=cell.invite(), inviter=cell["admin"].me.member_id
    )
    assert state.extra == b"mailboxes"
    assert state.epoch == cell["admin"].epoch
    assert isinstance(cell["alice"].open(distribution, now=cell.now), Opened)


def test_a_welcome_signed_by_a_non_admin_is_refused(cell: Cell) -> None:
    carol = Identity.generate("carol")
    cell.post_control(cell["admin"].add_member(carol.info, now=cell.now))
    cell.sync()
    content = welcome_content(
        cell["admin"]._s,  # only an admin keeps the epoch secret a welcome carries
        carol.member_id,
        now=cell.now,
        extra=b"",
        invite_binding=cell.invite().welcome_binding,
    )
    welcome = seal_welcome(
        signer=cell.members["alice"].identity,  # alice is a member, not an admin
        content=content,
        joiner_dh_pub=carol.dh_pub,
        ephemeral_private=bytearray(random_bytes(32)),
        nonce=random_bytes(24),
    )
    with pytest.raises(MembershipError, match="admin"):
        CellCrypto.from_welcome(carol, welcome, now=cell.now, invite=cell.invite())


def test_a_welcome_answers_one_invite_within_its_lifetime(cell: Cell) -> None:
    """Issue 9, finding 8: a welcome is bound to its invite and refused after its lifetime."""
    carol = Identity.generate("carol")
    cell.post_control(cell["admin"].add_member(carol.info, now=cell.now))
    cell.sync()
    invite = invite_of(cell["admin"], now=cell.now, ttl=3600, secret=b"\x07" * 32)
    welcome = cell["admin"].welcome_for(carol.member_id, now=cell.now, invite=invite)
    # Another invite of the same cell, from the same admin: its welcome is not this one's.
    other = invite_of(cell["admin"], now=cell.now, ttl=3600, secret=b"\x08" * 32)
    with pytest.raises(WelcomeRefusedError, match="invite"):
        CellCrypto.from_welcome(carol, welcome, now=cell.now, invite=other)
    # An invite naming another cell (same secret: only the cell id differs).
    elsewhere = dataclasses.replace(invite, cell_id=bytes(16))
    with pytest.raises(WelcomeRefusedError):
        CellCrypto.from_welcome(carol, welcome, now=cell.now, invite=elsewhere)
    # Past the invite's expiry plus the linger, even the right welcome is refused.
    late = cell.now + 3600 + WELCOME_LINGER + 1
    with pytest.raises(WelcomeRefusedError, match="lifetime"):
        CellCrypto.from_welcome(carol, welcome, now=late, invite=invite)
    # A welcome made after its invite expired (plus the linger) cannot answer it either.
    made_late = cell["admin"].welcome_for(
        carol.member_id, now=cell.now + 3600 + WELCOME_LINGER + 1, invite=invite
    )
    with pytest.raises(WelcomeRefusedError):
        CellCrypto.from_welcome(carol, made_late, now=cell.now, invite=invite)
    with pytest.raises(ValueError, match="another cell"):
        cell["admin"].welcome_for(carol.member_id, now=cell.now, invite=elsewhere)
    # A version 1 welcome (no binding) is refused as malformed before anything else.
    with pytest.raises(MalformedError):
        CellCrypto.from_welcome(carol, b"\x01" + welcome[1:], now=cell.now, invite=invite)
    state, _ = CellCrypto.from_welcome(carol, welcome, now=cell.now + 3600, invite=invite)
    assert state.epoch == cell["admin"].epoch


def test_welcomes_are_for_members_only(cell: Cell) -> None:
    stranger = Identity.generate("stranger")
    with pytest.raises(MembershipError):
        cell["admin"].welcome_for(stranger.member_id, now=cell.now, invite=cell.invite())
    with pytest.raises(ValueError, match="extra"):
        cell["admin"].welcome_for(
            cell["bob"].me.member_id, now=cell.now, invite=cell.invite(), extra=bytes(1025)
        )


def test_a_welcome_for_someone_else_does_not_admit(cell: Cell) -> None:
    carol = Identity.generate("carol")
    cell.post_control(cell["admin"].add_member(carol.info, now=cell.now))
    cell.sync()
    content = welcome_content(
        cell["admin"]._s,
        cell["bob"].me.member_id,
        now=cell.now,
        extra=b"",
        invite_binding=cell.invite().welcome_binding,
    )
    welcome = seal_welcome(
        signer=cell.members["admin"].identity,
        content=content,
        joiner_dh_pub=carol.dh_pub,  # sealed to carol, but naming bob as the joiner
        ephemeral_private=bytearray(random_bytes(32)),
        nonce=random_bytes(24),
    )
    with pytest.raises(MembershipError, match="admit"):
        CellCrypto.from_welcome(carol, welcome, now=cell.now, invite=cell.invite())


# -- saved state -----------------------------------------------------------------------


def test_saved_state_round_trips_and_keeps_working(cell: Cell) -> None:
    cell.send("alice", b"one")
    skipped = cell["alice"].seal(1, b"late", expires_at=int(cell.now) + 60, now=cell.now)
    cell.send("alice", b"two")
    cell.sync()
    bob = cell.members["bob"]
    saved = bob.cell.to_bytes()
    restored = CellCrypto.from_bytes(saved, bob.identity)
    assert restored.to_bytes() == saved
    assert restored.open(skipped, now=cell.now).plaintext == b"late"  # type: ignore[union-attr]
    envelope = restored.seal(
        Kind.REPLY, b"from the restored state", expires_at=int(cell.now) + 60, now=cell.now
    )
    assert cell["alice"].open(envelope, now=cell.now).plaintext == b"from the restored state"  # type: ignore[union-attr]


def test_saved_state_refuses_another_identity_and_corruption(cell: Cell) -> None:
    saved = cell["bob"].to_bytes()
    with pytest.raises(MalformedError):
        CellCrypto.from_bytes(saved, cell.members["alice"].identity)
    bob = cell.members["bob"].identity
    for cut in (0, 1, 17, 100, len(saved) // 2, len(saved) - 1):
        with pytest.raises(MalformedError):
            CellCrypto.from_bytes(saved[:cut], bob)
    with pytest.raises(MalformedError):
        CellCrypto.from_bytes(saved + b"\x00", bob)
    with pytest.raises(MalformedError):
        CellCrypto.from_bytes(bytes([STATE_VERSION + 1]) + saved[1:], bob)


def test_identity_round_trips_and_signs_the_same() -> None:
    identity = Identity.generate("Zoë")
    again = Identity.from_bytes(identity.to_bytes())
    assert again.info == identity.info
    assert again.sign(b"m") == identity.sign(b"m")
    with pytest.raises(MalformedError):
        Identity.from_bytes(identity.to_bytes()[:-1])
    with pytest.raises(MalformedError):
        Identity.from_bytes(b"\x09" + identity.to_bytes()[1:])


def test_create_checks_its_arguments() -> None:
    admin = Identity.generate("admin")
    with pytest.raises(ValueError, match="cell id"):
        CellCrypto.create(
            admin, b"short", now=0, group_keys=GROUP_KEYS, control_read_key=CONTROL_READ_KEY
        )
    with pytest.raises(ValueError, match="seeds"):
        CellCrypto.create(admin, now=0, group_keys=(b"x", b"y"), control_read_key=CONTROL_READ_KEY)
    with pytest.raises(ValueError, match="too long"):
        CellCrypto.create(
            admin,
            now=0,
            group_keys=GROUP_KEYS,
            control_read_key=CONTROL_READ_KEY,
            admin_secrets=bytes(257),
        )
    with pytest.raises(ValueError, match="control"):
        CellCrypto.create(
            admin,
            now=0,
            group_keys=GROUP_KEYS,
            control_read_key=CONTROL_READ_KEY,
            name="\x1b[31m",
        )
