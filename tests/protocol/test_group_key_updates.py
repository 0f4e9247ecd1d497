"""Post-compromise security: receive keys, key updates and the changes that commit them.

Issue 12: "a state copied before a member's key update, by an attacker absent for it,
opens nothing from the epoch after it". The copy here is the member's saved cell state
*and* its identity key (a seized phone holds both). After the member makes a key update
and an admin commits it (epoch change version 4, docs/protocol.md §G6.5), the copy:

* is refused the change through the API (its receive box does not open), and
* cannot get the change secret at all: every 32-byte string of the copy (and its identity
  key) tried as the receive key on the member's receive box and as the bucket key on its
  bucket's box opens neither, so no later epoch secret can be derived.

The same search on a rotation that commits no update finds the change secret (the copy's
bucket key opens the bucket box), which is what keeps the search honest.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.protocol._crypto import (
    x25519,
    x25519_public_from_private,
    xchacha20poly1305_decrypt,
)
from cellrelay.protocol._errors import CryptoError
from cellrelay.protocol.cell._control import (
    BUCKETED_VERSION,
    COMMITTING_VERSION,
    KEYS_OFFSET_V3,
    MAX_COMMITTED,
    bucketed_keys,
    change_header,
    committed_updates,
    split_change,
)
from cellrelay.protocol.cell._envelope import Kind
from cellrelay.protocol.cell._epochs import build_change
from cellrelay.protocol.cell._errors import (
    BadSignatureError,
    GroupError,
    MalformedError,
    MembershipError,
    TamperedError,
)
from cellrelay.protocol.cell._group import KEY_UPDATE_PERIOD, CellCrypto, Opened
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._keys import kdf
from cellrelay.protocol.cell._membership import Role
from cellrelay.protocol.cell._outcomes import Pending
from cellrelay.protocol.cell._schedule import (
    BOX_SIZE,
    BUCKET_BOX,
    KeyUpdate,
    bucket_of,
    open_receive_box,
    parse_section,
    receive_dh,
    sign_key_update,
)
from cellrelay.protocol.cell._state import read_state, write_state

from .group_harness import Cell


def _commit(cell: Cell, name: str, *, by: str = "admin") -> bytes:
    """`name` makes a key update, `by` takes it and commits it in a rotation; return it."""
    data = cell[name].key_update(now=cell.now)
    assert cell[by].accept_key_update(data)
    return _rotate(cell, by=by)


def _rotate(cell: Cell, *, by: str = "admin") -> bytes:
    change = cell[by].rotate(now=cell.now)
    cell.post_control(change)
    cell.sync()
    return change


def _seize(cell: Cell, name: str) -> tuple[bytes, Identity]:
    """What an attacker copies: the saved state, the identity key (and a CellCrypto of it)."""
    return cell[name].to_bytes(), cell.members[name].identity


def _keys_that_open(seized: bytes, cell: Cell, me: bytes, change: bytes, signer: bytes) -> int:
    admin = cell["admin"]
    return keys_that_open(seized, admin.cell_id, admin.membership.members, me, change, signer)


def keys_that_open(
    seized: bytes,
    cell_id: bytes,
    members: Iterable[bytes],
    me: bytes,
    change: bytes,
    signer: bytes,
) -> int:
    """How many 32-byte strings of `seized` open `me`'s receive box or bucket box in
    `change` (either gives the change secret), tried as X25519 private keys. `members`:
    the member ids after the change (tests/client/test_key_updates.py uses it too)."""
    number, nonce = split_change(change)
    section, table = bucketed_keys(change)
    e_pub, refreshed, bucket_offset, _ = parse_section(section)
    b = bucket_of(cell_id, me)
    ad = change_header(cell_id, number, signer)
    bucket_box = section[bucket_offset + b * BOX_SIZE : bucket_offset + (b + 1) * BOX_SIZE]
    bucket_public = table[b]
    assert bucket_public is not None
    receive_box = None
    if b in refreshed:
        new_public, _, offset = refreshed[b]
        mine = sorted(m for m in members if bucket_of(cell_id, m) == b)
        at = offset + mine.index(me) * BOX_SIZE
        receive_box = section[at : at + BOX_SIZE]
    found = 0
    for start in range(len(seized) - 31):
        private = bytearray(seized[start : start + 32])
        try:
            shared = x25519(private, e_pub)
        except CryptoError:
            continue
        key = kdf(shared, BUCKET_BOX, e_pub + bucket_public + bytes([b]))
        bucket_ad = b"cellrelay/2 bucket-box\x00" + ad + bytes([b])
        try:
            xchacha20poly1305_decrypt(key, nonce, bucket_ad, bucket_box)
            found += 1
        except CryptoError:
            pass
        if receive_box is not None:
            try:
                open_receive_box(
                    receive_box,
                    e_pub=e_pub,
                    ad=ad,
                    nonce=nonce,
                    me=me,
                    dh=receive_dh(private),
                    receive_pub=x25519_public_from_private(private),
                    bucket_public=new_public,
                )
                found += 1
            except GroupError:
                pass
    return found


def test_a_state_copied_before_an_update_opens_nothing_after_its_commit(cell: Cell) -> None:
    state, identity = _seize(cell, "alice")
    seized = state + identity.to_bytes()
    me = identity.member_id
    admin_id = cell.members["admin"].identity.member_id
    change = _commit(cell, "alice")
    assert change[0] == COMMITTING_VERSION
    assert [u.member_id for u in committed_updates(change)] == [me]
    assert cell["alice"].receive_generation == 1
    assert not [u for m in cell.members.values() for u in m.updates if isinstance(u, GroupError)]
    # Through the API: the copy's receive key no longer opens its box.
    copy = CellCrypto.from_bytes(state, identity)
    with pytest.raises(TamperedError):
        copy.open_control(change, now=cell.now)
    # Below the API: no string of the copy opens a box that gives the change secret.
    assert _keys_that_open(seized, cell, me, change, admin_id) == 0
    # And the cell goes on: the next epoch opens for alice, not for the copy.
    later = _rotate(cell)
    text = cell.send("bob", b"after the update")
    cell.sync()
    assert b"after the update" in cell.members["alice"].texts()
    with pytest.raises(GroupError):
        copy.open_control(later, now=cell.now)
    try:
        outcome = copy.open(text, now=cell.now)
    except GroupError:
        pass
    else:
        assert isinstance(outcome, Pending)  # parked for an epoch it never reaches


def test_the_same_search_finds_the_change_secret_without_an_update(cell: Cell) -> None:
    state, identity = _seize(cell, "alice")
    admin_id = cell.members["admin"].identity.member_id
    change = _rotate(cell)
    assert change[0] == BUCKETED_VERSION
    assert _keys_that_open(state + identity.to_bytes(), cell, identity.member_id, change, admin_id)
    CellCrypto.from_bytes(state, identity).open_control(change, now=cell.now)


def test_an_admin_heals_with_its_own_commit(cell: Cell) -> None:
    state, identity = _seize(cell, "admin")
    cell["admin"].update_on_commit = True
    change = _rotate(cell)
    assert [u.member_id for u in committed_updates(change)] == [identity.member_id]
    assert cell["admin"].receive_generation == 1
    assert (
        _keys_that_open(
            state + identity.to_bytes(), cell, identity.member_id, change, identity.member_id
        )
        == 0
    )
    with pytest.raises(TamperedError):
        CellCrypto.from_bytes(state, identity).open_control(change, now=cell.now)


def test_every_member_records_the_committed_receive_key(cell: Cell) -> None:
    _commit(cell, "alice")
    alice = cell.members["alice"].identity.member_id
    public = x25519_public_from_private(cell["alice"]._s.receive_private)  # type: ignore[arg-type]
    for name in ("admin", "bob"):
        assert cell[name]._s.receive_publics[alice] == (1, public)
    assert cell["admin"]._s.key_updates == {}
    # A second update and commit: generation 2 replaces 1, the old key is gone.
    _commit(cell, "alice")
    assert cell["alice"].receive_generation == 2
    assert cell["alice"]._s.pending_receive == {}
    assert cell["bob"]._s.receive_publics[alice][0] == 2


def test_a_replayed_or_forged_update_is_refused(cell: Cell) -> None:
    data = cell["alice"].key_update(now=cell.now)
    cell["admin"].accept_key_update(data)
    _rotate(cell)
    with pytest.raises(MembershipError):  # generation 1 is committed: a replay
        cell["admin"].accept_key_update(data)
    forged = bytearray(cell["alice"].key_update(now=cell.now))
    forged[-1] ^= 1
    with pytest.raises(BadSignatureError):
        cell["admin"].accept_key_update(bytes(forged))
    with pytest.raises(MalformedError):
        cell["admin"].accept_key_update(data[:-1])
    stranger = Identity.generate("stranger")
    alien = sign_key_update(stranger, cell["admin"].cell_id, 1, bytearray(32 * b"\x05"))
    with pytest.raises(MembershipError):
        cell["admin"].accept_key_update(alien.to_bytes())
    # A member that is not an admin checks and keeps nothing.
    assert not cell["bob"].accept_key_update(cell["alice"].key_update(now=cell.now))


def test_a_change_committing_a_stale_update_is_refused_by_every_member(cell: Cell) -> None:
    old = KeyUpdate.from_bytes(cell["alice"].key_update(now=cell.now))
    cell["admin"].accept_key_update(old.to_bytes())
    _rotate(cell)
    admin = cell["admin"]
    change = build_change(
        cell.members["admin"].identity,
        admin._s,
        admin._rng,
        admin._pair,
        entry_fields=None,
        now=cell.now,
        group_keys=None,
        updates=[old],
    )
    for name in ("bob", "alice"):
        with pytest.raises(MembershipError):
            cell[name].open_control(change, now=cell.now)


def test_a_joined_admin_that_never_saw_an_update_still_reaches_the_member(cell: Cell) -> None:
    _commit(cell, "alice")
    cell.join("second", role=Role.ADMIN)
    alice = cell.members["alice"].identity.member_id
    assert alice not in cell["second"]._s.receive_publics  # the welcome does not carry it
    cell_id = cell["admin"].cell_id
    while True:  # someone in alice's bucket, so that the add refreshes it
        newcomer = Identity.generate("newcomer")
        if bucket_of(cell_id, newcomer.member_id) == bucket_of(cell_id, alice):
            break
    assert not cell["alice"].key_update_due(cell.now)  # just updated
    cell.post_control(cell["second"].add_member(newcomer.info, now=cell.now))
    cell.sync()
    assert cell["alice"].epoch == cell["second"].epoch
    assert not [u for u in cell.members["alice"].updates if isinstance(u, GroupError)]
    # Boxed to her identity key: alice notices, and her next update is due at once, so
    # that the admin who did not know her key learns one (§G6.5) ...
    assert cell["alice"].key_update_due(cell.now)
    assert not cell["bob"].key_update_due(cell.now)  # boxed to what bob has: nothing due
    _commit(cell, "alice", by="second")
    assert cell["second"]._s.receive_publics[alice][0] == cell["alice"].receive_generation == 2
    assert not cell["alice"].key_update_due(cell.now)
    # ... and from then on its changes box to it.
    while True:
        other = Identity.generate("other")
        if bucket_of(cell_id, other.member_id) == bucket_of(cell_id, alice):
            break
    cell.post_control(cell["second"].add_member(other.info, now=cell.now))
    cell.sync()
    assert not cell["alice"].key_update_due(cell.now)


def test_a_key_update_is_due_after_the_period(cell: Cell) -> None:
    alice = cell["alice"]
    # A joiner's first update is due a period after it joined (its identity key, generation
    # 0, was boxed to moments ago), not at once: a cell onboarding many members at once
    # would otherwise owe a rotation per 16 of them.
    assert not alice.key_update_due(cell.now)
    assert alice.key_update_due(cell.now + KEY_UPDATE_PERIOD)
    alice.key_update(now=cell.now)
    assert not alice.key_update_due(cell.now + KEY_UPDATE_PERIOD - 1)
    assert alice.key_update_due(cell.now + KEY_UPDATE_PERIOD)


def test_receive_keys_survive_a_save(cell: Cell) -> None:
    _commit(cell, "alice")
    cell["alice"].key_update(now=cell.now)
    for name in ("alice", "admin"):
        saved = write_state(cell[name]._s, cached=False)
        again = read_state(saved, cell.members[name].identity.member_id)
        assert write_state(again, cached=False) == saved
        assert again.receive_generation == cell[name]._s.receive_generation
        assert again.receive_publics == cell[name]._s.receive_publics


_FIELDS = st.tuples(
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=16, max_size=16),
    st.integers(min_value=0, max_value=2**32 - 1),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=64, max_size=64),
)


def _v4_change(tail: bytes) -> bytes:
    """A version 4 change whose key section is the smallest (no refresh), then `tail`."""
    section = bytes(32) + b"\x00" + bytes(64 * BOX_SIZE)
    return bytes([COMMITTING_VERSION]) + bytes(KEYS_OFFSET_V3 - 1) + section + bytes(2048) + tail


@given(st.lists(_FIELDS, min_size=1, max_size=MAX_COMMITTED), st.binary(max_size=64))
def test_committed_updates_read_back_what_was_written(
    fields: list[tuple[bytes, bytes, int, bytes, bytes]], filler: bytes
) -> None:
    updates = [
        KeyUpdate(cell_id=c, member_id=m, generation=g, receive_pub=k, signature=sig)
        for c, m, g, k, sig in fields
    ]
    tail = bytes([len(updates)]) + b"".join(u.to_bytes() for u in updates) + filler
    assert committed_updates(_v4_change(tail)) == updates


@given(st.binary(max_size=MAX_COMMITTED * 133 + 8))
def test_any_bytes_after_the_table_parse_or_are_malformed(tail: bytes) -> None:
    try:
        updates = committed_updates(_v4_change(tail))
    except MalformedError:
        return
    assert 0 < len(updates) <= MAX_COMMITTED
    assert tail[1:].startswith(b"".join(u.to_bytes() for u in updates))


def test_a_version_3_change_commits_nothing(cell: Cell) -> None:
    change = _rotate(cell)
    assert change[0] == BUCKETED_VERSION
    assert committed_updates(change) == []


def test_a_version_4_state_loads_with_identity_receive_keys(cell: Cell) -> None:
    """A state saved before receive keys (version 4) is version 5 without the receive part:
    it loads with every receive key the identity key, and the cell heals from there."""
    saved = write_state(cell["bob"]._s, cached=False, version=5)
    # A member that never updated ends with: generation 0, no key, no pending, the time,
    # no receive keys of others, no held updates (4 + 1 + 1 + 8 + 2 + 2 bytes).
    assert saved[-18:-12] == bytes(6)
    assert saved[-4:] == bytes(4)
    older = bytes([4]) + saved[1:-18]
    bob = cell.members["bob"].identity
    again = CellCrypto.from_bytes(older, bob)
    assert again.receive_generation == 0
    assert again._s.receive_publics == {}
    cell.members["bob"].cell = again
    _commit(cell, "bob")
    assert cell["bob"].receive_generation == 1
    assert not [u for u in cell.members["bob"].updates if isinstance(u, GroupError)]


def test_an_admin_commits_as_many_updates_as_fit_and_keeps_the_rest() -> None:
    """In a cell of 640 members (about 10 a bucket) 16 refreshed buckets do not fit one
    envelope: the change commits the oldest that fit, the next change the rest."""
    cell = Cell()
    admin = cell["admin"]
    people = [Identity.generate(f"m{i}") for i in range(639)]
    for person in people:
        admin.open_control(
            admin.add_member(person.info, now=cell.now), now=cell.now, announce=False
        )
    cell_id = admin.cell_id
    buckets: dict[int, list[Identity]] = {}
    for person in people:
        buckets.setdefault(bucket_of(cell_id, person.member_id), []).append(person)
    # One updater in each of the largest buckets: each update refreshes one more bucket, and
    # the largest make sure 16 do not fit, whatever ids the members drew.
    largest = sorted(buckets.values(), key=len, reverse=True)[:MAX_COMMITTED]
    updaters = [bucket[0] for bucket in largest]
    for person in updaters:
        update = sign_key_update(person, cell_id, 1, bytearray(os.urandom(32)))
        assert admin.accept_key_update(update.to_bytes())
    first = admin.rotate(now=cell.now)
    assert len(first) == 16384
    committed = [u.member_id for u in committed_updates(first)]
    assert 0 < len(committed) < MAX_COMMITTED
    assert committed == [p.member_id for p in updaters[: len(committed)]]  # oldest first
    admin.open_control(first, now=cell.now, announce=False)
    second = admin.rotate(now=cell.now)
    rest = [u.member_id for u in committed_updates(second)]
    assert rest == [p.member_id for p in updaters[len(committed) :]]


# -- the key update envelope (kind 8): how a member's update reaches the admins ---------------


def _post_update(cell: Cell, name: str) -> bytes:
    """`name` makes a key update and posts it in the group mailbox (kind 8); return it."""
    data = cell[name].key_update(now=cell.now)
    cell.group.append(
        cell[name].seal_key_update(data, expires_at=int(cell.now) + 3600, now=cell.now)
    )
    return data


def _take_all(cell: Cell, name: str) -> list[bool | GroupError]:
    """Sync, then hand every key update envelope `name` opened to `take_key_update`."""
    cell.sync()
    taken: list[bool | GroupError] = []
    for result in cell.members[name].results:
        if isinstance(result, Opened) and result.kind == Kind.KEY_UPDATE:
            try:
                taken.append(cell[name].take_key_update(result))
            except GroupError as exc:
                taken.append(exc)
    cell.members[name].results.clear()
    return taken


def test_a_posted_update_reaches_the_admin_and_its_commit_heals(cell: Cell) -> None:
    _post_update(cell, "alice")
    assert _take_all(cell, "admin") == [True]
    assert cell["admin"].waiting_key_updates == 1
    assert _take_all(cell, "bob") == [False]  # not an admin: keeps nothing
    assert cell["bob"].waiting_key_updates == 0
    _rotate(cell)
    assert cell["alice"].receive_generation == 1
    assert cell["admin"].waiting_key_updates == 0
    cell.send("admin", b"after the commit")
    cell.sync()
    results = cell.members["alice"].results
    assert [r.plaintext for r in results if isinstance(r, Opened) and r.plaintext] == [
        b"after the commit"
    ]


def test_a_posted_update_of_another_member_or_an_old_generation_is_refused(cell: Cell) -> None:
    alice_update = cell["alice"].key_update(now=cell.now)
    # bob seals alice's update on his own chain (seal_key_update would refuse it).
    cell.group.append(
        cell["bob"]._seal(
            Kind.KEY_UPDATE, alice_update, expires_at=int(cell.now) + 60, now=cell.now
        )
    )
    (refused,) = _take_all(cell, "admin")
    assert isinstance(refused, MembershipError)
    assert cell["admin"].waiting_key_updates == 0
    with pytest.raises(ValueError, match="not a key update of this member"):
        cell["bob"].seal_key_update(alice_update, expires_at=int(cell.now) + 60, now=cell.now)
    first = _post_update(cell, "alice")
    assert _take_all(cell, "admin") == [True]
    _rotate(cell)
    # The committed update read again (after its change, or posted again after a restart):
    # quietly nothing. An older generation after a newer one is committed: refused.
    cell.group.append(
        cell["alice"].seal_key_update(first, expires_at=int(cell.now) + 60, now=cell.now)
    )
    assert _take_all(cell, "admin") == [False]
    newer = _post_update(cell, "alice")
    assert _take_all(cell, "admin") == [True]
    _rotate(cell)
    assert cell["alice"].receive_generation == KeyUpdate.from_bytes(newer).generation
    cell.group.append(
        cell["alice"]._seal(Kind.KEY_UPDATE, first, expires_at=int(cell.now) + 60, now=cell.now)
    )
    (replayed,) = _take_all(cell, "admin")
    assert isinstance(replayed, MembershipError)
    assert cell["admin"].waiting_key_updates == 0


@given(st.binary(max_size=300))
def test_any_key_update_body_is_taken_or_refused_with_a_group_error(body: bytes) -> None:
    cell = Cell()
    cell.join("alice")
    cell.group.append(
        cell["alice"]._seal(Kind.KEY_UPDATE, body, expires_at=int(cell.now) + 60, now=cell.now)
    )
    (outcome,) = _take_all(cell, "admin")
    assert outcome is False or isinstance(outcome, GroupError)
    assert cell["admin"].waiting_key_updates == 0
