"""The receive path of a cell: open group envelopes, follow sender chains, park what must wait.

docs/protocol.md, Part 2, "Opening an envelope" gives the order of checks; this module
implements it. `CellCrypto` owns a `Receiver` and shares its `SavedState` with it.

Theory of operation:

* Checks run cheapest-first and *nothing changes before the sender's signature verified*:
  a forged, replayed or out-of-window envelope leaves every chain as it was.
* A receive chain holds the key of its next expected counter. Opening counter n > next
  derives the material of next..n, keeps next..n-1 as skipped keys (at most MAX_SKIP in
  one step, MAX_SKIPPED_PER_SENDER per chain, MAX_SKIPPED_TOTAL overall: beyond those the
  oldest are dropped, and their messages can no longer be opened) and burns n's. A
  counter below next opens only from its skipped key, which is then burned: a second
  copy is a `ReplayError`.
* An envelope whose epoch is ahead of ours, or whose sender's distribution has not
  arrived, is parked (`Pending`) and reopened by `release` when the epoch change or the
  distribution arrives, in the order the envelopes came.
* Parking is bounded per *claim* as well as in total, so that nobody can take the room
  genuine envelopes need: an envelope of a future epoch claims nothing anyone can check
  (its header is under a key we do not have yet, so the relay itself can make one up),
  and all of them together get at most `MAX_PENDING_UNAUTHENTICATED`; one whose header
  opened names its sender (any member holding the header key could have written it, so
  the sender is claimed, not proven, until its signature verifies) and each claimed
  sender gets at most `MAX_PENDING_PER_SENDER`. What does not fit is refused with
  `PendingOverflowError` and nothing changes: the caller offers it again once the epoch
  or the key has come (the client fetches it from the relay again by its `ref`, the
  relay's seq), so a full buffer delays an envelope but never loses it.
"""

from __future__ import annotations

import dataclasses
import hmac
from typing import TYPE_CHECKING, Final

from .._crypto import HashChain, blake2b, zero
from ._envelope import (
    BODY_OFFSET,
    CONTENT_KINDS,
    HEADER,
    AnnouncementPayload,
    DistributionPayload,
    Kind,
    announcement_mac,
    distribution_mac,
    open_body,
    open_header,
    split_envelope,
    verify_envelope,
)
from ._errors import (
    BadSignatureError,
    EquivocationError,
    ExpiredError,
    GroupError,
    MalformedError,
    NotAMemberError,
    OutOfWindowError,
    PendingOverflowError,
    ReplayError,
    StaleEpochError,
    UnknownEpochError,
)
from ._keys import (
    PAIRWISE_DISTRIBUTION_MAC,
    Gap,
    ReceiveChain,
    message_material,
    step_chain,
)
from ._outcomes import Behind, Missing, Notice, Opened, Outcome, Own, Pending
from ._state import Parked

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._identity import MemberInfo
    from ._state import Epoch, SavedState

__all__ = [
    "BEHIND_GRACE",
    "DEFAULT_MAX_TTL",
    "DIGEST_WINDOW",
    "GAP_GRACE",
    "MAX_EPOCHS_AHEAD",
    "MAX_PENDING",
    "MAX_PENDING_BYTES",
    "MAX_PENDING_PER_SENDER",
    "MAX_PENDING_UNAUTHENTICATED",
    "MAX_SKIP",
    "MAX_SKIPPED_PER_SENDER",
    "MAX_SKIPPED_TOTAL",
    "MAX_START",
    "PENDING_MAX_AGE",
    "SKIPPED_KEY_SLACK",
    "Receiver",
]

# docs/protocol.md, Part 2, "Limits" gives these reasons again for implementers.
# How far one message may jump ahead of the next expected counter, and how many skipped
# keys one sender's chain may hold: Signal's MAX_SKIP is 1,000; a cell's burst during an
# incident (a few hundred members replying) should never hit ours. A key costs 56 bytes.
MAX_SKIP: Final = 2000
MAX_SKIPPED_PER_SENDER: Final = 2000
MAX_SKIPPED_TOTAL: Final = 5000
# The furthest an announcement may start into its chain: a receiver steps the chain from
# its root that many times (1 µs each), so a sender restarted deep into an epoch is still
# followed, and a forged start cannot make it spin (only a member can send one, §G8.2).
MAX_START: Final = 1 << 20
# Parked envelopes (their sender key or epoch not known yet): the client reads the control
# mailbox first, so only the race of a live delivery with an epoch change parks anything;
# 256 envelopes (1 MiB) absorb that with room to spare.
MAX_PENDING: Final = 256
MAX_PENDING_BYTES: Final = 1 << 20
# The shares of one claim (see the module docstring). Envelopes of future epochs are the
# ones a relay can make up without any key: half the buffer, so the burst of distributions
# after an epoch change in a large cell still mostly fits, and the other half stays for
# envelopes whose header a member key opened. A claimed sender gets a quarter: an epoch's
# first messages from one member before its key arrives are a handful.
MAX_PENDING_UNAUTHENTICATED: Final = MAX_PENDING // 2
MAX_PENDING_PER_SENDER: Final = MAX_PENDING // 4
# A parked envelope whose distribution has not come after an hour never will (the relay
# keeps a mailbox in order, and the distribution precedes its messages).
PENDING_MAX_AGE: Final = 3600.0
# Envelopes of epochs this far beyond the current one are parked, further ones refused.
MAX_EPOCHS_AHEAD: Final = 8
# The reference relay's default maximum TTL (relay/_config.py): how long an envelope can
# live, unless the client says what its relay announced (`CellCrypto.key_lifetime`).
DEFAULT_MAX_TTL: Final = 7 * 24 * 3600
# A gap in a sender's counters is reported (`Missing`) once it has stayed open this long:
# the relay keeps one order per mailbox, so a missing envelope that is not lost comes
# back only through the client's fetch-again of envelopes the parking buffer refused (it
# runs after each burst and every minute) or a reconnect; five minutes cover both with
# room, and are short against an alert's hour.
GAP_GRACE: Final = 300.0
# Envelopes of a newer epoch that waited this long for their epoch change: the change
# precedes them on the relay (an admin publishes it before anyone can seal in the new
# epoch), and a member reads the control mailbox first, so two minutes is generous.
BEHIND_GRACE: Final = 120.0
# Accepted envelopes remembered per sender chain (a 16-byte digest each), to tell a
# second copy of a message (quiet, §G13) from a second *different* envelope signed for
# its counter (`EquivocationError`). The copies of one equivocation are published
# together (a planted member) or by a device restored from a backup, which reuses the
# counters right after those it had saved: the last 32 accepted of each sender cover
# both, and cost 100 senders x 32 x 20 bytes = 64 KB of saved state at most.
DIGEST_WINDOW: Final = 32
# A skipped key is deleted this long, plus the receiver's lateness, after the relay's
# maximum TTL from when its gap was noticed (§G10.2). With the device's and the relay's
# clocks each up to two hours off (issue 9), the sender's stamping clock (the relay's) and
# the receiver's earlier clock, which both notices gaps and judges expiry (§C7), differ by
# up to four hours; the fifth hour is margin for the offset measured at the handshake.
# By then the envelope can no longer open anywhere: it expired beyond the lateness.
SKIPPED_KEY_SLACK: Final = 5 * 3600.0
_KEY: Final = 32
_DIGEST: Final = 16


def _digest(header: bytes, envelope: bytes) -> bytes:
    """What the sender signed (header and body), in 16 bytes: a second copy has the same."""
    return blake2b(b"".join((header, memoryview(envelope)[BODY_OFFSET:])), size=_DIGEST)


# Old epochs kept in their grace window at most (§G11): an admin admitting members one
# after the other makes a change every few seconds, and each kept epoch holds its member
# list; past this many the oldest goes first (the saved state counts epochs in a u8, so
# 255 changes within one grace window broke saving before this bound).
MAX_OLD_EPOCHS: Final = 64


class Receiver:
    """Opens one member's group envelopes for one cell (see the module docstring)."""

    def __init__(
        self, state: SavedState, me: bytes, pair: Callable[[bytes, bytes], bytearray]
    ) -> None:
        """Work on `state` (shared with the owning `CellCrypto`) as member `me`.

        `pair(peer_dh_pub, purpose)` returns the pairwise key with a peer.
        """
        self._s = state
        self._me = me
        self._pair = pair
        self._parked_bytes = sum(len(p.envelope) for p in state.parked)
        # The relay's maximum TTL (`CellCrypto.set_max_ttl`; the default is the reference
        # relay's), for how long a skipped key lives (`key_lifetime`).
        self._max_ttl = float(DEFAULT_MAX_TTL)
        # The earliest time a skipped key may be due for deletion, and an unreported owed
        # gap for reporting (-inf: look at the next chance; inf: nothing to look for).
        self._next_deadline = float("-inf")
        self._next_report = float("-inf")
        self._behind_reported = state.current  # newest epoch reported by `Behind`
        self.wiped = 0  # skipped keys deleted for their age so far (`CellCrypto.wiped`)
        self._lateness = 0.0  # seconds an envelope still opens past expires_at (CellCrypto)

    @property
    def key_lifetime(self) -> float:
        """How long a skipped key lives after its gap was noticed (§G10.2): the relay's
        maximum TTL, the slack for clocks, and the lateness, so that it outlives every
        envelope that can still open."""
        return self._max_ttl + SKIPPED_KEY_SLACK + self._lateness

    @property
    def lateness(self) -> float:
        """Seconds an envelope still opens past its expires_at (`CellCrypto.lateness`)."""
        return self._lateness

    @lateness.setter
    def lateness(self, seconds: float) -> None:
        self._lateness = seconds
        self._next_deadline = float("-inf")  # key lifetimes changed: look again

    def open(
        self, envelope: bytes, now: float, ref: int = 0, present_since: float = float("-inf")
    ) -> Outcome:
        """Authenticate and decrypt a group envelope (`CellCrypto.open`).

        `ref` is the caller's name for the envelope (the relay's seq), kept with it if it
        is parked (`parked_refs`). `present_since`: since when this member has been
        reading the mailbox without a break (for `Gap.owed`).
        """
        s = self._s
        epoch_number, nonce = split_envelope(envelope)
        if epoch_number > s.current:
            if s.removed or epoch_number > s.current + MAX_EPOCHS_AHEAD:
                raise UnknownEpochError("unknown epoch")
            return self._park(envelope, epoch_number, None, now, ref)
        epoch = s.epochs.get(epoch_number)
        if epoch is None:
            if epoch_number < s.joined_epoch:
                raise UnknownEpochError("epoch before this member joined")
            raise StaleEpochError("epoch past its grace window")
        header, signature = open_header(envelope, epoch.keys.header, nonce)
        cell_id, h_epoch, sender, counter, kind, expires_at = HEADER.unpack(header)
        if cell_id != s.cell_id or h_epoch != epoch_number:
            raise MalformedError("header names another cell or epoch")
        # Judged by the membership of the envelope's own epoch, not of ours (§G11): what a
        # member sealed while it was one stays valid for that epoch's history after its
        # removal, so every member computes the same roll-up however late it catches up.
        # A removed member has no key to any later epoch.
        info = epoch.members.get(sender)
        if info is None:
            raise NotAMemberError("sender not a member of the envelope's epoch")
        if sender == self._me:
            verify_envelope(epoch.own_public, header, signature, envelope)
            return Own(epoch_number, counter, kind)
        if kind == Kind.SENDER_KEY or kind == Kind.ANNOUNCEMENT:
            return self._accept_distribution(epoch, info, header, signature, envelope, nonce, now)
        if kind not in CONTENT_KINDS and kind != Kind.KEY_UPDATE:
            raise MalformedError("unknown kind")
        chain = epoch.chains.get(sender)
        if chain is None:
            return self._park(envelope, epoch_number, sender, now, ref)
        material = chain.skipped.get(counter)
        if material is None:
            if counter < chain.next:
                self._second_copy(chain, info, epoch_number, counter, header, signature, envelope)
            if counter - chain.next > MAX_SKIP:
                raise OutOfWindowError("counter too far ahead")
        verify_envelope(chain.signing_public, header, signature, envelope)
        # Authenticated: from here on the key is burned, even for an expired message.
        expired = expires_at + self.lateness <= now
        recovered = False
        if material is not None:  # a late message whose key was kept when it was skipped
            if not expired:
                plaintext = open_body(
                    envelope, header, bytes(material[:_KEY]), bytes(material[_KEY:])
                )
            gap = chain.gaps.get(counter)
            recovered = gap is not None and gap.owed and gap.reported
            chain.drop(counter)
        elif counter == chain.next:  # in order: the common case
            key = message_material(chain.chain_key)
            if not expired:
                plaintext = open_body(envelope, header, key[:_KEY], key[_KEY:])
            step_chain(chain.chain_key)
            chain.next = counter + 1
        else:  # ahead: keep the keys of the counters it skipped
            work = chain.chain_key.copy()
            skipped = []
            for skipped_counter in range(chain.next, counter):
                skipped.append((skipped_counter, bytearray(message_material(work))))
                step_chain(work)
            key = message_material(work)
            step_chain(work)
            if not expired:
                try:
                    plaintext = open_body(envelope, header, key[:_KEY], key[_KEY:])
                except GroupError:
                    # Only the sender can sign a body that does not open: keep the chain.
                    for _, skipped_material in skipped:
                        zero(skipped_material)
                    work.clear()
                    raise
            self._skip(chain, skipped, work, counter, now, present_since)
        digests = chain.digests
        digests[counter] = _digest(header, envelope)
        if len(digests) > DIGEST_WINDOW:
            del digests[next(iter(digests))]  # the oldest accepted
        chain.last_at = now
        if expired:
            raise ExpiredError("message expired")
        return Opened(
            kind=kind,
            plaintext=plaintext,
            sender=info,
            epoch=epoch_number,
            counter=counter,
            expires_at=expires_at,
            recovered=recovered,
        )

    @staticmethod
    def _second_copy(
        chain: ReceiveChain,
        sender: MemberInfo,
        epoch: int,
        counter: int,
        header: bytes,
        signature: bytes,
        envelope: bytes,
    ) -> None:
        """Refuse an envelope for a counter already used: a copy, a forgery or an equivocation.

        A copy of what was accepted (the same signed header and body) is a `ReplayError`,
        and so is anything for a counter whose digest is no longer kept; a different
        envelope is a `BadSignatureError` unless the sender's key signed it, which makes
        it an `EquivocationError`: only the sender can sign (§G10.1).
        """
        seen = chain.digests.get(counter)
        if seen is None or hmac.compare_digest(seen, _digest(header, envelope)):
            raise ReplayError("counter already used")
        verify_envelope(chain.signing_public, header, signature, envelope)
        raise EquivocationError(
            "two different signed envelopes for one counter",
            sender=sender,
            epoch=epoch,
            counter=counter,
        )

    def _skip(
        self,
        chain: ReceiveChain,
        skipped: list[tuple[int, bytearray]],
        work: HashChain,
        counter: int,
        now: float,
        present_since: float,
    ) -> None:
        """Move `chain` past `counter`, keeping the skipped keys within their bounds.

        The gap is *owed* when the sender's previous envelope came while this member was
        reading the mailbox without a break: the missing ones were published after it,
        so the relay should have delivered them; otherwise they may have expired while
        this member was away (§G10.2).
        """
        owed = chain.last_at is not None and chain.last_at >= present_since
        chain.skipped.update(skipped)
        for skipped_counter, _ in skipped:
            chain.gaps[skipped_counter] = Gap(now, owed)
        chain.chain_key.clear()
        chain.chain_key = work
        chain.next = counter + 1
        while len(chain.skipped) > MAX_SKIPPED_PER_SENDER:
            chain.drop(next(iter(chain.skipped)))
        self._cap_skipped()
        self._next_deadline = min(self._next_deadline, now + self.key_lifetime)
        if owed:
            self._next_report = min(self._next_report, now + GAP_GRACE)

    def _cap_skipped(self) -> None:
        chains = [c for e in self._s.epochs.values() for c in e.chains.values()]
        total = sum(len(c.skipped) for c in chains)
        while total > MAX_SKIPPED_TOTAL:
            # The chain with most skipped keys pays: one sender's gaps cannot evict others'.
            chain = max(chains, key=lambda c: len(c.skipped))
            chain.drop(next(iter(chain.skipped)))
            total -= 1

    def _accept_distribution(
        self,
        epoch: Epoch,
        sender: MemberInfo,
        header: bytes,
        signature: bytes,
        envelope: bytes,
        nonce: bytes,
        now: float,
    ) -> Opened:
        s = self._s
        fields = HEADER.unpack(header)
        if fields[3] != 0:
            raise MalformedError("a distribution has counter 0")
        # An epoch with a sender tree takes announcements only; one entered before version
        # 3 of the state, distributions only (§G8.2). A distribution in a tree epoch comes
        # from a client that predates the sender tree: its messages cannot be read.
        tree = epoch.tree
        if (fields[4] == Kind.ANNOUNCEMENT) != (tree is not None):
            if tree is not None:
                raise MalformedError("a sender key distribution from an outdated client")
            raise MalformedError("an announcement in an epoch without a sender tree")
        plaintext = open_body(envelope, header, epoch.keys.distribution, nonce)
        payload: DistributionPayload | AnnouncementPayload
        mac_key = self._pair(sender.dh_pub, PAIRWISE_DISTRIBUTION_MAC)
        # The recipients are the epoch's other members in ascending id order (the sender
        # is one of the epoch's members: step 6 of §G10 found it there).
        recipients = len(epoch.members) - 1
        index = epoch.index_of(self._me)
        if index is None:  # pragma: no cover - a member opens only epochs it is in
            raise MalformedError("not a member of the epoch")
        if sender.member_id < self._me:
            index -= 1
        if tree is None:
            payload = DistributionPayload.from_bytes(plaintext)
            expected = distribution_mac(
                mac_key,
                cell_id=s.cell_id,
                epoch=epoch.number,
                sender=sender.member_id,
                recipient=self._me,
                chain_key=payload.chain_key,
                start=payload.start,
                signing_public=payload.signing_public,
            )
            count = len(payload.macs)
            mine = payload.macs[index] if index < count else b""
        else:
            payload, count = AnnouncementPayload.for_recipient(plaintext, index)
            mine = payload.macs[0] if payload.macs else b""
            expected = announcement_mac(
                mac_key,
                cell_id=s.cell_id,
                epoch=epoch.number,
                sender=sender.member_id,
                recipient=self._me,
                start=payload.start,
                signing_public=payload.signing_public,
            )
        if count != recipients:
            raise MalformedError("wrong number of MACs")
        if not hmac.compare_digest(expected, mine):
            raise BadSignatureError("bad distribution MAC")
        verify_envelope(payload.signing_public, header, signature, envelope)
        known = epoch.chains.get(sender.member_id)
        if known is not None:
            self._move_on(known, payload)
            return Opened(
                kind=Kind.SENDER_KEY,  # announcements too: "a sender key arrived"
                plaintext=b"",
                sender=sender,
                epoch=epoch.number,
                counter=0,
                expires_at=fields[5],
            )
        if isinstance(payload, DistributionPayload):
            chain_key = HashChain(payload.chain_key)
        else:
            if payload.start > MAX_START:
                raise OutOfWindowError("announcement starts too far into the chain")
            try:
                chain_key = tree.take(  # type: ignore[union-attr]
                    sender.member_id, epoch.bucket_members(s.cell_id, sender.member_id)
                )
            except KeyError as exc:  # pragma: no cover - a chain is taken only with `known`
                raise ReplayError("sender key already known") from exc
            for _ in range(payload.start):
                step_chain(chain_key)
        epoch.chains[sender.member_id] = ReceiveChain(
            payload.signing_public, chain_key, payload.start, last_at=now
        )
        # The sender has joined: an admin no longer needs its join box (§G7).
        s.join_boxes.pop(sender.member_id, None)
        released = self.release(epoch.number, sender.member_id, now)
        return Opened(
            kind=Kind.SENDER_KEY,  # announcements too: "a sender key arrived"
            plaintext=b"",
            sender=sender,
            epoch=epoch.number,
            counter=0,
            expires_at=fields[5],
            released=released,
        )

    @staticmethod
    def _move_on(chain: ReceiveChain, payload: DistributionPayload | AnnouncementPayload) -> None:
        """Follow a sender's distribution of a chain already held: it skips counters (§G8.2).

        A sender publishes its distribution again after skipping counters it never sealed
        with (a restart after a crash skips what it had reserved, §C6 item 3): the same
        signing key, and a later start; a distribution also carries the chain key of that
        counter, which must be the one this chain reaches there (an announcement carries
        none: every member derives the chain, and the MAC vouches for the start). The
        chain then moves on without keeping the skipped keys: the sender said those
        counters carry nothing, so they are no gap. Anything else (the same or an earlier
        start, another key) is a replay, as before.
        """
        ahead = payload.start - chain.next
        if payload.signing_public != chain.signing_public or not 0 < ahead <= MAX_SKIP:
            raise ReplayError("sender key already known")
        work = chain.chain_key.copy()
        for _ in range(ahead):
            step_chain(work)
        if isinstance(payload, DistributionPayload) and not hmac.compare_digest(
            work.export(), payload.chain_key
        ):
            work.clear()
            raise ReplayError("sender key already known")
        chain.chain_key.clear()
        chain.chain_key = work
        chain.next = payload.start

    def _park(
        self, envelope: bytes, epoch: int, sender: bytes | None, now: float, ref: int
    ) -> Pending:
        s = self._s
        size = len(envelope)
        if any(p.envelope == envelope for p in s.parked):  # delivered again: parked already
            return Pending(epoch)
        if len(s.parked) >= MAX_PENDING or self._parked_bytes + size > MAX_PENDING_BYTES:
            raise PendingOverflowError("too many parked envelopes", ref=ref)
        # The claim's share (module docstring): None is "a future epoch", unauthenticated.
        limit = MAX_PENDING_UNAUTHENTICATED if sender is None else MAX_PENDING_PER_SENDER
        count = claimed = 0
        for parked in s.parked:
            if parked.sender == sender:
                count += 1
                claimed += len(parked.envelope)
        if count >= limit or claimed + size > limit * (MAX_PENDING_BYTES // MAX_PENDING):
            raise PendingOverflowError("too many parked envelopes with this claim", ref=ref)
        s.parked.append(Parked(envelope, epoch, sender, now, ref))
        self._parked_bytes += size
        return Pending(epoch)

    def parked_refs(self) -> list[int]:
        """The `ref`s of the envelopes parked now, in arrival order (0 after a restore)."""
        return [p.ref for p in self._s.parked]

    def release(
        self, epoch: int | None, sender: bytes | None, now: float
    ) -> tuple[Outcome | GroupError, ...]:
        """Reopen parked envelopes for (epoch, sender), or for every reached epoch if epoch is None."""
        s = self._s
        ready = [
            p
            for p in s.parked
            if (epoch is None and p.sender is None and p.epoch <= s.current)
            or (p.epoch == epoch and p.sender == sender)
        ]
        if not ready:
            return ()
        taken = {id(p) for p in ready}
        s.parked = [p for p in s.parked if id(p) not in taken]
        self._parked_bytes -= sum(len(p.envelope) for p in ready)
        out: list[Outcome | GroupError] = []
        for parked in ready:
            try:
                result = self.open(parked.envelope, now, parked.ref)
            except GroupError as exc:
                out.append(exc)
                continue
            if isinstance(result, Opened) and result.released:
                out.append(dataclasses.replace(result, released=()))
                out.extend(result.released)
            else:
                out.append(result)
        return tuple(out)

    def expire(self, now: float) -> None:
        """Wipe epochs past their grace window, skipped keys past their life, and parked
        envelopes that can never open."""
        s = self._s
        if now >= self._next_deadline:
            self._expire_skipped(now)
        if not s.parked and len(s.epochs) == 1:  # the common case: nothing can expire
            return
        for number in [
            n
            for n, e in s.epochs.items()
            if e.superseded_at is not None and now - e.superseded_at > s.grace_period
        ]:
            s.epochs.pop(number).clear()
        old = sorted(n for n, e in s.epochs.items() if e.superseded_at is not None)
        for number in old[: max(0, len(old) - MAX_OLD_EPOCHS)]:  # a burst of changes
            s.epochs.pop(number).clear()
        keep = [
            p
            for p in s.parked
            if now - p.received_at <= PENDING_MAX_AGE
            and (p.epoch in s.epochs or p.epoch > s.current)
        ]
        if len(keep) != len(s.parked):
            s.parked = keep
            self._parked_bytes = sum(len(p.envelope) for p in keep)

    def set_max_ttl(self, seconds: float) -> None:
        """Size skipped keys' life by the relay's maximum TTL (looked at again at once)."""
        if seconds == self._max_ttl:
            return
        self._max_ttl = seconds
        self._next_deadline = float("-inf")

    def _expire_skipped(self, now: float) -> None:
        """Delete every skipped key whose envelope has expired by now on any clock (§G10.2).

        Its gap was noticed when a later envelope of the same sender arrived; the missing
        one was published before that one, so it expires at most the relay's maximum TTL
        after (`key_lifetime` adds a slack for clocks). Keys from a state saved before
        gaps were timed get their time now.
        """
        lifetime = self.key_lifetime
        deadline = float("inf")
        for epoch in self._s.epochs.values():
            for chain in epoch.chains.values():
                for counter, gap in list(chain.gaps.items()):
                    if gap.noticed_at < 0:
                        gap.noticed_at = now
                        chain.revision += 1
                    if gap.noticed_at + lifetime <= now:
                        chain.drop(counter)
                        self.wiped += 1
                    else:
                        deadline = min(deadline, gap.noticed_at + lifetime)
        self._next_deadline = deadline

    def check(self, now: float) -> tuple[Notice, ...]:
        """Report what should have arrived and has not (`CellCrypto.check`)."""
        self.expire(now)
        notices: list[Notice] = []
        if now >= self._next_report:
            notices.extend(self._missing(now))
        s = self._s
        newer = [
            p.epoch
            for p in s.parked
            if p.sender is None
            and p.epoch > max(self._behind_reported, s.current)
            and now - p.received_at >= BEHIND_GRACE
        ]
        if newer and not s.removed:
            self._behind_reported = max(newer)
            notices.append(Behind(epoch=s.current, newer=max(newer), count=len(newer)))
        return tuple(notices)

    def _missing(self, now: float) -> list[Missing]:
        out = []
        due = float("inf")
        for epoch in self._s.epochs.values():
            for sender, chain in epoch.chains.items():
                count = 0
                for gap in chain.gaps.values():
                    if not gap.owed or gap.reported:
                        continue
                    if now - gap.noticed_at >= GAP_GRACE:
                        gap.reported = True
                        count += 1
                    else:
                        due = min(due, gap.noticed_at + GAP_GRACE)
                if count:
                    chain.revision += 1
                    info = epoch.members[sender]
                    out.append(Missing(sender=info, epoch=epoch.number, count=count))
        self._next_report = due
        return out
