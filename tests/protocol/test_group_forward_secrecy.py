"""Forward secrecy inside an epoch, against a seized state and every envelope the relay holds.

Issue 12: "a seized member state plus every envelope the relay holds opens no message that
the member had already read". The seized state is the member's cell state (what
`CellCrypto.to_bytes` saves) and its identity key, which opens the member's box in every
epoch change the relay keeps. The attacker is not limited to the client's API: it
takes every 32-byte string in the saved state and uses it as each kind of key this layer
has (a chain key, stepped on; an epoch secret, with everything derived from it; a sender
tree node; a header or distribution key to open the relay's announcements and
distributions, and the chain keys a distribution carries), and looks for the key of any
message the member has read. docs/protocol.md §G16 states the guarantee.

The same search run against an epoch without a sender tree (as every epoch was before
state version 3: chain keys travelled in distributions under a key every member keeps), or
an epoch started by a version 1 change (its box held the epoch secret itself), finds the
keys, which is why the tree and the init-secret chain exist; those runs keep the search
honest.
"""

from __future__ import annotations

import itertools

import pytest

from cellrelay.protocol._crypto import HashChain, XChaChaKey, random_bytes
from cellrelay.protocol.cell._control import (
    BOX_SIZE,
    BUCKETED_VERSION,
    ChangeBody,
    bucketed_keys,
    change_header,
    find_box,
    seal_epoch_change,
    split_change,
)
from cellrelay.protocol.cell._envelope import (
    HEADER,
    DistributionPayload,
    Kind,
    open_body,
    open_header,
    split_envelope,
)
from cellrelay.protocol.cell._errors import GroupError, WelcomeWindowError
from cellrelay.protocol.cell._group import WELCOME_WINDOW, CellCrypto
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._keys import PAIRWISE_EPOCH_BOX, EpochKeys, advance_chain, kdf
from cellrelay.protocol.cell._membership import MAX_MEMBERS
from cellrelay.protocol.cell._schedule import (
    SENDER_NODE,
    SENDER_ROOT,
    SENDER_SECRET,
    SenderTree,
    bucket_of,
    open_keys,
)

from .group_harness import Cell

STEPS = 12  # messages per sender in the scenario: every chain key is tried this far on


def _materials_from_chain(key: bytes) -> set[bytes]:
    chain = HashChain(key)
    return {advance_chain(chain) for _ in range(STEPS)}


def _targets(cell: Cell, envelopes: list[bytes]) -> set[bytes]:
    """The message material (key || nonce) of each read envelope, from the admin's epoch
    secret (the admin keeps it); checked to open its envelope."""
    admin = cell["admin"]._s
    epoch = admin.epochs[admin.current]
    assert epoch.secret is not None
    targets: dict[bytes, bytes] = {}
    for name in ("alice", "admin"):
        member_id = cell.members[name].identity.member_id
        tree = SenderTree.enter(epoch.secret, admin.cell_id, admin.current)
        chain = tree.take(member_id, epoch.bucket_members(admin.cell_id, member_id))
        for _ in range(STEPS):
            material = advance_chain(chain)
            targets[material] = material
    wanted = set()
    for envelope in envelopes:
        _, nonce = split_envelope(envelope)
        header, _ = open_header(envelope, epoch.keys.header, nonce)
        for material in targets:
            try:
                open_body(envelope, header, material[:32], material[32:])
            except GroupError:
                continue
            wanted.add(material)
            break
    assert len(wanted) == len(envelopes)
    return wanted


def _search(
    cell: Cell, seized: bytes, relay: list[bytes], cell_id: bytes, number: int
) -> set[bytes]:
    """Every message material the attacker derives from `seized` and the relay's envelopes."""
    found: set[bytes] = set()
    windows = {seized[i : i + 32] for i in range(len(seized) - 31)}
    member_ids = [m.identity.member_id for m in cell.members.values()]
    buckets = {bucket_of(cell_id, m) for m in member_ids}
    context = cell_id + number.to_bytes(4, "big")
    group = [e for e in relay if split_envelope(e)[0] == number]
    sender_keys: list[tuple[bytes, bytes, bytes]] = []  # (envelope, H, nonce) it opened
    for key, envelope in itertools.product(windows, group):  # as a header key
        _, nonce = split_envelope(envelope)
        try:
            header, _ = open_header(envelope, XChaChaKey(key), nonce)
        except GroupError:
            continue
        if HEADER.unpack(header)[4] in (Kind.SENDER_KEY, Kind.ANNOUNCEMENT):
            sender_keys.append((envelope, header, nonce))
    for key in windows:
        found |= _materials_from_chain(key)  # as a chain key
        for envelope, header, nonce in sender_keys:  # as a distribution key
            try:
                body = open_body(envelope, header, key, nonce)
            except GroupError:
                continue
            if HEADER.unpack(header)[4] == Kind.SENDER_KEY:
                found |= _materials_from_chain(DistributionPayload.from_bytes(body).chain_key)
        for member_id in member_ids:  # as a sender tree node
            found |= _materials_from_chain(bytes(kdf(key, SENDER_ROOT, member_id)))
        sender = kdf(key, SENDER_SECRET, context)  # as an epoch secret
        for b in buckets:
            node = kdf(sender, SENDER_NODE, context + bytes([b]))
            for member_id in member_ids:
                found |= _materials_from_chain(bytes(kdf(node, SENDER_ROOT, member_id)))
    return found


def _scenario(cell: Cell) -> tuple[list[bytes], list[bytes]]:
    """A fresh epoch; alice and the admin send; bob reads all but two. Returns (read, unread)."""
    cell.post_control(cell["admin"].rotate(now=cell.now))
    cell.sync()
    bob = cell.members["bob"]
    sent = []
    for i in range(5):
        sent.append(cell.send("alice", b"alice %d" % i))
        sent.append(cell.send("admin", b"admin %d" % i))
    unread = [sent[3], sent[8]]
    read = [e for e in sent if e not in unread]
    for envelope in read:
        bob.cell.open(envelope, now=cell.now)
    return read, unread


def test_a_seized_state_and_the_relay_open_nothing_already_read(cell: Cell) -> None:
    read, unread = _scenario(cell)
    bob = cell["bob"]
    state = bob._s
    assert state.epochs[state.current].secret is None  # a member keeps no epoch secret
    seized = bob.to_bytes()
    assert state.epochs[state.current].keys.header.export() in seized  # it reads the headers
    found = _search(cell, seized, cell.group, state.cell_id, state.current)
    assert found.isdisjoint(_targets(cell, read))
    # The two it had not read are still readable, by the client as by the attacker.
    assert not found.isdisjoint(_targets(cell, unread))


def test_the_same_search_finds_the_keys_in_an_epoch_without_a_sender_tree(cell: Cell) -> None:
    """As before state version 3: chain keys in distributions under a key members keep."""
    for member in cell.members.values():
        member.cell._s.epochs[member.cell.epoch].tree = None
    cell.post_control(cell["admin"].rotate(now=cell.now))
    cell.sync()  # the new epoch has a tree again: take it away, and distribute as before
    for member in cell.members.values():
        epoch = member.cell._s.epochs[member.cell.epoch]
        epoch.tree = None
        epoch.chains.clear()
    for member in cell.members.values():
        cell.group.append(member.cell.distribution(now=cell.now))
    for member in cell.members.values():
        for envelope in cell.group[-3:]:
            member.cell.open(envelope, now=cell.now)  # its own: an echo
    bob = cell.members["bob"]
    sent = [cell.send("alice", b"alice %d" % i) for i in range(3)]
    for envelope in sent:
        bob.cell.open(envelope, now=cell.now)
    state = bob.cell._s
    found = _search(cell, bob.cell.to_bytes(), cell.group, state.cell_id, state.current)
    assert not found.isdisjoint(_targets(cell, sent))


def _version_1_rotation(cell: Cell) -> bytes:
    """A rotation as an admin not yet upgraded makes it: the box holds the epoch secret."""
    admin = cell.members["admin"]
    state = admin.cell._s
    number = state.current + 1
    ch = change_header(state.cell_id, number, admin.identity.member_id)
    secret = random_bytes(32)
    recipients = sorted(state.membership.members.values(), key=lambda m: m.member_id)
    boxes = [
        (m.member_id, admin.identity.pairwise_key(m.dh_pub, PAIRWISE_EPOCH_BOX)) for m in recipients
    ]
    return seal_epoch_change(
        signer=admin.identity,
        ch=ch,
        nonce=random_bytes(24),
        header_key=state.epochs[state.current].keys.control_header,
        body_key=EpochKeys.derive(secret, state.cell_id, number).control_body,
        body=ChangeBody(entry=None, group_keys=None, admin_grant=None),
        secret=secret,
        boxes=boxes,
        filler=random_bytes((MAX_MEMBERS - len(boxes)) * BOX_SIZE),
        version=1,
    )


def _identity_attack(cell: Cell) -> tuple[set[bytes], bytes]:
    """The seized identity key opens bob's box in the change that started the epoch, as the
    relay keeps it; return what the search derives from the box's content, and it."""
    bob = cell.members["bob"]
    state = bob.cell._s
    admin = cell.members["admin"].identity
    change = cell.control[-1]
    number, nonce = split_change(change)
    ch = change_header(state.cell_id, number, admin.member_id)  # nothing secret in it
    me = bob.identity.member_id
    if change[0] == BUCKETED_VERSION:
        # The identity key opens bob's receive box if the change refreshed its bucket;
        # the bucket key in the seized state opens the bucket box otherwise.
        section, _ = bucketed_keys(change)
        listed = state.epochs[number].bucket_members(state.cell_id, me)
        boxed: bytearray | None = open_keys(
            section,
            cell_id=state.cell_id,
            ad=ch,
            nonce=nonce,
            me=me,
            bucket_members=listed,
            dh=bob.identity.dh,
            receive_pub=bob.identity.dh_pub,
            bucket_private=state.bucket_private,
        ).change_secret
    else:
        key = bob.identity.pairwise_key(admin.dh_pub, PAIRWISE_EPOCH_BOX)
        boxed = find_box(change, key, nonce, ch, me)
    assert boxed is not None
    return _search(cell, bytes(boxed), cell.group, state.cell_id, number), bytes(boxed)


def test_the_identity_key_and_the_change_box_open_nothing_already_read(cell: Cell) -> None:
    """The epoch secret is derived from the box's change secret and the previous epoch's
    init secret, which every member deleted on entering the epoch (§G6.2): the identity
    key a seized phone also holds opens the box, and the box alone derives no chain."""
    read, _ = _scenario(cell)
    found, boxed = _identity_attack(cell)
    assert found.isdisjoint(_targets(cell, read))
    state = cell["bob"]._s
    assert state.epochs[state.current].init is not None
    assert boxed not in cell["bob"].to_bytes()


def test_a_version_1_change_box_still_opens_its_epoch(cell: Cell) -> None:
    """What an admin not yet upgraded sends: its box holds the epoch secret itself."""
    cell.post_control(_version_1_rotation(cell))
    cell.sync()
    bob = cell.members["bob"]
    sent = [cell.send("alice", b"alice %d" % i) for i in range(3)]
    for envelope in sent:
        bob.cell.open(envelope, now=cell.now)
    found, _ = _identity_attack(cell)
    assert not found.isdisjoint(_targets(cell, sent))


def test_an_admin_state_opens_nothing_read_once_its_welcome_window_is_over(cell: Cell) -> None:
    """An admin keeps the epoch secret for its welcomes, WELCOME_WINDOW long (§G7)."""
    read, _ = _scenario(cell)
    from_alice = [e for e in read if _sender(cell, e) == "alice"]
    targets = _targets(cell, from_alice)  # while the admin still has the secret
    admin = cell["admin"]
    for envelope in from_alice:
        admin.open(envelope, now=cell.now)
    state = admin._s

    def keeps_secret() -> bool:
        return state.epochs[state.current].secret is not None

    admin.check(cell.now + WELCOME_WINDOW - 1)
    assert keeps_secret()  # inside the window: the limit the docs state
    admin.check(cell.now + WELCOME_WINDOW)
    assert not keeps_secret()
    found = _search(cell, admin.to_bytes(), cell.group, state.cell_id, state.current)
    assert found.isdisjoint(targets)


def _sender(cell: Cell, envelope: bytes) -> str:
    state = cell["bob"]._s
    _, nonce = split_envelope(envelope)
    header, _ = open_header(envelope, state.epochs[state.current].keys.header, nonce)
    sender = HEADER.unpack(header)[2]
    return next(n for n, m in cell.members.items() if m.identity.member_id == sender)


def test_a_welcome_after_the_window_asks_for_a_rotation_first(cell: Cell) -> None:
    carol = Identity.generate("carol")
    cell.post_control(cell["admin"].add_member(carol.info, now=cell.now))
    cell.sync()
    admin = cell["admin"]
    admin.check(cell.now + WELCOME_WINDOW)
    with pytest.raises(WelcomeWindowError, match="rotate"):
        admin.welcome_for(carol.member_id, now=cell.now, invite=cell.invite())
    later = cell.now + WELCOME_WINDOW
    cell.post_control(admin.rotate(now=later))
    admin.open_control(cell.control[-1], now=later)
    welcome = admin.welcome_for(carol.member_id, now=later, invite=cell.invite())
    joined, _ = CellCrypto.from_welcome(carol, welcome, now=later, invite=cell.invite())
    assert joined.epoch == admin.epoch
