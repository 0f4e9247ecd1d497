"""Parked envelopes are fetched again from the relay, never saved and never lost.

Theory of operation
-------------------

The group layer parks an envelope whose epoch or sender key has not arrived yet, within
bounds per claim and in total (protocol/cell/_receiver.py), and refuses one that does not
fit (`PendingOverflowError`) without changing anything. The relay still holds every such
envelope, so the client keeps only where they are:

* each envelope is opened with a *ref*, its relay seq tagged with the group mailbox's
  generation (`CellRecord.group_generation`, which a move increments), so the refs of
  parked envelopes say which of them belong to the current mailbox;
* the state is saved without parked envelopes (`CellCrypto.to_bytes(parked=False)`):
  they were up to 1 MiB, rewritten by every save (7 to 11 ms here). Instead the record
  keeps `group_refetch`, the lowest seq that is parked or was refused, and a start
  resumes the group mailbox from there: the relay delivers them again, and what was
  already opened is refused quietly as a replay, or de-duplicated by message id;
* an envelope refused because the buffer (or its claim's share) was full is fetched
  again (`fetch`, page by page, up to where the subscription has got) once an epoch
  change or a sender key distribution has arrived, the two things that let parked
  envelopes out.

So the relay, which can make up any number of envelopes of a future epoch, or a member
naming another as their sender, can delay a genuine envelope, never lose it: the relay
could withhold it anyway, and anyone else only fills a share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from cellrelay.protocol.wire import MAX_PAGE_ITEMS, Fetch, Page

from ._log import library_logger

if TYPE_CHECKING:
    from ._cell_member import MemberCell

__all__ = ["Refetch", "make_ref"]

log = library_logger("cellrelay.client")

_SEQ_BITS: Final = 64  # relay seqs are u64 (docs/protocol.md §4.2)
_SEQ_MASK: Final = (1 << _SEQ_BITS) - 1


def make_ref(generation: int, seq: int) -> int:
    """The ref an envelope of group mailbox `generation` at `seq` is opened with."""
    return (generation << _SEQ_BITS) | seq


class Refetch:
    """One cell's bookkeeping of parked and refused group envelopes (module docstring)."""

    def __init__(self, cell: MemberCell) -> None:
        """Serve `cell` (which owns this object)."""
        self._cell = cell
        self._refused: int | None = None  # lowest seq of the current mailbox refused for room
        self._released = False  # an epoch or a sender key arrived since the last refusal
        self._running = False
        # From the last run: the lowest seq to fetch again, and the cursor then. It stays
        # in `group_refetch` until the relay has delivered up to that cursor again.
        record = cell.record
        self._carried = (
            (record.group_refetch, record.group_cursor) if record.group_refetch else None
        )

    def refused(self, ref: int) -> None:
        """An envelope of the current mailbox did not fit the parking buffer."""
        if ref >> _SEQ_BITS != self._cell.record.group_generation:
            log.debug("parked_envelope_refused", current=False)  # a drained mailbox's
            return
        seq = ref & _SEQ_MASK
        if self._refused is None:
            log.info("parked_envelopes_refused")  # once until they are fetched again
        self._refused = seq if self._refused is None else min(self._refused, seq)
        self._released = False

    def delivered(self, seq: int) -> None:
        """The current group mailbox delivered `seq` (once what a start fetched again is in)."""
        if self._carried is not None and seq >= self._carried[1]:
            self._carried = None

    def moved(self) -> None:
        """The cell moved: the old mailbox is read again from `resume_after` by its drain."""
        self._carried, self._refused, self._released = None, None, False

    def released(self) -> None:
        """An epoch change or a sender key arrived: refused envelopes may fit now."""
        if self._refused is not None:
            self._released = True

    def note(self) -> None:
        """Keep `CellRecord.group_refetch` at the lowest seq a restart must fetch again."""
        record = self._cell.record
        generation = record.group_generation
        seqs = [
            ref & _SEQ_MASK
            for ref in self._cell.crypto.parked_refs()
            if ref >> _SEQ_BITS == generation and ref & _SEQ_MASK
        ]
        if self._refused is not None:
            seqs.append(self._refused)
        if self._carried is not None:
            seqs.append(self._carried[0])
        record.group_refetch = min(seqs, default=0)

    def resume_after(self) -> int:
        """The seq the group mailbox must be read again after (its cursor, or before it)."""
        self.note()
        record = self._cell.record
        if record.group_refetch:
            return min(record.group_cursor, record.group_refetch - 1)
        return record.group_cursor

    @property
    def due(self) -> bool:
        """Whether refused envelopes can be fetched again now (`fetch_again`)."""
        return self._released and not self._running

    async def fetch_again(self) -> None:
        """Open the group mailbox again from the lowest refused envelope.

        Background work (`MemberCell.upkeep`), with `fetch` up to where the subscription
        has got; what was opened already is refused quietly as a replay, or de-duplicated.
        """
        if not self.due or self._refused is None:
            return
        self._running = True
        cell, record = self._cell, self._cell.record
        mailbox, generation, until = (
            record.group_mailbox,
            record.group_generation,
            record.group_cursor,
        )
        after = self._refused - 1
        self._refused, self._released = None, False
        try:
            while after < until and record.group_mailbox == mailbox:
                page = await cell.link.request(
                    Fetch(id=0, mailbox=mailbox, after=after, limit=MAX_PAGE_ITEMS)
                )
                items = (
                    [i for i in page.items if after < i.seq <= until]
                    if isinstance(page, Page)
                    else []
                )
                for item in items:
                    cell._take(item.envelope, make_ref(generation, item.seq))
                    after = item.seq
                self.note()
                await cell._save(durable=False)  # before the app hears of them
                cell.flush()
                if not items or not isinstance(page, Page) or not page.more:
                    break
            log.info("parked_envelopes_fetched_again")
        finally:
            self._running = False
