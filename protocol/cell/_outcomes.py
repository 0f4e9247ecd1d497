"""What the group layer hands back: opened messages, parked envelopes, echoes, epoch updates.

docs/protocol.md, Part 2. `CellCrypto.open` returns an `Outcome` (or raises a `GroupError`);
`CellCrypto.open_control` returns an `EpochUpdate`. Plaintext and keys never appear in a
repr, so these can sit in logs and failed assertions safely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from ._errors import GroupError
    from ._identity import MemberInfo
    from ._membership import LogEntry, Op

__all__ = ["Behind", "EpochUpdate", "Missing", "Notice", "Opened", "Outcome", "Own", "Pending"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Opened:
    """A message that authenticated: what it says and who sent it.

    For a sender key distribution or announcement `kind` is `Kind.SENDER_KEY` (5, for both)
    and `plaintext` is empty: it
    is for this layer, not the application. `released` lists what waited for it (or, on
    an `EpochUpdate`, for the epoch): parked envelopes now opened, or refused, in the order
    they arrived.
    """

    kind: int
    plaintext: bytes = field(repr=False)
    sender: MemberInfo
    epoch: int
    counter: int
    expires_at: int
    released: tuple[Outcome | GroupError, ...] = ()
    recovered: bool = False  # it had been reported missing (`Missing`), and came after all


@dataclass(frozen=True, slots=True)
class Pending:
    """The envelope was parked: its epoch or its sender's key is not known yet (not an error)."""

    epoch: int


@dataclass(frozen=True, slots=True)
class Own:
    """The envelope is this member's own (echoed back by the relay); it was sealed here."""

    epoch: int
    counter: int
    kind: int


Outcome: TypeAlias = Opened | Pending | Own


@dataclass(frozen=True, slots=True, kw_only=True)
class EpochUpdate:
    """What an applied epoch change did.

    `distribution` is the sender key distribution this member must now publish in the group
    mailbox before sealing anything (None when `removed_self`). `group_keys` is set when the
    group mailbox keys were rotated; `admin_secrets` when this member was just promoted;
    `extra` when the change carried client data (docs/protocol.md §G6.3).
    """

    epoch: int
    signer: MemberInfo
    entry: LogEntry | None
    removed_self: bool = False
    group_keys: tuple[bytes, bytes] | None = field(default=None, repr=False)
    admin_secrets: bytes | None = field(default=None, repr=False)
    distribution: bytes | None = field(default=None, repr=False)
    released: tuple[Outcome | GroupError, ...] = ()
    extra: bytes | None = field(default=None, repr=False)
    # Issue 13, the hash rule: the digest of the competing change for the same epoch that
    # this one replaced (this member had applied it, and goes back to the epoch before);
    # `lost_ours` when that change was this member's own proposal: redo the operation.
    superseded: bytes | None = field(default=None, repr=False)
    lost_ours: bool = False

    @property
    def change(self) -> Op | None:
        """The membership change, or None for a key rotation."""
        return None if self.entry is None else self.entry.op

    @property
    def subject(self) -> MemberInfo | None:
        """The member added, removed, promoted or demoted (None for a rotation)."""
        return None if self.entry is None else self.entry.subject


@dataclass(frozen=True, slots=True, kw_only=True)
class Missing:
    """`count` messages from `sender` in `epoch` have not arrived, past the grace period (§G10.2).

    Later messages of the same sender did: the relay withheld these (from this member,
    perhaps from it only), or the sender sealed them and never published them. Reported
    once; if one comes after all it opens normally (`Opened.recovered`).
    """

    sender: MemberInfo
    epoch: int
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Behind:
    """Envelopes of `newer`, an epoch after this member's `epoch`, keep arriving (§G10.3).

    This member cannot open them: the epoch change that leads there has not reached it.
    The relay withholds it (which keeps a removed member in contact with this one), or
    makes those envelopes up; either way the relay misbehaves. `count` envelopes waited
    past the grace period. Reported once per newer epoch.
    """

    epoch: int
    newer: int
    count: int


Notice: TypeAlias = Missing | Behind
"""What `CellCrypto.check` reports: something that should have arrived has not."""
