"""The one small interface between the relay's hub and whatever keeps its data.

The hub does not know which store it has. A store keeps, per mailbox, the capability
public keys, the admin counter, the limits, the last sequence number assigned and the
envelopes (opaque ciphertext) that have not yet expired. It keeps nothing about members
or connections.

Sequence numbers are assigned by the store, per mailbox, starting at 1, strictly
increasing, never reused (not even after the envelope expires or the mailbox is emptied).

Theory of operation for writes: the hub collects publishes from many connections and hands
them to `append_batch` together (group commit). `append_batch` returns only when the whole
batch is durable (committed; for SQLite, fsynced according to the configured durability),
so the hub acknowledges each publish only after that return. One batch is one transaction:
after a crash either all of it is there or none of it.

Every method may be called from the Trio thread; implementations that block (SQLite) move
the blocking work to a worker thread themselves.

Failures: a method raises `StorageError` when the storage itself failed (I/O error,
corruption, the database locked by another program); its transaction was rolled back (a
failed `append_batch` stored nothing), and the hub answers the requests involved with an
internal error. A write that failed for lack of room (a full disk) raises the subclass
`StorageFullError`, also with nothing written: the hub then refuses writes with
`STORAGE_FULL` until the store says there is room again (`release_reserve`,
`restore_reserve`; docs/operator-guide.md, "A full disk"). A method
called after `aclose` raises `trio.ClosedResourceError`. Arguments outside the ranges
below raise `ValueError` (a bug in the caller, never the peer's doing): every integer
(counters, limits, times, sequence numbers) fits in a signed 64-bit integer, because that
is what SQLite stores, so the protocol must not accept larger values; mailbox ids are
`MAILBOX_ID_SIZE` bytes and capability keys `PUBLIC_KEY_SIZE` bytes. The `validate_*`
functions below check exactly these rules, so every implementation agrees on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

from cellrelay.protocol.wire._messages import MailboxId  # 16 random bytes chosen by the relay

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "INT64_MAX",
    "MAILBOX_ID_SIZE",
    "PUBLIC_KEY_SIZE",
    "AppendResult",
    "MailboxExistsError",
    "MailboxId",
    "MailboxRecord",
    "PendingAppend",
    "StorageError",
    "StorageFullError",
    "Store",
    "StoredEnvelope",
    "validate_admin_update",
    "validate_append",
    "validate_now",
    "validate_record",
]


MAILBOX_ID_SIZE: Final = 16  # 128 random bits: unguessable, and no birthday collisions
PUBLIC_KEY_SIZE: Final = 32  # an Ed25519 public key (RFC 8032 section 5.1.5)
INT64_MAX: Final = 2**63 - 1  # SQLite's INTEGER is a signed 64-bit integer


class MailboxExistsError(Exception):
    """`create_mailbox` was given an id that is already taken (the caller draws another)."""


class StorageError(Exception):
    """The storage failed or cannot be used; the message says what to do.

    Raised when opening a store finds a problem (the message names the file and the fix)
    and when an operation fails underneath (disk full, I/O error). The message never holds
    envelope bytes, keys or mailbox ids, so it is safe to log.
    """


class StorageFullError(StorageError):
    """A write found no room (the disk, or the database's size limit, is full); nothing was written.

    Raised by `open` as well when the store cannot even be opened for lack of room: free
    space on the database's filesystem and start again.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class MailboxRecord:
    """Everything the relay knows about one mailbox, besides its envelopes."""

    mailbox: MailboxId = field(repr=False)
    write_key: bytes = field(repr=False)  # Ed25519 public key, 32 bytes
    read_key: bytes = field(repr=False)  # Ed25519 public key, 32 bytes
    admin_key: bytes = field(repr=False)  # Ed25519 public key, 32 bytes
    admin_counter: int = 0  # the highest admin counter accepted so far
    max_ttl: int = 0  # seconds; 0 means the relay-wide maximum
    max_bytes: int = 0  # stored envelope bytes; 0 means the relay-wide default
    created_at: int = 0  # unix seconds
    head: int = 0  # the last sequence number assigned (0: none yet)
    stored_bytes: int = 0  # sum of len(envelope) over envelopes still stored


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEnvelope:
    """One envelope as stored: the relay-assigned sequence number and its expiry."""

    seq: int
    expires_at: int  # unix seconds
    envelope: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingAppend:
    """One publish waiting in a group-commit batch."""

    mailbox: MailboxId = field(repr=False)
    expires_at: int
    envelope: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendResult:
    """The outcome of one `PendingAppend`: a sequence number, or why it was not stored.

    `seq` is None when the mailbox no longer exists (`error == "no_such_mailbox"`) or its
    stored-bytes quota would be exceeded (`error == "mailbox_full"`); other items of the same
    batch are unaffected.
    """

    seq: int | None
    error: str | None = None


class Store(Protocol):
    """What the hub needs from storage. See the module docstring for the guarantees."""

    async def create_mailbox(self, record: MailboxRecord) -> None:
        """Store a new mailbox; raise `MailboxExistsError` if its id is taken."""
        ...

    async def get_mailbox(self, mailbox: MailboxId) -> MailboxRecord | None:
        """Return the mailbox's record, or None if there is no such mailbox."""
        ...

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
        """Apply an admin change if `counter` is above the stored counter, atomically.

        Returns False (and changes nothing) if the mailbox is gone or the counter is stale.
        Fields left as None keep their value; the counter is stored on success.
        """
        ...

    async def delete_mailbox(self, mailbox: MailboxId) -> bool:
        """Delete the mailbox and all its envelopes (overwritten, not just unlinked).

        Returns False if there was no such mailbox.
        """
        ...

    async def append_batch(
        self, items: Sequence[PendingAppend], *, default_max_bytes: int
    ) -> list[AppendResult]:
        """Store a batch durably in one transaction and return one result per item, in order.

        Sequence numbers within one mailbox follow the order of `items`. A mailbox whose
        `max_bytes` is 0 is limited to `default_max_bytes`.
        """
        ...

    async def read_after(
        self, mailbox: MailboxId, after: int, *, limit: int, now: float
    ) -> list[StoredEnvelope]:
        """Return up to `limit` unexpired envelopes with seq > `after`, by increasing seq.

        An envelope is expired when `expires_at <= now`; it is never returned, whether or
        not `delete_expired` has removed it yet. Any int `after` is accepted (a cursor
        beyond every possible seq simply finds nothing); a negative `limit` is a
        `ValueError`. An unknown mailbox gives an empty list.
        """
        ...

    async def delete_expired(self, now: float) -> int:
        """Delete every envelope with expires_at <= now, so its bytes are gone from disk.

        Returns how many envelopes were deleted. For SQLite this includes checkpointing and
        truncating the write-ahead log, which `secure_delete` does not reach.
        """
        ...

    async def count_mailboxes(self) -> int:
        """Return how many mailboxes exist (for the metrics gauge)."""
        ...

    async def total_stored_bytes(self) -> int:
        """Return the envelope bytes stored over all mailboxes (expired ones not yet swept too)."""
        ...

    async def release_reserve(self) -> None:
        """Free the room set aside for a full disk, so deletions and expiry can still write.

        The hub calls it when a write failed with `StorageFullError`; until
        `restore_reserve` returns True it sends the store no publishes or creations.
        """
        ...

    async def restore_reserve(self) -> bool:
        """Set the reserve aside again if there is room for it and for new writes beyond it.

        Returns True when the store can take writes (also at start, with its reserve in
        place), False while it is still too full.
        """
        ...

    async def aclose(self) -> None:
        """Finish pending work and release files. The store is unusable afterwards."""
        ...


def _check_int(name: str, value: int, *, minimum: int = 0) -> None:
    # bool is an int subclass; a True counter is a caller bug, not the number 1.
    if type(value) is not int or not minimum <= value <= INT64_MAX:
        raise ValueError(f"{name} must be an int in [{minimum}, 2**63 - 1]")


def _check_key(name: str, value: bytes) -> None:
    if type(value) is not bytes or len(value) != PUBLIC_KEY_SIZE:
        raise ValueError(f"{name} must be {PUBLIC_KEY_SIZE} bytes")


def validate_record(record: MailboxRecord) -> None:
    """Raise `ValueError` unless `record` can be given to `Store.create_mailbox`.

    A new mailbox may start at any `head` (its next sequence number is `head + 1`) but
    holds no envelopes yet, so its `stored_bytes` must be 0.
    """
    if type(record.mailbox) is not bytes or len(record.mailbox) != MAILBOX_ID_SIZE:
        raise ValueError(f"mailbox id must be {MAILBOX_ID_SIZE} bytes")
    _check_key("write_key", record.write_key)
    _check_key("read_key", record.read_key)
    _check_key("admin_key", record.admin_key)
    _check_int("admin_counter", record.admin_counter)
    _check_int("max_ttl", record.max_ttl)
    _check_int("max_bytes", record.max_bytes)
    _check_int("created_at", record.created_at)
    _check_int("head", record.head)
    if record.stored_bytes != 0:
        raise ValueError("a new mailbox has stored_bytes 0")


def validate_admin_update(
    *,
    counter: int,
    write_key: bytes | None,
    read_key: bytes | None,
    admin_key: bytes | None,
    max_ttl: int | None,
    max_bytes: int | None,
) -> None:
    """Raise `ValueError` unless these are valid arguments of `Store.update_admin`."""
    _check_int("counter", counter)
    for name, key in (("write_key", write_key), ("read_key", read_key), ("admin_key", admin_key)):
        if key is not None:
            _check_key(name, key)
    if max_ttl is not None:
        _check_int("max_ttl", max_ttl)
    if max_bytes is not None:
        _check_int("max_bytes", max_bytes)


def validate_now(now: float) -> None:
    """Raise `ValueError` if `now` is NaN, which compares as neither before nor after."""
    if math.isnan(now):
        raise ValueError("now must be a number, not NaN")


def validate_append(items: Sequence[PendingAppend], *, default_max_bytes: int) -> None:
    """Raise `ValueError` unless these are valid arguments of `Store.append_batch`.

    Checked for the whole batch before anything is written, so a bad item fails the call
    instead of half a transaction.
    """
    _check_int("default_max_bytes", default_max_bytes)
    for item in items:
        if type(item.mailbox) is not bytes or type(item.envelope) is not bytes:
            raise ValueError("mailbox and envelope must be bytes")
        _check_int("expires_at", item.expires_at)
