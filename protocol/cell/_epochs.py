"""Proposing and verifying epoch changes, and what goes into a welcome.

docs/protocol.md, Part 2, "Epoch changes". `_control` knows the bytes; this module knows
the rules: who may sign, what a change must contain, what a member checks before it
applies one. `check_change` changes nothing: it returns a `VerifiedChange` that
`CellCrypto.open_control` then applies in one step, so a refused change leaves no trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from .._crypto import zero
from ._control import (
    BOX_SIZE,
    SECRET_SIZE,
    ChangeBody,
    WelcomeContent,
    change_header,
    find_box,
    open_admin_grant,
    open_change_body,
    open_change_header,
    seal_admin_grant,
    seal_epoch_change,
    verify_change,
)
from ._errors import GroupError, MalformedError, MembershipError
from ._keys import PAIRWISE_ADMIN_GRANT, PAIRWISE_EPOCH_BOX, EpochKeys
from ._membership import CELL_ID_SIZE, MAX_MEMBERS, Op, Role, sign_entry
from ._schedule import next_epoch_secret

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._identity import Identity, MemberInfo, Rng
    from ._membership import LogEntry, Membership
    from ._state import SavedState

__all__ = ["VerifiedChange", "build_change", "check_change", "welcome_content"]

_SIGNER: Final = slice(CELL_ID_SIZE + 4, CELL_ID_SIZE + 4 + 16)


def timestamp_ms(now: float) -> int:
    """Return `now` (Unix seconds) as whole milliseconds, clamped at 0."""
    return max(0, int(now * 1000))


@dataclass(slots=True, eq=False, kw_only=True)
class VerifiedChange:
    """An epoch change that passed every check, ready to apply.

    `secret` is None when the change has no box for this member: an admin removed it.
    """

    number: int
    signer: MemberInfo
    secret: bytearray | None = field(repr=False)
    entry: LogEntry | None = None
    membership: Membership | None = None
    group_keys: tuple[bytes, bytes] | None = field(default=None, repr=False)
    granted: bytes | None = field(default=None, repr=False)
    extra: bytes | None = field(default=None, repr=False)  # the body's client data


def check_change(
    state: SavedState,
    me: bytes,
    pair: Callable[[bytes, bytes], bytearray],
    envelope: bytes,
    number: int,
    nonce: bytes,
) -> VerifiedChange:
    """Verify the epoch change to `number` (= current + 1) against `state`; change nothing.

    Raises:
        TamperedError: the header, body or a grant does not authenticate.
        MalformedError: wrong cell, epoch or kind in CH; a grant without a promotion.
        MembershipError: not signed by an admin; its log entry does not verify or is for
            another epoch; a box for a member the entry removes; a removal that does not
            rotate the group keys.
        BadSignatureError: the admin's signature does not verify.
    """
    current = state.epochs[state.current]
    ch, signature = open_change_header(envelope, current.keys.control_header, nonce)
    if ch != change_header(state.cell_id, number, ch[_SIGNER]):
        raise MalformedError("epoch change names another cell or epoch")
    signer = state.membership.members.get(ch[_SIGNER])
    if signer is None or signer.member_id not in state.membership.admins:
        raise MembershipError("epoch change not signed by an admin")
    verify_change(signer, ch, signature, envelope)
    boxed = find_box(envelope, pair(signer.dh_pub, PAIRWISE_EPOCH_BOX), nonce, ch, me)
    if boxed is None:
        return VerifiedChange(number=number, signer=signer, secret=None)
    if envelope[0] == 1:  # an admin not yet upgraded: the box holds the epoch secret
        secret = boxed
    else:
        if current.init is None:  # pragma: no cover - every current epoch keeps it
            zero(boxed)
            raise MalformedError("no init secret for the current epoch")
        secret = next_epoch_secret(current.init, boxed, state.cell_id, number)
        zero(boxed)
    keys = EpochKeys.derive(secret, state.cell_id, number)
    try:
        body = open_change_body(envelope, keys.control_body, nonce, ch)
        membership = state.membership
        entry = body.entry
        if entry is not None:
            if entry.epoch != number:
                raise MembershipError("log entry for another epoch")
            membership = membership.apply(entry)
        if me not in membership.members:
            raise MembershipError("a box for a member the log removes")
        if entry is not None and entry.op is Op.REMOVE and body.group_keys is None:
            raise MembershipError("a removal must rotate the group keys")
        granted = None
        if body.admin_grant is not None:
            if entry is None or entry.op is not Op.PROMOTE:
                raise MalformedError("admin grant without a promotion")
            if entry.subject.member_id == me:
                key = pair(signer.dh_pub, PAIRWISE_ADMIN_GRANT)
                granted = open_admin_grant(key, nonce, ch, me, body.admin_grant)
    except GroupError:
        zero(secret)
        raise
    finally:
        keys.clear()
    return VerifiedChange(
        number=number,
        signer=signer,
        secret=secret,
        entry=entry,
        membership=membership,
        group_keys=body.group_keys,
        granted=granted,
        extra=body.extra,
    )


def build_change(
    identity: Identity,
    state: SavedState,
    rng: Rng,
    pair: Callable[[bytes, bytes], bytearray],
    *,
    entry_fields: tuple[Op, MemberInfo, Role] | None,
    now: float,
    group_keys: tuple[bytes, bytes] | None,
    extra: bytes | None = None,
) -> bytes:
    """Return the epoch change to current + 1, signed by `identity` (an admin).

    `entry_fields` is (op, subject, role) for a membership change, None for a rotation;
    `extra` is opaque client data for the members of the new epoch (docs/protocol.md §G6.3).

    Raises:
        MembershipError: the entry would not verify (already a member, cell full, last admin).
    """
    number = state.current + 1
    membership = state.membership
    entry = None
    if entry_fields is not None:
        op, subject, role = entry_fields
        entry = sign_entry(
            identity,
            op=op,
            index=membership.head_index + 1,
            prev_hash=membership.head_hash,
            epoch=number,
            timestamp_ms=timestamp_ms(now),
            cell_id=state.cell_id,
            subject=subject,
            role=role,
        )
        membership = membership.apply(entry)
    nonce = rng(24)
    ch = change_header(state.cell_id, number, identity.member_id)
    grant = None
    if entry is not None and entry.op is Op.PROMOTE:
        key = pair(entry.subject.dh_pub, PAIRWISE_ADMIN_GRANT)
        grant = seal_admin_grant(key, nonce, ch, entry.subject.member_id, state.admin_secrets)
    init = state.epochs[state.current].init
    if init is None:  # pragma: no cover - every current epoch keeps it
        raise MalformedError("no init secret for the current epoch")
    change_secret = bytearray(rng(SECRET_SIZE))
    secret = next_epoch_secret(init, change_secret, state.cell_id, number)
    keys = EpochKeys.derive(secret, state.cell_id, number)
    boxes = [
        (member_id, pair(info.dh_pub, PAIRWISE_EPOCH_BOX))
        for member_id, info in membership.members.items()
    ]
    try:
        return seal_epoch_change(
            signer=identity,
            ch=ch,
            nonce=nonce,
            header_key=state.epochs[state.current].keys.control_header,
            body_key=keys.control_body,
            body=ChangeBody(entry=entry, group_keys=group_keys, admin_grant=grant, extra=extra),
            secret=change_secret,
            boxes=boxes,
            filler=rng((MAX_MEMBERS - len(boxes)) * BOX_SIZE),
        )
    finally:
        zero(change_secret)
        zero(secret)
        keys.clear()


def welcome_content(
    state: SavedState, member_id: bytes, *, now: float, extra: bytes, invite_binding: bytes
) -> WelcomeContent:
    """Return what a welcome for `member_id` carries, from the current state."""
    membership = state.membership
    secret = state.epochs[state.current].secret
    if secret is None:  # pragma: no cover - the current epoch always keeps its secret
        raise MalformedError("no epoch secret")
    return WelcomeContent(
        joiner=member_id,
        cell_id=state.cell_id,
        cell_name=state.name,
        epoch=state.current,
        secret=bytes(secret),
        head_index=membership.head_index,
        head_hash=membership.head_hash,
        head_epoch=membership.head_epoch,
        members=tuple(
            (info, membership.role_of(mid) or Role.MEMBER)
            for mid, info in membership.members.items()
        ),
        group_keys=state.group_keys,
        control_read_key=state.control_read_key,
        admin_secrets=state.admin_secrets if member_id in membership.admins else b"",
        extra=extra,
        created_ms=timestamp_ms(now),
        invite_binding=invite_binding,
    )
