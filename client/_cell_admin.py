"""An admin's duties in a cell: invites and join mailboxes, approvals, membership changes.

`Cell` is `MemberCell` (client/_cell_member.py) plus what only admins do. Every change of
membership is a *proposal*: an epoch change the admin saves, publishes to the control
mailbox (moving the cell to a fresh group mailbox on the relay first when someone is
removed, or the cell recovers from a flood: client/_cell_moves.py) and then waits to read
back like every other member (`_propose`); docs/protocol.md, Part 3, gives the rules. Invites are one-time *join* mailboxes the admin creates and watches; the
request that arrives there waits in `join_requests` until `approve`, which publishes the
change and then the welcome, and the mailbox is deleted once the joiner is seen in the
group (`release_invites`).
"""

from __future__ import annotations

import contextlib
import math
import time
from functools import partial
from typing import TYPE_CHECKING, Final

import trio

from cellrelay.protocol._errors import CellrelayError, ErrorCode
from cellrelay.protocol.cell._content import Burn
from cellrelay.protocol.cell._control import split_change
from cellrelay.protocol.cell._errors import GroupError
from cellrelay.protocol.cell._group import DEFAULT_KEY_TTL, GRACE_PERIOD
from cellrelay.protocol.cell._identity import Identity, MemberInfo
from cellrelay.protocol.cell._invite import Invite, InviteRelay
from cellrelay.protocol.cell._join import (
    JOIN_REQUEST,
    JOIN_TAKEN,
    JOIN_WELCOME,
    JOIN_WELCOME_PAGE,
    open_join_request,
    split_join_envelope,
)
from cellrelay.protocol.cell._keys import relay_seed
from cellrelay.protocol.cell._membership import Role
from cellrelay.protocol.wire import (
    AddressError,
    CapabilityKey,
    Delete,
    MailboxId,
    RelayAddress,
    Rotate,
)
from cellrelay.protocol.wire._codec import decode_map, encode_map

from ._cell_member import (
    APPLY_TIMEOUT,
    MAX_MORE_RELAYS,
    CellError,
    CellInfo,
    MemberCell,
    RelayInfo,
    Saver,
    code_name,
)
from ._cell_moves import MAX_MUTED, ChangeExtra, ChangeExtraError, check_escalate
from ._cell_relays import MAILBOX_GONE, FurtherRelay, publish_everywhere
from ._events import CellEvent, CellRole, JoinRequested, Member, SecurityWarning
from ._link import Delivery, RelayLink, RelayRefusedError, Revocation
from ._log import library_logger
from ._state import (
    BurnRecord,
    CellRecord,
    InviteRecord,
    LeaveRecord,
    RequestRecord,
    RetiredMailbox,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from cellrelay.protocol.cell._group import CellCrypto

    from ._cell_relays import RelayTarget

__all__ = ["DEFAULT_INVITE_TTL", "LEAVE_TAKEOVER", "AdminSecrets", "Cell"]

_PROTOCOL_ROLES: Final = {CellRole.DISPATCHER: Role.DISPATCHER, CellRole.RESPONDER: Role.RESPONDER,
                          CellRole.OBSERVER: Role.OBSERVER, CellRole.LIAISON: Role.LIAISON,
                          CellRole.MEMBER: Role.MEMBER}  # fmt: skip

log = library_logger("cellrelay.client")

DEFAULT_INVITE_TTL: Final = 24 * 3600
# An invite on a cell on several relays waits this long for each further relay to make its
# join mailbox; one that has not answered by then is left out of the invite.
INVITE_RELAY_WAIT: Final = 10.0
# A retired group mailbox is deleted at the latest this long after everything stored in
# it expired by the relay's maximum lifetime (clocks, and the sweeper's minute).
RETIRE_SLACK: Final = 600.0
# A member's leave is acted on by the admin with the lowest member id (the leaver aside) at
# once; every other admin waits this long past the leave before it removes the leaver
# itself, in case that admin is offline (docs/protocol.md §C9). Two minutes lets the first
# admin's client, if it runs at all, act first (it needs a round trip or two), so the
# cell does not go through two epochs for one leave; an admin that was offline for longer
# acts as soon as it is back. Racing admins are harmless: one change wins, the other is
# refused as stale (`_propose`) and the leave is already spent by then.
LEAVE_TAKEOVER: Final = 120.0
# Adding a relay waits this long for it to make the cell's mailboxes; dropping one waits
# this long for it to delete them (a relay that is down is left as it is).
RELAY_CHANGE_WAIT: Final = 15.0
# After a failed attempt (the relay unreachable, a race lost), the next one waits this long.
LEAVE_RETRY: Final = 30.0


class AdminSecrets:
    """What admins hold besides the group layer's keys: the mailboxes' admin and write keys."""

    def __init__(
        self,
        *,
        group_admin: bytes,
        control_write: bytes,
        control_admin: bytes,
        creation_secret: bytes,
    ) -> None:
        self.group_admin = group_admin
        self.control_write = control_write
        self.control_admin = control_admin
        self.creation_secret = creation_secret

    def encode(self) -> bytes:
        return encode_map(
            {"group_admin": self.group_admin, "control_write": self.control_write,
             "control_admin": self.control_admin, "creation_secret": self.creation_secret}
        )  # fmt: skip

    @classmethod
    def decode(cls, data: bytes) -> AdminSecrets:
        fields = decode_map(data)
        values = {
            k: fields.get(k)
            for k in ("group_admin", "control_write", "control_admin", "creation_secret")
        }
        if not all(type(v) is bytes for v in values.values()):
            raise CellError("the cell's admin secrets are damaged")
        return cls(**values)  # type: ignore[arg-type]


class RelayUnavailableError(CellError):
    """A relay to put the cell on did not answer, or refused to make its mailboxes."""


class Cell(MemberCell):
    """A cell this member belongs to: send, receive and, as an admin, manage members."""

    def __init__(
        self,
        *,
        identity: Identity,
        record: CellRecord,
        crypto: CellCrypto,
        link: RelayLink,
        save: Saver,
        route: Callable[[MailboxId, Callable[[Delivery | Revocation], Awaitable[None]]], None],
        unroute: Callable[[MailboxId], None],
        further_links: Sequence[RelayLink] = (),
        spawn: Callable[[Callable[[], Awaitable[None]]], None] | None = None,
        forget: Callable[[MemberCell], Awaitable[None]] | None = None,
        leave_takeover: float = LEAVE_TAKEOVER,
        link_for: Callable[[RelayAddress], RelayLink] | None = None,
        release_link: Callable[[RelayLink], None] | None = None,
    ) -> None:
        """Wrap a cell's state; the client creates cells (`Client.create_cell`, `join`)."""
        super().__init__(
            identity=identity, record=record, crypto=crypto, link=link, save=save,
            route=route, unroute=unroute, further_links=further_links, spawn=spawn,
            forget=forget, link_for=link_for, release_link=release_link,
        )  # fmt: skip
        self.leave_takeover = leave_takeover  # seconds: see LEAVE_TAKEOVER
        self._leavers_lock = trio.Lock()  # one `remove_leavers` at a time
        self._leavers_retry_at = 0.0  # device time before which a failed removal is not retried
        self._admin_lock = trio.Lock()  # one membership change at a time (see _propose)
        self._first_order = trio.Lock()  # the first relay's rotations and changes, in order
        self._settled: set[MailboxId] = set()  # join mailboxes whose joiner is in the group
        self._releasing = False  # release_invites is running
        self._reaping: set[MailboxId] = set()  # join mailboxes a running _reap_invites is deleting
        # (epoch, device time) when every member of that epoch was first seen keyed here:
        # from a grace window after it, no member needs a retired group mailbox any more.
        self._all_keyed: tuple[int, float] | None = None
        # Set by the client: deletes a cell this member burned and keeps what is pending.
        self.on_burned_here: Callable[[Cell, list[BurnRecord]], Awaitable[None]] | None = None

    def _control_write_seed(self) -> bytes:
        return AdminSecrets.decode(self.crypto.admin_secrets).control_write

    async def _take_up_admin_duties(self) -> None:
        await self._watch_admin_mailboxes()
        # A change an earlier run saved but may not have published. One being proposed
        # right now holds the admin lock: a member promoted a moment ago may already be
        # removing someone (the daemon's API makes that easy), and finishing that change
        # here, inside the delivery that promoted us, waited for the control mailbox this
        # very delivery blocks, so the change was not confirmed in time.
        if self.record.pending_change and not self._admin_lock.locked():
            await self._finish_pending_proposal()

    # -- invites and join mailboxes --------------------------------------------------------

    async def burn(self, *, keep: float = 0.0) -> None:
        """Burn the cell: every member's client deletes it, and its mailboxes leave the relay.

        Publishes a `Burn` (docs/protocol.md §C1.6), which each member's client checks was
        signed by an admin before it deletes the cell; deletes the cell's join and retired
        mailboxes on the relay; deletes the cell here (keys, history, everything but what
        the next step needs); then deletes the group and control mailboxes, at once or,
        with `keep` (seconds), that much later, so that members who are offline now can
        still read the burn when they return. Until the relay confirmed those deletions,
        the client tries again whenever it runs (`Client` keeps a `BurnRecord`).

        It cannot be undone. Members who return after the mailboxes were deleted find
        the cell gone (`CellGone`) rather than burned.

        Raises:
            CellError: this member is not an admin, or was removed.
        """
        if not self.is_admin:
            raise CellError(f"only an admin of {self.name!r} can burn it")
        if keep < 0:
            raise CellError("keep is a number of seconds, 0 or more")
        await self.wait_ready()
        async with self._admin_lock:
            max_ttl = self.link.welcome.max_ttl if self.link.welcome else DEFAULT_KEY_TTL
            now_ms = self._now_ms()
            await self._send(Burn(sent_at_ms=now_ms), now_ms // 1000 + max_ttl)
            secrets = AdminSecrets.decode(self.crypto.admin_secrets)
            now, record = time.time(), self.record
            # Nobody needs the join and retired mailboxes: deleted at once. The group and
            # control mailboxes hold the burn for members still to read it (`keep`).
            records = [
                BurnRecord(
                    relay=record.relay,
                    delete_at=now,
                    mailboxes=[(bytes(i.join_mailbox), i.admin_seed) for i in record.invites]
                    + [(bytes(r.mailbox), secrets.group_admin) for r in record.retired],
                ),
                BurnRecord(
                    relay=record.relay,
                    delete_at=now + keep,
                    mailboxes=[
                        (bytes(record.group_mailbox), secrets.group_admin),
                        (bytes(record.control_mailbox), secrets.control_admin),
                    ],
                ),
            ]
            self.burned_by = self.me
            if self.on_burned_here is not None:
                await self.on_burned_here(self, [r for r in records if r.mailboxes])

    async def _delete_on_relay(self, mailbox: MailboxId, key: CapabilityKey) -> None:
        """Delete one of the cell's mailboxes; one already gone counts as deleted."""
        try:
            await self.link.admin(key, Delete(id=0, mailbox=mailbox, counter=0, sig=bytes(64)))
        except RelayRefusedError as exc:
            if exc.code not in MAILBOX_GONE:
                raise

    async def _watch_admin_mailboxes(self) -> None:
        secrets = AdminSecrets.decode(self.crypto.admin_secrets)
        await self.link.authorize_writer(
            self.record.control_mailbox, CapabilityKey.from_seed(secrets.control_write)
        )
        await self._reap_invites()
        for invite in self.record.invites:
            if not invite.used:
                try:
                    await self._watch_invite(invite)
                except RelayRefusedError as exc:  # TOO_MANY_MAILBOXES: the cell still starts
                    log.warning("invite_not_watched", code=code_name(exc.code))

    async def _reap_invites(self) -> None:
        """Delete the join mailboxes of expired and settled invites, then forget them.

        A used invite's mailbox holds the welcome until its joiner has read it: it is kept
        until the joiner says it took the welcome (`JOIN_TAKEN`) or its first message in the
        group shows it (`release_invites`),
        or else until the invite's own expiry like an unused one.
        """
        now = self.clock()
        settled = self._settled
        for invite in [
            i for i in self.record.invites if i.expires_at <= now or i.join_mailbox in settled
        ]:
            # Two reaps can overlap (the one at start holds no lock: it may run inside the
            # delivery a proposer waits on), so each invite is claimed for the await and a
            # reap that finds it claimed or gone moves on: a crashed `listen` showed the race.
            # A deletion that fails on the way (the link dropped) leaves it for the next reap.
            if invite.join_mailbox in self._reaping or invite not in self.record.invites:
                continue
            self._reaping.add(invite.join_mailbox)
            try:
                admin = CapabilityKey.from_seed(invite.admin_seed)
                try:
                    await self.link.admin(
                        admin, Delete(id=0, mailbox=invite.join_mailbox, counter=0, sig=bytes(64))
                    )
                except RelayRefusedError as exc:  # already gone (NO_SUCH_MAILBOX): nothing to do
                    log.debug("join_mailbox_not_deleted", code=exc.code)
                for entry in invite.more_join:  # in the background: a relay may be down
                    further = self._further_named(str(entry[0]))
                    if further is not None:
                        self._background(partial(_delete_join, further, admin, MailboxId(bytes(entry[1]))))  # type: ignore[call-overload]  # fmt: skip
                settled.discard(invite.join_mailbox)
                if invite in self.record.invites:
                    self.record.invites.remove(invite)
            finally:
                self._reaping.discard(invite.join_mailbox)
        # A joiner's later messages mark an invite settled again while it is being reaped.
        settled.intersection_update(i.join_mailbox for i in self.record.invites)
        await self._save()

    @property
    def invites_to_release(self) -> bool:
        """Whether a used invite's joiner has been seen in the group (see `release_invites`)."""
        return bool(self._settled) and not self._releasing

    async def release_invites(self) -> None:
        """Delete the join mailboxes of invites whose joiners are now in the group.

        Each join mailbox the admin watches takes one of the relay's mailboxes per
        connection (64 by default): kept until expiry, they stopped an admin from
        admitting more than about 60 people in a week, and one with that many open could
        not even start (tests/client/test_invite_limits.py). The client runs this after
        a burst of deliveries that showed a joiner; a failure leaves the invite to expire.
        """
        if self._releasing:
            return
        self._releasing = True
        try:
            # The first relay may be down on a cell on several: waiting for it here held
            # the admin lock, and every admin operation with it, until it returned.
            with trio.move_on_after(RELAY_CHANGE_WAIT if self.further else math.inf):
                async with self._admin_lock:
                    await self._reap_invites()
        except (CellrelayError, CellError) as exc:
            log.info("invite_release_deferred", error=type(exc).__name__)
        finally:
            self._releasing = False

    def _note_joined(self, sender: MemberInfo) -> None:
        for invite in self.record.invites:
            if invite.used and invite.member_id == sender.member_id:
                self._settled.add(invite.join_mailbox)

    async def _watch_invite(self, invite: InviteRecord) -> None:
        probe = self._invite_for(invite)
        read = CapabilityKey.from_seed(probe.join_read_seed)
        write = CapabilityKey.from_seed(probe.join_write_seed)

        async def on_join(event: Delivery | Revocation) -> None:
            await self._on_join(invite, event)

        self._route(invite.join_mailbox, on_join)
        for entry in invite.more_join:
            further = self._further_named(str(entry[0]))
            if further is not None:
                self._background(partial(self._watch_further_invite, invite, entry, further))
        await self.link.authorize_writer(invite.join_mailbox, write)
        self._heads[invite.join_mailbox] = await self.link.watch(
            invite.join_mailbox, read, invite.cursor
        )

    def _further_named(self, relay: str) -> FurtherRelay | None:
        return next((f for f in self.further if f.record.relay == relay), None)

    async def _watch_further_invite(
        self, invite: InviteRecord, entry: list[object], further: FurtherRelay
    ) -> None:
        """Watch an invite's join mailbox on a further relay (in the background)."""
        probe = self._invite_for(invite)
        mailbox = MailboxId(bytes(entry[1]))  # type: ignore[call-overload]

        async def on_join(event: Delivery | Revocation) -> None:
            if isinstance(event, Delivery):
                entry[2] = event.seq
            await self._on_join(invite, event, cursor_set=True)

        self._route(mailbox, on_join)
        try:
            await further.link.authorize_writer(
                mailbox, CapabilityKey.from_seed(probe.join_write_seed)
            )
            await further.link.watch(
                mailbox,
                CapabilityKey.from_seed(probe.join_read_seed),
                int(entry[2]),  # type: ignore[call-overload]
            )
        except (CellrelayError, OSError) as exc:
            log.info("invite_not_watched", relay=further.index, error=type(exc).__name__)

    async def _retire_on_relay(self, keys: bytes) -> None:
        """Close the group mailbox to writers, and to readers but the remaining members.

        `keys` is a write key seed nobody keeps and the read key seed the move's change
        carries (client/_cell_moves.py). Repeated with the same seeds after a crash, the
        rotation revokes nobody.
        """
        secrets = AdminSecrets.decode(self.crypto.admin_secrets)
        admin = CapabilityKey.from_seed(secrets.group_admin)
        rotate = Rotate(
            id=0,
            mailbox=self.record.group_mailbox,
            write_key=CapabilityKey.from_seed(keys[:32]).public,
            read_key=CapabilityKey.from_seed(keys[32:]).public,
            admin_key=admin.public,
            counter=0,
            sig=bytes(64),
        )
        await self.link.admin(admin, rotate)

    async def _new_group_mailbox(
        self, secrets: AdminSecrets
    ) -> tuple[tuple[bytes, bytes], MailboxId | None]:
        """Fresh group key seeds (read, write) and a mailbox created with them, if the relay will.

        The mailbox has the cell's group admin key, so any admin can later delete it.
        """
        read, write = CapabilityKey.generate(), CapabilityKey.generate()
        try:
            mailbox = await self.link.create_mailbox(
                write,
                read,
                CapabilityKey.from_seed(secrets.group_admin),
                secret=secrets.creation_secret,
            )
        except RelayRefusedError as exc:  # RATE_LIMITED, BUSY, CREATE_FORBIDDEN
            log.warning("group_move_refused", code=code_name(exc.code))
            return (read.seed, write.seed), None
        return (read.seed, write.seed), mailbox

    async def _rotate_on_relay(self, group_keys: tuple[bytes, bytes]) -> None:
        """As the admin who proposed a rotation: give the relay the new group keys."""
        secrets = AdminSecrets.decode(self.crypto.admin_secrets)
        read_seed, write_seed = group_keys
        admin = CapabilityKey.from_seed(secrets.group_admin)
        rotate = Rotate(
            id=0,
            mailbox=self.record.group_mailbox,
            write_key=CapabilityKey.from_seed(write_seed).public,
            read_key=CapabilityKey.from_seed(read_seed).public,
            admin_key=admin.public,
            counter=0,
            sig=bytes(64),
        )
        await self.link.admin(admin, rotate)

    async def _on_join(
        self, invite: InviteRecord, event: Delivery | Revocation, *, cursor_set: bool = False
    ) -> None:
        """A delivery in one of our invites' join mailboxes (we are its admin).

        `cursor_set`: it came from a further relay, whose cursor the caller moved. A joiner
        posts its request to every relay it reaches: the second copy finds the request
        recorded already and adds nothing.
        """
        if isinstance(event, Revocation):
            return
        if not cursor_set:
            invite.cursor = event.seq
        event_out: CellEvent | None = None
        try:
            kind, _ = split_join_envelope(event.envelope)
            if kind == JOIN_REQUEST and not invite.used:
                probe = self._invite_for(invite)
                request = open_join_request(
                    self._identity,
                    event.envelope,
                    join_mailbox=invite.join_mailbox,
                    proof_key=probe.join_secret,
                )
                if all(r.member != request.member.to_bytes() for r in self.record.requests):
                    self.record.requests.append(
                        RequestRecord(
                            member=request.member.to_bytes(),
                            join_mailbox=invite.join_mailbox,
                            received_at=time.time(),
                        )
                    )
                    event_out = JoinRequested(
                        cell=self.name,
                        member=Member(member_id=request.member.member_id, name=request.member.name),
                    )
            elif kind == JOIN_TAKEN and (
                invite.used
                or any(r.join_mailbox == invite.join_mailbox for r in self.record.requests)
            ):
                # The joiner has its welcome (docs/protocol.md §C4): the mailbox can go now,
                # not at the joiner's first envelope in the group, which may be days away
                # since members announce lazily (§C6 item 2). Only the invite's holders can
                # write here, and the relay can delete the mailbox anyway.
                self._settled.add(invite.join_mailbox)
        except GroupError as exc:
            event_out = SecurityWarning(
                cell=self.name, reason=type(exc).__name__, detail="in a join mailbox"
            )
        await self._save()
        self._advanced()
        if event_out is not None:
            self._emit(event_out)

    # -- membership changes ----------------------------------------------------------------

    async def _admin_ready(self) -> AdminSecrets:
        """Wait until the cell is started, then check this member may administer it."""
        await self.wait_ready()
        if not self.is_admin:
            raise CellError(f"only an admin of {self.name!r} can do that")
        return AdminSecrets.decode(self.crypto.admin_secrets)

    def _invite_for(self, record: InviteRecord) -> Invite:
        more = tuple(
            InviteRelay(RelayAddress.parse(str(relay)), MailboxId(bytes(mailbox)))  # type: ignore[call-overload]
            for relay, mailbox, _ in record.more_join
        )
        return Invite(
            more_relays=more,
            relay=RelayAddress.parse(self.record.relay),
            cell_id=self.cell_id,
            cell_name=self.name,
            join_mailbox=record.join_mailbox,
            admin_sign_key=self.crypto.me.sign_pub,
            admin_box_key=self.crypto.me.dh_pub,
            expires_at=record.expires_at,
            secret=record.secret,
        )

    async def invite(self, *, ttl: int = DEFAULT_INVITE_TTL) -> Invite:
        """Create a one-time invite (a `cellrelay://join/...` link) valid for `ttl` seconds."""
        secrets = await self._admin_ready()
        if self.link.welcome is not None:
            ttl = min(ttl, self.link.welcome.max_ttl)
        expires_at = int(self.link.relay_time()) + ttl
        secret = CapabilityKey.generate().seed  # 32 random bytes from libsodium
        admin = CapabilityKey.generate()
        draft = InviteRecord(
            join_mailbox=MailboxId(bytes(16)),
            secret=secret,
            admin_seed=admin.seed,
            expires_at=expires_at,
        )
        probe = self._invite_for(draft)
        join_write = CapabilityKey.from_seed(probe.join_write_seed)
        join_read = CapabilityKey.from_seed(probe.join_read_seed)
        draft.join_mailbox = await self.link.create_mailbox(
            join_write, join_read, admin, secret=secrets.creation_secret
        )
        if self.further:
            # The same keys on every relay (docs/protocol.md §C3.1a); a relay that does not
            # answer soon is left out of this invite, which still works through the others.
            made: dict[int, MailboxId] = {}

            async def make(further: FurtherRelay) -> None:
                with trio.move_on_after(INVITE_RELAY_WAIT):
                    try:
                        made[further.index] = await further.link.create_mailbox(
                            join_write, join_read, admin, secret=secrets.creation_secret
                        )
                    except (CellrelayError, OSError) as exc:
                        log.info(
                            "invite_relay_skipped", relay=further.index, error=type(exc).__name__
                        )

            async with trio.open_nursery() as nursery:
                for further in self.further:
                    nursery.start_soon(make, further)
            draft.more_join = [
                [f.record.relay, made[f.index], 0] for f in self.further if f.index in made
            ]
        self.record.invites.append(draft)
        await self._save()
        try:
            await self._watch_invite(draft)
        except RelayRefusedError as exc:
            # Most likely TOO_MANY_MAILBOXES: every open invite is a mailbox this
            # connection watches. An invite nobody watches would never be answered.
            self.record.invites.remove(draft)
            await self._save()
            with contextlib.suppress(CellrelayError):
                await self.link.admin(
                    admin, Delete(id=0, mailbox=draft.join_mailbox, counter=0, sig=bytes(64))
                )
            raise CellError(
                f"the relay refused another open invite ({code_name(exc.code)}): wait until"
                " some are"
                " used or expire"
            ) from None
        return self._invite_for(draft)

    async def approve(self, member: Member | None = None) -> Member:
        """Admit someone who asked to join (the only one waiting, if `member` is None).

        Raises:
            CellError: not an admin, nobody (or several) waiting, or the change was not applied.
        """
        await self._admin_ready()
        requests = self.record.requests
        if member is not None:
            requests = [
                r for r in requests if MemberInfo.from_bytes(r.member).member_id == member.member_id
            ]
        if len(requests) != 1:
            raise CellError(
                "nobody is waiting to join"
                if not requests
                else "several people are waiting: name one"
            )
        request = requests[0]
        info = MemberInfo.from_bytes(request.member)
        group_from = self.record.group_cursor
        # Each further relay's cursors before the change: the joiner reads the `add` there
        # again, which it refuses quietly as an epoch it has (docs/protocol.md §C5.2).
        more_from = [(f.record.group_cursor, f.record.control_cursor) for f in self.further]
        async with self._admin_lock:
            change = self.crypto.add_member(info, now=self.link.relay_time())
            control_seq = await self._propose(change)
        cell_info = self._welcome_info(group_from, control_seq, more_from)
        invite = next(i for i in self.record.invites if i.join_mailbox == request.join_mailbox)
        welcome, pages = self.crypto.welcome_with_pages(
            info.member_id,
            now=self.link.relay_time(),
            invite=self._invite_for(invite),
            extra=cell_info.encode(),
        )
        expires_at = max(invite.expires_at, int(self.link.relay_time()) + 3600)
        # The welcome, then the pages of its member list in order (a cell of more than
        # about 150 members, docs/protocol.md §G7, §C4).
        answers = [bytes([JOIN_WELCOME]) + welcome] + [
            bytes([JOIN_WELCOME_PAGE]) + p for p in pages
        ]
        for answer in answers:
            targets: list[tuple[str, Callable[[], Awaitable[int]]]] = [
                ("first", partial(self.link.publish, invite.join_mailbox, answer, expires_at))
            ]
            for entry in invite.more_join:
                further = self._further_named(str(entry[0]))
                if further is not None:
                    mailbox = MailboxId(bytes(entry[1]))  # type: ignore[call-overload]
                    targets.append((further.name, partial(further.link.publish, mailbox, answer, expires_at)))  # fmt: skip
            if len(targets) == 1:
                await targets[0][1]()
            else:
                assert self._spawn is not None  # noqa: S101 - a cell on several relays has one
                await publish_everywhere(targets, self._spawn)
        invite.used = True
        invite.member_id = info.member_id
        self.record.requests.remove(request)
        await self._save()
        return self._member(info)

    async def deny(self, member: Member) -> None:
        """Turn down someone who asked to join: forget the request and delete its invite.

        The invite was one-time, so its join mailbox is deleted on the relay at once: the
        same link cannot be used to ask again. The person is not told.

        Raises:
            CellError: not an admin, or this member is not waiting.
        """
        await self._admin_ready()
        request = next(
            (r for r in self.record.requests
             if MemberInfo.from_bytes(r.member).member_id == member.member_id),
            None,
        )  # fmt: skip
        if request is None:
            raise CellError(f"{member.name!r} is not waiting to join")
        self.record.requests.remove(request)
        # Reaped like an invite whose joiner is in: its mailbox deleted, then forgotten.
        self._settled.add(request.join_mailbox)
        async with self._admin_lock:
            await self._reap_invites()

    async def remove(self, member: Member) -> None:
        """Remove a member: a new epoch, a fresh group mailbox; they can read or send nothing new.

        Whatever the member stored in the old mailbox (a flood that fills its quota
        included) stays behind there: the cell posts again at once (client/_cell_moves.py).
        If the relay will not create a mailbox now, the old one's keys are rotated instead.
        """
        secrets = await self._admin_ready()
        async with self._admin_lock:
            if self.further:
                # A cell on several relays rotates its group keys in place on each (a move
                # names one new mailbox, and each relay's would be its own: not yet).
                new_keys = (CapabilityKey.generate().seed, CapabilityKey.generate().seed)
                mailbox = None
            else:
                new_keys, mailbox = await self._new_group_mailbox(secrets)
            retire = CapabilityKey.generate().seed + CapabilityKey.generate().seed
            change = self.crypto.remove_member(
                member.member_id,
                now=self.link.relay_time(),
                new_group_keys=new_keys,
                extra=None if mailbox is None else _move_extra(mailbox, retire),
            )
            await self._propose(change, rotate_to=new_keys, move=(mailbox, retire))

    async def recover(self) -> None:
        """Move the cell to a fresh group mailbox (a new epoch): the cell posts again at once.

        For a mailbox a member filled (sends fail with "mailbox full") when it is not
        clear who did it; removing the flooder does the same and more.

        Raises:
            CellError: not an admin, or the relay would not create a mailbox now.
        """
        secrets = await self._admin_ready()
        if self.further:
            raise CellError(
                "a cell on several relays cannot move to a fresh mailbox yet; remove the"
                " flooder instead"
            )
        async with self._admin_lock:
            new_keys, mailbox = await self._new_group_mailbox(secrets)
            if mailbox is None:
                raise CellError("the relay would not create a new mailbox now; try again shortly")
            retire = CapabilityKey.generate().seed + CapabilityKey.generate().seed
            change = self.crypto.rotate(
                now=self.link.relay_time(),
                new_group_keys=new_keys,
                extra=_move_extra(mailbox, retire),
            )
            await self._propose(change, rotate_to=new_keys, move=(mailbox, retire))

    async def promote(self, member: Member) -> None:
        """Make a member an admin too (it receives the admin secrets in the epoch change)."""
        await self._admin_ready()
        async with self._admin_lock:
            await self._propose(self.crypto.promote(member.member_id, now=self.link.relay_time()))

    async def set_role(self, member: Member, role: CellRole | str) -> None:
        """Give a member a role: admin, dispatcher, responder, observer or member.

        A signed membership entry in a new epoch (docs/protocol.md §G5), which every
        member's client applies and then enforces: only dispatchers and admins may verify
        reports (§C2 rule 7). Making an admin a dispatcher (or anything else) demotes it
        first, in its own epoch change.

        Raises:
            CellError: not an admin, the member already has that role, or the change would
                leave the cell without an admin.
        """
        await self._admin_ready()
        try:
            wanted = CellRole(role)
        except ValueError:
            names = ", ".join(r.value for r in CellRole)
            raise CellError(f"{role!r} is not a role; the roles are {names}") from None
        if self.role_of(member) is wanted:
            raise CellError(f"{member.name!r} is a {wanted.value} already")
        async with self._admin_lock:
            now = self.link.relay_time
            try:
                if wanted is CellRole.ADMIN:
                    await self._propose(self.crypto.promote(member.member_id, now=now()))
                    return
                if self.role_of(member) is CellRole.ADMIN:
                    await self._propose(self.crypto.demote(member.member_id, now=now()))
                    if wanted is CellRole.MEMBER:
                        return
                await self._propose(
                    self.crypto.set_role(member.member_id, _PROTOCOL_ROLES[wanted], now=now())
                )
            except GroupError as exc:  # MembershipError: the last admin, not a member
                raise CellError(f"cannot make {member.name!r} a {wanted.value}: {exc}") from None

    async def set_verify_first(self, on: bool) -> None:
        """Set whether reports not yet confirmed go to verifiers only (§C2 rule 7).

        A new epoch whose change carries the setting (docs/protocol.md §C5.1); a
        confirmed alert goes to everyone either way.

        Raises:
            CellError: not an admin.
        """
        await self._admin_ready()
        async with self._admin_lock:
            extra = ChangeExtra(verify_first=bool(on)).encode()
            await self._propose(self.crypto.rotate(now=self.link.relay_time(), extra=extra))

    async def set_escalation(self, below: int, after: int) -> None:
        """Set when confirmed alerts go to neighbouring cells (docs/protocol.md §C10).

        A confirmed alert that has fewer than `below` members responding or on scene
        `after` seconds after its confirmation is escalated by a liaison's client; `below`
        0 turns it off. A new epoch whose change carries the setting (§C5.1).

        Raises:
            CellError: not an admin, or a value out of range (N 0..1024, T 1..86400 s).
        """
        try:
            check_escalate((below, after))
        except ChangeExtraError as exc:
            raise CellError(str(exc)) from None
        await self._admin_ready()
        async with self._admin_lock:
            extra = ChangeExtra(escalate=(below, after)).encode()
            await self._propose(self.crypto.rotate(now=self.link.relay_time(), extra=extra))

    async def rotate(self) -> None:
        """Start a new epoch with fresh keys for everyone (periodic rotation)."""
        await self._admin_ready()
        async with self._admin_lock:
            await self._propose(self.crypto.rotate(now=self.link.relay_time()))

    async def mute(self, member: Member, *, everyone: bool | None = None) -> bool:
        """Mute a member; an admin mutes for everyone unless `everyone=False` (see `MemberCell.mute`).

        For everyone: a new epoch whose change names every member admins mute (at most
        16), which each member's client applies; returns True.

        Raises:
            CellError: as `MemberCell.mute`; or already 16 members muted for everyone.
        """
        if everyone is False or (everyone is None and not self.is_admin):
            return await super().mute(member, everyone=everyone)
        await self._admin_ready()
        if member.member_id == self.crypto.me.member_id:
            raise CellError("you cannot mute yourself")
        await super().mute(member)
        await self._change_muted(member.member_id, muted=True)
        return True

    async def unmute(self, member: Member, *, everyone: bool | None = None) -> bool:
        """Unmute a member; an admin unmutes for everyone unless `everyone=False`."""
        if everyone is False or (everyone is None and not self.is_admin):
            return await super().unmute(member, everyone=everyone)
        await self._admin_ready()
        await super().unmute(member)
        await self._change_muted(member.member_id, muted=False)
        return True

    async def _change_muted(self, member_id: bytes, *, muted: bool) -> None:
        async with self._admin_lock:
            members = {info.member_id for info in self.crypto.members}
            ids = [m for m in self.record.muted_everyone if m in members and m != member_id]
            if muted:
                ids.append(member_id)
            if len(ids) > MAX_MUTED:
                raise CellError(
                    f"{MAX_MUTED} members are muted for everyone already: remove some of them"
                )
            if ids == self.record.muted_everyone:
                return
            extra = ChangeExtra(muted=tuple(ids)).encode()
            await self._propose(self.crypto.rotate(now=self.link.relay_time(), extra=extra))

    def _welcome_info(
        self, group_from: int, control_from: int, more_from: list[tuple[int, int]] | None = None
    ) -> CellInfo:
        """What a welcome tells a joiner of the cell: mailboxes, cursors and settings (§C5).

        `more_from`: each further relay's group and control cursors to start from (None:
        where this member is now).
        """
        cell_info = CellInfo.decode(self.crypto.extra)
        if more_from is None:
            more_from = [(f.record.group_cursor, f.record.control_cursor) for f in self.further]
        cell_info.more_relays = tuple(
            RelayInfo(
                relay=f.record.relay,
                group=f.record.group_mailbox,
                control=f.record.control_mailbox,
                group_from=group_seq,
                control_from=control_seq,
            )
            for f, (group_seq, control_seq) in zip(self.further, more_from, strict=True)
        )
        cell_info.group = self.record.group_mailbox  # the cell may have moved since
        cell_info.alert_limit = self.record.alert_limit
        cell_info.muted = tuple(self.record.muted_everyone)
        cell_info.verify_first = self.record.verify_first
        cell_info.channel = self.record.channel
        cell_info.escalate = (self.record.escalate_below, self.record.escalate_after)
        cell_info.group_from, cell_info.control_from = group_from, control_from
        return cell_info

    async def set_alert_limit(self, limit: int) -> None:
        """Set how many alerts a member may send per minute before every client mutes it.

        A new epoch whose change carries the setting (docs/protocol.md §C5.1).

        Raises:
            CellError: not an admin, or `limit` outside 1..10,000.
        """
        await self._admin_ready()
        try:
            extra = ChangeExtra(alert_limit=limit).encode()
        except ValueError as exc:
            raise CellError(f"the alert limit must be 1..10000 alerts per minute ({exc})") from None
        async with self._admin_lock:
            await self._propose(self.crypto.rotate(now=self.link.relay_time(), extra=extra))

    # -- the cell's relays (issue 13) ---------------------------------------------------------

    async def add_relay(self, relay: str | RelayAddress) -> None:
        """Put the cell on one more relay (docs/protocol.md §C5.1, §C5.2).

        Creates the cell's group and control mailboxes there, with the keys derived for
        that relay from the cell's current seeds, then announces the relay in a new epoch
        whose change every member applies by watching the relay too. The relay must
        answer now (within RELAY_CHANGE_WAIT); if the announcement fails, the mailboxes
        made there are deleted again.

        Raises:
            CellError: not an admin; the cell is on three relays already, or on this one
                (same key or same address); the relay cannot be reached or refused.
        """
        address = _address(relay)
        await self._admin_ready()
        async with self._admin_lock:
            relays = [RelayAddress.parse(r) for r in (self.record.relay,
                                                      *(f.record.relay for f in self.further))]  # fmt: skip
            if any(_same_relay(address, other) for other in relays):
                raise CellError(f"{self.name!r} lives on that relay already")
            if len(relays) >= 1 + MAX_MORE_RELAYS:
                raise CellError(f"a cell lives on at most {1 + MAX_MORE_RELAYS} relays")
            if self._link_for is None:  # pragma: no cover - every client passes one
                raise CellError("this cell cannot reach other relays")
            link = self._link_for(address)
            # Borrowed until the change has made it the cell's: a drop of this relay just
            # before (its `_leave_further` still running) closed it under us otherwise.
            self.borrowed_links.append(link)
            made: list[tuple[MailboxId, CapabilityKey]] = []
            try:
                await self._add_relay_on(address, link, made)
            finally:
                self.borrowed_links.remove(link)
                if self._release_link is not None and not made:
                    self._release_link(link)  # no mailbox there: the cell will not use it

    async def _add_relay_on(
        self, address: RelayAddress, link: RelayLink, made: list[tuple[MailboxId, CapabilityKey]]
    ) -> None:
        """`add_relay` once checked (admin lock held): the mailboxes, then the change.

        `made` collects the mailboxes created on the relay, with their admin keys.
        """
        secrets = AdminSecrets.decode(self.crypto.admin_secrets)
        read_seed, write_seed = self.crypto.group_keys

        def on(seed: bytes | bytearray) -> CapabilityKey:
            return CapabilityKey.from_seed(relay_seed(bytes(seed), address.public_key))

        try:
            with trio.fail_after(RELAY_CHANGE_WAIT):
                for write, read, admin in (
                    (write_seed, read_seed, secrets.group_admin),
                    (secrets.control_write, self.crypto.control_read_key,
                     secrets.control_admin),
                ):  # fmt: skip
                    mailbox = await link.create_mailbox(
                        on(write), on(read), on(admin), secret=secrets.creation_secret
                    )
                    made.append((mailbox, on(admin)))
            (group, _), (control, _) = made
            extra = ChangeExtra(relay_add=(str(address), group, control)).encode()
            await self._propose(self.crypto.rotate(now=self.link.relay_time(), extra=extra))
        except (CellError, CellrelayError, OSError, trio.TooSlowError) as exc:
            # Deleted again only when the cell surely does not use them: the change lost
            # to another admin's, or was never proposed. One not confirmed in time may
            # still apply, and then every member needs these mailboxes.
            unused = len(made) < 2 or self._lost_race
            for mailbox, admin_key in made if unused else ():
                self._background(partial(_delete_further, link, admin_key, mailbox))
            if isinstance(exc, CellError):
                raise
            reason = "did not answer" if isinstance(exc, trio.TooSlowError) else type(exc).__name__
            raise RelayUnavailableError(f"the relay could not take the cell ({reason})") from None

    async def drop_relay(self, relay: str | RelayAddress) -> None:
        """Take the cell off one of its further relays (docs/protocol.md §C5.1, §C5.2).

        Announces it in a new epoch whose change every member applies by no longer
        reading or writing that relay; every admin's client then deletes the cell's
        mailboxes there if the relay answers (one that is down, seized or replaced is
        simply left). The relay needs not answer. The cell's first relay cannot be
        dropped in this revision: add another relay instead and keep it.

        Raises:
            CellError: not an admin; not a relay of this cell, or its first relay.
        """
        address = _address(relay)
        await self._admin_ready()
        async with self._admin_lock:
            if _same_relay(address, RelayAddress.parse(self.record.relay)):
                raise CellError(
                    "the cell's first relay cannot be dropped yet; add another relay instead"
                )
            further = next((f for f in self.further if _same_relay(address, f.address)), None)
            if further is None:
                raise CellError(f"{self.name!r} does not live on that relay")
            extra = ChangeExtra(relay_drop=further.record.relay).encode()
            await self._propose(self.crypto.rotate(now=self.link.relay_time(), extra=extra))

    def _relay_target(self, index: int) -> RelayTarget | None:
        """Where this admin copies an epoch change to relay `index` (0: the first)."""
        if index == 0:
            return self.link, self.record, self._first_order, self._rotate_on_relay
        further = next((f for f in self.further if f.index == index), None)
        if further is None:
            return None
        group_admin = AdminSecrets.decode(self.crypto.admin_secrets).group_admin
        return (
            further.link,
            further.record,
            further.order,
            partial(further.rotate_group, group_admin=group_admin),
        )

    async def _retire_further(self, further: FurtherRelay) -> None:
        """An admin deletes the cell's mailboxes on a relay the cell dropped (if it answers)."""
        if not self.is_admin:
            return
        secrets = AdminSecrets.decode(self.crypto.admin_secrets)
        mailboxes = [
            (further.record.group_mailbox, further.key(secrets.group_admin)),
            (further.record.control_mailbox, further.key(secrets.control_admin)),
        ]
        # Invites' join mailboxes there too (their keys are the same on every relay).
        mailboxes += [
            (MailboxId(bytes(entry[1])), CapabilityKey.from_seed(invite.admin_seed))  # type: ignore[call-overload]
            for invite in self.record.invites
            for entry in invite.more_join
            if str(entry[0]) == further.record.relay
        ]
        with trio.move_on_after(RELAY_CHANGE_WAIT):
            for mailbox, key in mailboxes:
                await _delete_further(further.link, key, mailbox)

    async def _propose(
        self,
        change: bytes,
        *,
        rotate_to: tuple[bytes, bytes] | None = None,
        move: tuple[MailboxId | None, bytes] | None = None,
    ) -> int:
        """Publish an epoch change to the control mailbox and wait until it is applied here.

        A change that rotates the group keys first rotates them on the relay, so that when
        members read the change the relay already accepts the new keys and the removed
        member's access has already ended; a change that moves the cell (`move`: the new
        mailbox, created with those keys, and the old one's new write and read key seeds)
        rotates the old mailbox to those instead. The change (and the keys) are saved
        before either step, and `start` finishes the job after a crash
        (`_finish_pending_proposal`).
        Callers hold `_admin_lock`: two operations in flight would share the one pending
        slot, and each could take the other's epoch for its own.
        """
        target = self.crypto.epoch + 1
        self._lost_race = False
        self.record.pending_change = change
        self.record.pending_keys = b"".join(rotate_to) if rotate_to is not None else b""
        moving = move is not None and move[0] is not None
        self.record.pending_move = bytes(move[0]) if move is not None and move[0] else b""
        self.record.pending_retire = move[1] if move is not None and moving else b""
        self.record.crypto = self._state_bytes()
        await self._save()
        seq = await self._resume_proposal()
        # Until the change is applied and saved here, not only open: the delivery can be
        # processed before the publish's acknowledgement, and a command that returned then
        # ended with the change half applied (tests/client/test_admin.py).
        with trio.move_on_after(APPLY_TIMEOUT):
            while self._applied_epoch < target and not self._lost_race:
                await self._epoch_changed.wait()
        if self._lost_race:
            raise CellError(
                "another admin changed the cell at the same moment; look again and retry"
            )
        if self._applied_epoch < target:
            raise CellError(
                "the membership change was not confirmed by the relay in time; try again"
            )
        return seq

    async def _resume_proposal(self) -> int:
        """Rotate the relay's keys if the pending change needs it, then publish the change.

        On a cell on several relays, each relay does both in its own task, in order with
        the relay's other changes (`FurtherRelay.order`), and this returns once one relay
        has stored the change: a relay that is down receives the rotation and then the
        change when it returns (client/_cell_relays.py). The seq returned is the first
        relay's, or its control cursor before the change when another relay was first.
        """
        change, keys = self.record.pending_change, self.record.pending_keys
        self._control_copier.ours(change)  # posted to every relay here, never copied
        expires_at = int(self.link.relay_time()) + (
            self.link.welcome.max_ttl if self.link.welcome else 86400
        )
        if not self.further:
            if self.record.pending_move:
                await self._retire_on_relay(self.record.pending_retire)
            elif keys:
                await self._rotate_on_relay((keys[:32], keys[32:]))
            seq = await self.link.publish(self.record.control_mailbox, change, expires_at)
        else:
            group_admin = AdminSecrets.decode(self.crypto.admin_secrets).group_admin
            before = self.record.control_cursor

            async def first() -> int:
                async with self._first_order:
                    if keys:
                        await self._rotate_on_relay((keys[:32], keys[32:]))
                    return await self.link.publish(self.record.control_mailbox, change, expires_at)

            def on(further: FurtherRelay) -> Callable[[], Awaitable[int]]:
                async def publish() -> int:
                    async with further.order:
                        if keys:
                            await further.rotate_group((keys[:32], keys[32:]), group_admin)
                        return await further.link.publish(
                            further.record.control_mailbox, change, expires_at
                        )

                return publish

            targets = [("first", first), *((f.name, on(f)) for f in self.further)]
            assert self._spawn is not None  # noqa: S101 - a cell on several relays has one
            name, seq = await publish_everywhere(targets, self._spawn)
            if name != "first":
                seq = before
        self._clear_pending()
        await self._save()
        return seq

    def _clear_pending(self) -> None:
        record = self.record
        record.pending_change = record.pending_keys = b""
        record.pending_move = record.pending_retire = b""

    async def _finish_pending_proposal(self) -> None:
        """After a restart: publish a saved change only if it is not applied already.

        The change may have reached the relay before the crash, its acknowledgement lost.
        Catch up on the control mailbox first: if the cell is at the change's epoch, it
        went through, and rotating the relay's keys again would only revoke everyone.
        """
        with trio.move_on_after(APPLY_TIMEOUT):
            await self._wait_processed(self.record.control_mailbox)
        number, _ = split_change(self.record.pending_change)
        if self.crypto.epoch >= number:
            self._clear_pending()
            await self._save()
            return
        async with self._admin_lock:
            await self._resume_proposal()

    # -- members who left -------------------------------------------------------------------

    def _leave_due(self, leave: LeaveRecord) -> float:
        """When (device time) this admin removes the member of `leave` (inf: never, not our turn).

        The admin with the lowest member id among the admins other than the leaver acts at
        once; the others once `leave_takeover` has passed since the leave was sent (its
        claim, if earlier than its arrival here: an admin back from a day offline acts at
        once). docs/protocol.md §C9.
        """
        me = self.crypto.me.member_id
        admins = sorted(a for a in self.crypto.admins if a != leave.member_id)
        if me not in admins:
            return math.inf
        if admins[0] == me:
            return leave.received_at
        return min(leave.received_at, leave.sent_at_ms / 1000) + self.leave_takeover

    def leavers_due_at(self) -> float:
        """The device time at which `remove_leavers` has work (inf: none), for the client."""
        # Not waiting for `started`: a leave that arrives while the cell starts (a catch-up)
        # is saved before the start ends, and nothing else would wake the client for it;
        # `remove_leavers` waits for the start itself (`wait_synced`).
        if (
            not self.is_admin
            or self.crypto.removed
            or self._leavers_lock.locked()
            or not self.record.leaves
        ):
            return math.inf
        due = min(self._leave_due(leave) for leave in self.record.leaves)
        return max(due, self._leavers_retry_at)

    async def remove_leavers(self) -> list[Member]:
        """Remove the members who announced they leave and whom it is this admin's turn to remove.

        The client runs this in the background when a leave arrives and when a takeover
        is due; the command line runs it after catching up (so that a one-shot command
        of an admin acts on leaves too). Returns the members removed. A removal that fails
        (the relay, a race with another admin) is logged and tried again later.
        """
        if not self.is_admin or self.crypto.removed:
            return []
        removed: list[Member] = []
        async with self._leavers_lock:
            # Catch up first: another admin may have removed them already.
            with trio.move_on_after(APPLY_TIMEOUT):
                await self.wait_synced()
            for leave in list(self.record.leaves):
                info = next(
                    (i for i in self.crypto.members if i.member_id == leave.member_id), None
                )
                if info is None:  # gone already (a removal we applied): nothing to do
                    self.record.leaves = [r for r in self.record.leaves if r is not leave]
                    continue
                if self._leave_due(leave) > time.time() or not self.is_admin:
                    continue
                member = self._member(info)
                try:
                    await self.remove(member)
                except (CellError, CellrelayError) as exc:
                    log.info("leaver_not_removed", error=type(exc).__name__)
                    self._leavers_retry_at = time.time() + LEAVE_RETRY
                    continue
                log.info("leaver_removed")
                removed.append(member)
        return removed

    # -- retired group mailboxes -----------------------------------------------------------

    @property
    def upkeep_due(self) -> bool:
        """Whether `upkeep` has work (an admin also deletes retired mailboxes on the relay)."""
        if self.is_admin and not self._upkeeping:
            return (
                self._refetch.due
                or self._moves.due
                or any(self._deletable(r) for r in self.record.retired)
            )
        return super().upkeep_due

    def _deletable(self, retired: RetiredMailbox) -> bool:
        """Whether no member can need a retired group mailbox any more (client/_cell_moves.py).

        Every member of the current epoch has published its sender key, so applied the
        move, and a grace window passed since, after which the old epoch's keys are gone
        everywhere; or everything stored there has expired anyway.
        """
        if not retired.drained:
            return False
        now = time.time()
        max_ttl = self.link.welcome.max_ttl if self.link.welcome else DEFAULT_KEY_TTL
        if now >= retired.moved_at + max_ttl + RETIRE_SLACK:
            return True
        members = {info.member_id for info in self.crypto.members}
        if not members <= self.crypto.keyed_senders():
            return False
        epoch = self.crypto.epoch
        if self._all_keyed is None or self._all_keyed[0] != epoch:
            self._all_keyed = (epoch, now)
        return now >= max(self._all_keyed[1], retired.moved_at) + GRACE_PERIOD

    async def _forget_retired(self) -> None:
        """Delete retired group mailboxes nobody needs any more on the relay, then forget them."""
        if not self.is_admin:
            await super()._forget_retired()
            return
        gone = []
        for retired in [r for r in self.record.retired if self._deletable(r)]:
            secrets = AdminSecrets.decode(self.crypto.admin_secrets)
            admin = CapabilityKey.from_seed(secrets.group_admin)
            try:
                await self.link.admin(
                    admin, Delete(id=0, mailbox=retired.mailbox, counter=0, sig=bytes(64))
                )
            except RelayRefusedError as exc:
                if exc.code != ErrorCode.NO_SUCH_MAILBOX:  # another admin's client did it
                    log.info("retired_mailbox_kept", code=code_name(exc.code))
                    continue
            log.info("retired_mailbox_deleted", generation=retired.generation)
            gone.append(retired)
        if gone:
            self.record.retired = [r for r in self.record.retired if r not in gone]
            await self._save()


def _move_extra(mailbox: MailboxId | None, retire: bytes) -> bytes | None:
    """The client data of a change that moves the cell to `mailbox` (None: no move)."""
    if mailbox is None:
        return None
    return ChangeExtra(group=mailbox, drain_read=retire[32:]).encode()


def _address(relay: str | RelayAddress) -> RelayAddress:
    if isinstance(relay, RelayAddress):
        return relay
    try:
        return RelayAddress.parse(relay)
    except AddressError as exc:
        raise CellError(f"not a relay address: {exc}") from None


def _same_relay(a: RelayAddress, b: RelayAddress) -> bool:
    """The same relay: the same key, or the same address (a relay with another key there)."""
    return a.public_key == b.public_key or (a.host.casefold(), a.port) == (
        b.host.casefold(),
        b.port,
    )


async def _delete_further(link: RelayLink, admin: CapabilityKey, mailbox: MailboxId) -> None:
    """Delete one of the cell's mailboxes on a relay it left; gone counts as deleted."""
    try:
        await link.admin(admin, Delete(id=0, mailbox=mailbox, counter=0, sig=bytes(64)))
    except (CellrelayError, OSError) as exc:
        log.info("relay_mailbox_not_deleted", error=type(exc).__name__)


async def _delete_join(further: FurtherRelay, admin: CapabilityKey, mailbox: MailboxId) -> None:
    """Delete an invite's join mailbox on a further relay, if it answers (NO_SUCH_MAILBOX: gone)."""
    with trio.move_on_after(INVITE_RELAY_WAIT):
        try:
            await further.link.admin(admin, Delete(id=0, mailbox=mailbox, counter=0, sig=bytes(64)))
        except (CellrelayError, OSError) as exc:
            log.debug("join_mailbox_not_deleted", relay=further.index, error=type(exc).__name__)
