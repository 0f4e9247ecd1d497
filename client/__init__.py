"""cellrelay's client library: identities, cells, alerts and replies, end-to-end encrypted.

Async (Trio):

```python
async with open_client(passphrase) as client:
    cell = client.cell("Eastside")
    await cell.send_alert("Agents at 14th & Main", priority="urgent", place="14th & Main")
    async for event in cell.events():
        ...
```

Blocking, for programs that are not async:

```python
with BlockingClient.open(passphrase) as client:
    client.cell("Eastside").send_alert("Agents at 14th & Main", priority="urgent")
```

docs/client-guide.md is the tutorial and the reference of every name exported here. The
message contents (`Alert`, `StatusReply`, ...) and roll-ups are the protocol package's,
re-exported so an app needs only this package.
"""

from cellrelay.protocol.cell import (
    Alert,
    AlertRollup,
    Change,
    Content,
    ContentError,
    Invite,
    InviteError,
    MembershipChange,
    MemberStatus,
    PlainMessage,
    Priority,
    Receipt,
    ReceiptCounts,
    ReceiptState,
    ReportState,
    Status,
    StatusReply,
    Step,
    VerificationRecord,
    VerificationStep,
)
from cellrelay.protocol.wire import RelayAddress

from ._blocking import (
    DEFAULT_TIMEOUT,
    BlockingCell,
    BlockingClient,
    ClientClosedError,
    EventStream,
    Subscription,
)
from ._cell_admin import Cell, RelayUnavailableError
from ._cell_member import CellError, ChannelError, MailboxFullError
from ._client import Client, create_identity, open_client
from ._events import (
    AlertReceived,
    CellBurned,
    CellEvent,
    CellGone,
    CellRole,
    ClockWarning,
    EpochStale,
    EquivocationDetected,
    EscalationReceived,
    FloodDetected,
    JoinRequested,
    Member,
    MembershipChanged,
    MessageReceived,
    MessagesMissing,
    MessagesRecovered,
    MuteChanged,
    MutedAlertReceived,
    ReceiptReceived,
    ReceiptsCounted,
    RoleChanged,
    SecurityWarning,
    SendFailed,
    Sent,
    StatusReceived,
    VerificationReceived,
    VerifiedKeyChanged,
)
from ._keystore import (
    KeystoreBusyError,
    KeystoreError,
    KeystoreExistsError,
    WrongPassphraseError,
    default_data_dir,
)
from ._link import LinkClosedError, RelayKeyMismatchError, RelayRefusedError
from ._panic import (
    LocalStateDestroyed,
    clear_duress_passphrase,
    destroy_local_state,
    set_duress_passphrase,
)
from ._qr import invite_qr_terminal, write_invite_png

__all__ = [
    "DEFAULT_TIMEOUT",
    "Alert",
    "AlertReceived",
    "AlertRollup",
    "BlockingCell",
    "BlockingClient",
    "Cell",
    "CellBurned",
    "CellError",
    "CellEvent",
    "CellGone",
    "CellRole",
    "Change",
    "ChannelError",
    "Client",
    "ClientClosedError",
    "ClockWarning",
    "Content",
    "ContentError",
    "EpochStale",
    "EquivocationDetected",
    "EscalationReceived",
    "EventStream",
    "FloodDetected",
    "Invite",
    "InviteError",
    "JoinRequested",
    "KeystoreBusyError",
    "KeystoreError",
    "KeystoreExistsError",
    "LinkClosedError",
    "LocalStateDestroyed",
    "MailboxFullError",
    "Member",
    "MemberStatus",
    "MembershipChange",
    "MembershipChanged",
    "MessageReceived",
    "MessagesMissing",
    "MessagesRecovered",
    "MuteChanged",
    "MutedAlertReceived",
    "PlainMessage",
    "Priority",
    "Receipt",
    "ReceiptCounts",
    "ReceiptReceived",
    "ReceiptState",
    "ReceiptsCounted",
    "RelayAddress",
    "RelayKeyMismatchError",
    "RelayRefusedError",
    "RelayUnavailableError",
    "ReportState",
    "RoleChanged",
    "SecurityWarning",
    "SendFailed",
    "Sent",
    "Status",
    "StatusReceived",
    "StatusReply",
    "Step",
    "Subscription",
    "VerificationReceived",
    "VerificationRecord",
    "VerificationStep",
    "VerifiedKeyChanged",
    "WrongPassphraseError",
    "clear_duress_passphrase",
    "create_identity",
    "default_data_dir",
    "destroy_local_state",
    "invite_qr_terminal",
    "open_client",
    "set_duress_passphrase",
    "write_invite_png",
]
