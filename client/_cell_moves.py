"""Moving a cell to a fresh group mailbox, and retiring the old one (docs/protocol.md §C5.1, §C6).

Theory of operation
-------------------

A member holds the group mailbox's write key, so a planted one can fill the mailbox's
quota on the relay (16 MiB) in seconds with envelopes that live a week; every later
publish is refused (`MAILBOX_FULL`), including the sender key distributions of the epoch
that removes it. Rotating keys does not remove what is stored, and the relay gives
nobody, admins included, a way to delete some envelopes and keep others. So a removal
(and an admin's `recover`) *moves* the cell instead, with what the relay already offers:

1. the admin creates a new group mailbox with the new read and write keys (and the same
   admin key), and puts its id in the epoch change's client data (`ChangeExtra.group`);
2. it rotates the old mailbox's keys: the write key to one nobody keeps, so nothing more
   can be stored there, the flood included; the read key to a fresh one that the change
   carries too (`ChangeExtra.drain_read`), so the remaining members can read what is
   there and a removed member cannot (`Cell._retire_on_relay`);
3. it publishes the change. Every member that applies it watches the new mailbox, whose
   quota is untouched, publishes its distribution there, and *drains* the old one: reads
   it to its end with the new read key (a `RetiredMailbox`), in the background, within
   the grace window in which the old epoch's keys still open what it holds;
4. an admin deletes the old mailbox on the relay once no member can still need it: every
   member of the current epoch has published its sender key (so it applied the move) and
   a grace window has passed since, or everything stored there has expired.

Nothing a remaining member sent before the move is lost, and nothing after it waits for
the flood to expire. This module holds the client data format and the member's side of a
move; the admin's side is in client/_cell_admin.py.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from cellrelay.protocol import CellrelayError, RemoteProtocolError
from cellrelay.protocol.cell._content import MAX_ESCALATE_AFTER, MAX_ESCALATE_BELOW
from cellrelay.protocol.cell._group import GRACE_PERIOD
from cellrelay.protocol.wire import (
    MAX_PAGE_ITEMS,
    AddressError,
    CapabilityKey,
    Fetch,
    MailboxId,
    Page,
    RelayAddress,
)
from cellrelay.protocol.wire._codec import decode_map, encode_map

from ._cell_refetch import make_ref
from ._link import RelayRefusedError
from ._log import library_logger
from ._state import RetiredMailbox

if TYPE_CHECKING:
    from ._cell_member import MemberCell

__all__ = ["MAX_MUTED", "ChangeExtra", "ChangeExtraError", "Moves"]

log = library_logger("cellrelay.client")

MAILBOX_ID_SIZE: Final = 16
SEED_SIZE: Final = 32
# Members an admin can mute for the whole cell at once (§C5.1): a cell with more than a
# few flooders should remove them; 16 ids keep the client data within its 384 bytes.
MAX_MUTED: Final = 16
MAX_ALERT_LIMIT: Final = 10_000


class ChangeExtraError(ValueError):
    """An epoch change's client data does not follow docs/protocol.md §C5.1."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeExtra:
    """The client data an epoch change carries to the members of the new epoch (§C5.1).

    Every field is optional; an absent one leaves what it names unchanged.
    """

    group: MailboxId | None = None  # the cell's group mailbox from this epoch on
    drain_read: bytes | None = None  # with `group`: the old one's read key seed from now on
    alert_limit: int | None = None  # alerts per member per minute before it is muted
    muted: tuple[bytes, ...] | None = None  # member ids admins muted for everyone
    verify_first: bool | None = None  # unverified reports go to verifiers only (§C2 rule 7)
    # A relay the cell lives on from now on (issue 13): its address and, there, the
    # cell's group and control mailboxes, made by the admin with the keys derived for it.
    relay_add: tuple[str, MailboxId, MailboxId] | None = None
    relay_drop: str | None = None  # a relay the cell leaves: members stop reading it
    # Escalation (§C10): (N, T) = a confirmed alert with fewer than N members responding
    # after T seconds goes to the neighbouring cells; N = 0 turns it off.
    escalate: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.group is not None and len(self.group) != MAILBOX_ID_SIZE:
            raise ChangeExtraError("group: a mailbox id is 16 bytes")
        if (self.drain_read is None) != (self.group is None) or (
            self.drain_read is not None and len(self.drain_read) != SEED_SIZE
        ):
            raise ChangeExtraError("drain_read: a 32-byte seed, exactly when group is set")
        if self.alert_limit is not None and not 1 <= self.alert_limit <= MAX_ALERT_LIMIT:
            raise ChangeExtraError(f"alert_limit: 1..{MAX_ALERT_LIMIT}")
        if self.muted is not None and (
            len(self.muted) > MAX_MUTED
            or len(set(self.muted)) != len(self.muted)
            or any(len(m) != MAILBOX_ID_SIZE for m in self.muted)
        ):
            raise ChangeExtraError(f"muted: at most {MAX_MUTED} distinct 16-byte member ids")
        if self.relay_add is not None:
            address, group, control = self.relay_add
            _check_relay("relay_add", address)
            if len(group) != MAILBOX_ID_SIZE or len(control) != MAILBOX_ID_SIZE:
                raise ChangeExtraError("relay_add: mailbox ids are 16 bytes")
        if self.relay_drop is not None:
            _check_relay("relay_drop", self.relay_drop)
            if self.relay_add is not None and self.relay_add[0] == self.relay_drop:
                raise ChangeExtraError("relay_add and relay_drop name the same relay")
        if self.escalate is not None:
            check_escalate(self.escalate)

    def __bool__(self) -> bool:
        return (
            self.group is not None
            or self.alert_limit is not None
            or self.muted is not None
            or self.verify_first is not None
            or self.relay_add is not None
            or self.relay_drop is not None
            or self.escalate is not None
        )

    def encode(self) -> bytes:
        """Return the msgpack map, with only the fields that are set."""
        fields: dict[str, object] = {}
        if self.group is not None:
            fields["group"] = bytes(self.group)
        if self.drain_read is not None:
            fields["drain_read"] = bytes(self.drain_read)
        if self.alert_limit is not None:
            fields["alert_limit"] = self.alert_limit
        if self.muted is not None:
            fields["muted"] = [bytes(m) for m in self.muted]
        if self.verify_first is not None:
            fields["verify_first"] = int(self.verify_first)
        if self.relay_add is not None:
            address, group, control = self.relay_add
            fields["relay_add"] = [address, bytes(group), bytes(control)]
        if self.relay_drop is not None:
            fields["relay_drop"] = self.relay_drop
        if self.escalate is not None:
            fields["escalate"] = list(self.escalate)
        return encode_map(fields)

    @classmethod
    def decode(cls, data: bytes) -> ChangeExtra:
        """Parse client data; keys this client does not know are ignored (newer clients).

        Raises:
            ChangeExtraError: not a msgpack map, or a known field of the wrong type or size.
        """
        try:
            fields = decode_map(data)
        except RemoteProtocolError as exc:
            raise ChangeExtraError(f"not a map ({exc.code.name})") from None
        group, limit, muted = fields.get("group"), fields.get("alert_limit"), fields.get("muted")
        drain_read = fields.get("drain_read")
        if group is not None and type(group) is not bytes:
            raise ChangeExtraError("group: not bytes")
        if drain_read is not None and type(drain_read) is not bytes:
            raise ChangeExtraError("drain_read: not bytes")
        if limit is not None and type(limit) is not int:
            raise ChangeExtraError("alert_limit: not an integer")
        if muted is not None and (
            type(muted) is not tuple or not all(type(m) is bytes for m in muted)
        ):
            raise ChangeExtraError("muted: not a list of ids")
        verify_first = fields.get("verify_first")
        if verify_first is not None and (
            type(verify_first) is not int or verify_first not in (0, 1)
        ):
            raise ChangeExtraError("verify_first: not 0 or 1")
        relay_add, relay_drop = fields.get("relay_add"), fields.get("relay_drop")
        if relay_add is not None and (
            type(relay_add) is not tuple
            or len(relay_add) != 3
            or type(relay_add[0]) is not str
            or type(relay_add[1]) is not bytes
            or type(relay_add[2]) is not bytes
        ):
            raise ChangeExtraError("relay_add: not [address, group id, control id]")
        if relay_drop is not None and type(relay_drop) is not str:
            raise ChangeExtraError("relay_drop: not an address")
        escalate = fields.get("escalate")
        if escalate is not None and (
            type(escalate) is not tuple
            or len(escalate) != 2
            or not all(type(v) is int for v in escalate)
        ):
            raise ChangeExtraError("escalate: not a pair of integers")
        return cls(
            group=None if group is None else MailboxId(group),
            drain_read=drain_read,
            alert_limit=limit,
            muted=muted,
            verify_first=None if verify_first is None else bool(verify_first),
            relay_add=None
            if relay_add is None
            else (relay_add[0], MailboxId(relay_add[1]), MailboxId(relay_add[2])),
            relay_drop=relay_drop,
            escalate=escalate,
        )


def _check_relay(name: str, address: str) -> None:
    """Refuse a relay address that does not parse, or is not in its canonical form.

    Canonical, so that members compare the relays of a change with theirs as text.
    """
    try:
        parsed = RelayAddress.parse(address)
    except AddressError:
        raise ChangeExtraError(f"{name}: not a relay address") from None
    if str(parsed) != address:
        raise ChangeExtraError(f"{name}: not a relay address in its usual form")


def check_escalate(escalate: tuple[int, int]) -> None:
    """Check a cell's escalation setting (N, T) against §C10's bounds.

    Raises:
        ChangeExtraError: N is not 0..MAX_ESCALATE_BELOW or T not 1..MAX_ESCALATE_AFTER.
    """
    below, after = escalate
    if not 0 <= below <= MAX_ESCALATE_BELOW:
        raise ChangeExtraError(f"escalate: N is 0..{MAX_ESCALATE_BELOW}")
    if not 1 <= after <= MAX_ESCALATE_AFTER:
        raise ChangeExtraError(f"escalate: T is 1..{MAX_ESCALATE_AFTER} seconds")


class Moves:
    """One cell's side of moves: follow one, drain the mailboxes it left (module docstring)."""

    def __init__(self, cell: MemberCell) -> None:
        """Serve `cell` (which owns this object)."""
        self._cell = cell
        self._running = False

    @property
    def due(self) -> bool:
        """Whether a retired mailbox still needs draining (`drain` would do something)."""
        return not self._running and any(not r.drained for r in self._cell.record.retired)

    async def move(self, new: MailboxId, drain_read: bytes, keep_from: int) -> None:
        """Follow an applied epoch change to the group mailbox `new`.

        `drain_read` is the old mailbox's read key seed since the move; `keep_from` the
        seq after which the old one must be read again (below the cursor when envelopes
        of it wait, parked, for their key: they are fetched again, never saved).
        """
        cell, record, link = self._cell, self._cell.record, self._cell.link
        old = record.group_mailbox
        link.forget_writer(old)
        with contextlib.suppress(CellrelayError):
            await link.unwatch(old)
        cell._unroute(old)
        record.retired.append(
            RetiredMailbox(
                mailbox=old,
                read_seed=drain_read,
                cursor=keep_from,
                moved_at=time.time(),
                generation=record.group_generation,
            )
        )
        record.group_generation += 1
        record.group_mailbox, record.group_cursor = new, 0
        log.info("group_mailbox_moved", generation=record.group_generation)
        await cell._rewatch_group()

    async def drain(self) -> None:
        """Read every retired mailbox not read yet to its end.

        Runs in the background (the client starts it after a burst of deliveries, and
        every maintenance interval), never in a delivery handler: it waits for the relay.
        """
        if self._running:
            return
        self._running = True
        try:
            for retired in list(self._cell.record.retired):
                if not retired.drained:
                    await self._drain(retired)
        finally:
            self._running = False

    async def _drain(self, retired: RetiredMailbox) -> None:
        cell, link = self._cell, self._cell.link
        # The old epoch's keys are wiped a grace window after the move was applied here:
        # after that, nothing in the old mailbox can open any more.
        left = retired.moved_at + GRACE_PERIOD - time.time()
        if left > 0:
            # Page by page with `fetch`, not a subscription: nothing new can arrive, and a
            # relay that withholds the last envelopes cannot keep a drain waiting for them.
            with trio.move_on_after(left):
                try:
                    await link.authorize_reader(
                        retired.mailbox, CapabilityKey.from_seed(retired.read_seed)
                    )
                    while await self._drain_page(retired):
                        pass
                except RelayRefusedError as exc:  # deleted by an admin already: nothing to read
                    log.info("retired_mailbox_gone", code=exc.code)
                finally:
                    link.forget_reader(retired.mailbox)
        retired.drained = True
        log.info("retired_mailbox_drained", generation=retired.generation)
        await cell._save()

    async def _drain_page(self, retired: RetiredMailbox) -> bool:
        """Open one page of a retired mailbox after its cursor; False when it was the last."""
        cell = self._cell
        page = await cell.link.request(
            Fetch(id=0, mailbox=retired.mailbox, after=retired.cursor, limit=MAX_PAGE_ITEMS)
        )
        if not isinstance(page, Page):  # pragma: no cover - the relay answers fetch so
            return False
        items = [item for item in page.items if item.seq > retired.cursor]
        for item in items:
            cell._take(item.envelope, make_ref(retired.generation, item.seq))
            retired.cursor = item.seq
        # Saved before the app hears of them, as after a burst of deliveries.
        await cell._save(durable=False)
        cell.flush()
        return bool(items) and page.more
