"""The group layer's less travelled paths: forged distributions and epoch changes built with
keys a member really holds, limits, parked envelopes across restarts, saved-state corruption.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from cellrelay.protocol._crypto import (
    SigningKey,
    XChaChaKey,
    random_bytes,
    x25519_public_from_private,
)
from cellrelay.protocol.cell._control import (
    BOX_SIZE,
    ChangeBody,
    WelcomeContent,
    change_header,
    seal_admin_grant,
    seal_epoch_change,
    seal_welcome,
)
from cellrelay.protocol.cell._envelope import (
    HEADER,
    AnnouncementPayload,
    DistributionPayload,
    Kind,
    announcement_mac,
    distribution_mac,
    seal_envelope,
)
from cellrelay.protocol.cell._epochs import build_change, welcome_content
from cellrelay.protocol.cell._errors import (
    BadSignatureError,
    MalformedError,
    MembershipError,
    RemovedError,
    StaleEpochError,
    TamperedError,
)
from cellrelay.protocol.cell._group import CellCrypto
from cellrelay.protocol.cell._identity import Identity, MemberInfo
from cellrelay.protocol.cell._keys import (
    PAIRWISE_DISTRIBUTION_MAC,
    PAIRWISE_EPOCH_BOX,
    WELCOME,
    EpochKeys,
    kdf,
)
from cellrelay.protocol.cell._membership import (
    MAX_MEMBERS,
    LogEntry,
    Membership,
    Op,
    Role,
    sign_entry,
)
from cellrelay.protocol.cell._padding import pad
from cellrelay.protocol.cell._receiver import MAX_SKIP, MAX_SKIPPED_TOTAL, PENDING_MAX_AGE
from cellrelay.protocol.cell._state import SavedState, read_state, write_state

from .group_harness import Cell, Opened, Pending, new_keys

# -- forged distributions (alice, a member, holds the epoch's header and distribution keys) --


def _distribution(
    cell: Cell,
    author: str,
    *,
    claimed: str | None = None,
    counter: int = 0,
    macs: tuple[bytes, ...] | None = None,
    kind: Kind = Kind.ANNOUNCEMENT,
) -> bytes:
    """An announcement (or a version 1 distribution, `kind` 5) sealed by `author` claiming
    to come from `claimed`, MACs as `author` can make them."""
    state = cell[author]._s
    epoch = state.epochs[state.current]
    sender = cell[claimed or author].me
    signing_key = SigningKey(random_bytes(32))
    public = signing_key.public
    chain_key = random_bytes(32)
    if macs is None:
        identity = cell.members[author].identity
        recipients = [(m, info) for m, info in epoch.members.items() if m != sender.member_id]
        if kind == Kind.ANNOUNCEMENT:
            macs = tuple(
                announcement_mac(
                    identity.pairwise_key(info.dh_pub, PAIRWISE_DISTRIBUTION_MAC),
                    cell_id=state.cell_id,
                    epoch=state.current,
                    sender=sender.member_id,
                    recipient=member_id,
                    start=0,
                    signing_public=public,
                )
                for member_id, info in recipients
            )
        else:
            macs = tuple(
                distribution_mac(
                    identity.pairwise_key(info.dh_pub, PAIRWISE_DISTRIBUTION_MAC),
                    cell_id=state.cell_id,
                    epoch=state.current,
                    sender=sender.member_id,
                    recipient=member_id,
                    chain_key=chain_key,
                    start=0,
                    signing_public=public,
                )
                for member_id, info in recipients
            )
    payload: AnnouncementPayload | DistributionPayload
    if kind == Kind.ANNOUNCEMENT:
        payload = AnnouncementPayload(start=0, signing_public=public, macs=macs)
    else:
        payload = DistributionPayload(
            chain_key=chain_key, start=0, signing_public=public, macs=macs
        )
    header = HEADER.pack(state.cell_id, state.current, sender.member_id, counter, kind, 2**40)
    nonce = random_bytes(24)
    return seal_envelope(
        header=header,
        epoch=state.current,
        header_key=epoch.keys.header,
        header_nonce=nonce,
        signing_key=signing_key,
        body_key=epoch.keys.distribution,
        body_nonce=nonce,
        plaintext=payload.to_bytes(),
    )


def test_a_member_cannot_distribute_a_key_in_another_members_name(cell: Cell) -> None:
    cell.post_control(cell["admin"].rotate(now=cell.now))
    cell.sync(["admin", "alice"])  # bob has not published his new distribution yet
    bob = cell.members["bob"]
    bob.cell.open_control(cell.control[-1], now=cell.now)
    forged = _distribution(cell, "alice", claimed="bob")
    with pytest.raises(BadSignatureError):
        cell["admin"].open(forged, now=cell.now)  # alice cannot make admin's MAC for bob


def test_distributions_with_the_wrong_shape_are_malformed(cell: Cell) -> None:
    cell.post_control(cell["admin"].rotate(now=cell.now))
    for name in ("admin", "alice", "bob"):
        cell[name].open_control(cell.control[-1], now=cell.now)
    with pytest.raises(MalformedError, match="counter"):
        cell["bob"].open(_distribution(cell, "alice", counter=1), now=cell.now)
    with pytest.raises(MalformedError, match="MACs"):
        cell["bob"].open(_distribution(cell, "alice", macs=(bytes(16),)), now=cell.now)
    genuine = _distribution(cell, "alice")
    assert isinstance(cell["bob"].open(genuine, now=cell.now), Opened)
    assert isinstance(cell["admin"].open(genuine, now=cell.now), Opened)


def test_a_version_1_distribution_in_an_epoch_with_a_sender_tree_is_refused(cell: Cell) -> None:
    """A client that predates the sender tree sends distributions: refused, and said why."""
    cell.post_control(cell["admin"].rotate(now=cell.now))
    for name in ("admin", "alice", "bob"):
        cell[name].open_control(cell.control[-1], now=cell.now)
    old = _distribution(cell, "alice", kind=Kind.SENDER_KEY)
    with pytest.raises(MalformedError, match="outdated client"):
        cell["bob"].open(old, now=cell.now)
    assert isinstance(cell["bob"].open(_distribution(cell, "alice"), now=cell.now), Opened)


def test_a_group_envelope_of_a_reserved_kind_is_malformed(cell: Cell) -> None:
    alice = cell["alice"]
    state = alice._s
    epoch = state.epochs[state.current]
    assert epoch.own is not None
    counter, material = epoch.own.step()
    header = HEADER.pack(state.cell_id, state.current, alice.me.member_id, counter, 9, 2**40)
    envelope = seal_envelope(
        header=header,
        epoch=state.current,
        header_key=epoch.keys.header,
        header_nonce=random_bytes(24),
        signing_key=epoch.own.signing_key,
        body_key=material[:32],
        body_nonce=material[32:],
        plaintext=b"x",
    )
    with pytest.raises(MalformedError, match="kind"):
        cell["bob"].open(envelope, now=cell.now)


def test_a_signed_body_that_does_not_open_leaves_the_chain_alone(cell: Cell) -> None:
    """The sender signs garbage for a counter ahead: refused, and the skipped keys stay."""
    alice = cell["alice"]
    state = alice._s
    epoch = state.epochs[state.current]
    assert epoch.own is not None
    skipped = alice.seal(1, b"skipped", expires_at=2**40, now=cell.now)
    counter, _ = epoch.own.step()
    header = HEADER.pack(state.cell_id, state.current, alice.me.member_id, counter, 1, 2**40)
    bad = seal_envelope(
        header=header,
        epoch=state.current,
        header_key=epoch.keys.header,
        header_nonce=random_bytes(24),
        signing_key=epoch.own.signing_key,
        body_key=bytes(32),  # not the message key
        body_nonce=bytes(24),
        plaintext=b"x",
    )
    bob = cell["bob"]
    with pytest.raises(TamperedError):
        bob.open(bad, now=cell.now)
    assert bob.open(skipped, now=cell.now).plaintext == b"skipped"  # type: ignore[union-attr]


def test_skipped_keys_are_capped_in_total_taking_from_the_biggest_holders(cell: Cell) -> None:
    cell.join("carol")
    bob = cell["bob"]
    kept: dict[str, list[bytes]] = {}
    for sender in ("admin", "alice", "carol"):
        envelopes = [
            cell[sender].seal(1, b"m", expires_at=2**40, now=cell.now) for _ in range(MAX_SKIP + 1)
        ]
        kept[sender] = envelopes
        bob.open(envelopes[-1], now=cell.now)  # skips MAX_SKIP keys of this sender
    state = bob._s
    sizes = sorted(len(c.skipped) for c in state.epochs[state.current].chains.values())
    assert sum(sizes) == MAX_SKIPPED_TOTAL
    assert sizes[-1] - sizes[0] <= 1  # the excess came from whoever held most, in turn
    for envelopes in kept.values():
        with pytest.raises(Exception, match="counter already used"):
            bob.open(envelopes[0], now=cell.now)  # the oldest were dropped
        assert isinstance(bob.open(envelopes[-2], now=cell.now), Opened)  # the newest kept


# -- parked envelopes --------------------------------------------------------------------


def _next_epoch(cell: Cell) -> tuple[bytes, bytes, bytes]:
    """Admin moves to the next epoch alone: (change, its distribution, a message in it)."""
    change = cell["admin"].rotate(now=cell.now)
    update = cell["admin"].open_control(change, now=cell.now)
    assert update.distribution is not None
    message = cell["admin"].seal(1, b"next", expires_at=2**40, now=cell.now)
    return change, update.distribution, message


def test_a_message_parked_before_its_parked_distribution_is_released_with_it(cell: Cell) -> None:
    change, distribution, message = _next_epoch(cell)
    bob = cell["bob"]
    assert isinstance(bob.open(message, now=cell.now), Pending)
    assert isinstance(bob.open(distribution, now=cell.now), Pending)
    update = bob.open_control(change, now=cell.now)
    kinds = [(type(r).__name__, getattr(r, "plaintext", None)) for r in update.released]
    assert kinds == [("Pending", None), ("Opened", b""), ("Opened", b"next")]


def test_parked_envelopes_survive_a_restart(cell: Cell) -> None:
    change, distribution, message = _next_epoch(cell)
    bob = cell.members["bob"]
    bob.cell.open(message, now=cell.now)
    bob.cell.open(distribution, now=cell.now)
    restored = CellCrypto.from_bytes(bob.cell.to_bytes(), bob.identity)
    assert restored.to_bytes() == bob.cell.to_bytes()
    update = restored.open_control(change, now=cell.now)
    assert [r.plaintext for r in update.released if isinstance(r, Opened)] == [b"", b"next"]


def test_parked_envelopes_are_dropped_after_an_hour(cell: Cell) -> None:
    change, distribution, message = _next_epoch(cell)
    bob = cell["bob"]
    bob.open(message, now=cell.now)
    later = cell.now + PENDING_MAX_AGE + 1
    update = bob.open_control(change, now=later)
    assert update.released == ()
    assert isinstance(bob.open(distribution, now=later), Opened)


def test_the_distribution_can_be_made_again(cell: Cell) -> None:
    alice = cell["alice"]
    cell.send("alice", b"one")
    again = alice.distribution(now=cell.now)
    carol = Identity.generate("carol")
    cell.post_control(cell["admin"].add_member(carol.info, now=cell.now))
    cell.sync()
    with pytest.raises(Exception, match="already known"):
        cell["admin"].open(again, now=cell.now)  # an old epoch's second distribution
    cell.remove("alice")
    with pytest.raises(RemovedError):
        alice.distribution(now=cell.now)


# -- forged epoch changes built by an admin -----------------------------------------------


def _change(
    cell: Cell,
    *,
    entry_fields: tuple[Op, MemberInfo, Role] | None = None,
    boxes_for: list[MemberInfo] | None = None,
    group_keys: tuple[bytes, bytes] | None = None,
    grant_for: MemberInfo | None = None,
    ch_cell: bytes | None = None,
    body_key: XChaChaKey | None = None,
) -> bytes:
    """An epoch change signed by the admin, with whatever contents the test asks for.

    Version 1 (the box holds the epoch secret, not a change secret), which members still
    read: the rules of §G6.4 are the same for both versions.
    """
    admin = cell.members["admin"]
    state = admin.cell._s
    identity = admin.identity
    number = state.current + 1
    ch = change_header(ch_cell or state.cell_id, number, identity.member_id)
    secret, nonce = random_bytes(32), random_bytes(24)
    entry = None
    if entry_fields is not None:
        op, subject, role = entry_fields
        membership = state.membership
        entry = sign_entry(
            identity,
            op=op,
            index=membership.head_index + 1,
            prev_hash=membership.head_hash,
            epoch=number,
            timestamp_ms=1,
            cell_id=state.cell_id,
            subject=subject,
            role=role,
        )
    grant = None
    if grant_for is not None:
        key = identity.pairwise_key(grant_for.dh_pub, b"cellrelay/1 pairwise admin-grant")
        grant = seal_admin_grant(key, nonce, ch, grant_for.member_id, b"secrets")
    recipients = sorted(
        boxes_for or list(state.membership.members.values()), key=lambda m: m.member_id
    )
    boxes = [(m.member_id, identity.pairwise_key(m.dh_pub, PAIRWISE_EPOCH_BOX)) for m in recipients]
    return seal_epoch_change(
        signer=identity,
        ch=ch,
        nonce=nonce,
        header_key=state.epochs[state.current].keys.control_header,
        body_key=body_key or EpochKeys.derive(secret, state.cell_id, number).control_body,
        body=ChangeBody(entry=entry, group_keys=group_keys, admin_grant=grant),
        secret=secret,
        boxes=boxes,
        filler=random_bytes((MAX_MEMBERS - len(boxes)) * BOX_SIZE),
        version=1,  # the box holds the epoch secret: what an admin not yet upgraded sends
    )


def test_an_epoch_change_naming_another_cell_is_malformed(cell: Cell) -> None:
    with pytest.raises(MalformedError, match="another cell"):
        cell["bob"].open_control(_change(cell, ch_cell=bytes(16)), now=cell.now)


def test_an_epoch_change_body_under_the_wrong_key_is_tampered(cell: Cell) -> None:
    forged = _change(cell, body_key=XChaChaKey(random_bytes(32)))
    with pytest.raises(TamperedError, match="body"):
        cell["bob"].open_control(forged, now=cell.now)


def test_a_box_for_a_member_the_change_removes_is_refused(cell: Cell) -> None:
    bob = cell["bob"].me
    forged = _change(cell, entry_fields=(Op.REMOVE, bob, Role.MEMBER), group_keys=new_keys(5))
    with pytest.raises(MembershipError, match="removes"):
        cell["bob"].open_control(forged, now=cell.now)
    assert cell["alice"].open_control(forged, now=cell.now).change is Op.REMOVE


def test_an_admin_grant_needs_a_promotion_and_must_open(cell: Cell) -> None:
    alice = cell["alice"].me
    forged = _change(cell, grant_for=alice)
    with pytest.raises(MalformedError, match="grant"):
        cell["alice"].open_control(forged, now=cell.now)
    other = cell["bob"].me  # a grant sealed for bob, in a change promoting alice
    forged = _change(cell, entry_fields=(Op.PROMOTE, alice, Role.ADMIN), grant_for=other)
    with pytest.raises(TamperedError, match="grant"):
        cell["alice"].open_control(forged, now=cell.now)


# -- welcomes that do not parse or verify -------------------------------------------------


def _welcome(cell: Cell, joiner: Identity, **changes: object) -> bytes:
    content = welcome_content(
        cell["admin"]._s,
        joiner.member_id,
        now=cell.now,
        extra=b"",
        invite_binding=cell.invite().welcome_binding,
    )
    content = dataclasses.replace(content, **changes)  # type: ignore[arg-type]
    return seal_welcome(
        signer=cell.members["admin"].identity,
        content=content,
        joiner_dh_pub=joiner.dh_pub,
        ephemeral_private=bytearray(random_bytes(32)),
        nonce=random_bytes(24),
    )


def test_welcomes_with_bad_fields_are_refused(cell: Cell) -> None:
    carol = Identity.generate("carol")
    cell.post_control(cell["admin"].add_member(carol.info, now=cell.now))
    cell.sync()
    members = welcome_content(
        cell["admin"]._s,
        carol.member_id,
        now=cell.now,
        extra=b"",
        invite_binding=cell.invite().welcome_binding,
    ).members
    with pytest.raises(MalformedError, match="name"):
        CellCrypto.from_welcome(
            carol, _welcome(cell, carol, cell_name="\x07bell"), now=cell.now, invite=cell.invite()
        )
    with pytest.raises(MembershipError):  # the same member twice
        CellCrypto.from_welcome(
            carol,
            _welcome(cell, carol, members=members + members[:1]),
            now=cell.now,
            invite=cell.invite(),
        )
    no_admins = tuple((info, Role.MEMBER) for info, _ in members)
    with pytest.raises(MembershipError):
        CellCrypto.from_welcome(
            carol, _welcome(cell, carol, members=no_admins), now=cell.now, invite=cell.invite()
        )


def test_welcome_parsing_is_strict() -> None:
    info = Identity.generate("x").info
    content = WelcomeContent(
        joiner=bytes(16),
        cell_id=bytes(16),
        cell_name="c",
        epoch=1,
        secret=bytes(32),
        head_index=0,
        head_hash=bytes(32),
        head_epoch=1,
        members=((info, Role.ADMIN),),
        group_keys=(bytes(32), bytes(32)),
        control_read_key=bytes(32),
        admin_secrets=b"",
        extra=b"",
        created_ms=0,
        invite_binding=bytes(32),
    )
    wb = content.to_bytes()
    assert WelcomeContent.from_bytes(wb) == content
    role_at = 16 + 16 + 2 + 4 + 32 + 4 + 32 + 4 + 2 + 65 + 1
    bad_role = wb[:role_at] + b"\x06" + wb[role_at + 1 :]  # roles are 0..5 (§G5)
    with pytest.raises(MalformedError, match="role"):
        WelcomeContent.from_bytes(bad_role)
    count_at = role_at - 65 - 1 - 2
    too_many = wb[:count_at] + (MAX_MEMBERS + 1).to_bytes(2, "big") + wb[count_at + 2 :]
    with pytest.raises(MalformedError, match="members"):
        WelcomeContent.from_bytes(too_many)


def test_a_welcome_with_a_forged_signature_or_no_room_for_one_is_refused(cell: Cell) -> None:
    carol = Identity.generate("carol")
    cell.post_control(cell["admin"].add_member(carol.info, now=cell.now))
    cell.sync()
    impostor = Identity.generate("admin")  # signs, but claims the admin's id below
    admin_id = cell["admin"].me.member_id
    content = welcome_content(
        cell["admin"]._s,
        carol.member_id,
        now=cell.now,
        extra=b"",
        invite_binding=cell.invite().welcome_binding,
    )
    welcome = seal_welcome(
        signer=impostor,
        content=content,
        joiner_dh_pub=carol.dh_pub,
        ephemeral_private=bytearray(random_bytes(32)),
        nonce=random_bytes(24),
    )
    # Re-seal the same inner bytes with the admin's id as the signer: only possible here
    # because the test holds the ephemeral key; the signature is still the impostor's.
    ephemeral = bytearray(random_bytes(32))
    forged = seal_welcome(
        signer=_Renamed(impostor, admin_id),  # type: ignore[arg-type]
        content=content,
        joiner_dh_pub=carol.dh_pub,
        ephemeral_private=ephemeral,
        nonce=random_bytes(24),
    )
    with pytest.raises(MembershipError):
        CellCrypto.from_welcome(
            carol, welcome, now=cell.now, invite=cell.invite()
        )  # impostor's id: not an admin
    with pytest.raises(BadSignatureError):
        CellCrypto.from_welcome(carol, forged, now=cell.now, invite=cell.invite())


class _Renamed:
    """An identity that signs with its own key but gives another member id (a forger)."""

    def __init__(self, identity: Identity, member_id: bytes) -> None:
        self._identity = identity
        self.member_id = member_id

    def sign(self, message: bytes) -> bytes:
        return self._identity.sign(message)


# -- saved state: everything in it survives, corruption is refused ------------------------


def test_a_state_with_everything_in_it_round_trips(cell: Cell) -> None:
    skipped = cell["alice"].seal(1, b"late", expires_at=2**40, now=cell.now)
    cell.send("alice", b"after")
    cell.sync()
    change, distribution, message = _next_epoch(cell)
    bob = cell.members["bob"]
    bob.cell.open(message, now=cell.now)  # parked under a future epoch
    cell["admin"].rotate(now=cell.now)  # an outstanding proposal in admin's state
    for member in (bob, cell.members["admin"]):
        saved = member.cell.to_bytes()
        assert CellCrypto.from_bytes(saved, member.identity).to_bytes() == saved
    update = bob.cell.open_control(change, now=cell.now)  # bob: the old epoch in its grace
    saved = bob.cell.to_bytes()
    restored = CellCrypto.from_bytes(saved, bob.identity)
    assert restored.to_bytes() == saved
    assert restored.open(skipped, now=cell.now).plaintext == b"late"  # type: ignore[union-attr]
    assert update.released == (Pending(bob.cell.epoch),)  # re-parked: no key for it yet
    opened = restored.open(distribution, now=cell.now)
    assert isinstance(opened, Opened)
    assert [r.plaintext for r in opened.released if isinstance(r, Opened)] == [b"next"]


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda s: setattr(s, "grace_period", math.nan),
        lambda s: setattr(s, "grace_period", math.inf),
        lambda s: setattr(s, "name", "\x1b"),
        lambda s: setattr(s, "current", 99),
        lambda s: setattr(s.epochs[s.current], "own_public", bytes(32)),
        lambda s: setattr(s, "membership", dataclasses.replace(s.membership, admins=frozenset())),
    ],
)
def test_corrupted_states_are_malformed(cell: Cell, corrupt: object) -> None:
    bob = cell.members["bob"]
    state = read_state(bob.cell.to_bytes(), bob.identity.member_id)
    corrupt(state)  # type: ignore[operator]
    with pytest.raises(MalformedError):
        read_state(write_state(state), bob.identity.member_id)


def test_epoch_clear_wipes_every_key(cell: Cell) -> None:
    for name in ("admin", "bob"):
        state = cell[name]._s
        epoch = state.epochs[state.current]
        assert epoch.tree is not None
        nodes = list(epoch.tree.nodes.values())
        roots = list(epoch.tree.roots.values())
        assert nodes
        epoch.clear()
        assert epoch.keys.header.export() == bytes(32)
        assert epoch.own is not None
        assert epoch.own.chain_key.export() == bytes(32)
        assert all(c.chain_key.export() == bytes(32) for c in epoch.chains.values())
        assert all(bytes(node) == bytes(32) for node in nodes)
        assert all(root.export() == bytes(32) for root in roots)
        if name == "admin":  # only an admin keeps the epoch secret (for welcomes)
            assert epoch.secret is not None
            assert bytes(epoch.secret) == bytes(32)
        else:
            assert epoch.secret is None


def test_small_pieces() -> None:
    identity = Identity.generate("ada")
    assert (
        Membership.genesis(
            sign_entry(
                identity,
                op=Op.GENESIS,
                index=0,
                prev_hash=bytes(32),
                epoch=1,
                timestamp_ms=0,
                cell_id=bytes(16),
                subject=identity.info,
                role=Role.ADMIN,
            )
        ).role_of(bytes(16))
        is None
    )
    bad_name = identity.info.to_bytes()[:64] + b"\x01\x07"
    with pytest.raises(MalformedError, match="name"):
        MemberInfo.from_bytes(bad_name)
    with pytest.raises(MalformedError, match="version"):
        LogEntry.from_bytes(b"\x02" + bytes(300))
    with pytest.raises(ValueError, match="filler"):
        seal_epoch_change(
            signer=identity,
            ch=bytes(37),
            nonce=bytes(24),
            header_key=XChaChaKey(bytes(32)),
            body_key=XChaChaKey(bytes(32)),
            body=ChangeBody(entry=None, group_keys=None, admin_grant=None),
            secret=bytes(32),
            boxes=[],
            filler=b"",
        )
    with pytest.raises(ValueError, match="plaintext"):
        seal_envelope(
            header=bytes(49),
            epoch=1,
            header_key=XChaChaKey(bytes(32)),
            header_nonce=bytes(24),
            signing_key=SigningKey(bytes(32)),
            body_key=bytes(32),
            body_nonce=bytes(24),
            plaintext=bytes(20000),
        )
    identity.clear()
    assert identity.to_bytes()[1:65] == bytes(64)


def test_states_claiming_too_much_are_malformed(cell: Cell) -> None:
    bob = cell.members["bob"]
    infos = [Identity.generate(f"m{n}").info for n in range(MAX_MEMBERS + 1)]
    crowd = {info.member_id: info for info in infos}

    def too_many_members(state: SavedState) -> None:
        state.membership = dataclasses.replace(state.membership, members=crowd)

    def too_many_epoch_members(state: SavedState) -> None:
        state.epochs[state.current].members = crowd

    def too_many_skipped(state: SavedState) -> None:
        for chain in list(state.epochs[state.current].chains.values())[:2]:
            chain.skipped = {n: bytearray(56) for n in range(33_000)}

    for corrupt in (too_many_members, too_many_epoch_members, too_many_skipped):
        state = read_state(bob.cell.to_bytes(), bob.identity.member_id)
        corrupt(state)
        with pytest.raises(MalformedError, match="too many"):
            read_state(write_state(state), bob.identity.member_id)


def test_an_old_epoch_is_wiped_with_its_skipped_keys(cell: Cell) -> None:
    cell.send("alice", b"one")
    skipped = cell["alice"].seal(1, b"two", expires_at=2**40, now=cell.now)
    cell.send("alice", b"three")
    cell.sync()
    bob = cell["bob"]
    old = bob._s.epochs[bob.epoch]
    chain = old.chains[cell["alice"].me.member_id]
    kept = chain.skipped[1]
    cell.post_control(cell["admin"].rotate(now=cell.now))
    cell.sync()
    bob.open(cell.send("admin", b"tick"), now=cell.now + 601)
    assert bytes(kept) == bytes(56)  # zeroed, not just dropped
    with pytest.raises(StaleEpochError):
        bob.open(skipped, now=cell.now + 601)


def test_welcomes_that_cannot_be_opened_or_are_empty_inside(cell: Cell) -> None:
    carol = Identity.generate("carol")
    genuine = _welcome(cell, carol)
    low_order = genuine[:1] + bytes(32) + genuine[33:]
    with pytest.raises(TamperedError):
        CellCrypto.from_welcome(carol, low_order, now=cell.now, invite=cell.invite())
    ephemeral = bytearray(random_bytes(32))
    ephemeral_pub = x25519_public_from_private(ephemeral)
    key = kdf(carol.dh(ephemeral_pub), WELCOME, ephemeral_pub + carol.dh_pub)
    nonce = random_bytes(24)
    head = b"\x02" + ephemeral_pub + nonce
    sealed = XChaChaKey(key).encrypt(
        nonce, b"cellrelay/1 welcome\x00" + head + carol.dh_pub, pad(b"short", 256 - 57 - 16)
    )
    with pytest.raises(MalformedError, match="short"):
        CellCrypto.from_welcome(carol, head + sealed, now=cell.now, invite=cell.invite())


def test_skip_sending_moves_the_chain_on_and_receivers_follow(cell: Cell) -> None:
    """`skip_sending_to` (a client's recovery from a power cut) never lets a counter be reused.

    After skipping, the next message carries the reserved counter and still opens at a
    member that saw the ones before it; skipping backwards, to an old epoch or to where
    the chain already is, does nothing. Catches a skip that leaves the chain where it was
    (the next seal would reuse a message key) or that corrupts it (receivers refuse).
    """
    alice = cell["alice"]
    bob = cell.members["bob"].cell
    first = cell.send("alice", b"before")
    assert isinstance(bob.open(first, now=cell.now), Opened)
    epoch, counter = alice.send_position()
    assert alice.skip_sending_to(epoch, counter + 10) == 10
    assert alice.send_position() == (epoch, counter + 10)
    assert alice.skip_sending_to(epoch, counter + 5) == 0  # never backwards
    assert alice.skip_sending_to(epoch - 1, counter + 50) == 0  # not the current epoch
    assert alice.send_position() == (epoch, counter + 10)
    after = cell.send("alice", b"after")
    opened = bob.open(after, now=cell.now)
    assert isinstance(opened, Opened)
    assert (opened.counter, opened.plaintext) == (counter + 10, b"after")
    with pytest.raises(ValueError, match="beyond the end"):
        alice.skip_sending_to(epoch, 2**32 + 1)


def test_a_version_2_change_relabelled_version_1_is_tampered(cell: Cell) -> None:
    """§G6.2: the version byte is authenticated, so a relay cannot downgrade a change to
    the version whose box holds the epoch secret itself; a version 3 change relabelled has
    the wrong size for the older layout."""
    admin = cell.members["admin"]
    newest = admin.cell.rotate(now=cell.now)
    assert newest[0] == 3
    for label in (b"\x01", b"\x02"):
        with pytest.raises(MalformedError):
            cell["bob"].open_control(label + newest[1:], now=cell.now)
    change = build_change(
        admin.identity,
        admin.cell._s,
        random_bytes,
        admin.cell._pair,
        entry_fields=None,
        now=cell.now,
        group_keys=None,
        version=2,
    )
    assert change[0] == 2
    with pytest.raises(TamperedError):
        cell["bob"].open_control(b"\x01" + change[1:], now=cell.now)
    assert cell["bob"].open_control(change, now=cell.now).epoch == cell["bob"].epoch
