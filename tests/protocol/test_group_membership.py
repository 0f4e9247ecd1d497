"""The membership log: chains that verify, and every kind of forgery refused.

docs/protocol.md, Part 2, "Membership log". The log is built with real identities and real
signatures; forgeries are made the way an attacker could: signing with the wrong key,
re-signing altered fields with a key it holds, reordering, replaying, splicing.
"""

from __future__ import annotations

import dataclasses
from typing import Final

import pytest

from cellrelay.protocol._crypto import random_bytes
from cellrelay.protocol.cell._binary import Reader
from cellrelay.protocol.cell._control import ChangeBody, change_header, seal_epoch_change
from cellrelay.protocol.cell._epochs import build_change
from cellrelay.protocol.cell._errors import MalformedError, MembershipError
from cellrelay.protocol.cell._identity import Identity, MemberInfo
from cellrelay.protocol.cell._keys import PAIRWISE_EPOCH_BOX, EpochKeys
from cellrelay.protocol.cell._membership import (
    MAX_MEMBERS,
    LogEntry,
    Membership,
    Op,
    Role,
    sign_entry,
)

from .group_harness import Cell, new_keys

CELL: Final = bytes(range(16))


class Log:
    """A log under construction: sign the next entry as anyone, keep the honest state."""

    def __init__(self) -> None:
        """Start with the creator's genesis."""
        self.people = {name: Identity.generate(name) for name in ("ada", "ben", "cy", "dee")}
        self.entries = [
            sign_entry(
                self.people["ada"],
                op=Op.GENESIS,
                index=0,
                prev_hash=bytes(32),
                epoch=1,
                timestamp_ms=1,
                cell_id=CELL,
                subject=self.people["ada"].info,
                role=Role.ADMIN,
            )
        ]
        self.state = Membership.genesis(self.entries[0])

    def entry(self, signer: str, op: Op, subject: str, role: Role = Role.MEMBER) -> LogEntry:
        """Return the next entry (not applied), signed by `signer`."""
        return sign_entry(
            self.people[signer],
            op=op,
            index=self.state.head_index + 1,
            prev_hash=self.state.head_hash,
            epoch=self.state.head_epoch + 1,
            timestamp_ms=len(self.entries) + 1,
            cell_id=CELL,
            subject=self.people[subject].info,
            role=role,
        )

    def append(self, signer: str, op: Op, subject: str, role: Role = Role.MEMBER) -> LogEntry:
        """Sign, verify and apply the next entry."""
        entry = self.entry(signer, op, subject, role)
        self.state = self.state.apply(entry)
        self.entries.append(entry)
        return entry


def test_a_whole_log_verifies_and_gives_the_final_state() -> None:
    log = Log()
    log.append("ada", Op.ADD, "ben")
    log.append("ada", Op.ADD, "cy", Role.ADMIN)
    log.append("cy", Op.PROMOTE, "ben", Role.ADMIN)
    log.append("ben", Op.DEMOTE, "ada")
    log.append("cy", Op.REMOVE, "ada")
    state = Membership.from_log(log.entries)
    people = log.people
    assert set(state.members) == {people["ben"].member_id, people["cy"].member_id}
    assert state.admins == {people["ben"].member_id, people["cy"].member_id}
    assert state.head_index == 5
    assert state.head_hash == log.entries[-1].hash
    assert state == log.state


def test_entries_round_trip_through_bytes() -> None:
    log = Log()
    entry = log.append("ada", Op.ADD, "ben", Role.ADMIN)
    assert LogEntry.from_bytes(entry.to_bytes()) == entry
    with pytest.raises(MalformedError):
        LogEntry.from_bytes(entry.to_bytes()[:-1])
    bad_op = bytearray(entry.to_bytes())
    bad_op[1] = 9
    with pytest.raises(MalformedError):
        LogEntry.from_bytes(bytes(bad_op))


def test_a_non_admin_signer_is_refused() -> None:
    log = Log()
    log.append("ada", Op.ADD, "ben")
    with pytest.raises(MembershipError, match="admin"):
        log.state.apply(log.entry("ben", Op.ADD, "cy"))
    with pytest.raises(MembershipError, match="admin"):
        log.state.apply(log.entry("dee", Op.ADD, "dee"))  # an outsider adding itself


def test_a_broken_chain_is_refused_even_when_properly_signed() -> None:
    log = Log()
    log.append("ada", Op.ADD, "ben")
    honest = log.entry("ada", Op.ADD, "cy")
    for change in (
        {"prev_hash": bytes(32)},
        {"index": honest.index + 1},
        {"index": honest.index - 1},
        {"cell_id": bytes(16)},
        {"epoch": log.state.head_epoch},
    ):
        unsigned = dataclasses.replace(honest, **change)
        resigned = sign_entry(
            log.people["ada"],
            **{k: getattr(unsigned, k) for k in _SIGNED_FIELDS},
        )
        with pytest.raises(MembershipError):
            log.state.apply(resigned)
    assert log.state.apply(honest).head_index == honest.index


_SIGNED_FIELDS: Final = (
    "op",
    "index",
    "prev_hash",
    "epoch",
    "timestamp_ms",
    "cell_id",
    "subject",
    "role",
)


def test_reordered_replayed_and_dropped_entries_are_refused() -> None:
    log = Log()
    log.append("ada", Op.ADD, "ben")
    log.append("ada", Op.ADD, "cy")
    log.append("ada", Op.ADD, "dee")
    genesis, add_ben, add_cy, add_dee = log.entries
    for entries in (
        [genesis, add_cy, add_ben, add_dee],  # reordered
        [genesis, add_ben, add_ben, add_cy],  # replayed
        [genesis, add_ben, add_dee],  # one dropped
        [add_ben, genesis, add_cy],  # not starting at genesis
        [],
    ):
        with pytest.raises(MembershipError):
            Membership.from_log(entries)


def test_altered_fields_or_signatures_do_not_verify() -> None:
    log = Log()
    entry = log.entry("ada", Op.ADD, "ben")
    outsider = log.people["dee"].info
    for forged in (
        dataclasses.replace(entry, role=Role.ADMIN),
        dataclasses.replace(entry, subject=outsider),
        dataclasses.replace(entry, timestamp_ms=entry.timestamp_ms + 1),
        dataclasses.replace(entry, signature=bytes(64)),
        dataclasses.replace(
            entry, signature=entry.signature[:-1] + bytes([entry.signature[-1] ^ 1])
        ),
    ):
        with pytest.raises(MembershipError):
            log.state.apply(forged)


def test_a_fork_is_refused_after_the_first_branch() -> None:
    log = Log()
    branch_one = log.entry("ada", Op.ADD, "ben")
    branch_two = log.entry("ada", Op.ADD, "cy")
    after = log.state.apply(branch_one)
    with pytest.raises(MembershipError):
        after.apply(branch_two)


def test_operations_that_do_not_apply_are_refused() -> None:
    log = Log()
    log.append("ada", Op.ADD, "ben")
    refused = [
        log.entry("ada", Op.ADD, "ben"),  # already a member
        log.entry("ada", Op.REMOVE, "cy"),  # not a member
        log.entry("ada", Op.PROMOTE, "ada", Role.ADMIN),  # already an admin
        log.entry("ada", Op.DEMOTE, "ben"),  # not an admin
        log.entry("ada", Op.DEMOTE, "ada"),  # the last admin
        log.entry("ada", Op.REMOVE, "ada"),  # the last admin
        log.entry("ada", Op.PROMOTE, "ben", Role.MEMBER),  # a promotion must say admin
        log.entry("ada", Op.GENESIS, "ben", Role.ADMIN),  # a second genesis
    ]
    for entry in refused:
        with pytest.raises(MembershipError):
            log.state.apply(entry)


def test_remove_names_the_member_exactly() -> None:
    log = Log()
    log.append("ada", Op.ADD, "ben")
    ben = log.people["ben"].info
    renamed = MemberInfo(
        member_id=ben.member_id, sign_pub=ben.sign_pub, dh_pub=ben.dh_pub, name="other"
    )
    entry = dataclasses.replace(log.entry("ada", Op.REMOVE, "ben"), subject=renamed)
    resigned = sign_entry(log.people["ada"], **{k: getattr(entry, k) for k in _SIGNED_FIELDS})
    with pytest.raises(MembershipError):
        log.state.apply(resigned)


def test_a_cell_holds_at_most_max_members() -> None:
    log = Log()
    state = log.state
    ada = log.people["ada"]
    for n in range(MAX_MEMBERS):
        newcomer = Identity.generate(f"m{n}")
        entry = sign_entry(
            ada,
            op=Op.ADD,
            index=state.head_index + 1,
            prev_hash=state.head_hash,
            epoch=state.head_epoch + 1,
            timestamp_ms=n,
            cell_id=CELL,
            subject=newcomer.info,
            role=Role.MEMBER,
        )
        if n < MAX_MEMBERS - 1:
            state = state.apply(entry)
        else:
            with pytest.raises(MembershipError, match="cannot add"):
                state.apply(entry)
    assert len(state.members) == MAX_MEMBERS


@pytest.mark.parametrize(
    "change",
    [
        {"index": 1},
        {"prev_hash": b"\x01" * 32},
        {"epoch": 2},
        {"role": Role.MEMBER},
        {"op": Op.ADD},
    ],
)
def test_invalid_genesis_entries_are_refused(change: dict[str, object]) -> None:
    ada = Identity.generate("ada")
    fields: dict[str, object] = {
        "op": Op.GENESIS,
        "index": 0,
        "prev_hash": bytes(32),
        "epoch": 1,
        "timestamp_ms": 1,
        "cell_id": CELL,
        "subject": ada.info,
        "role": Role.ADMIN,
    }
    fields.update(change)
    with pytest.raises(MembershipError):
        Membership.genesis(sign_entry(ada, **fields))  # type: ignore[arg-type]


def test_genesis_must_be_self_signed() -> None:
    ada, ben = Identity.generate("ada"), Identity.generate("ben")
    entry = sign_entry(
        ben,
        op=Op.GENESIS,
        index=0,
        prev_hash=bytes(32),
        epoch=1,
        timestamp_ms=1,
        cell_id=CELL,
        subject=ada.info,
        role=Role.ADMIN,
    )
    with pytest.raises(MembershipError):
        Membership.genesis(entry)


def test_member_info_round_trips_and_recomputes_the_id() -> None:
    info = Identity.generate("ada").info
    assert MemberInfo.from_bytes(info.to_bytes()) == info
    reader = Reader(info.to_bytes())
    assert MemberInfo.read(reader).member_id == info.member_id


# -- forged entries inside otherwise valid epoch changes ---------------------------------


def _forged_change(cell: Cell, signer: str, entry: LogEntry) -> bytes:
    """An epoch change signed by `signer` (an admin) that carries `entry` as given."""
    state = cell[signer]._s
    identity = cell.members[signer].identity
    number = state.current + 1
    ch = change_header(state.cell_id, number, identity.member_id)
    secret = random_bytes(32)
    keys = EpochKeys.derive(secret, state.cell_id, number)
    members = dict(state.membership.members)
    members[entry.subject.member_id] = entry.subject
    boxes = [
        (mid, identity.pairwise_key(info.dh_pub, PAIRWISE_EPOCH_BOX))
        for mid, info in sorted(members.items())
    ]
    return seal_epoch_change(
        signer=identity,
        ch=ch,
        nonce=random_bytes(24),
        header_key=state.epochs[state.current].keys.control_header,
        body_key=keys.control_body,
        body=ChangeBody(entry=entry, group_keys=None, admin_grant=None),
        secret=secret,
        boxes=boxes,
        filler=random_bytes((MAX_MEMBERS - len(boxes)) * 48),
        version=1,  # the box holds the epoch secret (§G6.2); members still read version 1
    )


def test_an_admin_signed_change_with_a_non_admin_entry_is_refused() -> None:
    cell = Cell()
    cell.join("alice")
    cell.join("bob")
    outsider = Identity.generate("eve")
    bob_state = cell["bob"].membership
    alice = cell.members["alice"]
    entry = sign_entry(
        alice.identity,  # a plain member signs the entry
        op=Op.ADD,
        index=bob_state.head_index + 1,
        prev_hash=bob_state.head_hash,
        epoch=cell["bob"].epoch + 1,
        timestamp_ms=1,
        cell_id=cell["bob"].cell_id,
        subject=outsider.info,
        role=Role.MEMBER,
    )
    envelope = _forged_change(cell, "admin", entry)
    before = cell["bob"].to_bytes()
    with pytest.raises(MembershipError, match="admin"):
        cell["bob"].open_control(envelope, now=cell.now)
    assert cell["bob"].to_bytes() == before  # nothing applied


def test_a_change_whose_entry_names_another_epoch_is_refused() -> None:
    cell = Cell()
    cell.join("bob")
    state = cell["bob"].membership
    entry = sign_entry(
        cell.members["admin"].identity,
        op=Op.ADD,
        index=state.head_index + 1,
        prev_hash=state.head_hash,
        epoch=cell["bob"].epoch + 2,  # the change is for epoch + 1
        timestamp_ms=1,
        cell_id=cell["bob"].cell_id,
        subject=Identity.generate("eve").info,
        role=Role.MEMBER,
    )
    with pytest.raises(MembershipError, match="another epoch"):
        cell["bob"].open_control(_forged_change(cell, "admin", entry), now=cell.now)


def test_a_removal_that_keeps_the_group_keys_is_refused() -> None:
    cell = Cell()
    cell.join("alice")
    cell.join("bob")
    admin = cell.members["admin"]
    envelope = build_change(
        admin.identity,
        admin.cell._s,
        random_bytes,
        admin.cell._pair,
        entry_fields=(Op.REMOVE, cell["alice"].me, Role.MEMBER),
        now=cell.now,
        group_keys=None,
    )
    with pytest.raises(MembershipError, match="rotate"):
        cell["bob"].open_control(envelope, now=cell.now)
    # The API never builds one: remove_member requires new keys.
    envelope = cell["admin"].remove_member(
        cell["alice"].me.member_id, now=cell.now, new_group_keys=new_keys(3)
    )
    assert cell["bob"].open_control(envelope, now=cell.now).group_keys == new_keys(3)
