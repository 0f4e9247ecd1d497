"""An in-memory `Store` for tests: the same semantics as the SQLite store, kept in dicts.

It is the reference model the SQLite store is checked against (tests/relay/test_store.py
runs one contract suite on both, and a Hypothesis test compares them operation by
operation), so it favours being obviously right over being fast. Nothing survives the
process, and nothing is overwritten on deletion beyond what the garbage collector does:
never use it for real data.
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from cellrelay.relay._store import (
    INT64_MAX,
    AppendResult,
    MailboxExistsError,
    MailboxId,
    MailboxRecord,
    PendingAppend,
    StoredEnvelope,
    validate_admin_update,
    validate_append,
    validate_now,
    validate_record,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Mailbox:
    """One mailbox: its record (head and stored_bytes kept current) and its envelopes."""

    record: MailboxRecord = field(repr=False)
    envelopes: list[StoredEnvelope] = field(default_factory=list, repr=False)  # by seq


def _seq_of(envelope: StoredEnvelope) -> int:
    return envelope.seq


class MemoryStore:
    """A `Store` that keeps everything in memory; for tests only."""

    def __init__(self) -> None:
        """Create an empty store."""
        self._mailboxes: dict[MailboxId, _Mailbox] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"<MemoryStore mailboxes={len(self._mailboxes)} closed={self._closed}>"

    async def _enter(self) -> None:
        # Every Store method is a checkpoint, like the SQLite one that goes to a thread,
        # so code tested against this store does not come to depend on it never yielding.
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("the store is closed")

    async def create_mailbox(self, record: MailboxRecord) -> None:
        """Store a new mailbox; raise `MailboxExistsError` if its id is taken."""
        validate_record(record)
        await self._enter()
        if record.mailbox in self._mailboxes:
            raise MailboxExistsError("mailbox id already taken")
        self._mailboxes[record.mailbox] = _Mailbox(record=record)

    async def get_mailbox(self, mailbox: MailboxId) -> MailboxRecord | None:
        """Return the mailbox's record, or None if there is no such mailbox."""
        await self._enter()
        box = self._mailboxes.get(mailbox)
        return None if box is None else box.record

    async def update_admin(
        self,
        mailbox: MailboxId,
        *,
        counter: int,
        write_key: bytes | None = None,
        read_key: bytes | None = None,
        admin_key: bytes | None = None,
        max_ttl: int | None = None,
        max_bytes: int | None = None,
    ) -> bool:
        """Apply an admin change if `counter` is above the stored counter, atomically."""
        validate_admin_update(
            counter=counter,
            write_key=write_key,
            read_key=read_key,
            admin_key=admin_key,
            max_ttl=max_ttl,
            max_bytes=max_bytes,
        )
        await self._enter()
        box = self._mailboxes.get(mailbox)
        if box is None or counter <= box.record.admin_counter:
            return False
        old = box.record
        box.record = dataclasses.replace(
            old,
            admin_counter=counter,
            write_key=old.write_key if write_key is None else write_key,
            read_key=old.read_key if read_key is None else read_key,
            admin_key=old.admin_key if admin_key is None else admin_key,
            max_ttl=old.max_ttl if max_ttl is None else max_ttl,
            max_bytes=old.max_bytes if max_bytes is None else max_bytes,
        )
        return True

    async def delete_mailbox(self, mailbox: MailboxId) -> bool:
        """Delete the mailbox and all its envelopes; False if there was no such mailbox."""
        await self._enter()
        return self._mailboxes.pop(mailbox, None) is not None

    async def append_batch(
        self, items: Sequence[PendingAppend], *, default_max_bytes: int
    ) -> list[AppendResult]:
        """Store a batch and return one result per item, in order (see `Store`)."""
        validate_append(items, default_max_bytes=default_max_bytes)
        await self._enter()
        results: list[AppendResult] = []
        for item in items:
            box = self._mailboxes.get(item.mailbox)
            if box is None:
                results.append(AppendResult(seq=None, error="no_such_mailbox"))
                continue
            record = box.record
            limit = record.max_bytes or default_max_bytes
            size = len(item.envelope)
            if record.stored_bytes + size > limit:
                results.append(AppendResult(seq=None, error="mailbox_full"))
                continue
            if record.head >= INT64_MAX:
                # Unreachable in practice (2**63 appends), but SQLite could not store the
                # next seq either, and a wrapped or repeated seq would be far worse.
                results.append(AppendResult(seq=None, error="mailbox_full"))
                continue
            seq = record.head + 1
            box.record = dataclasses.replace(
                record, head=seq, stored_bytes=record.stored_bytes + size
            )
            box.envelopes.append(
                StoredEnvelope(seq=seq, expires_at=item.expires_at, envelope=item.envelope)
            )
            results.append(AppendResult(seq=seq))
        return results

    async def read_after(
        self, mailbox: MailboxId, after: int, *, limit: int, now: float
    ) -> list[StoredEnvelope]:
        """Return up to `limit` unexpired envelopes with seq > `after`, by increasing seq."""
        if limit < 0:
            raise ValueError("limit must not be negative")
        validate_now(now)
        await self._enter()
        box = self._mailboxes.get(mailbox)
        if box is None or limit == 0:
            return []
        start = bisect.bisect_right(box.envelopes, after, key=_seq_of)
        found: list[StoredEnvelope] = []
        for envelope in box.envelopes[start:]:
            if envelope.expires_at > now:
                found.append(envelope)
                if len(found) == limit:
                    break
        return found

    async def delete_expired(self, now: float) -> int:
        """Delete every envelope with expires_at <= now; return how many were deleted."""
        validate_now(now)
        await self._enter()
        deleted = 0
        for box in self._mailboxes.values():
            kept = [e for e in box.envelopes if e.expires_at > now]
            gone = len(box.envelopes) - len(kept)
            if gone:
                freed = sum(len(e.envelope) for e in box.envelopes) - sum(
                    len(e.envelope) for e in kept
                )
                box.envelopes = kept
                box.record = dataclasses.replace(
                    box.record, stored_bytes=box.record.stored_bytes - freed
                )
                deleted += gone
        return deleted

    async def count_mailboxes(self) -> int:
        """Return how many mailboxes exist."""
        await self._enter()
        return len(self._mailboxes)

    async def total_stored_bytes(self) -> int:
        """Return the envelope bytes stored over all mailboxes."""
        await self._enter()
        return sum(box.record.stored_bytes for box in self._mailboxes.values())

    async def release_reserve(self) -> None:
        """Nothing to release: memory has no reserve (the process's memory is the limit)."""
        await self._enter()

    async def restore_reserve(self) -> bool:
        """Always room: memory has no reserve."""
        await self._enter()
        return True

    async def aclose(self) -> None:
        """Forget everything; the store is unusable afterwards."""
        self._closed = True
        self._mailboxes.clear()
        await trio.lowlevel.checkpoint()
