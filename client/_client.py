"""The client library's entry point: an identity, its cells and the relays they live on.

```python
async with open_client(passphrase) as client:          # unlocks the keystore
    cell = client.cell("Eastside")                      # or await client.create_cell(...)
    await cell.send_alert("Agents at 14th & Main", priority="urgent", place="14th & Main")
    async for event in cell.events():
        ...
```

`Client` owns one `RelayLink` per relay and a router task per link that hands each
delivery to whoever registered for its mailbox (a cell, an invite's join mailbox, a join
in progress), one at a time, in seq order. State changes are saved to the encrypted
keystore through `save`, one writer at a time.
"""

from __future__ import annotations

import contextlib
import math
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

import trio

from cellrelay.protocol import CellrelayError
from cellrelay.protocol.cell._errors import GroupError, WelcomeIncompleteError
from cellrelay.protocol.cell._group import CellCrypto
from cellrelay.protocol.cell._identity import Identity, MemberInfo, member_id_of
from cellrelay.protocol.cell._invite import Invite, InviteRelay
from cellrelay.protocol.cell._join import (
    JOIN_TAKEN,
    JOIN_WELCOME,
    JOIN_WELCOME_PAGE,
    seal_join_request,
    split_join_envelope,
)
from cellrelay.protocol.cell._keys import relay_seed
from cellrelay.protocol.cell._safety import safety_number
from cellrelay.protocol.wire import CapabilityKey, Delete, MailboxId, RelayAddress

from ._cell_admin import LEAVE_TAKEOVER, AdminSecrets, Cell
from ._cell_member import (
    MAX_MORE_RELAYS,
    CellError,
    CellInfo,
    MemberCell,
    RelayInfo,
)
from ._cell_relays import MAILBOX_GONE, publish_everywhere
from ._escalation import (
    ESCALATION_INTERVAL,
    Escalated,
    escalate,
    neighbours_of,
    run_once,
    set_neighbour,
)
from ._keystore import DEFAULT_COST, Keystore, default_data_dir
from ._link import (
    MAX_RELAY_SKEW,
    Delivery,
    LinkClosedError,
    RelayKeyMismatchError,
    RelayLink,
    RelayRefusedError,
    Revocation,
)
from ._log import library_logger
from ._panic import duress_companions
from ._state import BurnRecord, CellRecord, ClientState, JoinRecord, RelayRecord

if TYPE_CHECKING:
    import os

__all__ = ["KEYSTORE_NAME", "Client", "create_identity", "open_client"]

log = library_logger("cellrelay.client")

KEYSTORE_NAME: Final = "keystore"
EXPIRY_SLACK: Final = 0.05  # seconds after an expiry that its message is deleted from disk
# Deliveries applied before one save: a catch-up after a day offline saves every 256
# envelopes rather than once per envelope, yet a crash loses little work.
MAX_BURST: Final = 256
ROTATE_AFTER: Final = 24 * 3600.0  # seconds an epoch lasts before an admin's client rotates it
MAINTENANCE_INTERVAL: Final = 60.0  # seconds between checks for due rotations
TAKEN_TIMEOUT: Final = 30.0  # seconds a joiner tries to tell its admin it took the welcome
# A batch of receipts that the relay has not acknowledged in this long is given up on (they
# are a best effort), so one relay that does not answer cannot hold up the others' receipts.
RECEIPT_SEND_TIMEOUT: Final = 30.0
Handler = Callable[[Delivery | Revocation], Awaitable[None]]


def keystore_path(home: str | os.PathLike[str] | None) -> Path:
    """The keystore file in `home` (a `str` or a path), or in the platform's data directory."""
    return (default_data_dir() if home is None else Path(home)) / KEYSTORE_NAME


def create_identity(
    passphrase: str,
    name: str,
    *,
    home: str | os.PathLike[str] | None = None,
    cost: tuple[int, int] = DEFAULT_COST,
) -> Identity:
    """Create a new identity in a new keystore under `home` (default: the data directory).

    Raises:
        KeystoreExistsError: there is one already.
    """
    identity = Identity.generate(name)
    path = keystore_path(home)
    state = ClientState(identity=identity.to_bytes())
    Keystore.create(path, passphrase, state.encode(), cost=cost).close()
    return identity


@asynccontextmanager
async def open_client(
    passphrase: str,
    *,
    home: str | os.PathLike[str] | None = None,
    clock: Callable[[], float] = time.time,
    leave_takeover: float = LEAVE_TAKEOVER,
) -> AsyncIterator[Client]:
    """Unlock the keystore, connect to the cells' relays, and close everything at the end.

    `clock` is the device's clock, unix seconds (tests give one that is off).
    `leave_takeover` is how long an admin whose turn it is not waits before it removes a
    member who left (`Cell.remove_leavers`; tests shorten it).

    Raises:
        KeystoreError, WrongPassphraseError, KeystoreBusyError: see client/_keystore.py.
    """
    path = keystore_path(home)
    companions = duress_companions(path.parent)  # a duress passphrase destroys these too
    keystore, payload = await trio.to_thread.run_sync(
        partial(Keystore.open, path, passphrase, companions=companions)
    )
    try:
        state = ClientState.decode(payload)
        async with trio.open_nursery() as nursery:
            client = Client(keystore, state, nursery, clock=clock, leave_takeover=leave_takeover)
            try:
                await client.start()
                yield client
            finally:
                await client.aclose()
                nursery.cancel_scope.cancel()
    finally:
        keystore.close()


class Client:
    """See the module docstring."""

    def __init__(
        self,
        keystore: Keystore,
        state: ClientState,
        nursery: trio.Nursery,
        *,
        clock: Callable[[], float] = time.time,
        leave_takeover: float = LEAVE_TAKEOVER,
    ) -> None:
        """Wrap an unlocked keystore; use `open_client`."""
        self._clock = clock
        self._leave_takeover = leave_takeover
        self._keystore = keystore
        self._state = state
        self._nursery = nursery
        self.identity = Identity.from_bytes(state.identity)
        self._links: dict[str, RelayLink] = {}
        self._routes: dict[MailboxId, Handler] = {}
        self._cells: list[Cell] = []
        self._save_lock = trio.Lock()
        self._joined: dict[bytes, trio.Event] = {}  # invite join mailbox -> set when welcomed
        # A welcome waiting for its member list's pages, by (join mailbox, relay index).
        self._welcome_parts: dict[tuple[bytes, int], tuple[bytes, list[bytes]]] = {}
        self._saved = trio.Event()  # set (and replaced) after each save, for _forget_expired
        self._cells_changed = trio.Event()  # set (and replaced) when a cell is added or removed
        self._burning = False  # finish_burns is running
        self._receipts_queued = trio.Event()  # a cell's receipt batch got its first item
        self._report_receipts = False
        self._leaves_nudge = trio.Event()  # set (and replaced) after saves and removals of leavers
        self._removing_leavers: set[Cell] = set()  # cells whose `remove_leavers` runs
        self._escalate_automatically = False
        self.escalation_interval = ESCALATION_INTERVAL  # seconds between escalation checks

    def __repr__(self) -> str:
        return f"<Client {self.identity.info.name!r} cells={len(self._cells)}>"

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load every cell and pending join, and start watching their mailboxes."""
        # The relay's clock is not known yet, and what has expired is decided by the earlier
        # of it and ours (docs/protocol.md §C7), which may be up to MAX_RELAY_SKEW behind
        # ours: a phone running fast must not forget a live alert here. Each cell prunes by
        # its own clock once connected, before every save.
        now = self._clock() - MAX_RELAY_SKEW
        for record in self._state.cells:
            record.prune(now)
            crypto = CellCrypto.from_bytes(record.crypto, self.identity)
            cell = self._make_cell(record, crypto)
            self._cells.append(cell)
        # In the background: a relay that does not answer delays only its own cells
        # (their operations wait in Cell.wait_ready), never the others or the caller.
        for cell in self._cells:
            self._nursery.start_soon(self._start_in_background, self._starter(cell))
        for join in self._state.joins:
            # Known at once, even before its mailbox is watched: asking again must wait instead.
            self._joined.setdefault(Invite.from_bytes(join.invite).join_mailbox, trio.Event())
            self._nursery.start_soon(
                self._start_in_background, lambda join=join: self._watch_join(join)
            )
        self._nursery.start_soon(self._forget_expired)
        self._nursery.start_soon(self._maintain)
        self._nursery.start_soon(self._remove_leavers)
        self._nursery.start_soon(self._send_receipts)
        self._nursery.start_soon(self._escalate)
        if self._state.burning:  # mailboxes of cells burned here, still to delete
            self._nursery.start_soon(self._start_in_background, self.finish_burns)

    def _starter(self, cell: Cell) -> Callable[[], Awaitable[None]]:
        async def start() -> None:
            await cell.start()
            if cell.upkeep_due:
                await cell.upkeep()
            if cell.key_update_owed:  # due, or saved before a restart and not yet posted
                await cell.post_key_update()

        return start

    async def _maintain(self) -> None:
        """Rotate the epochs of cells this member administers once they are old; upkeep;
        report what should have arrived and has not (`Cell.check_notices`).

        A member's saved state holds its current epoch's secret, and with it every sender
        key of the epoch that the relay still stores: forward secrecy against a seized
        device is only as good as epochs are short (docs/threat-model.md §5.8). A day keeps
        rotation traffic small (one epoch change and one distribution per member).
        `Cell.upkeep` has work that waits for time to pass (deleting a retired mailbox).
        """
        while True:
            await trio.sleep(MAINTENANCE_INTERVAL)
            if self._state.burning:
                self._nursery.start_soon(self._start_in_background, self.finish_burns)
            for cell in list(self._cells):
                if cell.started and cell.upkeep_due:
                    self._nursery.start_soon(self._start_in_background, cell.upkeep)
            # Gaps past their grace period, a stale epoch: saved, then told (issue 9).
            noticed = [cell for cell in list(self._cells) if cell.check_notices()]
            if noticed:
                await self.save(durable=False)
                for cell in noticed:
                    cell.flush()
            for cell in list(self._cells):
                if cell.started and cell.key_update_owed:
                    self._nursery.start_soon(self._start_in_background, cell.post_key_update)
            for cell in list(self._cells):
                if (
                    cell.is_admin
                    and cell.started
                    and not cell.gone
                    and (cell.epoch_age() > ROTATE_AFTER or cell.key_updates_due())
                ):
                    try:
                        await cell.rotate()
                    except (CellrelayError, CellError) as exc:
                        log.info("rotation_deferred", error=type(exc).__name__)

    @property
    def report_receipts(self) -> bool:
        """Whether this client sends delivered receipts by itself (docs/protocol.md §C1.7).

        Off by default in the library; the daemon and `cellrelay listen` turn it on. Only
        a client that keeps running reports (a batch is due 5 to 15 s after an alert), and
        only for the alerts whose sample it is in. `Cell.mark_read` works either way.
        """
        return self._report_receipts

    @report_receipts.setter
    def report_receipts(self, on: bool) -> None:
        self._report_receipts = on
        for cell in self._cells:
            cell.report_receipts = on

    def _note_receipts_queued(self) -> None:
        self._receipts_queued.set()

    async def _send_receipts(self) -> None:
        """Send each cell's batched receipts when they fall due (docs/protocol.md §C1.7)."""
        while True:
            queued = self._receipts_queued
            due = min((c.receipt_batch.due for c in self._cells), default=math.inf)
            with trio.move_on_after(max(0.0, due - time.time())):
                await queued.wait()
            if queued.is_set():
                self._receipts_queued = trio.Event()
            now = time.time()
            for cell in [c for c in self._cells if c.receipt_batch.due <= now]:
                with trio.move_on_after(RECEIPT_SEND_TIMEOUT):
                    await cell.send_receipts()

    # -- escalation to neighbouring cells (docs/protocol.md §C10, client/_escalation.py) -------

    @property
    def escalate_automatically(self) -> bool:
        """Whether this client escalates due alerts and reports back by itself (§C10).

        Off by default in the library; the daemon turns it on. Only a client that keeps
        running can: an alert is due T seconds after its confirmation.
        """
        return self._escalate_automatically

    @escalate_automatically.setter
    def escalate_automatically(self, on: bool) -> None:
        self._escalate_automatically = on

    async def _escalate(self) -> None:
        while True:
            await trio.sleep(self.escalation_interval)
            if self._escalate_automatically and await run_once(list(self._cells)):
                await self.save(durable=False)

    def set_neighbour(self, cell: Cell, neighbour: Cell, *, on: bool = True) -> bool:
        """Name two of this member's cells neighbours (or stop); returns whether it changed.

        This member's own setting, never sent: it escalates alerts of either to the other
        (docs/protocol.md §C10). Save afterwards (`save`).

        Raises:
            CellError: the same cell, or too many neighbours.
        """
        return set_neighbour(cell, neighbour, on=on)

    def neighbours(self, cell: Cell) -> list[Cell]:
        """The cells this member named neighbours of `cell`."""
        return typing.cast("list[Cell]", neighbours_of(cell, self._cells))

    async def escalate(self, cell: Cell, alert_id: bytes, to: Cell) -> Escalated:
        """Forward the confirmed alert `alert_id` of `cell` to the cell `to`, and report back.

        The one-off form of what `escalate_automatically` does; again later, it reports
        the neighbour's answers (docs/protocol.md §C10). Saves.

        Raises:
            CellError: as `client._escalation.escalate` says (not an escalator of both,
                not confirmed, no such alert).
        """
        done = await escalate(cell, to, alert_id)
        await self.save()
        return done

    async def _start_in_background(self, start: Callable[[], Awaitable[object]]) -> None:
        try:
            await start()
        except CellrelayError as exc:  # the link was closed first: nothing left to start
            log.info("start_abandoned", error=type(exc).__name__)

    async def aclose(self) -> None:
        """Give back unused send reservations, close the links and the cells' event streams."""
        settled = [cell.settle() for cell in self._cells]
        if any(settled):
            # Durable: the next run then skips no counter (Cell._ready_to_seal). If this
            # save is lost, the reservations on disk still hold, which is safe.
            # Shielded: a close is often the unwinding of a cancellation.
            with trio.CancelScope(shield=True), contextlib.suppress(CellrelayError, OSError):
                await self.save()
        for cell in self._cells:
            cell.close()
        for link in self._links.values():
            await link.aclose()

    async def save(
        self, *, durable: bool = True, rekey: bool = False, changed_only: bool = False
    ) -> None:
        """Write the state to the keystore (atomically, off the event loop), minus what expired.

        `durable=False` skips the fsyncs (see `Keystore.save`): for saves after receiving.
        `rekey` seals it under a fresh data key (`Keystore.rekey`): after a burn.
        `changed_only`: skip it if no cell changed since the last save, judged once the
        save lock is ours (another relay's router may have just saved the same change).
        """
        async with self._save_lock:
            if changed_only and not any(cell.changed_since_save for cell in self._cells):
                return
            for cell in self._cells:
                cell.sync_record()
                cell.prune()
            payload = self._state.encode()
            if rekey:
                await trio.to_thread.run_sync(lambda: self._keystore.rekey(payload))
            elif durable:
                await trio.to_thread.run_sync(lambda: self._keystore.save(payload, durable=True))
            else:
                # On the event loop: without the fsyncs a save is a SecretBox and a small
                # write and rename, 0.25 ms of CPU here, and handing it to a worker thread
                # cost 0.3 ms more of CPU than the save itself (docs/design.md). This is
                # the save after every burst of deliveries, so it was a fifth of a
                # member's CPU per alert.
                self._keystore.save(payload, durable=False)
        self._saved.set()
        self._saved = trio.Event()
        self._nudge_leaves()

    def _nudge_leaves(self) -> None:
        self._leaves_nudge.set()
        self._leaves_nudge = trio.Event()

    async def _remove_leavers(self) -> None:
        """Remove members who announced they leave, when it is this admin's turn (§C9).

        Every save may have brought a leave (or a promotion, or a removal that settled
        one): each wakes this task, which starts `Cell.remove_leavers` for each cell whose
        first leave is due, or sleeps until the soonest is (another admin's turn, waiting
        for it to act first: `Cell.leavers_due_at`).
        """
        while True:
            nudged = self._leaves_nudge
            now = time.time()
            for cell in list(self._cells):
                if cell not in self._removing_leavers and cell.leavers_due_at() <= now:
                    self._removing_leavers.add(cell)
                    self._nursery.start_soon(self._remove_leavers_of, cell)
            soonest = min(
                (c.leavers_due_at() for c in self._cells if c not in self._removing_leavers),
                default=math.inf,
            )
            with trio.move_on_after(min(max(0.0, soonest - now), MAINTENANCE_INTERVAL)):
                await nudged.wait()

    async def _remove_leavers_of(self, cell: Cell) -> None:
        try:
            await cell.remove_leavers()
        except (CellrelayError, CellError) as exc:  # the link closed: the next run tries again
            log.info("leavers_not_removed", error=type(exc).__name__)
        finally:
            self._removing_leavers.discard(cell)
            self._nudge_leaves()

    async def _forget_expired(self) -> None:
        """Save again whenever a kept message expires, so that it leaves the disk on time.

        Expired messages used to be dropped only when the keystore was next opened: the
        text of an alert stayed on disk, readable with the passphrase, for as long as the
        client ran after it expired (tests/client/test_expiry.py). Each save prunes; this
        task makes sure there is a save soon after each expiry, waking early when a save
        may have added a message that expires sooner.
        """
        while True:
            saved = self._saved
            # A lower bound kept by the record (scanning every kept message after every
            # save cost as much as the save in a busy cell); waking early costs one save.
            delays = [
                cell.record.next_expiry() - cell.clock()
                for cell in self._cells
                if cell.record.history
            ]
            # + EXPIRY_SLACK: the save must come after the expiry by the same clock, never at it.
            with trio.move_on_after(
                max(0.0, min(delays)) + EXPIRY_SLACK if delays else math.inf
            ) as waited:
                await saved.wait()
            if waited.cancelled_caught:
                await self.save()

    # -- relays -------------------------------------------------------------------------------

    def link_for(self, address: RelayAddress) -> RelayLink:
        """The link to a relay, started on first use."""
        key = str(address)
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = RelayLink(address, clock=self._clock)
            self._nursery.start_soon(link.run)
            self._nursery.start_soon(self._route_deliveries, link)
        return link

    def _release_link(self, link: RelayLink) -> None:
        """Stop a link that no cell and no join uses (it would retry for the client's life)."""
        key = str(link.address)
        if self._links.get(key) is not link:
            return
        if any(link in c.links or link in c.borrowed_links for c in self._cells):
            return
        if any(
            entry.relay == link.address
            for r in self._state.joins
            for entry in Invite.from_bytes(r.invite).relays
        ):
            return
        del self._links[key]
        self._nursery.start_soon(link.aclose)

    async def _route_deliveries(self, link: RelayLink) -> None:
        """Apply deliveries in bursts: everything already waiting, then one save, then events."""
        async for first in link.events:
            burst = [first]
            while len(burst) < MAX_BURST:
                try:
                    burst.append(link.events.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            for event in burst:
                handler = self._routes.get(event.mailbox)
                if handler is not None:
                    try:
                        await handler(event)
                    except LinkClosedError as exc:
                        # The client is closing (a command that has done its work, issue 10):
                        # the handler's request was cut short, which is no failure to report.
                        if not link.closed:
                            log.warning("delivery_failed", error=type(exc).__name__)
                    except (CellrelayError, CellError, ValueError) as exc:
                        # One bad envelope must not stop the others: reported and skipped.
                        log.warning("delivery_failed", error=type(exc).__name__)
            # Not durable: a power cut can only make us receive these again (at least once;
            # contents are de-duplicated by id). Sends save durably before publishing.
            # Skipped when the burst changed no cell: only second copies from another relay
            # (issue 13), whose cursors a lost save only makes the relay deliver again.
            # Judged again under the save lock: with two relays, the router of the one that
            # brought the second copy found the first one's change not yet saved and saved
            # it a second time (a third of a member's saves, bench_cells.py --relays 2).
            if any(cell.changed_since_save for cell in self._cells):
                await self.save(durable=False, changed_only=True)
            for cell in self._cells:
                cell.flush()
                if cell.invites_to_release:
                    self._nursery.start_soon(cell.release_invites)
                if cell.upkeep_due:
                    self._nursery.start_soon(self._start_in_background, cell.upkeep)

    def _route(self, mailbox: MailboxId, handler: Handler) -> None:
        self._routes[mailbox] = handler

    def _unroute(self, mailbox: MailboxId) -> None:
        self._routes.pop(mailbox, None)

    # -- cells --------------------------------------------------------------------------------

    @property
    def cells(self) -> list[Cell]:
        """The cells this member belongs to (removed ones included, marked `removed`)."""
        return list(self._cells)

    async def wait_cells_changed(self) -> None:
        """Wait until a cell is added (created, joined) or forgotten; then look at `cells`.

        For programs that follow every cell (the daemon subscribes to each new one).
        """
        await self._cells_changed.wait()

    def _note_cells_changed(self) -> None:
        self._cells_changed.set()
        self._cells_changed = trio.Event()

    def cell(self, name_or_id: str) -> Cell:
        """Find a cell by name (case-insensitive) or a prefix of its hex id.

        Raises:
            CellError: none or several match.
        """
        wanted = name_or_id.casefold()
        found = [
            c
            for c in self._cells
            if c.name.casefold() == wanted or c.cell_id.hex().startswith(wanted)
        ]
        if len(found) != 1:
            names = ", ".join(repr(c.name) for c in self._cells) or "none yet"
            raise CellError(
                f"{'no' if not found else 'more than one'} cell matches {name_or_id!r} (cells: {names})"
            )
        return found[0]

    def _make_cell(self, record: CellRecord, crypto: CellCrypto) -> Cell:
        # An admin's every epoch change commits a fresh receive key of its own (docs/protocol.md
        # §G6.5): a copy of its state taken before the change no longer follows the cell.
        crypto.update_on_commit = True
        link = self.link_for(RelayAddress.parse(record.relay))
        further = [self.link_for(RelayAddress.parse(r.relay)) for r in record.more_relays]
        cell = Cell(identity=self.identity, record=record, crypto=crypto, link=link, save=self.save,
                    route=self._route, unroute=self._unroute, further_links=further,
                    spawn=self._nursery.start_soon, forget=self._forget_left,
                    leave_takeover=self._leave_takeover, link_for=self.link_for,
                    release_link=self._release_link)  # fmt: skip
        cell.on_burned = self._on_burned
        cell.on_burned_here = self._burned_here
        cell.on_receipt_queued = self._note_receipts_queued
        cell.report_receipts = self._report_receipts
        return cell

    async def _forget_left(self, cell: MemberCell) -> None:
        """`Cell.leave`'s last step: delete the cell's state (`forget`)."""
        if isinstance(cell, Cell):
            await self.forget(cell)

    async def create_cell(
        self,
        name: str,
        relay: str | RelayAddress | Sequence[str | RelayAddress],
        *,
        creation_secret: bytes = b"",
        channel: bool = False,
    ) -> Cell:
        """Create a cell on one relay, or on two or three, with this member as its first admin.

        `channel`: a broadcast channel (docs/protocol.md §C11), fixed for the cell's life:
        only admins and dispatchers post, and what other members send (replies, receipts)
        only admins and dispatchers can read.

        On several relays (docs/protocol.md §C5.2) the cell's mailboxes are created on
        each, with the capability keys derived for it; every relay must answer now. The
        first relay listed is the cell's first relay.

        Raises:
            CellError: more than three relays, or one named twice.
        """
        wanted = [relay] if isinstance(relay, str | RelayAddress) else list(relay)
        addresses = [r if isinstance(r, RelayAddress) else RelayAddress.parse(r) for r in wanted]
        if not 1 <= len(addresses) <= 1 + MAX_MORE_RELAYS:
            raise CellError(f"a cell lives on 1 to {1 + MAX_MORE_RELAYS} relays")
        if len({a.public_key for a in addresses}) != len(addresses) or len(
            {(a.host.casefold(), a.port) for a in addresses}
        ) != len(addresses):
            raise CellError("each relay of a cell must be another relay (another key and address)")
        address = addresses[0]
        link = self.link_for(address)
        group_write, group_read, group_admin = (
            CapabilityKey.generate(),
            CapabilityKey.generate(),
            CapabilityKey.generate(),
        )
        control_write, control_read, control_admin = (
            CapabilityKey.generate(),
            CapabilityKey.generate(),
            CapabilityKey.generate(),
        )
        group = await link.create_mailbox(
            group_write, group_read, group_admin, secret=creation_secret
        )
        control = await link.create_mailbox(
            control_write, control_read, control_admin, secret=creation_secret
        )
        more: list[RelayRecord] = []
        for other in addresses[1:]:
            other_link = self.link_for(other)

            def on(key: CapabilityKey, other: RelayAddress = other) -> CapabilityKey:
                return CapabilityKey.from_seed(relay_seed(key.seed, other.public_key))

            other_group = await other_link.create_mailbox(
                on(group_write), on(group_read), on(group_admin), secret=creation_secret
            )
            other_control = await other_link.create_mailbox(
                on(control_write), on(control_read), on(control_admin), secret=creation_secret
            )
            more.append(
                RelayRecord(
                    relay=str(other), group_mailbox=other_group, control_mailbox=other_control
                )
            )
        secrets = AdminSecrets(group_admin=group_admin.seed, control_write=control_write.seed,
                               control_admin=control_admin.seed, creation_secret=creation_secret)  # fmt: skip
        info = CellInfo(
            relay=str(address),
            group=group,
            control=control,
            more_relays=tuple(
                RelayInfo(relay=r.relay, group=r.group_mailbox, control=r.control_mailbox)
                for r in more
            ),
            channel=channel,
        )
        crypto = CellCrypto.create(
            self.identity,
            now=link.relay_time(),
            group_keys=(group_read.seed, group_write.seed),
            control_read_key=control_read.seed,
            admin_secrets=secrets.encode(),
            extra=info.encode(),
            name=name,
        )
        record = CellRecord(crypto=crypto.to_bytes(), relay=str(address), group_mailbox=group, control_mailbox=control,
                            distribution_pending=crypto.distribution(now=link.relay_time()),
                            epoch_started_at=time.time(), more_relays=more,
                            channel=channel)  # fmt: skip
        record.crypto = crypto.to_bytes()
        self._state.cells.append(record)
        await self.save()
        cell = self._make_cell(record, crypto)
        self._cells.append(cell)
        self._note_cells_changed()
        await cell.start()
        return cell

    # -- joining ------------------------------------------------------------------------------

    async def request_join(self, link_text: str) -> Invite:
        """Ask to join the cell an invite link names; the admin must approve.

        Raises:
            InviteError: the link is malformed or expired.
        """
        invite = Invite.parse(link_text)
        if invite.join_mailbox in self._joined:
            return invite  # asked already (waiting, being welcomed, or in): wait_joined answers
        if any(c.cell_id == invite.cell_id and not c.removed for c in self._cells):
            raise CellError(f"you are already a member of {invite.cell_name!r}")
        invite.check_fresh(time.time())
        self._joined[invite.join_mailbox] = trio.Event()  # before any await: no second request
        links = [self.link_for(entry.relay) for entry in invite.relays]
        write = CapabilityKey.from_seed(invite.join_write_seed)

        def authorizer(link: RelayLink, mailbox: MailboxId) -> Callable[[], Awaitable[int]]:
            async def authorize() -> int:
                await link.authorize_writer(mailbox, write)
                return 0

            return authorize

        targets = [
            (str(entry.relay), authorizer(link, entry.join_mailbox))
            for link, entry in zip(links, invite.relays, strict=True)
        ]
        try:
            # On an invite naming several relays, the first that takes the key will do;
            # the others go on in the background (a relay may be down: docs/protocol.md §C4).
            await publish_everywhere(targets, self._nursery.start_soon)
        except BaseException as exc:
            # Nothing was asked (a used invite, a relay with another key, no answer): forget
            # the attempt, or a long-lived client (the daemon) would take the next try with
            # the same link for a request already sent, and wait for an approval that
            # cannot come.
            self._joined.pop(invite.join_mailbox, None)
            if isinstance(exc, RelayKeyMismatchError):
                for link in links:
                    self._release_link(link)  # it can serve nobody: its key is not the relay's
            raise
        request = seal_join_request(
            self.identity,
            admin_box_key=invite.admin_box_key,
            join_mailbox=invite.join_mailbox,
            proof_key=invite.join_secret,
        )
        record = JoinRecord(invite=invite.to_bytes(), requested_at=time.time(),
                            more_cursors=[0] * len(invite.more_relays))  # fmt: skip
        self._state.joins.append(record)
        await self.save()
        await self._watch_join(record)
        expires_at = [0]

        def publisher(link: RelayLink, mailbox: MailboxId) -> Callable[[], Awaitable[int]]:
            async def publish() -> int:
                return await link.publish(mailbox, request, expires_at[0] or stamp(link))

            return publish

        def stamp(link: RelayLink) -> int:
            expires_at[0] = min(invite.expires_at, int(link.relay_time()) + 7 * 86400)
            return expires_at[0]

        await publish_everywhere(
            [
                (str(entry.relay), publisher(link, entry.join_mailbox))
                for link, entry in zip(links, invite.relays, strict=True)
            ],
            self._nursery.start_soon,
        )
        return invite

    def asked_to_join(self, invite: Invite) -> bool:
        """Whether this client asked to join with `invite` (waiting, being welcomed, or in)."""
        return invite.join_mailbox in self._joined

    def safety_number_for(self, invite: Invite) -> str:
        """The safety number of this member and the admin who made `invite` (§C8).

        Compare it with the admin in person (or by a call you trust) before or while
        waiting for approval: the admin's `Cell.safety_number` of your request shows the
        same 60 digits only if the invite and the request were not swapped on the way.
        """
        admin = MemberInfo.create(invite.admin_sign_key, invite.admin_box_key)
        return safety_number(self.identity.info, admin)

    def pending_joins(self) -> list[Invite]:
        """The invites this member asked to join with, still waiting for an admin's approval."""
        return [Invite.from_bytes(record.invite) for record in self._state.joins]

    async def forget(self, cell: Cell) -> None:
        """Delete a cell this member left (or was removed from): its keys and history."""
        cell.close()
        for mailbox in cell.mailboxes():
            self._unroute(mailbox)
        if cell.record in self._state.cells:
            self._state.cells.remove(cell.record)
        if cell in self._cells:
            self._cells.remove(cell)
            self._note_cells_changed()
        await self.save()

    # -- burning (docs/protocol.md §C1.6) ----------------------------------------------------

    def _on_burned(self, cell: object) -> None:
        """A member's cell opened an admin's burn: delete it as soon as the delivery is done."""
        if isinstance(cell, Cell) and cell in self._cells:
            self._nursery.start_soon(self._destroy, cell)

    async def _burned_here(self, cell: Cell, records: list[BurnRecord]) -> None:
        """This member burned `cell` (`Cell.burn`): delete it here, then its mailboxes."""
        self._state.burning.extend(records)
        await self._destroy(cell)
        await self.finish_burns()

    async def _destroy(self, cell: Cell) -> None:
        """Delete a burned cell from this device: events first, then every trace in the state.

        The state is then sealed under a fresh data key (`Keystore.rekey`), so that the
        copies of the state that still held the cell, which the disk may keep in its free
        blocks, no longer open even with the passphrase.
        """
        if cell not in self._cells:
            return
        cell.flush()  # CellBurned and whatever came before it
        cell.close()
        record = cell.record
        mailboxes = [
            *cell.mailboxes(),
            *(i.join_mailbox for i in record.invites),
            *(r.mailbox for r in record.retired),
        ]
        for mailbox in mailboxes:
            self._unroute(mailbox)
            cell.link.forget_writer(mailbox)
            cell.link.forget_reader(mailbox)
            with contextlib.suppress(CellrelayError):
                await cell.link.unwatch(mailbox)
        self._cells.remove(cell)
        if record in self._state.cells:
            self._state.cells.remove(record)
        self._note_cells_changed()
        await self.save(rekey=True)
        log.warning("cell_deleted_burned")

    @property
    def burns_pending(self) -> int:
        """How many mailboxes of cells burned here are still to be deleted on their relays."""
        return sum(len(r.mailboxes) for r in self._state.burning)

    async def finish_burns(self) -> None:
        """Delete the due mailboxes of cells burned here; keep what the relay did not confirm.

        Runs at start, every minute and after `Cell.burn`; waits for the relays (bound it).
        A mailbox the relay no longer has counts as deleted (`MAILBOX_GONE`).
        """
        if self._burning:
            return
        self._burning = True
        try:
            now = time.time()
            for record in [r for r in self._state.burning if r.delete_at <= now]:
                link = self.link_for(RelayAddress.parse(record.relay))
                for pair in list(record.mailboxes):
                    mailbox, seed = pair
                    try:
                        await link.admin(
                            CapabilityKey.from_seed(seed),
                            Delete(id=0, mailbox=MailboxId(mailbox), counter=0, sig=bytes(64)),
                        )
                    except RelayRefusedError as exc:
                        if exc.code not in MAILBOX_GONE:
                            log.info("burned_mailbox_kept", code=exc.code)
                            continue
                    record.mailboxes.remove(pair)
                    log.info("burned_mailbox_deleted")
                    await self.save()
                if not record.mailboxes and record in self._state.burning:
                    self._state.burning.remove(record)
                    await self.save()
        finally:
            self._burning = False

    async def wait_joined(self, invite: Invite) -> Cell:
        """Wait until the admin approves the join request (bound it with trio.move_on_after)."""
        event = self._joined.setdefault(invite.join_mailbox, trio.Event())
        await event.wait()
        return next(c for c in self._cells if c.cell_id == invite.cell_id)

    async def join(self, link_text: str) -> Cell:
        """Ask to join and wait for the admin's approval; return the cell."""
        invite = await self.request_join(link_text)
        return await self.wait_joined(invite)

    async def _watch_join(self, record: JoinRecord) -> None:
        """Watch the join mailbox on every relay of the invite; the first watch will do."""
        invite = Invite.from_bytes(record.invite)
        read = CapabilityKey.from_seed(invite.join_read_seed)
        if len(record.more_cursors) != len(invite.more_relays):
            record.more_cursors = [0] * len(invite.more_relays)

        def handler(index: int) -> Handler:
            async def on_delivery(event: Delivery | Revocation) -> None:
                if isinstance(event, Revocation):
                    return
                kind, rest = split_join_envelope(event.envelope)
                key = (invite.join_mailbox, index)
                if kind == JOIN_WELCOME_PAGE and key in self._welcome_parts:
                    # A page of the welcome before it (§G7): the cursor stays before the
                    # welcome until it is complete, so a restart reads them all again.
                    welcome, pages = self._welcome_parts[key]
                    pages.append(rest)
                    if record in self._state.joins:
                        await self._welcomed(record, invite, welcome, pages, key=key)
                    return
                # A welcome refused here (a replay, a forgery) leaves one still waiting for
                # its pages as it was; one that needs pages replaces it.
                if (
                    kind == JOIN_WELCOME
                    and record in self._state.joins
                    and await self._welcomed(record, invite, rest, [], key=key)
                ):
                    return
                if index == 0:
                    record.cursor = event.seq
                else:
                    record.more_cursors[index - 1] = event.seq
                await self.save()

            return on_delivery

        def watcher(index: int, entry: InviteRelay) -> Callable[[], Awaitable[int]]:
            cursor = record.cursor if index == 0 else record.more_cursors[index - 1]

            async def watch() -> int:
                return await self.link_for(entry.relay).watch(entry.join_mailbox, read, cursor)

            return watch

        for index, entry in enumerate(invite.relays):
            self._route(entry.join_mailbox, handler(index))
        self._joined.setdefault(invite.join_mailbox, trio.Event())
        await publish_everywhere(
            [(str(e.relay), watcher(i, e)) for i, e in enumerate(invite.relays)],
            self._nursery.start_soon,
        )

    async def _welcomed(
        self,
        record: JoinRecord,
        invite: Invite,
        welcome: bytes,
        pages: list[bytes],
        *,
        key: tuple[bytes, int],
    ) -> bool:
        """Join from a welcome (and its pages); True while it waits for more pages."""
        held = [c for c in self._cells if c.cell_id == invite.cell_id]
        if any(not c.removed for c in held):
            self._state.joins.remove(record)  # a second welcome for a cell we are in: ignore
            await self.save()
            return False
        for old in held:  # re-admitted after a removal: the new state replaces the old
            await self.forget(old)
        link = self.link_for(invite.relay)
        inviter = member_id_of(invite.admin_sign_key, invite.admin_box_key)
        try:
            crypto, _ = CellCrypto.from_welcome(
                self.identity,
                welcome,
                now=link.relay_time(),
                invite=invite,
                inviter=inviter,
                pages=pages,
                announce=False,  # announced before its first send (`Cell._ready_to_seal`)
            )
        except WelcomeIncompleteError:
            self._welcome_parts[key] = (welcome, pages)  # its pages follow it
            return True
        except GroupError as exc:
            if self._welcome_parts.get(key, (None,))[0] == welcome:  # its pages do not fit
                del self._welcome_parts[key]
            # Not the answer to this request (an old welcome replayed, another invite's, a
            # forgery): keep waiting for the admin's real one, past it in the mailbox.
            log.warning("welcome_refused", reason=type(exc).__name__)
            await self.save()
            return False
        self._welcome_parts.pop(key, None)
        info = CellInfo.decode(crypto.extra)
        cell_record = CellRecord(
            crypto=crypto.to_bytes(),
            relay=info.relay,
            group_mailbox=info.group,
            control_mailbox=info.control,
            group_cursor=info.group_from,
            control_cursor=info.control_from,
            announce_owed=True,
            epoch_started_at=time.time(),
            alert_limit=info.alert_limit,
            muted_everyone=list(info.muted),
            more_relays=[
                RelayRecord(
                    relay=r.relay,
                    group_mailbox=r.group,
                    control_mailbox=r.control,
                    group_cursor=r.group_from,
                    control_cursor=r.control_from,
                )
                for r in info.more_relays
            ],
            verify_first=info.verify_first,
            channel=info.channel,
            escalate_below=info.escalate[0],
            escalate_after=info.escalate[1],
        )
        self._state.joins.remove(record)
        self._state.cells.append(cell_record)
        await self.save()
        for entry in invite.relays:
            self._unroute(entry.join_mailbox)
            # Never waits for a relay that is down (no connection: nothing to unsubscribe).
            with contextlib.suppress(Exception):
                await self.link_for(entry.relay).unwatch(entry.join_mailbox)
        cell = self._make_cell(cell_record, crypto)
        self._cells.append(cell)
        self._note_cells_changed()
        if cell.further:
            # In the background, ready once any relay is watched: this runs in the
            # delivery handler of the relay that brought the welcome, and the first relay
            # may be the one that is down (issue 13).
            self._nursery.start_soon(self._start_in_background, self._starter(cell))
            await cell.wait_ready()
        else:
            await cell.start()
        self._joined.setdefault(invite.join_mailbox, trio.Event()).set()
        log.info("cell_joined", epoch=crypto.epoch)
        self._nursery.start_soon(self._say_taken, invite)
        return False

    async def _say_taken(self, invite: Invite) -> None:
        """Tell the admin the welcome was taken (docs/protocol.md §C4), on every relay.

        The admin then deletes the join mailbox, which takes one of its connection's
        mailboxes until then. Best effort: a relay that is down, or an admin that deleted
        the mailbox already, leaves it to the admin's other signs (the joiner's first
        envelope in the group, or the invite's expiry).
        """
        write = CapabilityKey.from_seed(invite.join_write_seed)
        for entry in invite.relays:
            link = self.link_for(entry.relay)
            try:
                with trio.move_on_after(TAKEN_TIMEOUT):
                    await link.authorize_writer(entry.join_mailbox, write)
                    expires_at = min(invite.expires_at, int(link.relay_time()) + 86400)
                    await link.publish(entry.join_mailbox, bytes([JOIN_TAKEN]), expires_at)
            except CellrelayError as exc:
                log.info("join_taken_not_said", error=type(exc).__name__)
            finally:
                link.forget_writer(entry.join_mailbox)
