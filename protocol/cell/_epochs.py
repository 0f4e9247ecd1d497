"""Proposing and verifying epoch changes, and what goes into a welcome.

docs/protocol.md, Part 2, "Epoch changes". `_control` knows the bytes; this module knows
the rules: who may sign, what a change must contain, what a member checks before it
applies one. `check_change` changes nothing: it returns a `VerifiedChange` that
`CellCrypto.open_control` then applies in one step, so a refused change leaves no trace.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from .._crypto import x25519_public_from_private, zero
from ._control import (
    BOX_SIZE,
    BUCKETED_VERSION,
    BUCKETED_VERSIONS,
    KEYS_OFFSET_V3,
    LIST_DIGEST_SIZE,
    MAX_COMMITTED,
    MAX_WB,
    NO_OP,
    SECRET_SIZE,
    TABLE_SIZE,
    ChangeBody,
    WelcomeContent,
    bucketed_keys,
    change_header,
    committed_updates,
    encode_members,
    find_box,
    list_digest,
    open_admin_grant,
    open_bucketed_header,
    open_change_body,
    open_change_header,
    seal_admin_grant,
    seal_bucketed_change,
    seal_epoch_change,
    verify_bucketed_change,
    verify_change,
)
from ._errors import GroupError, MalformedError, MembershipError, TamperedError
from ._identity import MEMBER_ID_SIZE
from ._keys import PAIRWISE_ADMIN_GRANT, PAIRWISE_EPOCH_BOX, EpochKeys
from ._membership import CELL_ID_SIZE, MAX_MEMBERS, Op, Role, sign_entry
from ._padding import BUCKETS as SIZE_CLASSES
from ._schedule import (
    BUCKETS,
    KEY_UPDATE_SIZE,
    KeyUpdate,
    bucket_of,
    next_epoch_secret,
    open_keys,
    parse_section,
    receive_dh,
    seal_keys,
    section_size,
)
from ._state import MAX_JOIN_BOXES

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._identity import Identity, MemberInfo, Rng
    from ._membership import LogEntry, Membership
    from ._state import SavedState

__all__ = ["VerifiedChange", "build_change", "check_change", "welcome_content"]

MAX_CHANGE_SIZE: Final = SIZE_CLASSES[-1]
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
    # Version 3 only (None: a change of version 1 or 2, after which the cell migrates again):
    # this member's new bucket private key (None if its bucket was not refreshed), the 64
    # bucket public keys after the change, and the join boxes an admin keeps after it.
    bucket_private: bytearray | None = field(default=None, repr=False)
    bucket_publics: dict[int, bytes] | None = None
    join_boxes: dict[bytes, bytes] | None = field(default=None, repr=False)
    by_bucket: dict[int, list[bytes]] | None = field(default=None, repr=False)
    # Version 4: the key updates it commits (verified), and the generation of this member's
    # own if one of them is its own (its receive box opened with that pending key).
    updates: list[KeyUpdate] = field(default_factory=list)
    own_generation: int | None = None
    # This member's receive box opened only with its identity key although it has a newer
    # receive key: the signer never learnt that key (it joined after it was committed).
    boxed_to_identity: bool = False


def committed_generation(state: SavedState, member_id: bytes) -> int:
    """The generation of `member_id`'s receive key as committed so far (0: identity key)."""
    if member_id == state.member_id:
        return state.receive_generation
    return state.receive_publics.get(member_id, (0, b""))[0]


def receive_public(state: SavedState, info: MemberInfo) -> bytes:
    """The receive public key an admin boxes to for this member (§G6.5): the latest
    committed, else its identity X25519 key."""
    known = state.receive_publics.get(info.member_id)
    return info.dh_pub if known is None else known[1]


def _check_updates(
    state: SavedState,
    updates: list[KeyUpdate],
    by_bucket: dict[int, list[bytes]],
    op: int,
    subject: bytes,
) -> None:
    """Step 6a of §G6.4: each committed update is of a member staying in the cell (not the
    subject of an add or remove), one per member, newer than its committed generation, and
    signed by that member's identity key."""
    staying = {m for listed in by_bucket.values() for m in listed}
    seen: set[bytes] = set()
    for update in updates:
        m = update.member_id
        info = state.membership.members.get(m)
        if (
            info is None
            or m not in staying
            or m in seen
            or (op in (Op.ADD, Op.REMOVE) and m == subject)
        ):
            raise MembershipError("a key update for no member of the change")
        seen.add(m)
        update.verify(state.cell_id, info, after=committed_generation(state, m))


def _receive_candidates(
    state: SavedState,
    me: bytes,
    dh: Callable[[bytes], bytearray],
    identity_pub: bytes,
    updates: list[KeyUpdate],
) -> tuple[list[tuple[Callable[[bytes], bytearray], bytes]], int | None]:
    """The receive keys this member opens its receive box with, in order, and the
    generation of its own update if the change commits one (then only that key will do)."""
    for update in updates:
        if update.member_id == me:
            private = state.pending_receive.get(update.generation)
            if private is None:
                return [], update.generation
            return [(receive_dh(private), update.receive_pub)], update.generation
    out: list[tuple[Callable[[bytes], bytearray], bytes]] = []
    if state.receive_private is not None:
        public = x25519_public_from_private(state.receive_private)
        out.append((receive_dh(state.receive_private), public))
    # An admin who joined after this member's last update never learnt its receive key
    # and boxes to its identity key (§G6.5): that change heals nothing, and opens.
    out.append((dh, identity_pub))
    return out, None


def _buckets_after(
    state: SavedState, op: int, subject: bytes
) -> tuple[dict[int, list[bytes]], int | None]:
    """The members by bucket after a change with this op and subject, and the subject's
    bucket if the change adds or removes it (the bucket it refreshes)."""
    cell_id = state.cell_id
    before = state.epochs[state.current].buckets(cell_id)
    if op not in (Op.ADD, Op.REMOVE):
        return before, None
    b = bucket_of(cell_id, subject)
    listed = [m for m in before.get(b, []) if m != subject]
    if op == Op.ADD:
        listed = sorted([*listed, subject])
    after = dict(before)
    if listed:
        after[b] = listed
    else:
        after.pop(b, None)
    return after, b


def _join_boxes(
    state: SavedState,
    envelope_number: int,
    signer: bytes,
    nonce: bytes,
    section: bytes,
    by_bucket: dict[int, list[bytes]],
    added: bytes | None,
    removed: bytes | None,
) -> dict[bytes, bytes]:
    """The join boxes an admin keeps after a change: the latest box of each member added
    lately (docs/protocol.md §G7), so any admin can welcome it from this change on."""
    e_pub, refreshed, _, _ = parse_section(section)
    kept = {m: box for m, box in state.join_boxes.items() if m != removed}
    pending = set(kept) | ({added} if added is not None else set())
    head = envelope_number.to_bytes(4, "big") + signer + nonce + e_pub
    for b, (_public, count, offset) in refreshed.items():
        listed = by_bucket.get(b, [])
        if len(listed) != count:
            raise MalformedError("a refreshed bucket's size does not match the membership")
        for i, member_id in enumerate(listed):
            if member_id in pending:
                kept.pop(member_id, None)  # re-inserted last: the newest
                at = offset + i * BOX_SIZE
                kept[member_id] = head + section[at : at + BOX_SIZE]
    while len(kept) > MAX_JOIN_BOXES:
        del kept[next(iter(kept))]
    return kept


def _check_bucketed(
    state: SavedState,
    me: bytes,
    dh: Callable[[bytes], bytearray],
    identity_pub: bytes,
    envelope: bytes,
    number: int,
    nonce: bytes,
) -> tuple[VerifiedChange, bytearray | None, tuple[int, bytes]]:
    """Steps 3 to 7 of §G6.4 for version 3: (change with the signer, the change secret or
    None if this member is removed, and the hint)."""
    current = state.epochs[state.current]
    ch, op, subject, signature = open_bucketed_header(envelope, current.keys.control_header, nonce)
    if ch != change_header(state.cell_id, number, ch[_SIGNER]):
        raise MalformedError("epoch change names another cell or epoch")
    signer = state.membership.members.get(ch[_SIGNER])
    if signer is None or signer.member_id not in state.membership.admins:
        raise MembershipError("epoch change not signed by an admin")
    verify_bucketed_change(signer, ch, (op, subject), signature, envelope)
    if op == NO_OP:
        if subject != bytes(MEMBER_ID_SIZE):
            raise MalformedError("a subject without an entry")
    elif op not in (Op.ADD, Op.REMOVE, Op.PROMOTE, Op.DEMOTE, Op.SET_ROLE):
        raise MalformedError("an unknown op in an epoch change")
    changed = VerifiedChange(number=number, signer=signer, secret=None)
    if op == Op.REMOVE and subject == me:
        return changed, None, (op, subject)
    section, table = bucketed_keys(envelope)
    updates = committed_updates(envelope)
    by_bucket, touched = _buckets_after(state, op, subject)
    _check_updates(state, updates, by_bucket, op, subject)
    mine = bucket_of(state.cell_id, me)
    candidates, own_generation = _receive_candidates(state, me, dh, identity_pub, updates)
    if not candidates:
        raise TamperedError("a key update of this member's that it no longer has the key of")
    for at, (receive, receive_pub) in enumerate(candidates):
        try:
            opened = open_keys(
                section,
                cell_id=state.cell_id,
                ad=ch,
                nonce=nonce,
                me=me,
                bucket_members=by_bucket.get(mine, []),
                dh=receive,
                receive_pub=receive_pub,
                bucket_private=state.bucket_private,
            )
            # The last candidate is the identity key; with a newer one before it (and no
            # update of this member committed here), the signer boxed to an old key.
            boxed_to_identity = 0 < at == len(candidates) - 1 and own_generation is None
            break
        except TamperedError:
            if at == len(candidates) - 1:
                raise
    try:
        refreshed = parse_section(section)[1]
        if any(bucket_of(state.cell_id, u.member_id) not in refreshed for u in updates):
            raise MalformedError("a committed key update whose bucket is not refreshed")
        publics = {b: key for b, key in enumerate(table) if key is not None}
        own_public = opened.bucket_public
        if own_public is None and state.bucket_private is not None:
            own_public = x25519_public_from_private(state.bucket_private)
        if (
            set(publics) != set(by_bucket)
            or any(publics[b] != refreshed[b][0] for b in refreshed)
            or publics.get(mine) != own_public
            or any(
                state.bucket_publics.get(b, key) != key
                for b, key in publics.items()
                if b not in refreshed
            )
        ):
            raise MalformedError("the bucket keys of an epoch change do not add up")
        if touched is not None and touched not in refreshed and touched in by_bucket:
            raise MalformedError("a membership change that does not refresh its bucket")
        changed.bucket_private = opened.bucket_private
        changed.bucket_publics = publics
        changed.by_bucket = by_bucket
        changed.updates = updates
        changed.own_generation = own_generation
        changed.boxed_to_identity = boxed_to_identity
        if me in state.membership.admins or (op == Op.PROMOTE and subject == me):
            changed.join_boxes = _join_boxes(
                state,
                number,
                signer.member_id,
                nonce,
                section,
                by_bucket,
                subject if op == Op.ADD else None,
                subject if op == Op.REMOVE else None,
            )
    except BaseException:
        opened.clear()
        raise
    return changed, opened.change_secret, (op, subject)


def check_change(
    state: SavedState,
    me: bytes,
    pair: Callable[[bytes, bytes], bytearray],
    envelope: bytes,
    number: int,
    nonce: bytes,
    dh: Callable[[bytes], bytearray] | None = None,
    identity_pub: bytes | None = None,
) -> VerifiedChange:
    """Verify the epoch change to `number` (= current + 1) against `state`; change nothing.

    Raises:
        TamperedError: the header, body or a grant does not authenticate.
        MalformedError: wrong cell, epoch or kind in CH; a grant without a promotion.
        MembershipError: not signed by an admin; its log entry does not verify or is for
            another epoch; a box for a member the entry removes; a removal that does not
            rotate the group keys; (version 3) an entry that is not the one the header
            told, bucket keys that do not add up.
        BadSignatureError: the admin's signature does not verify.
    """
    current = state.epochs[state.current]
    hint: tuple[int, bytes] | None = None
    if envelope[0] in BUCKETED_VERSIONS:
        if dh is None or identity_pub is None:
            raise ValueError("a version 3 change needs this member's receive key")
        bucketed, boxed, hint = _check_bucketed(
            state, me, dh, identity_pub, envelope, number, nonce
        )
        ch = change_header(state.cell_id, number, bucketed.signer.member_id)
        signer = bucketed.signer
        if boxed is None:
            return bucketed
    else:
        bucketed = None
        ch, signature = open_change_header(envelope, current.keys.control_header, nonce)
        if ch != change_header(state.cell_id, number, ch[_SIGNER]):
            raise MalformedError("epoch change names another cell or epoch")
        signer_info = state.membership.members.get(ch[_SIGNER])
        if signer_info is None or signer_info.member_id not in state.membership.admins:
            raise MembershipError("epoch change not signed by an admin")
        signer = signer_info
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
        if hint is not None and (
            (entry is None) != (hint[0] == NO_OP)
            or (entry is not None and (entry.op != hint[0] or entry.subject.member_id != hint[1]))
        ):
            raise MembershipError("the log entry is not the one the header told")
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
        if bucketed is not None and bucketed.bucket_private is not None:
            zero(bucketed.bucket_private)
        raise
    finally:
        keys.clear()
    done = bucketed or VerifiedChange(number=number, signer=signer, secret=None)
    done.secret = secret
    done.entry = entry
    done.membership = membership
    done.group_keys = body.group_keys
    done.granted = granted
    done.extra = body.extra
    return done


def _fitting(
    cell_id: bytes,
    by_bucket: dict[int, list[bytes]],
    touched: int | None,
    updates: list[KeyUpdate],
) -> list[KeyUpdate]:
    """The longest prefix of `updates` whose change fits the largest envelope size class."""
    refreshed = {} if touched is None or touched not in by_bucket else {touched: 0}
    for at, update in enumerate(updates):
        refreshed[bucket_of(cell_id, update.member_id)] = 0
        counts = {b: len(by_bucket.get(b, [])) for b in refreshed}
        used = KEYS_OFFSET_V3 + section_size(counts) + TABLE_SIZE + 1 + (at + 1) * KEY_UPDATE_SIZE
        if used > MAX_CHANGE_SIZE:
            return updates[:at]
    return updates


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
    version: int = BUCKETED_VERSION,
    updates: Sequence[KeyUpdate] = (),
) -> bytes:
    """Return the epoch change to current + 1, signed by `identity` (an admin).

    `version` is 3 except in tests of what admins not yet upgraded send (1 or 2).

    `updates` are verified key updates to commit (§G6.5), oldest first: those of members
    staying in the cell are committed, as many as fit (at most MAX_COMMITTED), each
    refreshing its member's bucket to the new receive key; with any, the change is version 4.

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
    body = ChangeBody(entry=entry, group_keys=group_keys, admin_grant=grant, extra=extra)
    try:
        if version != BUCKETED_VERSION:  # what an admin not yet upgraded sends (tests)
            boxes = [
                (member_id, pair(info.dh_pub, PAIRWISE_EPOCH_BOX))
                for member_id, info in membership.members.items()
            ]
            return seal_epoch_change(
                signer=identity,
                ch=ch,
                nonce=nonce,
                header_key=state.epochs[state.current].keys.control_header,
                body_key=keys.control_body,
                body=body,
                secret=change_secret if version > 1 else secret,
                boxes=boxes,
                filler=rng((MAX_MEMBERS - len(boxes)) * BOX_SIZE),
                version=version,
            )
        hint = (NO_OP, bytes(MEMBER_ID_SIZE))
        if entry is not None:
            hint = (int(entry.op), entry.subject.member_id)
        by_bucket, touched = _buckets_after(state, hint[0], hint[1])
        members = membership.members
        moved = hint[1] if hint[0] in (Op.ADD, Op.REMOVE) else None
        chosen = [u for u in updates if u.member_id in members and u.member_id != moved]
        chosen = _fitting(state.cell_id, by_bucket, touched, chosen[:MAX_COMMITTED])
        while True:  # as many updates as fit, oldest first (the estimate is exact; a guard)
            new_keys = {u.member_id: u.receive_pub for u in chosen}
            refresh = {bucket_of(state.cell_id, m) for m in new_keys}
            if touched is not None:
                refresh.add(touched)
            section, publics = seal_keys(
                cell_id=state.cell_id,
                ad=ch,
                nonce=nonce,
                change_secret=change_secret,
                buckets={
                    b: [(m, new_keys.get(m) or receive_public(state, members[m])) for m in listed]
                    for b, listed in by_bucket.items()
                },
                bucket_publics=state.bucket_publics,
                refresh=sorted(refresh),
                rng=rng,
            )
            try:
                return seal_bucketed_change(
                    signer=identity,
                    ch=ch,
                    hint=hint,
                    nonce=nonce,
                    header_key=state.epochs[state.current].keys.control_header,
                    body_key=keys.control_body,
                    body=body,
                    section=section,
                    table=_table(publics),
                    rng=rng,
                    updates=[u.to_bytes() for u in chosen],
                )
            except ValueError as exc:
                if not chosen:
                    raise MembershipError("the epoch change does not fit an envelope") from exc
                chosen = chosen[:-1]
    finally:
        zero(change_secret)
        zero(secret)
        keys.clear()


def welcome_content(
    state: SavedState,
    member_id: bytes,
    *,
    now: float,
    extra: bytes,
    invite_binding: bytes,
    page_key: bytes | None = None,
) -> WelcomeContent:
    """Return what a welcome for `member_id` carries, from the current state.

    With `page_key`, a member list too long for one envelope is cut: the content lists the
    first members (ascending id) and signs the digest of the whole list; the caller seals
    the rest in pages (`_control.seal_welcome_pages`). Without it, the whole list is inline.
    """
    membership = state.membership
    admin = member_id in membership.admins
    secret = state.epochs[state.current].secret
    if secret is None:  # pragma: no cover - the current epoch always keeps its secret
        raise MalformedError("no epoch secret")
    members = tuple(
        (info, membership.role_of(mid) or Role.MEMBER) for mid, info in membership.members.items()
    )
    content = WelcomeContent(
        joiner=member_id,
        cell_id=state.cell_id,
        cell_name=state.name,
        epoch=state.current,
        secret=bytes(secret),
        head_index=membership.head_index,
        head_hash=membership.head_hash,
        head_epoch=membership.head_epoch,
        members=members,
        group_keys=state.group_keys,
        control_read_key=state.control_read_key,
        admin_secrets=state.admin_secrets if admin else b"",
        extra=extra,
        created_ms=timestamp_ms(now),
        invite_binding=invite_binding,
        join_box=state.join_boxes.get(member_id),
        bucket_table=_table(state.bucket_publics) if admin and state.bucket_publics else None,
    )
    if page_key is None or len(content.to_bytes()) <= MAX_WB:
        return content  # it all fits: no pages
    encoded = [encode_members([m]) for m in members]
    paged = dataclasses.replace(
        content,
        members=(),
        total_members=len(members),
        list_digest=bytes(LIST_DIGEST_SIZE),
        page_key=page_key,
    )
    room = MAX_WB - len(paged.to_bytes())
    inline = 0
    for member in encoded:
        if len(member) > room:
            break
        room -= len(member)
        inline += 1
    return dataclasses.replace(
        paged,
        members=members[:inline],
        list_digest=list_digest(b"".join(encoded)),
    )


def _table(publics: dict[int, bytes]) -> bytes:
    empty = bytes(TABLE_SIZE // BUCKETS)
    return b"".join(publics.get(b, empty) for b in range(BUCKETS))
