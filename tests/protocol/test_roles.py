"""Roles in the signed membership log (issue 14 item 2): SET_ROLE entries, allowed and refused.

docs/protocol.md §G5. Every entry is signed by real identities; a refused entry is one an
attacker (a member who is not an admin) or a bug could make. The property test drives a
random sequence of role operations against a plain model of who holds which role.
"""

from __future__ import annotations

from typing import Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellrelay.protocol.cell._control import WelcomeContent
from cellrelay.protocol.cell._epochs import welcome_content
from cellrelay.protocol.cell._errors import MalformedError, MembershipError, NotAdminError
from cellrelay.protocol.cell._group import CellCrypto
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._membership import PLAIN_ROLES, LogEntry, Membership, Op, Role

from .group_harness import Cell
from .test_group_membership import Log

CELL: Final = bytes(range(16))


def _log_with_members() -> Log:
    log = Log()
    for name in ("ben", "cy", "dee"):
        log.append("ada", Op.ADD, name)
    return log


def _id(log: Log, name: str) -> bytes:
    return log.people[name].member_id


def test_an_admin_sets_every_plain_role_and_the_state_says_so() -> None:
    log = _log_with_members()
    for role in (Role.DISPATCHER, Role.RESPONDER, Role.OBSERVER, Role.MEMBER):
        log.append("ada", Op.SET_ROLE, "ben", role)
        assert log.state.role_of(_id(log, "ben")) is role
    log.append("ada", Op.SET_ROLE, "cy", Role.DISPATCHER)
    assert log.state.with_role(Role.DISPATCHER) == {_id(log, "cy")}
    assert log.state.with_role(Role.MEMBER) == {_id(log, "ben"), _id(log, "dee")}
    # The whole log verifies again from its genesis, to the same roles.
    assert Membership.from_log(log.entries).roles == log.state.roles


def test_a_member_can_be_added_with_a_role_and_keeps_it_until_changed() -> None:
    log = Log()
    log.append("ada", Op.ADD, "ben", Role.RESPONDER)
    assert log.state.role_of(_id(log, "ben")) is Role.RESPONDER
    log.append("ada", Op.PROMOTE, "ben", Role.ADMIN)  # promotion replaces the role
    assert log.state.role_of(_id(log, "ben")) is Role.ADMIN
    assert _id(log, "ben") not in log.state.roles
    log.append("ada", Op.DEMOTE, "ben", Role.MEMBER)
    assert log.state.role_of(_id(log, "ben")) is Role.MEMBER
    log.append("ada", Op.SET_ROLE, "ben", Role.OBSERVER)
    log.append("ada", Op.REMOVE, "ben", Role.MEMBER)
    assert log.state.role_of(_id(log, "ben")) is None
    assert not log.state.roles  # nothing left behind for a removed member


@pytest.mark.parametrize(
    ("signer", "subject", "role", "why"),
    [
        ("ben", "cy", Role.DISPATCHER, "a dispatcher may not give roles: only admins sign"),
        ("cy", "cy", Role.DISPATCHER, "nobody gives themselves a role"),
        ("ada", "cy", Role.ADMIN, "admins are made with PROMOTE"),
        ("ada", "cy", Role.MEMBER, "cy is a member already"),
        ("ada", "ada", Role.DISPATCHER, "an admin is demoted first"),
    ],
)
def test_role_changes_that_do_not_apply_are_refused(
    signer: str, subject: str, role: Role, why: str
) -> None:
    log = _log_with_members()
    log.append("ada", Op.SET_ROLE, "ben", Role.DISPATCHER)
    entry = log.entry(signer, Op.SET_ROLE, subject, role)
    with pytest.raises(MembershipError):
        log.state.apply(entry)
    assert why


def test_a_set_role_for_a_stranger_is_refused() -> None:
    log = _log_with_members()
    log.people["eve"] = Identity.generate("eve")
    with pytest.raises(MembershipError):
        log.state.apply(log.entry("ada", Op.SET_ROLE, "eve", Role.DISPATCHER))


def test_an_unknown_role_number_is_malformed() -> None:
    log = _log_with_members()
    wire = bytearray(log.entry("ada", Op.SET_ROLE, "ben", Role.DISPATCHER).to_bytes())
    wire[-65] = max(Role) + 1  # the role byte, just before the 64-byte signature
    with pytest.raises(MalformedError):
        LogEntry.from_bytes(bytes(wire))


def test_roles_travel_through_real_epoch_changes_welcomes_and_saved_state() -> None:
    cell = Cell()
    cell.join("ben")
    cell.join("cy", role=Role.RESPONDER)
    ben = cell.members["ben"].identity.member_id
    cy = cell.members["cy"].identity.member_id
    cell.post_control(cell["admin"].set_role(ben, Role.DISPATCHER, now=cell.now))
    cell.sync()
    for name in ("admin", "ben", "cy"):
        assert cell[name].role_of(ben) is Role.DISPATCHER
        assert cell[name].role_of(cy) is Role.RESPONDER
    # A joiner learns the roles from its welcome (signed by the admin).
    dee = cell.join("dee")
    assert dee.cell.role_of(ben) is Role.DISPATCHER
    assert dee.cell.membership.roles == cell["admin"].membership.roles
    # And a saved state restores them.
    restored = CellCrypto.from_bytes(dee.cell.to_bytes(), dee.identity)
    assert restored.role_of(ben) is Role.DISPATCHER
    assert restored.role_of(cy) is Role.RESPONDER


def test_only_an_admin_may_propose_a_role() -> None:
    cell = Cell()
    cell.join("ben")
    cy = cell.join("cy")
    with pytest.raises(NotAdminError):
        cell["ben"].set_role(cy.identity.member_id, Role.DISPATCHER, now=cell.now)


def test_a_welcome_with_an_unknown_role_is_malformed() -> None:
    cell = Cell()
    ben = cell.join("ben", role=Role.OBSERVER)
    admin = cell["admin"]
    wb = welcome_content(
        admin._s, ben.identity.member_id, now=cell.now, extra=b"", invite_binding=bytes(32)
    )
    wire = bytearray(wb.to_bytes())
    # The roles follow each MemberInfo; find ben's byte (4, OBSERVER) and make it 9.
    info = ben.identity.info.to_bytes()
    at = wire.index(info) + len(info)
    assert wire[at] == Role.OBSERVER
    wire[at] = 9
    with pytest.raises(MalformedError):
        WelcomeContent.from_bytes(bytes(wire))


# ---------------------------------------------------------------------------------------
# A property: any sequence of role operations, valid or not, leaves the state a plain
# model predicts, and refuses exactly what the model says does not apply.

_NAMES: Final = ("ben", "cy", "dee")
_ops = st.lists(
    st.tuples(
        st.sampled_from(["ada", *_NAMES]),
        st.sampled_from([Op.SET_ROLE, Op.PROMOTE, Op.DEMOTE]),
        st.sampled_from(_NAMES),
        st.sampled_from(list(Role)),
    ),
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(_ops)
def test_role_operations_match_a_model(ops: list[tuple[str, Op, str, Role]]) -> None:
    log = _log_with_members()
    model = {"ada": Role.ADMIN, **dict.fromkeys(_NAMES, Role.MEMBER)}
    for signer, op, subject, role in ops:
        current = model[subject]
        if op is Op.SET_ROLE:
            ok = current is not Role.ADMIN and role in PLAIN_ROLES and role is not current
        elif op is Op.PROMOTE:
            ok = current is not Role.ADMIN and role is Role.ADMIN
        else:
            admins = [n for n, r in model.items() if r is Role.ADMIN]
            ok = current is Role.ADMIN and role is Role.MEMBER and len(admins) > 1
        ok = ok and model[signer] is Role.ADMIN
        entry = log.entry(signer, op, subject, role)
        if ok:
            log.state = log.state.apply(entry)
            log.entries.append(entry)
            model[subject] = role
        else:
            with pytest.raises(MembershipError):
                log.state.apply(entry)
        for name, expected in model.items():
            assert log.state.role_of(_id(log, name)) is expected
    assert Membership.from_log(log.entries) == log.state
