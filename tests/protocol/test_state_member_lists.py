"""Saved state version 6: each epoch's member list as its difference from the current list.

An admin admitting members one by one keeps up to 64 old epochs in their grace windows;
saving each one's member list in full made its state 64 lists long (issue 12). Version 6
saves the differences; versions 1 to 5 are still read (the version 5 side is also checked
by tests/protocol/test_group_interaction.py's restarts).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.protocol.cell._binary import Reader
from cellrelay.protocol.cell._errors import MalformedError
from cellrelay.protocol.cell._group import CellCrypto
from cellrelay.protocol.cell._identity import Identity, MemberInfo
from cellrelay.protocol.cell._membership import Membership, Role
from cellrelay.protocol.cell._receiver import MAX_OLD_EPOCHS
from cellrelay.protocol.cell._state import (
    _read_members_diff,
    _write_members,
    _write_members_diff,
    read_state,
    write_state,
)

from .group_harness import Cell, new_keys

CELL_ID = bytes(range(16))
# A pool of members to draw lists from (keys are random bytes: only the encoding is tested).
POOL = [MemberInfo.create(os.urandom(32), os.urandom(32), f"m{i}") for i in range(24)]
RENAMED = {info.member_id: MemberInfo(member_id=info.member_id, sign_pub=info.sign_pub,
                                      dh_pub=info.dh_pub, name=info.name + "'")
           for info in POOL}  # fmt: skip


def _membership(infos: list[MemberInfo]) -> Membership:
    return Membership.snapshot(
        cell_id=CELL_ID,
        members=[(info, Role.ADMIN if i == 0 else Role.MEMBER) for i, info in enumerate(infos)],
        head_index=0,
        head_hash=bytes(32),
        head_epoch=1,
    )


def _lists() -> st.SearchStrategy[tuple[list[MemberInfo], dict[bytes, MemberInfo]]]:
    """A current list (one member at least) and an epoch's, some of whose infos differ."""
    current = st.lists(st.sampled_from(POOL), min_size=1, unique=True)
    epoch = st.lists(st.tuples(st.sampled_from(POOL), st.booleans()), unique_by=lambda p: p[0])
    return st.tuples(
        current,
        epoch.map(
            lambda pairs: {
                i.member_id: (RENAMED[i.member_id] if renamed else i) for i, renamed in pairs
            }
        ),
    )


@given(_lists())
def test_a_member_list_difference_reads_back_to_the_same_list(
    lists: tuple[list[MemberInfo], dict[bytes, MemberInfo]],
) -> None:
    current, members = _membership(lists[0]), dict(sorted(lists[1].items()))
    block = _write_members_diff(members, current)
    reader = Reader(block)
    assert _read_members_diff(reader, len(members), current) == members
    reader.end()
    # Never larger than the list in full by more than the two counts and the ids of the
    # current members the epoch lacks.
    absent = sum(1 for mid, info in current.members.items() if members.get(mid) != info)
    assert len(block) <= len(_write_members(members)) + 4 + 16 * absent


@given(_lists(), st.data())
def test_a_damaged_difference_is_malformed_or_another_valid_list(
    lists: tuple[list[MemberInfo], dict[bytes, MemberInfo]], data: st.DataObject
) -> None:
    """A flipped byte or a wrong count gives MalformedError, or a list that writes back the
    same bytes (the encoding has one form for each list: no second reading of one block)."""
    current, members = _membership(lists[0]), dict(sorted(lists[1].items()))
    block = bytearray(_write_members_diff(members, current))
    count = len(members) + data.draw(st.sampled_from([0, 0, 1, -1]))
    if block and data.draw(st.booleans()):
        position = data.draw(st.integers(0, len(block) - 1))
        block[position] ^= data.draw(st.integers(1, 255))
    try:
        reader = Reader(bytes(block))
        again = _read_members_diff(reader, max(count, 0), current)
        reader.end()
    except MalformedError:
        return
    assert _write_members_diff(again, current) == bytes(block)


def test_a_difference_naming_a_member_not_in_the_list_is_malformed() -> None:
    current = _membership(POOL[:3])
    block = bytes([0, 1]) + POOL[5].member_id + bytes([0, 0])
    with pytest.raises(MalformedError):
        _read_members_diff(Reader(block), 2, current)


@pytest.fixture(scope="module")
def admitted() -> Cell:
    """An admin who admitted 150 members one by one (each change read back, as a client
    does), and then removed two: 64 old epochs in their grace windows."""
    cell = Cell()
    admin = cell["admin"]
    people = [Identity.generate(f"member {i}") for i in range(150)]
    for person in people:
        admin.open_control(admin.add_member(person.info, now=cell.now), now=cell.now)
    for person in people[:2]:
        change = admin.remove_member(person.member_id, now=cell.now, new_group_keys=new_keys(9))
        admin.open_control(change, now=cell.now)
    return cell


def test_an_admin_saves_one_member_list_not_one_per_old_epoch(admitted: Cell) -> None:
    admin = admitted["admin"]
    state = admin._s
    assert len(state.epochs) > MAX_OLD_EPOCHS
    assert any(len(e.members) > len(state.membership.members) for e in state.epochs.values())
    current = state.membership
    lists = sum(len(_write_members(e.members)) for e in state.epochs.values())
    diffs = sum(len(_write_members_diff(e.members, current)) for e in state.epochs.values())
    # Each old epoch lacks the members added after it (up to 66 here), a 16-byte id each;
    # in full it held 84 to 150 members of 75 bytes.
    assert diffs * 10 < lists
    full, saved = write_state(state, version=5), write_state(state)
    assert len(full) - len(saved) == lists - diffs
    assert len(saved) * 3 < len(full)


def test_a_version_5_state_reads_back_and_saves_as_version_6(admitted: Cell) -> None:
    admin = admitted["admin"]
    older = write_state(admin._s, version=5)
    assert older[0] == 5
    state = read_state(older, admin.me.member_id)
    for number, epoch in admin._s.epochs.items():
        assert state.epochs[number].members == epoch.members
    assert write_state(state) == write_state(admin._s) == write_state(admin._s, cached=False)
    again = CellCrypto.from_bytes(older, admitted.members["admin"].identity)
    assert again.to_bytes() == admin.to_bytes()
    assert again.to_bytes()[0] == 6
    # Loaded from version 6, the epochs share the current list's infos (one copy in memory).
    shared = read_state(write_state(state), admin.me.member_id)
    current = shared.membership.members
    for epoch in shared.epochs.values():
        assert all(current[mid] is info for mid, info in epoch.members.items() if mid in current)
