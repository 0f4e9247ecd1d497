"""A cell's further relays: the same mailboxes on up to two more relays (issue 13).

Theory of operation
-------------------

A cell lives on one to three relays (docs/protocol.md §C5.2, docs/design.md "A cell on
several relays"). The first relay is the one a cell on a single relay has: its mailboxes
and cursors are the flat fields of `CellRecord`, and everything a cell did before issue
13 (moves, re-fetching parked envelopes, presence, `wait_synced`) is done there. Each
further relay is a `FurtherRelay`: its own group and control mailboxes (the ids are that
relay's own), with capability keys derived from the cell's seeds for that relay
(`relay_seed`), its own cursors (`RelayRecord`), and its own link.

* **Receiving.** Every relay's group and control mailboxes are watched; what a further
  relay delivers is opened exactly like what the first one delivers. The second copy of
  an envelope is, for the group layer, a counter already used with the same digest: a
  quiet `ReplayError` (§G10.1); the second copy of an epoch change is a quiet
  `StaleControlError`. So each message reaches the app once, whichever relay brought it.
* **Sending** (`publish_everywhere`): the same sealed bytes go to every relay at once; a
  send returns when the first relay acknowledges, and the others go on in the background
  (each link retries across reconnects, so a relay that was down receives them when it
  returns). A relay that is down, frozen or replaced delays nothing.
* **Epoch changes** go to every relay's control mailbox, each relay's in order: a
  rotation of the group keys on a relay, then the change, one change after another, in
  one task per relay queued on `order` (trio's locks are fair), so a relay that comes
  back receives the rotation before the change and every change in sequence.
* **Delivery handlers never wait for another relay**: the client's router for one link
  runs the handler, and a handler that waited for a relay that is down would stop that
  link's deliveries too. Work on a further relay that a delivery starts (watching the
  group mailbox again with new keys) runs in the background (`spawn`).

* **Copying** what one relay delivered to a relay that lacks it: group envelopes by every
  member (`Copier`), epoch changes by admins, who alone can write the control mailbox
  (`ControlCopier`), in order per relay and with the relay's group keys rotated first.
* **Presence** (`Presence`): a member is present on the cell, for whether a gap is owed
  (docs/protocol.md §G10.2), while it reads at least one relay without a break.
* **Adding and dropping a relay** ride on a rotation whose extra says so (`relay_add`,
  `relay_drop`; `MemberCell._apply_relays`, `Cell.add_relay`, `Cell.drop_relay`).

Not handled yet (docs/design.md): holding back a message that overtakes an earlier one
from another relay, and competing epoch changes decided by hash. An envelope parked for
room from a further relay is not fetched again from there (its ref names no current
generation); the first relay's copy is.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import math
import random
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Final

import trio

from cellrelay.protocol import CellrelayError, ErrorCode
from cellrelay.protocol.cell._control import split_change
from cellrelay.protocol.cell._errors import MalformedError
from cellrelay.protocol.cell._keys import relay_seed
from cellrelay.protocol.wire import CapabilityKey, Fetch, MailboxId, Page, RelayAddress, Rotate

from ._events import SecurityWarning
from ._link import (
    Delivery,
    LinkClosedError,
    RelayKeyMismatchError,
    RelayLink,
    RelayRefusedError,
    Revocation,
)
from ._log import library_logger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from typing import TypeAlias

    from ._cell_member import MemberCell
    from ._state import CellRecord, RelayRecord

    # Where an admin copies an epoch change (`MemberCell._relay_target`): the relay's
    # link, its mailboxes and cursors, its `order` lock, and how to rotate its group keys.
    RelayTarget: TypeAlias = tuple[
        RelayLink,
        CellRecord | RelayRecord,
        trio.Lock,
        Callable[[tuple[bytes, bytes]], Awaitable[None]],
    ]

__all__ = [
    "FURTHER_GENERATION",
    "MAILBOX_GONE",
    "ControlCopier",
    "Copier",
    "FurtherRelay",
    "Presence",
    "first_done",
    "publish_everywhere",
]

log = library_logger("cellrelay.client")

# The refs of envelopes read on a further relay are tagged with this generation plus the
# relay's index, which no group mailbox of the first relay ever has (a move adds one to
# `group_generation`), so parking bookkeeping (client/_cell_refetch.py) leaves them alone.
FURTHER_GENERATION: Final = 1 << 32
# Envelopes kept for a relay whose group keys are behind (`FurtherRelay.backlog`): a burst
# of alerts and a round of sender key distributions while a relay is away; beyond it the
# oldest go, which the other relays still carry.
MAX_BACKLOG: Final = 1024
# A member that reads a group envelope on one relay and not on another within this many
# seconds (uniformly at random, so that members do not all copy at once) publishes it there
# itself (docs/design.md, "Re-publishing between relays"): a member that reaches only one
# relay still hears, and is heard by, one that reaches only another. Each relay delivers
# within milliseconds when both are up, so copies are rare; a copy that crosses another is
# a quiet replay for everyone.
COPY_AFTER: Final = (2.0, 10.0)
# Envelopes waiting to be compared across relays; past it new ones are not copied.
MAX_COPIES: Final = 4096
COPY_TICK: Final = 0.5  # seconds: copy deadlines are rounded up to a multiple of this
# What the relay answers about a mailbox that no longer exists: DELETED to a subscriber,
# BAD_PROOF to an auth or admin operation on it (docs/protocol.md §8, a missing mailbox
# looks like a wrong key), NO_SUCH_MAILBOX when it went while the connection held it. For
# the control mailbox, whose read key never rotates, and for admin keys, which never
# change, each of them means the mailbox is gone (§C1.6).
MAILBOX_GONE: Final = frozenset({ErrorCode.DELETED, ErrorCode.BAD_PROOF, ErrorCode.NO_SUCH_MAILBOX})
# Refusals of a publish that mean this relay has not taken the cell's current keys yet.
KEYS_BEHIND: Final = frozenset({ErrorCode.REVOKED, ErrorCode.UNAUTHORIZED, ErrorCode.BAD_PROOF})
# An absence from a relay's group mailbox longer than this may let a message expire unseen
# there, so a gap that opens across it is not owed (docs/protocol.md §G10.2); a shorter
# break (a reconnect) keeps the presence. A reply lives at least a minute, alerts an hour.
PRESENCE_GAP: Final = 60.0


class Presence:
    """Since when this member reads a cell without a break, on any of its relays (§G10.2).

    A gap is *owed* (reported when still open after the grace) only if the sender's
    previous envelope came while this member was present. On a cell on several relays it
    is present while it reads at least one relay without a break: the union of each
    relay's presence, not the first relay's alone, so a member that reads only a further
    relay (the first is down, blocked or replaced) still hears of what is missing, and one
    whose first relay comes back after a long break stays present through the others.

    Each relay's presence starts with its first delivery past the head the relay reported
    when the mailbox was watched on the current connection (the catch-up is over), and
    ends when its link has been down for longer than PRESENCE_GAP, or comes up after such
    a break. The cell's presence starts when one relay's does while none was present, and
    ends when none is.
    """

    def __init__(self) -> None:
        """No relay read yet: not present."""
        self._since: dict[int, float] = {}  # relay index (0: the first) -> since when, or inf
        self._connection: dict[int, int] = {}  # the link connection each was judged on
        self._links: dict[int, RelayLink] = {}
        self._cell_since = math.inf

    def note(self, relay: int, link: RelayLink, head: int, seq: int, now: float) -> None:
        """Relay `relay` delivered `seq` of the group mailbox (`head`: its catch-up end)."""
        self._links[relay] = link
        if link.connections != self._connection.get(relay):
            self._connection[relay] = link.connections
            if link.away_before > PRESENCE_GAP:
                self._since[relay] = math.inf
        if seq > head and self._since.get(relay, math.inf) == math.inf:
            self._since[relay] = now
        self.since()  # the cell's presence starts (or ended before this one started)

    def forget(self, relay: int) -> None:
        """Relay `relay` left the cell (dropped)."""
        self._since.pop(relay, None)
        self._connection.pop(relay, None)
        self._links.pop(relay, None)

    def since(self) -> float:
        """Since when (on the cell's clock) this member has read the cell without a break."""
        present = [
            since
            for relay, since in self._since.items()
            if since != math.inf and not _away(self._links[relay])
        ]
        if not present:
            self._cell_since = math.inf
        elif self._cell_since == math.inf:
            self._cell_since = min(present)
        return self._cell_since


def _away(link: RelayLink) -> bool:
    """Whether `link` has been down longer than PRESENCE_GAP (or was closed)."""
    if link.closed:
        return True
    if link.connected or link.lost_at is None:
        return False
    return time.time() - link.lost_at > PRESENCE_GAP


class FurtherRelay:
    """One further relay of a cell: its link, mailboxes, cursors and derived keys."""

    def __init__(self, cell: MemberCell, record: RelayRecord, link: RelayLink, index: int) -> None:
        """Serve `cell` on the relay `record` names, through `link`; `index` counts from 1."""
        self._cell = cell
        self.record = record
        self.link = link
        self.index = index
        self.address = RelayAddress.parse(record.relay)
        self.order = trio.Lock()  # control publishes (and rotations) to this relay, in order
        self._rewatching = trio.Lock()  # one `rewatch_group` at a time
        self.heads: dict[MailboxId, int] = {}
        self.started = False
        self._start_ended = trio.Event()  # `start` returned, watching or not (`failed`)
        self.failed: BaseException | None = None
        self.cell_lost = False  # this relay said it holds no mailbox of the cell (`lost_cell`)
        # The group mailbox is not watched with the current keys: a rotation's rewatch
        # failed (the relay was down, or had not been rotated yet). The next epoch change
        # this relay delivers proves the rotation reached it (`order`): watch again then.
        self.group_stale = False
        # Group envelopes this relay could not take while its keys were behind: published
        # once it watches with the current keys again, oldest first (`publish_group`).
        # The record's list, so saved with the cell (the newest, `OUTBOX_SAVED`): a restart
        # loses none of them; what expired meanwhile goes.
        self.backlog = record.outbox
        self._drop_expired()

    def __repr__(self) -> str:
        return f"<FurtherRelay {self.address.host}:{self.address.port}>"

    @property
    def name(self) -> str:
        """The relay as people see it: host:port."""
        return f"{self.address.host}:{self.address.port}"

    def key(self, seed: bytes | bytearray) -> CapabilityKey:
        """The capability key `seed` stands for on this relay (docs/protocol.md §C5.2)."""
        return CapabilityKey.from_seed(relay_seed(bytes(seed), self.address.public_key))

    # -- watching --------------------------------------------------------------------------

    async def start(self) -> None:
        """Watch this relay's control and group mailboxes from their cursors."""
        cell, record = self._cell, self.record
        try:
            cell._route(record.control_mailbox, self._on_control)
            self.heads[record.control_mailbox] = await self.link.watch(
                record.control_mailbox,
                self.key(cell.crypto.control_read_key),
                record.control_cursor,
            )
            if not cell.crypto.removed:
                try:
                    await self.watch_group()
                except RelayRefusedError as exc:
                    if exc.code not in KEYS_BEHIND:
                        raise
                    # The cell rotated while this relay was away, and no admin has rotated
                    # it yet: watched again when the change comes from it (`group_stale`).
                    log.info("further_group_keys_behind", relay=self.index)
                    self.group_stale = True
                else:
                    if self.backlog:  # kept before a restart
                        cell._background(self._publish_backlog)
                if cell.is_admin:
                    await self.take_up_admin_duties(cell._control_write_seed())
        except RelayRefusedError as exc:
            if exc.code in MAILBOX_GONE and record.control_mailbox not in self.heads:
                self.lost_cell(exc.code)  # the control mailbox: its read key never rotates
            log.info("further_relay_not_started", relay=self.index, error=type(exc).__name__)
            self.failed = exc
            return
        except RelayKeyMismatchError as exc:
            # Another key answers at this address: never trusted (the link keeps refusing
            # it); the link's status says so, and the cell goes on on its other relays.
            log.warning("further_relay_refused", relay=self.index)
            self.failed = exc
            return
        except (CellrelayError, OSError) as exc:
            log.info("further_relay_not_started", relay=self.index, error=type(exc).__name__)
            self.failed = exc
            return
        finally:
            self._start_ended.set()
        self.started = True
        cell._further_ready()

    def lost_cell(self, code: int) -> None:
        """This relay holds no mailbox of the cell any more: its data is gone (wiped, or
        restored from before the cell), or an admin deleted it there. Said once as a
        `SecurityWarning` naming the relay (a relay that loses a cell may have been
        seized); the cell goes on on its other relays, and an admin drops this relay and
        adds it again (or another) to have the cell there anew.
        """
        if self.cell_lost:
            return
        self.cell_lost = True
        cell = self._cell
        log.warning("further_relay_lost_cell", relay=self.index, code=int(code))
        detail = (
            f"the relay {self.name} no longer holds this cell (code {int(code)}): the cell "
            "goes on on its other relays; an admin can drop this relay and add it again"
        )
        cell._emit(SecurityWarning(cell=cell.name, reason="RelayLostCell", detail=detail))

    async def wait_synced(self) -> None:
        """Wait until this relay's mailboxes are processed up to their heads when watched.

        Raises:
            the error that kept `start` from watching them (a relay with another key...).
        """
        await self._start_ended.wait()
        if self.failed is not None:
            raise self.failed
        for mailbox in list(self.heads):
            await self._cell._wait_processed(mailbox, link=self.link, heads=self.heads)

    async def take_up_admin_duties(self, control_write: bytes) -> None:
        """Prove the control mailbox's write key here (admins post epoch changes)."""
        await self.link.authorize_writer(self.record.control_mailbox, self.key(control_write))

    async def watch_group(self) -> None:
        """Watch the group mailbox with the cell's current group keys."""
        cell, record = self._cell, self.record
        mailbox = record.group_mailbox
        read_seed, write_seed = cell.crypto.group_keys
        write = self.key(write_seed)
        cell._route(mailbox, self._on_group)
        try:
            await self.link.authorize_writer(mailbox, write)
        except RelayRefusedError:
            self.link.forget_writer(mailbox, write)
            raise
        self.heads[mailbox] = await self.link.watch(
            mailbox, self.key(read_seed), record.group_cursor
        )

    async def rewatch_group(self) -> None:
        """After a rotation of the group keys: watch the group mailbox with the new ones.

        A relay that was down when the keys rotated refuses the new keys until the
        admin's client has rotated them there too, which it does just before posting the
        change there: the change's copy from this relay then starts this again
        (`MemberCell._on_control`, `group_stale`).
        """
        # One at a time: a change applied and the same change's copy from this relay both
        # start one, and an unwatch in the middle of another's watch broke the link's
        # bookkeeping (a KeyError that ended the client).
        async with self._rewatching:
            mailbox = self.record.group_mailbox
            self.group_stale = True
            self.link.forget_writer(mailbox)
            try:
                await self.link.unwatch(mailbox)
                await self.watch_group()
            except (CellrelayError, OSError) as exc:
                log.info("further_group_not_watched", relay=self.index, error=type(exc).__name__)
            else:
                self.group_stale = False
                await self._publish_backlog()

    async def publish_group(self, envelope: bytes, expires_at: int) -> int:
        """Publish to this relay's group mailbox; keep the envelope if its keys are behind.

        While a rotation has not reached this relay (it was down), its group mailbox takes
        neither the old keys (revoked where it did rotate) nor the new (not yet): the
        envelope waits in `backlog` and goes out once the relay is watched again, so a
        member that reads only this relay still gets it. The error is raised all the same:
        for `publish_everywhere` this relay has not stored it yet.
        """
        if self.group_stale:
            self._keep(envelope, expires_at)
            raise LinkClosedError("this relay's group keys are behind; kept for later")
        try:
            return await self.link.publish(self.record.group_mailbox, envelope, expires_at)
        except RelayRefusedError as exc:
            if exc.code in KEYS_BEHIND:
                self._keep(envelope, expires_at)
            raise
        except LinkClosedError:
            if not self.link.closed:  # no writer yet: a rewatch is under way
                self._keep(envelope, expires_at)
            raise

    def _keep(self, envelope: bytes, expires_at: int) -> None:
        self._drop_expired()
        if len(self.backlog) >= MAX_BACKLOG:
            self.backlog.pop(0)  # the oldest: the other relays have it, or it is too late
            log.warning("further_backlog_full", relay=self.index)
        self.backlog.append((envelope, expires_at))
        self._cell._dirty = True  # saved with the next save of the cell

    def _drop_expired(self) -> None:
        now = self.link.relay_time()
        if any(expires_at <= now for _, expires_at in self.backlog):
            self.backlog[:] = [item for item in self.backlog if item[1] > now]
            self._cell._dirty = True

    async def _publish_backlog(self) -> None:
        while self.backlog and not self.group_stale:
            envelope, expires_at = self.backlog[0]
            if expires_at > self.link.relay_time():
                try:
                    await self.link.publish(self.record.group_mailbox, envelope, expires_at)
                except (CellrelayError, OSError) as exc:
                    log.info("further_backlog_deferred", relay=self.index, error=type(exc).__name__)
                    return
            if self.backlog and self.backlog[0][0] is envelope:
                self.backlog.pop(0)
                self._cell._dirty = True

    async def stop_group(self) -> None:
        """Removed from the cell: stop reading and writing the group mailbox here."""
        mailbox = self.record.group_mailbox
        self.link.forget_writer(mailbox)
        self._cell._unroute(mailbox)
        try:
            await self.link.unwatch(mailbox)
        except (CellrelayError, OSError) as exc:
            log.info("further_group_not_unwatched", relay=self.index, error=type(exc).__name__)

    async def _on_group(self, event: Delivery | Revocation) -> None:
        if isinstance(event, Revocation):
            log.info("group_keys_revoked", relay=self.index, code=event.code)
            return
        cell, record = self._cell, self.record
        mailbox = record.group_mailbox
        live = event.seq > self.heads.get(mailbox, 0)
        head = self.link.watch_head(mailbox)
        head = self.heads.get(mailbox, 0) if head is None else head
        cell._presence.note(self.index, self.link, head, event.seq, cell.clock())
        ref = (FURTHER_GENERATION + self.index) << 64 | event.seq
        cell._take(event.envelope, ref, live=live, relay=(self.index, event.expires_at))
        record.group_cursor = max(record.group_cursor, event.seq)

    async def _on_control(self, event: Delivery | Revocation) -> None:
        await self._cell._on_control(event, further=self)

    # -- admin operations ------------------------------------------------------------------

    async def rotate_group(self, group_keys: tuple[bytes, bytes], group_admin: bytes) -> None:
        """Give this relay the cell's new group keys (as derived for it)."""
        read_seed, write_seed = group_keys
        admin = self.key(group_admin)
        rotate = Rotate(
            id=0,
            mailbox=self.record.group_mailbox,
            write_key=self.key(write_seed).public,
            read_key=self.key(read_seed).public,
            admin_key=admin.public,
            counter=0,
            sig=bytes(64),
        )
        await self.link.admin(admin, rotate)


async def publish_everywhere(
    targets: Sequence[tuple[str, Callable[[], Awaitable[int]]]],
    spawn: Callable[[Callable[[], Awaitable[None]]], None],
) -> tuple[str, int]:
    """Run every target's publish at once; return (name, seq) of the first that succeeds.

    The others go on in the background (`spawn`, the client's nursery) and are only logged
    when they fail: each relay's link retries across reconnects, so a relay that is down
    receives the envelope when it returns. With a single target this is just that call.

    Raises:
        the first target's error, if every target failed (the first is the cell's first
        relay, whose refusal codes the callers act on).
    """
    if len(targets) == 1:
        name, publish = targets[0]
        return name, await publish()
    results_in, results_out = trio.open_memory_channel[tuple[int, int | BaseException]](
        len(targets)
    )

    def runner(index: int, publish: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            outcome: int | BaseException
            try:
                outcome = await publish()
            except (CellrelayError, OSError) as exc:
                outcome = exc
                log.info("publish_on_relay_failed", relay=index, error=type(exc).__name__)
            # The buffer holds every target's; after the first success nobody listens.
            with contextlib.suppress(trio.BrokenResourceError):
                results_in.send_nowait((index, outcome))

        return run

    for index, (_, publish) in enumerate(targets):
        spawn(runner(index, publish))
    errors: dict[int, BaseException] = {}
    async with results_out:
        while len(errors) < len(targets):
            index, outcome = await results_out.receive()
            if isinstance(outcome, BaseException):
                errors[index] = outcome
                continue
            return targets[index][0], outcome
    raise errors[0]


@dataclass(slots=True)
class _Copy:
    envelope: bytes = field(repr=False)
    expires_at: int
    relays: set[int]


class Copier:
    """Copies group envelopes to the relays of a cell that did not deliver them (`COPY_AFTER`).

    Only what this member opened is copied (a forgery or a stranger's envelope is not
    spread), with the earlier of the relay's expiry and the envelope's own; only to a
    relay whose link is up and whose group keys are current, since the publishing member
    reaches the others itself and keeps what it could not publish.
    """

    def __init__(self, cell: MemberCell) -> None:
        """Serve `cell` (which owns this object)."""
        self._cell = cell
        self._pending: dict[bytes, _Copy] = {}
        # (when, digest) of the envelopes to look at again, soonest first, all served by one
        # task (`_run`): a task and a timer per envelope were a sixth of a member's CPU per
        # alert on two relays (bench_cells.py --relays 2), and in the usual case, where
        # every relay delivered the envelope within milliseconds, there is nothing to do.
        self._due: list[tuple[float, bytes]] = []
        self._wake = trio.Event()
        self._running = False
        self._rng = random.SystemRandom()

    def seen(
        self, relay: int, envelope: bytes, expires_at: int, *, opened: bool, digest: bytes = b""
    ) -> None:
        """Relay `relay` (0: the first) delivered `envelope` (`digest`: its BLAKE2b-128)."""
        digest = digest or hashlib.blake2b(envelope, digest_size=16).digest()
        entry = self._pending.get(digest)
        if entry is not None:
            entry.relays.add(relay)
            return
        if not opened or len(self._pending) >= MAX_COPIES:
            return
        self._pending[digest] = _Copy(envelope, expires_at, {relay})
        # Rounded up to COPY_TICK, so that the envelopes of one burst share a wake-up.
        due = trio.current_time() + self._rng.uniform(*COPY_AFTER)
        due = math.ceil(due / COPY_TICK) * COPY_TICK
        soonest = not self._due or due < self._due[0][0]
        heapq.heappush(self._due, (due, digest))
        if not self._running:
            self._running = True
            self._cell._background(self._run)
        elif soonest:
            self._wake.set()

    async def _run(self) -> None:
        """Look at each envelope again when it is due; copy it where it is missing."""
        try:
            while self._due:
                due = self._due[0][0]
                if due > trio.current_time():
                    with trio.move_on_at(due):
                        await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                _, digest = heapq.heappop(self._due)
                entry = self._pending.pop(digest)
                if len(entry.relays) <= len(self._cell.further):  # some relay did not
                    # In a task of its own: a relay that is frozen must not hold up the rest.
                    self._cell._background(partial(self._copy_now, entry))
        finally:
            self._running = False

    async def _copy_now(self, entry: _Copy) -> None:
        cell = self._cell
        targets: list[tuple[int, RelayLink, CellRecord | RelayRecord, FurtherRelay | None]] = [
            (0, cell.link, cell.record, None)
        ]
        targets += [(f.index, f.link, f.record, f) for f in cell.further]
        for index, link, record, further in targets:
            if index in entry.relays or cell.crypto.removed:
                continue
            if further is not None and further.group_stale:
                # Its group keys are behind (a removal's rotation has not reached it yet,
                # or this member has not watched it again since): kept for it, published
                # once it takes the current keys (`rewatch_group`). Skipping it lost the
                # new epoch's sender keys for members who read only that relay.
                further._keep(entry.envelope, entry.expires_at)
                continue
            if not link.connected:
                continue
            if entry.expires_at <= link.relay_time():
                return
            # Only a relay that holds nothing this member has not read yet lacks it. One
            # that is behind (busy, or this member's reading of it is) will most likely
            # deliver it itself: copying then only adds load where there is too much
            # already, and at 100 members every copy is a publish and 100 deliveries
            # (bench_cells.py --relays 2 melted down so before this check).
            mailbox = record.group_mailbox
            try:
                page = await link.request(
                    Fetch(id=0, mailbox=mailbox, after=record.group_cursor, limit=1)
                )
            except (CellrelayError, OSError) as exc:
                log.info("envelope_not_copied", relay=index, error=type(exc).__name__)
                continue
            if not isinstance(page, Page) or page.items or index in entry.relays:
                continue
            log.info("envelope_copied", relay=index)
            try:
                await link.publish(mailbox, entry.envelope, entry.expires_at)
            except (CellrelayError, OSError) as exc:
                log.info("envelope_not_copied", relay=index, error=type(exc).__name__)


async def first_done(waits: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """Return as soon as one of `waits` returns, cancelling the others.

    Raises:
        the first wait's error, if every one of them failed.
    """
    errors: dict[int, BaseException] = {}
    done = False

    async with trio.open_nursery() as nursery:

        async def run(index: int, wait: Callable[[], Awaitable[None]]) -> None:
            nonlocal done
            try:
                await wait()
            except (CellrelayError, OSError) as exc:
                errors[index] = exc
                return
            done = True
            nursery.cancel_scope.cancel()

        for index, wait in enumerate(waits):
            nursery.start_soon(run, index, wait)
    if not done:
        raise errors[min(errors)]


@dataclass(slots=True)
class _Change:
    envelope: bytes = field(repr=False)
    digest: bytes
    expires_at: int
    epoch: int  # the epoch the change starts
    group_keys: tuple[bytes, bytes] | None = field(repr=False)  # the rotation it carries
    rank: bytes = b""  # BLAKE2b-256: among competing changes for an epoch the lowest wins


# Epoch changes an admin keeps to copy to one relay; beyond it the oldest go (a relay away
# that long has missed more than a copy can mend: an admin re-adds its members).
MAX_CHANGE_COPIES: Final = 256
# Digests of epoch changes remembered per relay as delivered there.
MAX_SEEN_CHANGES: Final = 1024


class ControlCopier:
    """Admins copy epoch changes to the relays of a cell that lack them, in order.

    Only an admin holds the control mailbox's write key, so only admins' clients copy: an
    admin that applied a change (read on any relay) and has not read it on another relay
    within `COPY_AFTER` posts it there, after rotating that relay's group keys when the
    change rotates them, exactly as its proposer would have (`Cell._resume_proposal`).
    Each relay's copies go one after another, in the order the changes were applied, on
    the relay's `order` lock, so a relay that was down receives every change it missed, in
    sequence, when it returns. The admin's own changes are not copied: it posts them to
    every relay itself.
    """

    def __init__(self, cell: MemberCell) -> None:
        """Serve `cell` (which owns this object)."""
        self._cell = cell
        self._queues: dict[int, list[_Change]] = {}
        self._seen: dict[int, dict[bytes, None]] = {}
        self._own: dict[bytes, None] = {}
        # The highest epoch each relay delivered a change for, and the lowest BLAKE2b-256
        # of its changes for that epoch: a change for an earlier epoch, or for the same one
        # with no lower hash, is never copied there (that relay has this one, or a
        # competing one that wins, or a later one whose group keys a copy's rotation would
        # undo). A change that wins over the one a relay has is copied (the hash rule).
        self._tops: dict[int, tuple[int, bytes]] = {}
        self._rng = random.SystemRandom()

    @staticmethod
    def digest(envelope: bytes) -> bytes:
        """The digest changes are compared by."""
        return hashlib.blake2b(envelope, digest_size=16).digest()

    def ours(self, envelope: bytes) -> None:
        """This admin proposes `envelope`: it posts it to every relay itself."""
        _remember(self._own, self.digest(envelope))

    def seen(self, relay: int, envelope: bytes) -> None:
        """Relay `relay` (0: the first) delivered the change `envelope`."""
        _remember(self._seen.setdefault(relay, {}), self.digest(envelope))
        with contextlib.suppress(MalformedError):
            number, _ = split_change(envelope)
            rank = self.rank(envelope)
            top = self._tops.get(relay)
            if top is None or number > top[0] or (number == top[0] and rank < top[1]):
                self._tops[relay] = (number, rank)

    @staticmethod
    def rank(envelope: bytes) -> bytes:
        """What the hash rule compares competing changes by (CellCrypto's digest)."""
        return hashlib.blake2b(envelope, digest_size=32).digest()

    def _holds_as_good(self, index: int, change: _Change) -> bool:
        """Relay `index` delivered a later change, or one for the same epoch that wins."""
        top = self._tops.get(index)
        return top is not None and (
            top[0] > change.epoch or (top[0] == change.epoch and top[1] <= change.rank)
        )

    def applied(
        self, relay: int, envelope: bytes, expires_at: int, group_keys: tuple[bytes, bytes] | None
    ) -> None:
        """A change read on `relay` was applied here: copy it where it has not been seen."""
        cell = self._cell
        digest = self.digest(envelope)
        if digest in self._own or not cell.is_admin or cell.crypto.removed:
            return
        try:
            epoch, _ = split_change(envelope)
        except MalformedError:  # pragma: no cover - it opened and applied
            return
        change = _Change(envelope, digest, expires_at, epoch, group_keys, self.rank(envelope))
        for index in [0, *(f.index for f in cell.further)]:
            if index == relay or digest in self._seen.get(index, ()):
                continue
            queue = self._queues.get(index)
            if queue is None:
                queue = self._queues[index] = []
                cell._background(partial(self._copy_to, index))
            if len(queue) >= MAX_CHANGE_COPIES:
                queue.pop(0)
                log.warning("change_copies_dropped", relay=index)
            queue.append(change)

    async def _copy_to(self, index: int) -> None:
        """Copy the changes queued for relay `index`, oldest first, after COPY_AFTER."""
        cell = self._cell
        try:
            await trio.sleep(self._rng.uniform(*COPY_AFTER))
            queue = self._queues[index]
            while queue:
                change = queue[0]
                if change.digest not in self._seen.get(index, ()) and not await self._copy(
                    index, change
                ):
                    await trio.sleep(self._rng.uniform(*COPY_AFTER))  # try again later
                    if cell.crypto.removed or not cell.is_admin:
                        return
                    continue
                if queue and queue[0] is change:
                    queue.pop(0)
        finally:
            self._queues.pop(index, None)

    async def _copy(self, index: int, change: _Change) -> bool:
        """Post one change to relay `index` unless it has it; False: try again later."""
        target = self._cell._relay_target(index)
        if target is None:  # dropped meanwhile
            return True
        link, record, order, rotate = target
        if change.expires_at <= link.relay_time() or self._holds_as_good(index, change):
            return True
        control = record.control_mailbox
        try:
            # Only to a relay that holds nothing this admin has not read there yet: one that
            # does is likely to deliver the change itself, and may hold a later change
            # already, whose group keys a copy's rotation would turn back. (A relay that
            # holds a competing change that loses gets the winner: its members then switch.)
            page = await link.request(
                Fetch(id=0, mailbox=control, after=record.control_cursor, limit=1)
            )
            if not isinstance(page, Page) or page.items:
                return False
            async with order:
                if change.digest in self._seen.get(index, ()) or self._holds_as_good(index, change):
                    return True
                if change.group_keys is not None:
                    await rotate(change.group_keys)
                await link.publish(control, change.envelope, change.expires_at)
        except (CellrelayError, OSError) as exc:
            log.info("change_not_copied", relay=index, error=type(exc).__name__)
            return False
        self.seen(index, change.envelope)
        log.info("change_copied", relay=index)
        return True


def _remember(seen: dict[bytes, None], digest: bytes) -> None:
    seen[digest] = None
    if len(seen) > MAX_SEEN_CHANGES:
        del seen[next(iter(seen))]
