"""The exceptions of group end-to-end encryption (docs/protocol.md, Part 2, "Rejections").

Every envelope that is not returned as a valid message raises exactly one of these, so an
application can tell "forged" from "stale" from "not for me yet" without parsing messages.
Like `CryptoError`, none of them says which byte or which key was wrong, and none carries
plaintext, keys or identifiers in its message.

```
CellrelayError
└── GroupError                      anything the group layer refuses
    ├── MalformedError              not our layout: sizes, version, padding, field values
    ├── TamperedError (CryptoError) a sealed header or body failed to authenticate
    ├── BadSignatureError (Crypto.) a signature or MAC is wrong (or absent: all zeros)
    ├── NotAMemberError             the sender is not a member of the cell in that epoch
    ├── ReplayError                 the counter was already used (or its key discarded)
    ├── EquivocationError           a second, different, validly signed envelope for a counter
    ├── OutOfWindowError            the counter skips further ahead than the window allows
    ├── ExpiredError                expires_at <= now
    ├── StaleEpochError             an old epoch after its grace window
    ├── UnknownEpochError           an epoch this member never had, or far in the future
    ├── PendingOverflowError        the buffer of not-yet-openable envelopes is full
    ├── MembershipError             a membership log entry does not verify
    ├── StaleControlError           an epoch change for an epoch already reached
    │   └── ForkedEpochError        a competing change for an epoch settled already
    ├── EpochGapError               an epoch change that skips epochs: rejoin needed
    ├── NotAdminError               a local admin operation by a non-admin
    └── RemovedError                this member was removed from the cell
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._errors import CellrelayError, CryptoError

if TYPE_CHECKING:
    from ._identity import MemberInfo

__all__ = [
    "BadSignatureError",
    "EpochGapError",
    "EquivocationError",
    "ExpiredError",
    "ForkedEpochError",
    "GroupError",
    "MalformedError",
    "MembershipError",
    "NotAMemberError",
    "NotAdminError",
    "OutOfWindowError",
    "PendingOverflowError",
    "RemovedError",
    "ReplayError",
    "StaleControlError",
    "StaleEpochError",
    "TamperedError",
    "UnknownEpochError",
    "WelcomeRefusedError",
    "WelcomeWindowError",
]


class GroupError(CellrelayError):
    """The group layer refused an envelope, a log entry or an operation."""


class MalformedError(GroupError):
    """The bytes do not have the group layer's layout (sizes, version byte, padding, values)."""


class TamperedError(GroupError, CryptoError):
    """A sealed header or body failed to authenticate: altered, truncated or not for this cell."""


class BadSignatureError(GroupError, CryptoError):
    """A signature or MAC does not verify: forged, or altered after signing."""


class NotAMemberError(GroupError):
    """The sender was not a member of the cell in the envelope's epoch (or has been removed)."""


class ReplayError(GroupError):
    """The message's counter was already used, or its key was discarded: a replay or duplicate.

    Re-deliveries are normal (delivery is at least once); the client has already shown the
    message once, so it can drop this one quietly.
    """


class EquivocationError(GroupError):
    """The sender signed two different envelopes for the same counter (§G10.1).

    Not a relay's doing: the relay cannot sign. The sender's device is compromised, or
    was restored from a backup and reused its keys, or the member is planted. `sender`
    names it (the `MemberInfo`), `epoch` and `counter` the message; the second copy
    reaches nobody.
    """

    def __init__(self, message: str, *, sender: MemberInfo, epoch: int, counter: int) -> None:
        super().__init__(message)
        self.sender = sender
        self.epoch = epoch
        self.counter = counter


class OutOfWindowError(GroupError):
    """The counter jumps further ahead than the out-of-order window allows."""


class ExpiredError(GroupError):
    """The message's expires_at is not after now: it must not be shown."""


class StaleEpochError(GroupError):
    """The message belongs to an older epoch whose grace window has closed."""


class UnknownEpochError(GroupError):
    """The envelope names an epoch this member never had, or one too far in the future."""


class PendingOverflowError(GroupError):
    """The buffer of envelopes waiting for their sender key or epoch, or its share, is full.

    Nothing changed. Offer the envelope again once its epoch or its sender's key has
    arrived: `ref` is the one it was opened with (`CellCrypto.open`), also when it is
    one of the parked envelopes a release could not park again.
    """

    def __init__(self, message: str, *, ref: int = 0) -> None:
        super().__init__(message)
        self.ref = ref


class MembershipError(GroupError):
    """A membership log entry, or a welcome's member list, does not verify."""


class StaleControlError(GroupError):
    """An epoch change for an epoch this member has already reached.

    A re-delivery, or a concurrent change by another admin that was sequenced first. When
    `ours` is True the change was proposed by this member and lost the race: redo the
    operation on the current state.
    """

    def __init__(self, message: str, *, ours: bool = False) -> None:
        super().__init__(message)
        self.ours = ours


class ForkedEpochError(StaleControlError):
    """A competing change for an epoch this member applied another change for, too late.

    On a cell on several relays (issue 13) two admins cut off from each other's relays can
    both change epoch E; the change with the lowest BLAKE2b-256 wins if it arrives within
    the settle window (`CellCrypto.settle_window`). One that arrives later, or for an epoch
    before the last one applied, is not applied: the cell has split, and an admin must
    re-invite the members on the other side. `signer` is its admin when it verified under
    the state it competes in (None: no longer verifiable here, so possibly not a change).
    """

    def __init__(
        self, message: str, *, ours: bool = False, signer: MemberInfo | None = None
    ) -> None:
        super().__init__(message, ours=ours)
        self.signer = signer


class EpochGapError(GroupError):
    """An epoch change skips epochs this member never saw (expired from the relay?).

    The member cannot catch up from the control mailbox; it needs a new welcome from an admin.
    """


class NotAdminError(GroupError):
    """Only an admin of the cell may do this."""


class RemovedError(GroupError):
    """This member has been removed from the cell; it can no longer send or change anything."""


class WelcomeRefusedError(MembershipError):
    """A valid welcome that does not answer this invite, or comes after the invite's lifetime.

    It is sealed to this member and signed by the admin, but it is not the answer to the
    request this member is waiting on: an old welcome replayed (issue 9, finding 8).
    """


class WelcomeWindowError(GroupError):
    """An admin asked for a welcome after deleting the epoch's secret (docs/protocol.md §G7).

    An admin keeps an epoch's secret for 10 minutes after entering the epoch, for the
    welcomes of the members its change added. What to do: rotate the epoch (a new secret),
    then make the welcome.
    """


class WelcomeIncompleteError(GroupError):
    """A welcome whose member list continues in pages that were not given (§G7).

    `pages` is how many pages the welcome needs. What to do: wait for the pages the
    admin publishes after the welcome in the join mailbox, then open it with them.
    """

    def __init__(self, message: str, *, pages: int = 0) -> None:
        """Say how many pages the welcome needs."""
        super().__init__(message)
        self.pages = pages
