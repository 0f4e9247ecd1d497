"""cellrelay's sans-IO protocol: wire messages, codec, framing, Noise and the connection.

Nothing here does I/O, reads a clock or imports trio. See docs/protocol.md for the
specification these modules implement.
"""

import importlib
from typing import TYPE_CHECKING

from ._address import DEFAULT_PORT, AddressError, RelayAddress
from ._capability import (
    AdminMessage,
    CapabilityKey,
    admin_signing_input,
    auth_signing_input,
    sign_admin,
    verify_admin,
    verify_auth,
)
from ._codec import decode_messages, decode_single, encode_message
from ._connection import (
    CLIENT_MESSAGES,
    MAX_PLAINTEXT,
    NOISE_PROTOCOL,
    PROLOGUE,
    REKEY_INTERVAL,
    RELAY_MESSAGES,
    TRANSITIONS,
    Connection,
    EncodedMessage,
    Role,
    State,
)
from ._content import (
    GROUP_KINDS,
    MAX_CONTENT,
    Alert,
    Change,
    Content,
    ContentError,
    ContentKind,
    MemberId,
    MembershipChange,
    MessageId,
    PlainMessage,
    Priority,
    Receipt,
    ReceiptState,
    Status,
    StatusReply,
    WireContent,
    decode_content,
    new_message_id,
)
from ._errors import (
    CellrelayError,
    CryptoError,
    ErrorCode,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from ._framing import MAX_FRAME, FrameDecoder, encode_frame
from ._invite import INVITE_PREFIX, Invite, InviteError
from ._messages import (
    MAX_ENVELOPE,
    MAX_PAGE_ITEMS,
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Auth,
    Create,
    Created,
    Delete,
    Deliver,
    Error,
    Fetch,
    Goodbye,
    Hello,
    MailboxId,
    Message,
    Ok,
    Page,
    PageItem,
    Ping,
    Pong,
    Publish,
    Published,
    Revoked,
    Rotate,
    SetLimits,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Welcome,
)
from ._noise import CipherState, HandshakeState, KeyPair, NonceExhaustedError
from ._rollup import AlertRollup, MemberStatus, RollupBook

__all__ = [
    "CLIENT_MESSAGES",
    "DEFAULT_PORT",
    "MAX_ENVELOPE",
    "MAX_FRAME",
    "MAX_PAGE_ITEMS",
    "MAX_PLAINTEXT",
    "MESSAGE_TYPES",
    "NOISE_PROTOCOL",
    "PROLOGUE",
    "PROTOCOL_VERSION",
    "REKEY_INTERVAL",
    "RELAY_MESSAGES",
    "TRANSITIONS",
    "AddressError",
    "AdminMessage",
    "Auth",
    "CapabilityKey",
    "CellrelayError",
    "CipherState",
    "Connection",
    "Create",
    "Created",
    "CryptoError",
    "Delete",
    "Deliver",
    "EncodedMessage",
    "Error",
    "ErrorCode",
    "Fetch",
    "FrameDecoder",
    "Goodbye",
    "HandshakeState",
    "Hello",
    "KeyPair",
    "LocalProtocolError",
    "MailboxId",
    "Message",
    "NonceExhaustedError",
    "Ok",
    "Page",
    "PageItem",
    "Ping",
    "Pong",
    "ProtocolError",
    "Publish",
    "Published",
    "RelayAddress",
    "RemoteProtocolError",
    "Revoked",
    "Role",
    "Rotate",
    "SetLimits",
    "State",
    "Subscribe",
    "Subscribed",
    "Unsubscribe",
    "Welcome",
    "admin_signing_input",
    "auth_signing_input",
    "decode_messages",
    "decode_single",
    "encode_frame",
    "encode_message",
    "sign_admin",
    "verify_admin",
    "verify_auth",
]

# -- message contents, alert roll-ups and invites (docs/protocol.md Part 3) ----------
__all__ += [
    "GROUP_KINDS",
    "INVITE_PREFIX",
    "MAX_CONTENT",
    "Alert",
    "AlertRollup",
    "Change",
    "Content",
    "ContentError",
    "ContentKind",
    "Invite",
    "InviteError",
    "MemberId",
    "MemberStatus",
    "MembershipChange",
    "MessageId",
    "PlainMessage",
    "Priority",
    "Receipt",
    "ReceiptState",
    "RollupBook",
    "Status",
    "StatusReply",
    "WireContent",
    "decode_content",
    "new_message_id",
]

# -- group end-to-end encryption (docs/protocol.md, Part 2) --------------------------
# Loaded on first use (PEP 562), not here: the relay imports this package for the wire
# protocol, and should not even load code that decrypts what it forwards (DESIGN.md;
# tests/test_layering.py checks that importing the relay leaves these modules unloaded).
if TYPE_CHECKING:
    from ._envelope import GROUP_KINDS as GROUP_LAYER_KINDS
    from ._envelope import MAX_GROUP_PLAINTEXT, Kind
    from ._group import DEFAULT_KEY_TTL, GRACE_PERIOD, CellCrypto
    from ._group_errors import (
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
    )
    from ._identity import MAX_NAME_BYTES, Identity, MemberInfo
    from ._membership import MAX_MEMBERS, LogEntry, Membership, Op
    from ._membership import Role as MemberRole
    from ._outcomes import EpochUpdate, Opened, Outcome, Own, Pending
    from ._padding import BUCKETS as PADDING_BUCKETS

_GROUP_EXPORTS: dict[str, tuple[str, str]] = {
    "GROUP_LAYER_KINDS": ("._envelope", "GROUP_KINDS"),
    "MAX_GROUP_PLAINTEXT": ("._envelope", "MAX_GROUP_PLAINTEXT"),
    "Kind": ("._envelope", "Kind"),
    "DEFAULT_KEY_TTL": ("._group", "DEFAULT_KEY_TTL"),
    "GRACE_PERIOD": ("._group", "GRACE_PERIOD"),
    "CellCrypto": ("._group", "CellCrypto"),
    **{
        name: ("._group_errors", name)
        for name in (
            "BadSignatureError",
            "EpochGapError",
            "ExpiredError",
            "GroupError",
            "MalformedError",
            "MembershipError",
            "NotAdminError",
            "NotAMemberError",
            "OutOfWindowError",
            "PendingOverflowError",
            "RemovedError",
            "ReplayError",
            "StaleControlError",
            "StaleEpochError",
            "TamperedError",
            "UnknownEpochError",
        )
    },
    "MAX_NAME_BYTES": ("._identity", "MAX_NAME_BYTES"),
    "Identity": ("._identity", "Identity"),
    "MemberInfo": ("._identity", "MemberInfo"),
    "MAX_MEMBERS": ("._membership", "MAX_MEMBERS"),
    "LogEntry": ("._membership", "LogEntry"),
    "Membership": ("._membership", "Membership"),
    "Op": ("._membership", "Op"),
    "MemberRole": ("._membership", "Role"),
    **{
        name: ("._outcomes", name)
        for name in ("EpochUpdate", "Opened", "Outcome", "Own", "Pending")
    },
    "PADDING_BUCKETS": ("._padding", "BUCKETS"),
}


def __getattr__(name: str) -> object:
    """Import a group-encryption name on first use (see the comment above `_GROUP_EXPORTS`)."""
    try:
        module, attribute = _GROUP_EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), attribute)
    globals()[name] = value
    return value


__all__ += [
    "DEFAULT_KEY_TTL",
    "GRACE_PERIOD",
    "GROUP_LAYER_KINDS",
    "MAX_GROUP_PLAINTEXT",
    "MAX_MEMBERS",
    "MAX_NAME_BYTES",
    "PADDING_BUCKETS",
    "BadSignatureError",
    "CellCrypto",
    "EpochGapError",
    "EpochUpdate",
    "ExpiredError",
    "GroupError",
    "Identity",
    "Kind",
    "LogEntry",
    "MalformedError",
    "MemberInfo",
    "MemberRole",
    "Membership",
    "MembershipError",
    "NotAMemberError",
    "NotAdminError",
    "Op",
    "Opened",
    "OutOfWindowError",
    "Outcome",
    "Own",
    "Pending",
    "PendingOverflowError",
    "RemovedError",
    "ReplayError",
    "StaleControlError",
    "StaleEpochError",
    "TamperedError",
    "UnknownEpochError",
]
