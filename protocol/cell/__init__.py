"""The cell protocol only members speak: identities, group keys, envelopes, epochs, membership,
invites, joins, message contents and alert roll-ups.

Sans-IO, like the wire protocol it builds on (docs/protocol.md, Parts 2 and 3). The relay never
imports this package (an import-linter contract and tests/test_layering.py check that).
"""

from ._content import (
    GROUP_KINDS,
    MAX_CONTENT,
    Alert,
    Burn,
    Change,
    Content,
    ContentError,
    ContentKind,
    Leave,
    MemberId,
    MembershipChange,
    MessageId,
    PlainMessage,
    Priority,
    Receipt,
    ReceiptState,
    Status,
    StatusReply,
    Step,
    VerificationStep,
    WireContent,
    decode_content,
    new_message_id,
)
from ._envelope import (
    GROUP_KINDS as GROUP_LAYER_KINDS,
)
from ._envelope import (
    MAX_GROUP_PLAINTEXT,
    Kind,
)
from ._errors import (
    BadSignatureError,
    EpochGapError,
    ExpiredError,
    GroupError,
    MalformedError,
    MembershipError,
    NotAdminError,
    NotAMemberError,
    OutOfWindowError,
    PendingOverflowError,
    RemovedError,
    ReplayError,
    StaleControlError,
    StaleEpochError,
    TamperedError,
    UnknownEpochError,
    WelcomeRefusedError,
)
from ._group import (
    DEFAULT_KEY_TTL,
    GRACE_PERIOD,
    CellCrypto,
)
from ._identity import (
    MAX_NAME_BYTES,
    Identity,
    MemberInfo,
)
from ._invite import (
    INVITE_PREFIX,
    Invite,
    InviteChecksumError,
    InviteError,
    InviteExpiredError,
)
from ._membership import (
    MAX_MEMBERS,
    LogEntry,
    Membership,
    Op,
)
from ._membership import (
    Role as MemberRole,
)
from ._outcomes import (
    EpochUpdate,
    Opened,
    Outcome,
    Own,
    Pending,
)
from ._padding import (
    BUCKETS as PADDING_BUCKETS,
)
from ._receipts import RECEIPT_SAMPLE, ReceiptCounts, reporters
from ._rollup import (
    AlertRollup,
    MemberStatus,
    ReportState,
    RollupBook,
    VerificationRecord,
)
from ._safety import (
    format_safety_number,
    safety_number,
)

__all__ = [
    "DEFAULT_KEY_TTL",
    "GRACE_PERIOD",
    "GROUP_KINDS",
    "GROUP_LAYER_KINDS",
    "INVITE_PREFIX",
    "MAX_CONTENT",
    "MAX_GROUP_PLAINTEXT",
    "MAX_MEMBERS",
    "MAX_NAME_BYTES",
    "PADDING_BUCKETS",
    "RECEIPT_SAMPLE",
    "Alert",
    "AlertRollup",
    "BadSignatureError",
    "Burn",
    "CellCrypto",
    "Change",
    "Content",
    "ContentError",
    "ContentKind",
    "EpochGapError",
    "EpochUpdate",
    "ExpiredError",
    "GroupError",
    "Identity",
    "Invite",
    "InviteChecksumError",
    "InviteError",
    "InviteExpiredError",
    "Kind",
    "Leave",
    "LogEntry",
    "MalformedError",
    "MemberId",
    "MemberInfo",
    "MemberRole",
    "MemberStatus",
    "Membership",
    "MembershipChange",
    "MembershipError",
    "MessageId",
    "NotAMemberError",
    "NotAdminError",
    "Op",
    "Opened",
    "OutOfWindowError",
    "Outcome",
    "Own",
    "Pending",
    "PendingOverflowError",
    "PlainMessage",
    "Priority",
    "Receipt",
    "ReceiptCounts",
    "ReceiptState",
    "RemovedError",
    "ReplayError",
    "ReportState",
    "RollupBook",
    "StaleControlError",
    "StaleEpochError",
    "Status",
    "StatusReply",
    "Step",
    "TamperedError",
    "UnknownEpochError",
    "VerificationRecord",
    "VerificationStep",
    "WelcomeRefusedError",
    "WireContent",
    "decode_content",
    "format_safety_number",
    "new_message_id",
    "reporters",
    "safety_number",
]
