"""One member's view of one cell: membership, epochs, sender keys; seal and open envelopes.

docs/protocol.md, Part 2. Sans-IO: no clock (every call that needs time takes `now`, Unix
seconds), no I/O; randomness from libsodium's CSPRNG unless an `rng` is injected (tests).

Theory of operation:

* **Epochs.** The cell's life is a sequence of epochs, each with a random 32-byte epoch
  secret known to exactly the members of that epoch. An admin starts epoch E+1 by posting
  an *epoch change* to the control mailbox (`add_member`, `remove_member`, `promote`,
  `demote`, `rotate` return it). Nobody, the proposing admin included, applies a change
  until it reads it back through `open_control`: the relay's order of the control mailbox
  is the one order every member sees, so two admins racing for epoch E+1 cannot split the
  cell. The loser's change is refused with `StaleControlError(ours=True)`; it redoes its
  operation on the new state.
* **Sender keys.** On entering an epoch every member derives the epoch's sender tree
  (`_schedule.SenderTree`: every member's first chain key comes from the epoch secret),
  takes its own chain from it, draws a fresh signing key and publishes an *announcement*
  of it (`EpochUpdate.distribution`) in the group mailbox, before any message of that
  epoch; a member that is not an admin then deletes the epoch secret (forward secrecy
  inside the epoch). An epoch entered before the sender tree existed (a state saved by an
  older client) keeps its random chains and *distributions* until it ends. Receivers follow each sender's chain; a
  message whose sender key (or epoch) is not known yet is *parked* (outcome `Pending`,
  bounded) and released, in arrival order, when the announcement (or the epoch change)
  arrives.
* **Old epochs** stay readable for `grace_period` seconds after this member applied the
  next epoch, and only for senders who are still members; then their keys are wiped.
* **Failure changes nothing.** Every check (authentication, signature, counter window,
  membership) happens before any state changes; a refused envelope leaves the state as it
  was. Expired messages are the one exception: they are authenticated, their key is
  burned (forward secrecy), and then they are refused.

Invariants: the current epoch's members equal the membership's members; an admin's current
epoch keeps its secret (for welcomes), every other epoch only its derived keys (older ones
for the grace window);
a used message key is gone from the state. The receive path, its bounds and its order of
checks are in `_receiver`; the epoch-change rules in `_epochs`; the bytes in `_envelope`
and `_control`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final

from .._crypto import ED25519_SEED_SIZE, SigningKey, blake2b, random_bytes, zero
from ._binary import Reader
from ._control import (
    MAX_ADMIN_SECRETS,
    MAX_CHANGE_EXTRA,
    MAX_EXTRA,
    SECRET_SIZE,
    WelcomeContent,
    change_header,
    encode_members,
    list_digest,
    open_welcome,
    open_welcome_page,
    seal_welcome,
    seal_welcome_pages,
    split_change,
    verify_welcome,
)
from ._envelope import (
    CONTENT_KINDS,
    HEADER,
    MAX_GROUP_PLAINTEXT,
    AnnouncementPayload,
    DistributionPayload,
    Kind,
    announcement_mac,
    distribution_mac,
    seal_envelope,
)
from ._epochs import (
    build_change,
    check_change,
    committed_generation,
    timestamp_ms,
    welcome_content,
)
from ._errors import (
    EpochGapError,
    ForkedEpochError,
    MembershipError,
    NotAdminError,
    RemovedError,
    StaleControlError,
    TamperedError,
    WelcomeIncompleteError,
    WelcomeRefusedError,
    WelcomeWindowError,
)
from ._identity import MEMBER_ID_SIZE, check_name
from ._invite import WELCOME_LINGER
from ._keys import PAIRWISE_DISTRIBUTION_MAC, EpochKeys, SendChain
from ._membership import CELL_ID_SIZE, Membership, Op, Role, sign_entry
from ._outcomes import EpochUpdate, Notice, Opened, Outcome, Own, Pending
from ._receiver import Receiver
from ._schedule import (
    BOX_SIZE,
    BUCKETS,
    KeyUpdate,
    SenderTree,
    bucket_of,
    init_secret,
    open_receive_box,
    sign_key_update,
)
from ._state import MAX_PENDING_RECEIVE, Epoch, SavedState, read_state, write_state

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._identity import Identity, MemberInfo, Rng
    from ._invite import Invite

__all__ = [
    "DEFAULT_KEY_TTL",
    "GRACE_PERIOD",
    "KEY_UPDATE_PERIOD",
    "WELCOME_WINDOW",
    "CellCrypto",
    "EpochUpdate",
    "Opened",
    "Outcome",
    "Own",
    "Pending",
]

# docs/protocol.md, Part 2, "Limits" gives the reasons again for implementers.
# Old epochs stay readable this long after the next one was applied locally: long enough
# for messages sealed just before a change (in the other mailbox, which the relay does not
# order against the control mailbox) to arrive, short enough that a removed member's keys
# stop working soon.
GRACE_PERIOD: Final = 600.0
# Sender key distributions stay on the relay this long by default: the reference relay's
# default maximum TTL (7 days), so a member offline for a week still finds them.
DEFAULT_KEY_TTL: Final = 7 * 24 * 3600
# An admin keeps an epoch's secret this long after entering the epoch, for the welcomes
# its add starts (a client welcomes a joiner as soon as it has applied the add), then
# deletes it: a seized admin state opens no epoch entered longer ago (§G7, §G16). The
# grace window's 10 minutes, on the same clock (`open_control` and `check`).
WELCOME_WINDOW: Final = 600.0
# A member replaces its receive key this often (`key_update_due`), besides with every change
# it commits as an admin (`update_on_commit`): a state copied without the member noticing
# follows the cell at most this long plus the time until an admin commits the update
# (docs/threat-model.md). Each update costs its bucket a refresh in the next change (a box per
# bucket member: about 16 at 1,000 members), and one change commits at most 16 (about 11 at
# 1,000 members), so weekly updates in a 1,000-member cell need about 13 changes a day and
# daily ones about 90 (docs/design.md). A week is also how long the relay keeps a member's
# announcements (DEFAULT_KEY_TTL).
KEY_UPDATE_PERIOD: Final = 7 * 24 * 3600.0
# Counters are u32 in the header (docs/protocol.md §G9); past this, rotate the epoch.
MAX_COUNTER: Final = 2**32 - 1
# Epoch changes applied, remembered by digest to tell a competing change from a re-delivery.
_MAX_APPLIED: Final = 16
# This member's own epoch changes not read back yet, remembered to set
# StaleControlError.ours; an admin has one or two in flight, 16 is plenty.
_MAX_PROPOSALS: Final = 16
_KEY: Final = 32
_U64: Final = 2**64 - 1  # expires_at is a u64


def _read_table(table: bytes | None) -> dict[int, bytes]:
    """The bucket public keys of a welcome's table (none without one)."""
    if table is None:
        return {}
    empty = bytes(_KEY)
    return {b: key for b in range(BUCKETS) if (key := table[b * _KEY : (b + 1) * _KEY]) != empty}


def _open_join_box(
    identity: Identity, cell_id: bytes, join_box: bytes, publics: dict[int, bytes]
) -> bytearray:
    """Open a welcome's join box: the joiner's bucket private key (docs/protocol.md §G7).

    Raises:
        TamperedError: it does not open, or does not match the table's key for the bucket.
    """
    reader = Reader(join_box)
    number, signer = reader.u32(), reader.take(MEMBER_ID_SIZE)
    nonce, e_pub, box = reader.take(24), reader.take(_KEY), reader.take(BOX_SIZE)
    reader.end()
    return open_receive_box(
        box,
        e_pub=e_pub,
        ad=change_header(cell_id, number, signer),
        nonce=nonce,
        me=identity.member_id,
        dh=identity.dh,
        receive_pub=identity.dh_pub,
        bucket_public=publics.get(bucket_of(cell_id, identity.member_id)),
    )


def _welcome_members(
    identity: Identity, content: WelcomeContent, pages: Sequence[bytes]
) -> tuple[tuple[MemberInfo, Role], ...]:
    """The welcome's whole member list: inline, then from its pages (checked by digest).

    The digest is in the signed WB, which the caller verifies after building the
    membership: a page that does not match is refused before anything is trusted.
    """
    needed = content.pages_needed()
    if not needed:
        return content.members
    if len(pages) < needed or content.page_key is None or content.list_digest is None:
        raise WelcomeIncompleteError("the welcome's member list continues in pages", pages=needed)
    members = list(content.members)
    for index in range(needed):
        members += open_welcome_page(content.page_key, identity.member_id, index, pages[index])
    if len(members) != content.total_members or not hmac.compare_digest(
        list_digest(encode_members(members)), content.list_digest
    ):
        raise TamperedError("the welcome's pages do not match its member list")
    return tuple(members)


def _check_group_keys(keys: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    if any(len(k) != _KEY for k in keys):
        raise ValueError("group keys are two 32-byte seeds")
    return bytes(keys[0]), bytes(keys[1])


@dataclass(frozen=True, slots=True)
class _Settle:
    """The last change applied within its settle window, and the state from before it."""

    epoch: int
    before: bytes = field(repr=False)  # SECRET: the state of epoch `epoch - 1`
    digest: bytes  # of the change applied for `epoch`
    applied_at: float
    ours: bool  # it was this member's own proposal


class CellCrypto:
    """One member's keys and membership for one cell (see the module docstring)."""

    def __init__(self, identity: Identity, state: SavedState, *, rng: Rng = random_bytes) -> None:
        """Wrap a state; use `create`, `from_welcome` or `from_bytes` instead."""
        self._identity = identity
        self._s = state
        self._rng = rng
        self._me = identity.member_id
        self._pairwise: dict[tuple[bytes, bytes], bytearray] = {}
        self._rx = Receiver(state, identity.member_id, self._pair)
        # An admin's every change also commits a new receive key of its own (§G6.5): off
        # until the client turns it on, so that tests and vectors pinning changes keep them.
        self.update_on_commit = False
        # Issue 13, the hash rule for competing changes (docs/design.md): how long after
        # applying a change this member may still go back to the epoch before it for a
        # competing change with a lower BLAKE2b-256. 0 (the default, a cell on one relay,
        # whose order decides): never. The client sets GRACE_PERIOD on several relays.
        self.settle_window = 0.0
        self._settle: _Settle | None = None
        self._applied: dict[int, bytes] = {}  # epoch -> digest of the change applied

    # -- construction ------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        identity: Identity,
        cell_id: bytes | None = None,
        *,
        now: float,
        group_keys: tuple[bytes, bytes],
        control_read_key: bytes,
        admin_secrets: bytes = b"",
        extra: bytes = b"",
        name: str = "",
        grace_period: float = GRACE_PERIOD,
        rng: Rng = random_bytes,
    ) -> CellCrypto:
        """Return a new cell with `identity` as its only member and admin, in epoch 1.

        `group_keys` (read, write seeds), `control_read_key` and `admin_secrets` are
        opaque to this layer; it hands them to joiners and rotates them as told.

        Raises:
            ValueError: wrong sizes, or an invalid cell name.
        """
        check_name(name)
        cell_id = rng(CELL_ID_SIZE) if cell_id is None else cell_id
        if len(cell_id) != CELL_ID_SIZE or len(control_read_key) != _KEY:
            raise ValueError("cell id is 16 bytes, control read key 32")
        if len(admin_secrets) > MAX_ADMIN_SECRETS or len(extra) > MAX_EXTRA:
            raise ValueError("admin secrets or extra too long")
        genesis = sign_entry(
            identity,
            op=Op.GENESIS,
            index=0,
            prev_hash=bytes(32),
            epoch=1,
            timestamp_ms=timestamp_ms(now),
            cell_id=cell_id,
            subject=identity.info,
            role=Role.ADMIN,
        )
        membership = Membership.genesis(genesis)
        state = SavedState(
            member_id=identity.member_id,
            cell_id=cell_id,
            name=name,
            group_keys=_check_group_keys(group_keys),
            control_read_key=bytes(control_read_key),
            admin_secrets=bytes(admin_secrets),
            extra=bytes(extra),
            removed=False,
            grace_period=grace_period,
            joined_epoch=1,
            current=1,
            membership=membership,
            epochs={},
            parked=[],
            proposals=[],
            receive_at=now,  # a member's first key update is due a period after it joined
        )
        cell = cls(identity, state, rng=rng)
        cell._enter_epoch(1, bytearray(rng(SECRET_SIZE)), membership, now=now)
        return cell

    @classmethod
    def from_welcome(
        cls,
        identity: Identity,
        welcome: bytes,
        *,
        now: float,
        invite: Invite,
        inviter: bytes | None = None,
        key_ttl: int = DEFAULT_KEY_TTL,
        grace_period: float = GRACE_PERIOD,
        rng: Rng = random_bytes,
        pages: Sequence[bytes] = (),
        announce: bool = True,
    ) -> tuple[CellCrypto, bytes]:
        """Join a cell from an admin's welcome; return (state, sender key distribution).

        `pages` are the welcome's member list pages, in order, if it has any (a cell of
        more than about 150 members, §G7). With `announce=False` the distribution is
        empty: as for `open_control`, publish `announcement()` before sealing anything.

        Publish the distribution in the group mailbox before sealing anything. If
        `inviter` (a member id) is given, the welcome must come from that admin. The
        welcome must answer `invite`, the invite this member asked to join with: name its
        cell, carry its binding (a commitment to its secret), and arrive within its
        lifetime (until `WELCOME_LINGER` seconds after it expires, by `now`).

        Raises:
            MalformedError, TamperedError: not a welcome (of this version) for this identity.
            BadSignatureError: the admin's signature does not verify.
            WelcomeRefusedError: it answers another invite, or comes too late (after the
                signature check: only an authentic welcome is reported as such).
            MembershipError: the member list is incoherent, the signer is not an admin
                in it (or not `inviter`), or this identity is not a member.
            WelcomeIncompleteError: the welcome has pages and not all were given (its
                `pages` says how many it needs).
        """
        if now > invite.expires_at + WELCOME_LINGER:
            raise WelcomeRefusedError("the invite's lifetime is over; ask for a new invite")
        signer_id, signature, wb = open_welcome(identity, welcome)
        version = welcome[0]
        content = WelcomeContent.from_bytes(wb, version)
        members = _welcome_members(identity, content, pages)
        membership = Membership.snapshot(
            cell_id=content.cell_id,
            members=members,
            head_index=content.head_index,
            head_hash=content.head_hash,
            head_epoch=content.head_epoch,
        )
        signer = membership.members.get(signer_id)
        if signer is None or signer_id not in membership.admins:
            raise MembershipError("welcome not signed by an admin")
        if inviter is not None and signer_id != inviter:
            raise MembershipError("welcome not from the inviter")
        verify_welcome(signer, signature, wb, version)
        if (
            content.cell_id != invite.cell_id
            or not hmac.compare_digest(content.invite_binding, invite.welcome_binding)
            or content.created_ms > (invite.expires_at + WELCOME_LINGER) * 1000
        ):
            raise WelcomeRefusedError("welcome does not answer this invite")
        if (
            content.joiner != identity.member_id
            or identity.member_id not in membership.members
            or content.epoch < content.head_epoch
        ):
            raise MembershipError("welcome does not admit this member")
        is_admin = identity.member_id in membership.admins
        publics = _read_table(content.bucket_table)
        bucket_private = None
        if content.join_box is not None:
            bucket_private = _open_join_box(identity, content.cell_id, content.join_box, publics)
        state = SavedState(
            member_id=identity.member_id,
            cell_id=content.cell_id,
            name=content.cell_name,
            group_keys=content.group_keys,
            control_read_key=content.control_read_key,
            admin_secrets=content.admin_secrets if is_admin else b"",
            extra=content.extra,
            removed=False,
            grace_period=grace_period,
            joined_epoch=content.epoch,
            current=content.epoch,
            membership=membership,
            epochs={},
            parked=[],
            proposals=[],
            bucket_private=bucket_private,
            bucket_publics=publics,
            receive_at=now,  # a member's first key update is due a period after it joined
        )
        cell = cls(identity, state, rng=rng)
        cell._enter_epoch(content.epoch, bytearray(content.secret), membership, now=now)
        return cell, cell._distribution(int(now) + key_ttl) if announce else b""

    def to_bytes(self, *, parked: bool = True) -> bytes:
        """Return the full state (SECRET: for the client's encrypted keystore only).

        `parked=False` leaves out the envelopes parked for their epoch or key (up to
        1 MiB, rewritten by every save otherwise): for a client that keeps their relay
        seqs (`parked_refs`) and fetches them again after a restart.
        """
        return write_state(self._s, parked=parked)

    @classmethod
    def from_bytes(cls, data: bytes, identity: Identity, *, rng: Rng = random_bytes) -> CellCrypto:
        """Restore a state saved by `to_bytes` for `identity`.

        Raises:
            MalformedError: corrupt, of another version, or saved for another identity.
        """
        return cls(identity, read_state(data, identity.member_id), rng=rng)

    # -- what the cell looks like ----------------------------------------------------------

    @property
    def cell_id(self) -> bytes:
        """The cell's 16-byte id (secret from the relay: it never appears in clear)."""
        return self._s.cell_id

    @property
    def name(self) -> str:
        """The cell's display name."""
        return self._s.name

    @property
    def epoch(self) -> int:
        """The current epoch number."""
        return self._s.current

    @property
    def members(self) -> tuple[MemberInfo, ...]:
        """The current members, in ascending member id order."""
        return tuple(self._s.membership.members.values())

    @property
    def admins(self) -> frozenset[bytes]:
        """The member ids of the current admins."""
        return self._s.membership.admins

    @property
    def membership(self) -> Membership:
        """The current membership state (members, admins, log head)."""
        return self._s.membership

    @property
    def me(self) -> MemberInfo:
        """This member's public info."""
        return self._identity.info

    @property
    def is_admin(self) -> bool:
        """Whether this member is currently an admin (False once removed)."""
        return not self._s.removed and self._me in self._s.membership.admins

    @property
    def removed(self) -> bool:
        """Whether this member has been removed from the cell."""
        return self._s.removed

    @property
    def group_keys(self) -> tuple[bytes, bytes]:
        """The group mailbox's (read, write) capability key seeds, as last rotated."""
        return self._s.group_keys

    @property
    def control_read_key(self) -> bytes:
        """The control mailbox's read capability key seed (never rotated)."""
        return self._s.control_read_key

    @property
    def admin_secrets(self) -> bytes:
        """The admins' opaque secrets (empty for a non-admin)."""
        return self._s.admin_secrets

    @property
    def extra(self) -> bytes:
        """The opaque client data from the welcome (or given to `create`)."""
        return self._s.extra

    def role_of(self, member_id: bytes) -> Role | None:
        """Return a member's current role, or None if it is not a member."""
        return self._s.membership.role_of(member_id)

    # -- sending ---------------------------------------------------------------------------

    def send_position(self) -> tuple[int, int]:
        """(current epoch, counter of the next message this member seals in it).

        The counter is 0 when this member has no chain in the epoch (removed).
        """
        s = self._s
        own = s.epochs[s.current].own
        return s.current, own.counter if own is not None else 0

    def skip_sending_to(self, epoch: int, counter: int) -> int:
        """Move this member's chain in `epoch` on to `counter`; return how many were skipped.

        For a client that reserves counters ahead of its durable saves (docs/protocol.md
        §C6 item 3): after a crash, the state on disk may be behind messages already
        published, so the client skips to the reservation and never seals with a message
        key twice. Receivers see a gap, as after lost messages. Nothing happens when
        `epoch` is no longer current or the chain is already at or past `counter`. The
        chain key steps in place, as for a sealed message.

        Raises:
            ValueError: `counter` beyond the chain's last usable counter.
        """
        s = self._s
        if counter > MAX_COUNTER + 1:
            raise ValueError("counter beyond the end of the chain")
        own = s.epochs[s.current].own if epoch == s.current else None
        if own is None or own.counter >= counter:
            return 0
        skipped = counter - own.counter
        while own.counter < counter:
            own.step()  # its message material is dropped unused
        return skipped

    def seal(self, kind: int, plaintext: bytes, *, expires_at: int, now: float) -> bytes:
        """Return a group envelope carrying `plaintext` of `kind`, from this member.

        Raises:
            ValueError: `kind` not a content kind (1..4, 16..255), `plaintext` over
                MAX_GROUP_PLAINTEXT, or
                `expires_at` not after `now` (or over 2^64-1).
            RemovedError: this member was removed.
        """
        if kind not in CONTENT_KINDS or len(plaintext) > MAX_GROUP_PLAINTEXT:
            raise ValueError("not a content kind, or the plaintext is over MAX_GROUP_PLAINTEXT")
        return self._seal(kind, plaintext, expires_at=expires_at, now=now)

    def seal_key_update(self, update: bytes, *, expires_at: int, now: float) -> bytes:
        """Return a group envelope of kind 8 carrying this member's key update (§G6.5).

        `update` is what `key_update` returned (the client saves it first, so that a
        restart posts it again). It takes the next counter of this member's chain, like
        a message: the member's announcement must be out before it, as before a message.

        Raises:
            ValueError: not a key update of this member, or `expires_at` not after `now`.
            RemovedError: this member was removed.
        """
        parsed = KeyUpdate.from_bytes(bytes(update))
        if parsed.member_id != self._me or parsed.cell_id != self._s.cell_id:
            raise ValueError("not a key update of this member")
        return self._seal(Kind.KEY_UPDATE, bytes(update), expires_at=expires_at, now=now)

    def _seal(self, kind: int, plaintext: bytes, *, expires_at: int, now: float) -> bytes:
        s = self._s
        if s.removed:
            raise RemovedError("removed from the cell")
        if not now < expires_at <= _U64:
            raise ValueError("expires_at must be after now")
        epoch = s.epochs[s.current]
        own = epoch.own
        if own is None or own.counter > MAX_COUNTER:  # pragma: no cover - 2^32 messages
            raise ValueError("the chain is used up: rotate the epoch")
        counter, material = own.step()
        return seal_envelope(
            header=HEADER.pack(s.cell_id, s.current, self._me, counter, kind, expires_at),
            epoch=s.current,
            header_key=epoch.keys.header,
            header_nonce=self._rng(24),
            signing_key=own.signing_key,
            body_key=material[:_KEY],
            body_nonce=material[_KEY:],
            plaintext=plaintext,
        )

    def announcement(self, *, now: float, key_ttl: int = DEFAULT_KEY_TTL) -> bytes:
        """Return this member's sender key announcement for the current epoch (§G8.2).

        For a member that applied the epoch's change with `announce=False`: publish it in
        the group mailbox before the first envelope it seals in the epoch.

        Raises:
            RemovedError: this member was removed.
        """
        if self._s.removed:
            raise RemovedError("removed from the cell")
        return self._distribution(int(now) + key_ttl)

    def _distribution(self, expires_at: int) -> bytes:
        """Return this member's sender key announcement (or distribution) for the current epoch.

        An epoch with a sender tree (every epoch entered since state version 3) gets an
        announcement (kind 7: the signing key, no chain key, §G8.2); an epoch entered
        before gets a distribution (kind 5), as its receivers expect.
        """
        s = self._s
        epoch = s.epochs[s.current]
        own = epoch.own
        if own is None:  # pragma: no cover - the current epoch always has our chain
            raise RemovedError("no sending chain")
        recipients = [(m, info) for m, info in epoch.members.items() if m != self._me]
        if epoch.tree is not None:
            kind = Kind.ANNOUNCEMENT
            plaintext = AnnouncementPayload(
                start=own.counter,
                signing_public=own.signing_public,
                macs=tuple(
                    announcement_mac(
                        self._pair(info.dh_pub, PAIRWISE_DISTRIBUTION_MAC),
                        cell_id=s.cell_id,
                        epoch=s.current,
                        sender=self._me,
                        recipient=member_id,
                        start=own.counter,
                        signing_public=own.signing_public,
                    )
                    for member_id, info in recipients
                ),
            ).to_bytes()
        else:
            kind = Kind.SENDER_KEY
            chain_key = own.chain_key.export()
            plaintext = DistributionPayload(
                chain_key=chain_key,
                start=own.counter,
                signing_public=own.signing_public,
                macs=tuple(
                    distribution_mac(
                        self._pair(info.dh_pub, PAIRWISE_DISTRIBUTION_MAC),
                        cell_id=s.cell_id,
                        epoch=s.current,
                        sender=self._me,
                        recipient=member_id,
                        chain_key=chain_key,
                        start=own.counter,
                        signing_public=own.signing_public,
                    )
                    for member_id, info in recipients
                ),
            ).to_bytes()
        header = HEADER.pack(s.cell_id, s.current, self._me, 0, kind, expires_at)
        nonce = self._rng(24)
        return seal_envelope(
            header=header,
            epoch=s.current,
            header_key=epoch.keys.header,
            header_nonce=nonce,
            signing_key=own.signing_key,
            body_key=epoch.keys.distribution,
            body_nonce=nonce,
            plaintext=plaintext,
        )

    def distribution(self, *, now: float, key_ttl: int = DEFAULT_KEY_TTL) -> bytes:
        """Return a fresh copy of this member's distribution for the current epoch.

        For a client that lost the one from `open_control` or `from_welcome` before
        publishing it. It starts at the chain's current counter, so it reveals no key of
        a message already sent.
        """
        if self._s.removed:
            raise RemovedError("removed from the cell")
        return self._distribution(int(now) + key_ttl)

    # -- receiving -------------------------------------------------------------------------

    def open(
        self, envelope: bytes, *, now: float, ref: int = 0, present_since: float = float("-inf")
    ) -> Outcome:
        """Authenticate and decrypt a group envelope.

        Returns `Opened` (a message, or a sender key distribution), `Pending` (parked until
        its sender key or epoch arrives; released later in `Opened.released` or
        `EpochUpdate.released`) or `Own` (this member's own envelope echoed back). `ref`
        names the envelope for `parked_refs` (the client passes the relay's seq).
        `present_since` is the time (on `now`'s clock) since when this member has been
        reading the group mailbox without a break long enough for a message to expire;
        a gap that opens in a sender's counters is reported by `check` only if that
        sender's previous envelope came after it (docs/protocol.md §G10.2). The default
        reports every gap.

        Raises:
            GroupError: one subclass per reason (docs/protocol.md, Part 2, "Rejections").
                `PendingOverflowError` changes nothing: offer the envelope again once
                its epoch or its sender's key has arrived.
        """
        self._rx.expire(now)
        return self._rx.open(bytes(envelope), now, ref, present_since)

    def check(self, now: float) -> tuple[Notice, ...]:
        """Report, once each, what should have arrived and has not (docs/protocol.md §G10).

        `Missing`: messages of a sender whose later messages arrived stayed missing for
        `GAP_GRACE` seconds. `Behind`: envelopes of a newer epoch waited `BEHIND_GRACE`
        seconds for the epoch change this member has not seen. Also deletes what has
        expired (as `open` does): call it every minute or so, and after a burst of
        deliveries.
        """
        self._forget_secret(now)
        self.settle(now)
        return self._rx.check(now)

    def _forget_secret(self, now: float) -> None:
        """Delete the current epoch's secret once its welcome window is over (admins)."""
        epoch = self._s.epochs.get(self._s.current)
        if epoch is not None and epoch.secret is not None and now >= epoch.secret_until:
            zero(epoch.secret)
            epoch.secret = None

    @property
    def wiped(self) -> int:
        """How many skipped keys were deleted for their age so far (save the state when it grows)."""
        return self._rx.wiped

    @property
    def key_lifetime(self) -> float:
        """Seconds a skipped message key is kept after its gap appeared (§G10.2)."""
        return self._rx.key_lifetime

    def set_max_ttl(self, max_ttl: int) -> None:
        """Keep skipped keys only as long as the relay's maximum TTL allows (its `Welcome`).

        A skipped key then lives `max_ttl` + `SKIPPED_KEY_SLACK` + `lateness` after its
        gap was noticed (`key_lifetime`, §G10.2).
        """
        self._rx.set_max_ttl(max_ttl)

    @property
    def lateness(self) -> float:
        """How long past its `expires_at` an envelope still opens (seconds; 0 by default).

        A client sets it to its bounded allowance for late delivery and clock skew
        (docs/protocol.md §G10 step 12, §C7); the key of a message expired beyond it is
        burned, and the message refused, as before.
        """
        return self._rx.lateness

    @lateness.setter
    def lateness(self, seconds: float) -> None:
        if not 0 <= seconds < 86_400:
            raise ValueError("lateness must be within a day")
        self._rx.lateness = seconds

    def parked_refs(self) -> list[int]:
        """The `ref`s given with the envelopes parked now (see `open`), in arrival order."""
        return self._rx.parked_refs()

    def keyed_senders(self) -> frozenset[bytes]:
        """The members whose sender key of the current epoch this member holds (itself included)."""
        s = self._s
        epoch = s.epochs.get(s.current)
        if epoch is None:
            return frozenset()
        return frozenset(epoch.chains) | {self._me}

    # -- epoch changes ---------------------------------------------------------------------

    def open_control(
        self,
        envelope: bytes,
        *,
        now: float,
        key_ttl: int = DEFAULT_KEY_TTL,
        announce: bool = True,
    ) -> EpochUpdate:
        """Verify and apply an epoch change read from the control mailbox.

        With `announce=False` the update carries no announcement (`distribution` is None):
        for a member that will not send in the epoch, or not yet; it must publish
        `announcement()` before it seals anything in the epoch. An announcement costs a
        MAC per member (one X25519 each the first time), the most of applying a change in
        a large cell.

        Raises:
            StaleControlError: its epoch was already reached (`ours`: it was this
                member's own proposal, which lost the race; redo the operation).
            EpochGapError: it skips epochs; this member needs a new welcome.
            RemovedError: this member was already removed.
            MalformedError, TamperedError, BadSignatureError, MembershipError: forged or
                invalid; nothing was applied.
        """
        self._rx.expire(now)
        self._forget_secret(now)
        s = self._s
        envelope = bytes(envelope)
        if s.removed:
            raise RemovedError("removed from the cell")
        number, nonce = split_change(envelope)
        digest = blake2b(envelope)
        if number <= s.current:
            ours = digest in s.proposals
            if ours:
                s.proposals.remove(digest)
            applied = self._applied.get(number)
            if not self.settle_window or applied is None or digest >= applied:
                # One relay: its order decides, and a competing change read later lost. On
                # several, a change with a higher hash than the one applied loses anyway.
                raise StaleControlError("epoch already reached", ours=ours)
            return self._competing(envelope, number, digest, ours, now=now, key_ttl=key_ttl, announce=announce)  # fmt: skip
        if number > s.current + 1:
            raise EpochGapError("epoch changes were missed")
        change = check_change(
            s,
            self._me,
            self._pair,
            envelope,
            number,
            nonce,
            dh=self._identity.dh,
            identity_pub=self._identity.dh_pub,
        )
        # Verified: from here on, apply. On several relays, E's state is kept for the
        # settle window: a competing change for the same epoch may still win (`_competing`).
        before = write_state(s) if self.settle_window > 0 else None
        ours = digest in s.proposals
        if ours:
            s.proposals.remove(digest)
        self._applied[number] = digest
        while len(self._applied) > _MAX_APPLIED:
            del self._applied[min(self._applied)]
        self._settle = None if before is None else _Settle(number, before, digest, now, ours)
        if change.bucket_publics is None or change.secret is None:
            s.forget_buckets()  # version 1 or 2: the next change of version 3 migrates
        else:
            if change.bucket_private is not None:
                if s.bucket_private is not None:
                    zero(s.bucket_private)
                s.bucket_private = change.bucket_private
            s.bucket_publics = change.bucket_publics
            s.join_boxes = change.join_boxes or {}
            self._commit_receive_keys(change.updates, change.own_generation, now=now)
            if change.boxed_to_identity:
                # Its signer (an admin who joined after this member's last committed update)
                # does not know the member's receive key, and boxes to the identity key until
                # it commits a newer one: make that update due now, so it learns one (§G6.5).
                s.receive_at = min(s.receive_at, now - KEY_UPDATE_PERIOD)
        if change.entry is not None and change.entry.op in (Op.ADD, Op.REMOVE):
            # A member added again starts from its identity key; a removed one is gone.
            s.receive_publics.pop(change.entry.subject.member_id, None)
            s.key_updates.pop(change.entry.subject.member_id, None)
        if change.secret is None or change.membership is None:
            s.removed = True
            current = s.epochs[s.current]
            current.superseded_at = now
            if current.own is not None:
                current.own.clear()
                current.own = None
            return EpochUpdate(epoch=number, signer=change.signer, entry=None, removed_self=True)
        if change.group_keys is not None:
            s.group_keys = change.group_keys
        if change.granted is not None:
            s.admin_secrets = change.granted
        elif self._me not in change.membership.admins:
            s.admin_secrets = b""
        self._enter_epoch(
            number, change.secret, change.membership, now=now, by_bucket=change.by_bucket
        )
        return EpochUpdate(
            epoch=number,
            signer=change.signer,
            entry=change.entry,
            group_keys=change.group_keys,
            admin_secrets=change.granted,
            distribution=self._distribution(int(now) + key_ttl) if announce else None,
            released=self._rx.release(None, None, now),
            extra=change.extra,
        )

    def _competing(
        self,
        envelope: bytes,
        number: int,
        digest: bytes,
        ours: bool,
        *,
        now: float,
        key_ttl: int,
        announce: bool,
    ) -> EpochUpdate:
        """A change for epoch `number`, which this member applied another change for.

        Within the settle window of the last change applied, the change is opened under
        the state kept from before that one (so it must be a sibling: built on the same
        epoch, signed by an admin of it); the one of the two whose envelope has the lower
        BLAKE2b-256 wins. If it is this one, this member's state becomes that state with
        this change applied, and the update says which change it replaced (`superseded`).
        """
        settle = self._settle
        if settle is None or settle.epoch != number or now - settle.applied_at > self.settle_window:
            raise ForkedEpochError("a competing change for an epoch settled already", ours=ours)
        other = CellCrypto(self._identity, read_state(settle.before, self._me), rng=self._rng)
        other.update_on_commit = self.update_on_commit
        # Raises as for any change that does not verify under E (then it is no sibling).
        update = other.open_control(envelope, now=now, key_ttl=key_ttl, announce=announce)
        if digest > settle.digest:
            raise StaleControlError("a competing change for this epoch won", ours=ours)
        if settle.digest in other._s.proposals:  # our change that lost: not reported again
            other._s.proposals.remove(settle.digest)
        self._s, self._rx, self._pairwise = other._s, other._rx, other._pairwise
        self._applied = {**self._applied, number: digest}
        # The window still runs from the first change applied for this epoch.
        self._settle = _Settle(number, settle.before, digest, settle.applied_at, ours)
        return replace(update, superseded=settle.digest, lost_ours=settle.ours)

    def settle(self, now: float) -> None:
        """Forget the epoch kept for the settle window once it is over (`check` calls it)."""
        if self._settle is not None and now - self._settle.applied_at > self.settle_window:
            self._settle = None

    def _commit_receive_keys(
        self, updates: list[KeyUpdate], own: int | None, *, now: float
    ) -> None:
        """Record the receive keys a change committed; adopt this member's own (§G6.5)."""
        s = self._s
        for update in updates:
            s.receive_publics[update.member_id] = (update.generation, update.receive_pub)
            held = s.key_updates.get(update.member_id)
            if held is not None and KeyUpdate.from_bytes(held).generation <= update.generation:
                del s.key_updates[update.member_id]
        if own is None:
            return
        private = s.pending_receive.pop(own)
        if s.receive_private is not None:
            zero(s.receive_private)
        s.receive_private, s.receive_generation = private, own
        for generation in [g for g in s.pending_receive if g < own]:
            zero(s.pending_receive.pop(generation))
        s.receive_at = max(s.receive_at, now)

    # -- receive keys (post-compromise security, docs/protocol.md §G6.5) ---------------------

    @property
    def receive_generation(self) -> int:
        """The generation of this member's committed receive key (0: its identity key)."""
        return self._s.receive_generation

    def key_update_due(self, now: float) -> bool:
        """Whether this member should make a key update: KEY_UPDATE_PERIOD since its last."""
        s = self._s
        return not s.removed and now - s.receive_at >= KEY_UPDATE_PERIOD

    def key_update(self, *, now: float) -> bytes:
        """Return a key update (133 bytes) announcing a fresh receive key of this member.

        The member keeps the new private key until a change commits it (then the older key
        is deleted) or until MAX_PENDING_RECEIVE newer updates replace it. Admins take it
        with `accept_key_update`; an admin's own goes into its next change by itself.

        Raises:
            RemovedError: this member was removed.
        """
        s = self._s
        if s.removed:
            raise RemovedError("removed from the cell")
        generation = max([s.receive_generation, *s.pending_receive]) + 1
        private = bytearray(self._rng(_KEY))
        update = sign_key_update(self._identity, s.cell_id, generation, private)
        s.pending_receive[generation] = private
        while len(s.pending_receive) > MAX_PENDING_RECEIVE:
            zero(s.pending_receive.pop(min(s.pending_receive)))
        s.receive_at = now
        data = update.to_bytes()
        if self.is_admin:
            s.key_updates.pop(self._me, None)
            s.key_updates[self._me] = data
        return data

    def accept_key_update(self, data: bytes) -> bool:
        """Keep a member's key update for this admin's next change to commit.

        Returns False (keeping nothing) when this member is not an admin, or already holds
        as new an update of that member.

        Raises:
            MalformedError: not a key update.
            MembershipError: of another cell, of no member, or of a generation already
                committed.
            BadSignatureError: not signed by the member's identity key.
        """
        s = self._s
        update = KeyUpdate.from_bytes(bytes(data))
        info = s.membership.members.get(update.member_id)
        if info is None:
            raise MembershipError("a key update of no member")
        update.verify(s.cell_id, info, after=committed_generation(s, update.member_id))
        if s.removed or not self.is_admin:
            return False
        held = s.key_updates.get(update.member_id)
        if held is not None and KeyUpdate.from_bytes(held).generation >= update.generation:
            return False
        s.key_updates.pop(update.member_id, None)
        s.key_updates[update.member_id] = update.to_bytes()  # newest last
        return True

    def take_key_update(self, opened: Opened) -> bool:
        """Take a key update that `open` returned (kind 8) for this admin's next change.

        The update must be of the envelope's own sender: the envelope is signed by the
        sender's chain, the update by its identity key, and both must name the same
        member. Returns False (keeping nothing) on a member that is not an admin, which
        does not check it, or when this admin already holds as new an update of that member.

        Also False, quietly, for an update its sender's removal or a newer committed update
        made moot, read late: sealed in an epoch before the current one.

        Raises:
            ValueError: `opened` is not of kind 8.
            MalformedError: not a key update.
            MembershipError: of another member than the sender, of another cell, or of a
                generation already committed sealed in the current epoch (an old update
                posted again after its member adopted a newer key).
            BadSignatureError: not signed by the sender's identity key.
        """
        if opened.kind != Kind.KEY_UPDATE:
            raise ValueError("not a key update envelope")
        s = self._s
        if s.removed or not self.is_admin:
            return False
        update = KeyUpdate.from_bytes(opened.plaintext)
        if update.member_id != opened.sender.member_id:
            raise MembershipError("a key update of another member than its sender")
        if update.member_id not in s.membership.members:
            return False  # removed since it posted the update: nothing to commit
        if update.generation <= committed_generation(s, update.member_id) and (
            opened.epoch < s.current
        ):
            # Sealed before the latest change, and a newer one is committed since: an update
            # read late (the control mailbox is not ordered against the group mailbox).
            # One sealed in the current epoch came after its member adopted a newer key:
            # refused below, as a replay.
            return False
        if s.receive_publics.get(update.member_id) == (update.generation, update.receive_pub):
            # The update a change already committed, read after the change (the two
            # mailboxes are not ordered against each other) or posted again after a
            # restart: nothing to do, and nothing hostile.
            return False
        return self.accept_key_update(opened.plaintext)

    @property
    def waiting_key_updates(self) -> int:
        """How many members' key updates (not this admin's own) wait for a change to commit."""
        return sum(1 for member_id in self._s.key_updates if member_id != self._me)

    def _enter_epoch(
        self,
        number: int,
        secret: bytearray,
        membership: Membership,
        *,
        now: float = 0.0,
        by_bucket: dict[int, list[bytes]] | None = None,
    ) -> None:
        """Make `number` the current epoch, with a fresh chain and signing key for this member."""
        s = self._s
        previous = s.epochs.get(s.current)
        if previous is not None and previous.number != number:
            previous.superseded_at = now
            if previous.own is not None:
                previous.own.clear()
                previous.own = None
            if previous.secret is not None:
                zero(previous.secret)
                previous.secret = None
            if previous.init is not None:
                zero(previous.init)
                previous.init = None
        seed = bytearray(self._rng(ED25519_SEED_SIZE))
        signing_key = SigningKey(seed)
        zero(seed)
        epoch = Epoch(
            number=number,
            keys=EpochKeys.derive(secret, s.cell_id, number),
            members=dict(membership.members),
            own_public=signing_key.public,
            tree=SenderTree.enter(secret, s.cell_id, number),
            init=init_secret(secret, s.cell_id, number),
            by_bucket=by_bucket,
        )
        own_root = epoch.tree.take(self._me, epoch.bucket_members(s.cell_id, self._me))  # type: ignore[union-attr]
        epoch.own = SendChain(own_root, 0, signing_key, signing_key.public)
        # Only an admin keeps the epoch secret, and only for WELCOME_WINDOW (its welcomes
        # carry it, §G7); everyone else has derived all it needs from it, and keeping it
        # would let a seized state re-derive every chain of the epoch (§G16).
        if self._me in membership.admins:
            epoch.secret = secret
            epoch.secret_until = now + WELCOME_WINDOW
        else:
            zero(secret)
        s.epochs[number] = epoch
        s.current = number
        s.membership = membership

    # -- admin operations ------------------------------------------------------------------
    # Each returns an epoch change to post in the control mailbox; nothing changes here
    # until it is read back through `open_control` (see the module docstring).

    def add_member(self, member: MemberInfo, *, now: float, role: Role = Role.MEMBER) -> bytes:
        """Return the epoch change that adds `member`; after applying it, send `welcome_for`.

        Raises:
            NotAdminError, RemovedError: this member may not.
            MembershipError: already a member, or the cell is full (MAX_MEMBERS).
        """
        return self._propose((Op.ADD, member, role), now=now)

    def remove_member(
        self,
        member_id: bytes,
        *,
        now: float,
        new_group_keys: tuple[bytes, bytes],
        extra: bytes | None = None,
    ) -> bytes:
        """Return the epoch change that removes a member and rotates the group mailbox keys.

        `extra` is opaque client data for the remaining members (the client's: a new group
        mailbox, docs/protocol.md §C5); the change carries it in its body (§G6.3).

        Raises:
            NotAdminError, RemovedError: this member may not.
            MembershipError: not a member, or the last admin.
            ValueError: `new_group_keys` are not two 32-byte seeds; `extra` is empty or
                longer than MAX_CHANGE_EXTRA.
        """
        subject = self._member(member_id)
        keys = _check_group_keys(new_group_keys)
        return self._propose(
            (Op.REMOVE, subject, Role.MEMBER), now=now, group_keys=keys, extra=extra
        )

    def promote(self, member_id: bytes, *, now: float) -> bytes:
        """Return the epoch change that makes a member an admin (it receives admin_secrets)."""
        return self._propose((Op.PROMOTE, self._member(member_id), Role.ADMIN), now=now)

    def demote(self, member_id: bytes, *, now: float) -> bytes:
        """Return the epoch change that makes an admin a plain member (not the last admin)."""
        return self._propose((Op.DEMOTE, self._member(member_id), Role.MEMBER), now=now)

    def set_role(self, member_id: bytes, role: Role, *, now: float) -> bytes:
        """Return the epoch change that gives a member who is not an admin another role.

        `role` is MEMBER, DISPATCHER, RESPONDER or OBSERVER (admins move with `promote`
        and `demote`).

        Raises:
            NotAdminError, RemovedError: this member may not.
            MembershipError: not a member, an admin, already `role`, or `role` is ADMIN.
        """
        return self._propose((Op.SET_ROLE, self._member(member_id), Role(role)), now=now)

    def rotate(
        self,
        *,
        now: float,
        new_group_keys: tuple[bytes, bytes] | None = None,
        extra: bytes | None = None,
    ) -> bytes:
        """Return an epoch change with no membership change: fresh keys for everyone.

        `extra`, if given, is opaque client data for the members (as for `remove_member`).
        """
        keys = None if new_group_keys is None else _check_group_keys(new_group_keys)
        return self._propose(None, now=now, group_keys=keys, extra=extra)

    def _member(self, member_id: bytes) -> MemberInfo:
        info = self._s.membership.members.get(member_id)
        if info is None:
            raise MembershipError("not a member")
        return info

    def _require_admin(self) -> None:
        if self._s.removed:
            raise RemovedError("removed from the cell")
        if not self.is_admin:
            raise NotAdminError("only an admin may do this")

    def _propose(
        self,
        entry_fields: tuple[Op, MemberInfo, Role] | None,
        *,
        now: float,
        group_keys: tuple[bytes, bytes] | None = None,
        extra: bytes | None = None,
    ) -> bytes:
        self._require_admin()
        s = self._s
        if extra is not None and not 0 < len(extra) <= MAX_CHANGE_EXTRA:
            raise ValueError("extra must be 1..MAX_CHANGE_EXTRA bytes")
        if self.update_on_commit:
            self.key_update(now=now)
        envelope = build_change(
            self._identity,
            s,
            self._rng,
            self._pair,
            entry_fields=entry_fields,
            now=now,
            group_keys=group_keys,
            extra=None if extra is None else bytes(extra),
            updates=[KeyUpdate.from_bytes(update) for update in s.key_updates.values()],
        )
        s.proposals = [*s.proposals, blake2b(envelope)][-_MAX_PROPOSALS:]
        return envelope

    def welcome_for(
        self, member_id: bytes, *, now: float, invite: Invite, extra: bytes | None = None
    ) -> bytes:
        """Return a welcome for a member of the current epoch (admin only).

        It carries the cell id and name, the current epoch secret, the membership (with
        the log head), the group and control mailbox key seeds, the admin secrets if the
        joiner is an admin, `extra` (default: this state's `extra`) and the binding of
        `invite`, the invite the joiner asked with, signed by this admin and sealed to the
        joiner's X25519 key.

        Raises:
            NotAdminError, RemovedError: this member may not.
            MembershipError: `member_id` is not a member (add it first).
            WelcomeWindowError: the epoch was entered more than WELCOME_WINDOW ago (by the
                clock of `open_control` and `check`), and its secret is gone: rotate the
                epoch, then welcome.
            ValueError: `extra` is longer than MAX_EXTRA, or `invite` is of another cell;
                the member list does not fit one welcome (use `welcome_with_pages`).
        """
        welcome, pages = self.welcome_with_pages(member_id, now=now, invite=invite, extra=extra)
        if pages:
            raise ValueError("the member list needs pages: use welcome_with_pages")
        return welcome

    def welcome_with_pages(
        self, member_id: bytes, *, now: float, invite: Invite, extra: bytes | None = None
    ) -> tuple[bytes, list[bytes]]:
        """Return a welcome and the pages with the rest of its member list (§G7).

        As `welcome_for`; a cell whose member list does not fit one envelope (above about
        150 members) lists its first members in the welcome and the rest in pages, which
        the joiner needs too (`from_welcome(pages=...)`): publish them after the welcome.
        """
        self._require_admin()
        if self._s.epochs[self._s.current].secret is None:
            raise WelcomeWindowError(
                "the epoch's secret is gone (welcomes are made within 10 minutes of an epoch"
                " change): rotate the epoch, then welcome"
            )
        if invite.cell_id != self._s.cell_id:
            raise ValueError("the invite is for another cell")
        joiner = self._member(member_id)
        extra = self._s.extra if extra is None else bytes(extra)
        if len(extra) > MAX_EXTRA:
            raise ValueError("extra too long")
        if self._s.bucket_publics and member_id not in self._s.join_boxes:
            raise WelcomeWindowError(
                "no join box for this member (it has joined, or was added too long ago):"
                " remove it and add it again, then welcome"
            )
        page_key = self._rng(_KEY)
        content = welcome_content(
            self._s,
            member_id,
            now=now,
            extra=extra,
            invite_binding=invite.welcome_binding,
            page_key=page_key,
        )
        rest = tuple(
            (info, self._s.membership.role_of(mid) or Role.MEMBER)
            for mid, info in self._s.membership.members.items()
        )[len(content.members) :]
        pages = seal_welcome_pages(page_key, member_id, rest, self._rng) if rest else []
        ephemeral = bytearray(self._rng(_KEY))
        try:
            welcome = seal_welcome(
                signer=self._identity,
                content=content,
                joiner_dh_pub=joiner.dh_pub,
                ephemeral_private=ephemeral,
                nonce=self._rng(24),
            )
        finally:
            zero(ephemeral)
        return welcome, pages

    # -- pairwise keys ---------------------------------------------------------------------

    def _pair(self, peer_dh_pub: bytes, purpose: bytes) -> bytearray:
        """Return (and cache, in memory only) the pairwise key with a peer for `purpose`."""
        key = self._pairwise.get((peer_dh_pub, purpose))
        if key is None:
            key = self._identity.pairwise_key(peer_dh_pub, purpose)
            self._pairwise[peer_dh_pub, purpose] = key
        return key
