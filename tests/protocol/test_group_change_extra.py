"""Client data in an epoch change (docs/protocol.md §G6.3): carried to the new epoch's members only.

The client uses it to move a cell to a fresh group mailbox and to pass cell settings
(§C5); to this layer it is opaque bytes, bounded, with one encoding.
"""

from __future__ import annotations

import pytest

from cellrelay.protocol._crypto import random_bytes
from cellrelay.protocol.cell._control import (
    BODY_SIZE,
    MAX_ADMIN_SECRETS,
    MAX_CHANGE_EXTRA,
    ChangeBody,
)
from cellrelay.protocol.cell._errors import MalformedError
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._membership import Op, Role, sign_entry
from cellrelay.protocol.cell._outcomes import EpochUpdate
from cellrelay.protocol.cell._padding import pad, unpad

from .group_harness import Cell, new_keys


def _updates(cell: Cell, name: str) -> list[EpochUpdate]:
    return [u for u in cell.members[name].updates if isinstance(u, EpochUpdate)]


def test_a_removal_carries_extra_to_the_remaining_members_only() -> None:
    cell = Cell()
    cell.join("bob")
    cell.join("carol")
    carol = cell.members["carol"].identity.member_id
    extra = b"new mailbox: " + random_bytes(16)
    cell.post_control(
        cell["admin"].remove_member(carol, now=cell.now, new_group_keys=new_keys(9), extra=extra)
    )
    cell.sync()
    for name in ("admin", "bob"):
        last = _updates(cell, name)[-1]
        assert last.extra == extra
        assert last.group_keys == new_keys(9)
    removed = _updates(cell, "carol")[-1]
    assert removed.removed_self
    assert removed.extra is None  # the body is under the new epoch's key: carol cannot read it


def test_a_rotation_carries_extra_and_an_ordinary_change_none() -> None:
    cell = Cell()
    cell.join("bob")
    assert _updates(cell, "admin")[-1].extra is None  # the add
    cell.post_control(cell["admin"].rotate(now=cell.now, extra=b"\x01"))
    cell.sync()
    assert [u.extra for u in (_updates(cell, "admin")[-1], _updates(cell, "bob")[-1])] == [
        b"\x01",
        b"\x01",
    ]


@pytest.mark.parametrize("extra", [b"", bytes(MAX_CHANGE_EXTRA + 1)])
def test_extra_out_of_bounds_is_refused_before_anything_is_sealed(extra: bytes) -> None:
    cell = Cell()
    with pytest.raises(ValueError, match="extra"):
        cell["admin"].rotate(now=cell.now, extra=extra)
    with pytest.raises(ValueError, match="extra"):
        ChangeBody(entry=None, group_keys=None, admin_grant=None, extra=extra)


def test_a_body_without_extra_is_unchanged_and_with_it_round_trips() -> None:
    plain = ChangeBody(entry=None, group_keys=(b"r" * 32, b"w" * 32), admin_grant=None)
    # The layout before the field existed: three flags and the keys, nothing after.
    assert unpad(plain.to_bytes()) == b"\x00\x01" + b"r" * 32 + b"w" * 32 + b"\x00"
    with_extra = ChangeBody(entry=None, group_keys=None, admin_grant=None, extra=b"abc")
    assert unpad(with_extra.to_bytes()) == b"\x00\x00\x00\x01\x00\x03abc"
    assert ChangeBody.from_bytes(with_extra.to_bytes()) == with_extra
    assert ChangeBody.from_bytes(plain.to_bytes()) == plain


@pytest.mark.parametrize(
    "tail",
    [
        b"\x00",  # an explicit "no extra": absent has one encoding, nothing at all
        b"\x01\x00\x00",  # present but empty
        b"\x02\x00\x01a",  # not a flag
        b"\x01" + (MAX_CHANGE_EXTRA + 1).to_bytes(2, "big") + bytes(MAX_CHANGE_EXTRA + 1),
        b"\x01\x00\x05abc",  # cut short
        b"\x01\x00\x01ab",  # trailing bytes
    ],
)
def test_a_damaged_extra_field_is_malformed(tail: bytes) -> None:
    with pytest.raises(MalformedError):
        ChangeBody.from_bytes(pad(b"\x00\x00\x00" + tail, BODY_SIZE))


def test_the_largest_body_with_the_largest_extra_fits() -> None:
    """An entry with a 32-byte name, rotated keys, the largest grant and the largest extra."""
    admin = Identity.generate("a" * 32)
    subject = Identity.generate("b" * 32).info
    entry = sign_entry(admin, op=Op.PROMOTE, index=1, prev_hash=bytes(32), epoch=2,
                       timestamp_ms=1, cell_id=bytes(16), subject=subject, role=Role.ADMIN)  # fmt: skip
    body = ChangeBody(
        entry=entry,
        group_keys=(b"r" * 32, b"w" * 32),
        admin_grant=bytes(MAX_ADMIN_SECRETS + 16),
        extra=bytes(MAX_CHANGE_EXTRA),
    )
    padded = body.to_bytes()
    assert len(padded) == BODY_SIZE
    assert ChangeBody.from_bytes(padded) == body
