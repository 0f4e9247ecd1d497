"""The typed message contents apps see (alerts, status replies, receipts, plain messages).

A *content* is what a member says inside an end-to-end-encrypted group message. The group
layer carries a one-byte *kind* next to the ciphertext (bound into its associated data) and
the content's encoding as the padded plaintext; this module turns the two into one of the
frozen classes below and back (docs/protocol.md §C1).

Kinds 1-4 and 17 are app contents; 5-15 belong to the group layer itself (5 = sender key
distribution, 6 = epoch change) and never reach `decode_content`; 16 is `Leave`, a
member's announcement that it leaves the cell (docs/protocol.md §C9); 17 is a verifier's
step on a report; 24 is a `Burn`, which only an admin may send (the client checks the
sender against the signed membership, docs/protocol.md §C1.6); the others are unassigned
and refused as UNKNOWN_TYPE, so a newer client's new kind is reported, not misread.
`MembershipChange` (kind 0) is made locally by the client from the signed membership log:
it is never sent, and `decode_content` refuses it unless the caller reads its own store
(`allow_local=True`), so a member cannot forge "X was removed by Y".

An encoding is one msgpack map with string keys, the Python field names, every field
present (`None` is nil), nothing else, in any order: the same strict rules as the relay
protocol's messages (docs/protocol.md §4.1), through the same codec doorway. The field
bounds are declared once, as `Annotated` metadata, and checked both by the constructors
(for what an app builds) and by `decode_content` (for what a member sent).

Text is checked for what a terminal or a naive renderer would execute rather than show:
no C0 or C1 control characters (so no ANSI escape sequences, no carriage return that
overwrites a line) except newline and tab in multi-line fields, and no line or paragraph
separators in single-line fields. Bidirectional marks are allowed (right-to-left languages
need them); renderers must isolate each field (docs/protocol.md §C1.3).
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Annotated, ClassVar, Final, NewType, TypeAlias, TypeVar

from .._crypto import blake2b, random_bytes
from .._errors import CellrelayError, ErrorCode, RemoteProtocolError
from ..wire._codec import decode_map, encode_map

if typing.TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "CONTENT_TYPES",
    "GROUP_KINDS",
    "MAX_CONTENT",
    "MAX_ESCALATE_AFTER",
    "MAX_ESCALATE_BELOW",
    "MAX_NAME",
    "MAX_NOTE",
    "MAX_PLACE",
    "MAX_RECEIPT_IDS",
    "MAX_TEXT",
    "MEMBER_ID_SIZE",
    "MESSAGE_ID_SIZE",
    "Alert",
    "Burn",
    "Change",
    "Content",
    "ContentError",
    "ContentFieldSpec",
    "ContentKind",
    "EscalationNote",
    "Leave",
    "MemberId",
    "MembershipChange",
    "MessageId",
    "PlainMessage",
    "Priority",
    "Receipt",
    "ReceiptState",
    "Status",
    "StatusReply",
    "Step",
    "VerificationStep",
    "WireContent",
    "content_field_specs",
    "decode_content",
    "escalation_ref",
    "new_message_id",
]

MessageId = NewType("MessageId", bytes)
MemberId = NewType("MemberId", bytes)

# 128 random bits: collisions among the messages of one cell are out of reach (the birthday
# bound is 2^64 messages), and receipts name up to 100 of them, so short ids matter.
MESSAGE_ID_SIZE: Final = 16
# The group layer's member id: BLAKE2b-128 of the member's two identity public keys
# (protocol/cell/_identity.py, docs/protocol.md Part 2 "Identities").
MEMBER_ID_SIZE: Final = 16
# Text bounds, in characters (code points). An alert is read on a phone in a hurry and must
# fit a small padded envelope: 2,000 characters is a long SMS thread and at most 8,000
# bytes of UTF-8. A place is a street corner or an address, a note one or two sentences,
# a name what fits on one line of a member list.
MAX_TEXT: Final = 2_000
MAX_PLACE: Final = 200
MAX_NOTE: Final = 500
MAX_NAME: Final = 64
# A receipt acknowledges what a member just caught up on; 100 ids is 1.6 KB, and a client
# that caught up on more sends several receipts.
MAX_RECEIPT_IDS: Final = 100
# Larger than any valid encoding (the largest, an alert of 4-byte characters, is under
# 9,000 bytes; tests/protocol/test_content.py checks every kind's maximum), so anything
# bigger is refused before msgpack sees it.
MAX_CONTENT: Final = 16_384
# Escalation (§C10): "fewer than N responding after T seconds". N is bounded by the
# largest cell (128 members, docs/protocol.md §G5) with room, T by a day: an alert that no
# neighbour needs to hear of for a day is not urgent.
MAX_ESCALATE_BELOW: Final = 1_024
MAX_ESCALATE_AFTER: Final = 86_400
# The BLAKE2b personalisation of an escalated alert's `from_ref` (16 bytes).
_ESCALATION_PERSON: Final = b"cellrelay-escref"
# Times: unix seconds or milliseconds in a signed 64-bit integer, what SQLite stores.
_I64: Final = 2**63 - 1


class ContentKind(IntEnum):
    """The one-byte kind the group layer carries next to each content (0 is local only)."""

    MEMBERSHIP = 0  # made locally from the membership log; never sent
    ALERT = 1
    STATUS = 2
    RECEIPT = 3
    PLAIN = 4
    SENDER_KEY = 5  # the group layer's own: a sender key distribution
    EPOCH_CHANGE = 6  # the group layer's own: a new epoch
    ANNOUNCEMENT = 7  # the group layer's own: a signing key announcement
    KEY_UPDATE = 8  # the group layer's own: a member's key update (for admins)
    LEAVE = 16  # a member leaves the cell (docs/protocol.md §C9)
    VERIFICATION = 17  # a dispatcher's step on a report: verifying, confirmed, ...
    ESCALATION = 18  # a liaison's note: an alert went to a neighbouring cell, and how it fares
    BURN = 24  # an admin burns the cell: every member deletes it (§C1.6)


# Reserved for the group layer: decode_content refuses them (the group layer consumes its
# own kinds before app contents are decoded).
GROUP_KINDS: Final = range(5, 16)


class ContentError(CellrelayError, ValueError):
    """A message content is malformed, or an app tried to build an invalid one.

    `code` says what is wrong, with the relay protocol's codes (MISSING_FIELD, TOO_LARGE,
    UNKNOWN_TYPE, ...); the message names the field and sizes, never the text. A content
    error is not a protocol error: it comes from one member, inside an authenticated group
    message, so the client reports and skips that message and keeps its relay connection.
    """

    code: ErrorCode

    def __init__(self, message: str, code: ErrorCode) -> None:
        super().__init__(message)
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args[0]!r}, code={self.code.name})"


class Priority(StrEnum):
    """How urgent an alert is; clients sort and colour by it."""

    INFO = "info"
    URGENT = "urgent"
    EMERGENCY = "emergency"


class Status(StrEnum):
    """A member's answer to an alert."""

    RESPONDING = "responding"  # on the way
    ON_SCENE = "on_scene"
    RESOLVED = "resolved"  # the situation is over
    FALSE_ALARM = "false_alarm"


class Step(StrEnum):
    """A verifier's step on a reported alert (docs/protocol.md §C2, "Verification").

    A report starts *reported*; a dispatcher (or admin) takes it (verifying), says it is
    real (confirmed) or not (false alarm), and closes it (resolved).
    """

    VERIFYING = "verifying"
    CONFIRMED = "confirmed"
    FALSE_ALARM = "false_alarm"
    RESOLVED = "resolved"


class ReceiptState(StrEnum):
    """How far a message got: on the member's device, or seen by the member."""

    DELIVERED = "delivered"
    READ = "read"


class Change(StrEnum):
    """What happened to a member in the membership log."""

    ADDED = "added"
    REMOVED = "removed"  # by an admin
    LEFT = "left"  # the member removed itself
    PROMOTED = "promoted"  # made an admin
    DEMOTED = "demoted"  # no longer an admin


# ---------------------------------------------------------------------------------------
# Field specifications

# Characters a terminal or renderer would act on rather than show: C0 controls, DEL, C1
# controls (0x9B is a one-byte CSI on some terminals), and surrogates (which no UTF-8 can
# carry; refused here so a local str that msgpack cannot encode fails in the constructor).
# Multi-line fields keep newline and tab; single-line fields also refuse U+2028/U+2029.
_BAD_MULTILINE: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_BAD_LINE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class ContentFieldSpec:
    """How one content field is represented and bounded.

    `kind` is one of:

    * "uint": an integer in `lo..hi`;
    * "bytes": bin of length `lo..hi`;
    * "text": a str of `lo..hi` characters, newline and tab allowed;
    * "line": a str of `lo..hi` characters on one line;
    * "choice": a str naming a member of the StrEnum `choices`;
    * "ids": an array of `lo..hi` distinct `MESSAGE_ID_SIZE`-byte bins.

    `optional` admits `None` (msgpack nil) as well. `omissible` (optional fields added
    after a content was first specified) lets the key be absent too, which means `None`;
    the encoder leaves such a key out when it is `None`, so an encoding that does not use
    the field is byte for byte what it was before the field existed (docs/protocol.md §C1.2).
    """

    kind: str
    lo: int = 0
    hi: int = 0
    optional: bool = False
    omissible: bool = False
    choices: type[StrEnum] | None = None
    # value -> member of `choices`: a dict lookup is ~10x faster than iterating the enum.
    members: Mapping[str, StrEnum] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        members = {c.value: c for c in self.choices} if self.choices is not None else {}
        object.__setattr__(self, "members", members)

    def check(self, value: object) -> ErrorCode | None:
        """Return None if `value` satisfies this spec, else the error code that says why."""
        if value is None:
            return None if self.optional else ErrorCode.WRONG_TYPE
        kind = self.kind
        if kind == "uint":
            if type(value) is not int:  # not bool, not float, not an IntEnum
                return ErrorCode.WRONG_TYPE
            return None if self.lo <= value <= self.hi else ErrorCode.OUT_OF_RANGE
        if kind == "bytes":
            if type(value) is not bytes:
                return ErrorCode.WRONG_TYPE
            return self._size(len(value))
        if kind in ("text", "line"):
            if not isinstance(value, str):
                return ErrorCode.WRONG_TYPE
            bad = _BAD_MULTILINE if kind == "text" else _BAD_LINE
            return self._size(len(value)) or (ErrorCode.OUT_OF_RANGE if bad.search(value) else None)
        if kind == "choice":
            if not isinstance(value, str):
                return ErrorCode.WRONG_TYPE
            return None if value in self.members else ErrorCode.OUT_OF_RANGE
        # "ids"
        if type(value) is not tuple:
            return ErrorCode.WRONG_TYPE
        if any(type(v) is not bytes for v in value):
            return ErrorCode.WRONG_TYPE
        problem = self._size(len(value))
        if problem is not None:
            return problem
        if any(len(v) != MESSAGE_ID_SIZE for v in value):
            return ErrorCode.OUT_OF_RANGE
        return ErrorCode.DUPLICATE_FIELD if len(set(value)) != len(value) else None

    def _size(self, n: int) -> ErrorCode | None:
        if n > self.hi:
            return ErrorCode.TOO_LARGE
        return None if n >= self.lo else ErrorCode.OUT_OF_RANGE

    def describe(self) -> str:
        """Return the spec in the words of docs/protocol.md Part 3 (for docs and tests)."""
        unit = {"bytes": " bytes", "text": " chars", "line": " chars, one line", "ids": " ids"}
        if self.kind == "uint":
            text = f"uint {self.lo}..{self.hi}"
        elif self.kind == "choice":
            assert self.choices is not None  # noqa: S101
            text = " | ".join(f'"{c.value}"' for c in self.choices)
        elif self.lo == self.hi:
            text = f"{self.kind} ({self.lo}{unit[self.kind]})"
        else:
            text = f"{self.kind} ({self.lo}..{self.hi}{unit[self.kind]})"
        if self.omissible:
            return text + ", nil or absent"
        return text + " or nil" if self.optional else text


def _uint(hi: int, lo: int = 0) -> ContentFieldSpec:
    return ContentFieldSpec("uint", lo, hi)


def _text(hi: int, *, optional: bool = False) -> ContentFieldSpec:
    return ContentFieldSpec("text", 1, hi, optional=optional)


def _line(hi: int, *, optional: bool = False) -> ContentFieldSpec:
    return ContentFieldSpec("line", 1, hi, optional=optional)


def _later(kind: str, hi: int, lo: int = 1) -> ContentFieldSpec:
    """A field added later: nil or absent when unused (see ContentFieldSpec.omissible)."""
    return ContentFieldSpec(kind, lo, hi, optional=True, omissible=True)


def _choice(choices: type[StrEnum]) -> ContentFieldSpec:
    return ContentFieldSpec("choice", choices=choices)


IdField = Annotated[MessageId, ContentFieldSpec("bytes", MESSAGE_ID_SIZE, MESSAGE_ID_SIZE)]
MemberField = Annotated[MemberId, ContentFieldSpec("bytes", MEMBER_ID_SIZE, MEMBER_ID_SIZE)]
SentAtMs = Annotated[int, _uint(_I64)]  # unix milliseconds, by the sender's clock
UnixTime = Annotated[int, _uint(_I64)]  # unix seconds
Name = Annotated[str, _line(MAX_NAME)]


def new_message_id() -> MessageId:
    """Return a fresh random message id (16 bytes from libsodium's CSPRNG)."""
    return MessageId(random_bytes(MESSAGE_ID_SIZE))


def escalation_ref(alert_id: bytes) -> bytes:
    """The `from_ref` of an alert escalated from the alert `alert_id` (docs/protocol.md §C10).

    BLAKE2b-128 of the alert id, personalised: a member of the origin cell (who knows the
    alert id) recognises the escalated copy; the neighbouring cell learns nothing of it.
    """
    return blake2b(alert_id, size=16, person=_ESCALATION_PERSON)


# ---------------------------------------------------------------------------------------
# Contents


class _Content:
    """Base class of every content: its kind, its validation and its encoding."""

    __slots__ = ()
    KIND: ClassVar[ContentKind]

    def __post_init__(self) -> None:
        cls = type(self)
        for name, spec in _SPECS[cls]:
            value = getattr(self, name)
            if spec.kind == "ids" and isinstance(value, list):
                value = tuple(value)  # accept a list from callers; keep the immutable form
            object.__setattr__(self, name, _checked(cls, name, spec, value))
        self._check_relations()

    def _check_relations(self) -> None:
        """Check the rules that tie fields together (none by default); raise ContentError."""

    def encode(self) -> bytes:
        """Return this content's encoding: a msgpack map of every field (docs §1.2)."""
        wire: dict[str, object] = {}
        for name, spec in _SPECS[type(self)]:
            value = getattr(self, name)
            if value is None and spec.omissible:
                continue  # absent: the encoding is as before the field existed
            if spec.choices is not None and value is not None:
                value = str(value.value)
            wire[name] = value
        return encode_map(wire)


def _checked(cls: type[_Content], name: str, spec: ContentFieldSpec, value: object) -> object:
    """Return `value` as the field holds it (a choice as its enum member), or raise."""
    code = spec.check(value)
    if code is not None:
        note = _size_note(spec, value, code)
        raise ContentError(f"{cls.__name__}.{name}: {code.name}{note}", code)
    if spec.members and value is not None:
        return spec.members[value]  # type: ignore[index]
    return value


def _size_note(spec: ContentFieldSpec, value: object, code: ErrorCode) -> str:
    # Sizes help whoever fixes the sender; the text itself never goes into the message.
    if not isinstance(value, str | bytes | tuple) or spec.kind in ("uint", "choice"):
        return ""
    n = len(value)
    if code is ErrorCode.TOO_LARGE or (code is ErrorCode.OUT_OF_RANGE and n < spec.lo):
        unit = "chars" if isinstance(value, str) else "ids" if spec.kind == "ids" else "bytes"
        return f" ({n} {unit}, allowed {spec.lo}..{spec.hi})"
    if code is ErrorCode.DUPLICATE_FIELD:
        return " (an id is repeated)"
    if code is ErrorCode.OUT_OF_RANGE and spec.kind == "ids":
        return f" (an id is not {MESSAGE_ID_SIZE} bytes)"
    if code is ErrorCode.OUT_OF_RANGE:
        return " (a control character or line break it may not hold)"
    return ""


CONTENT_TYPES: Final[dict[int, type[_Content]]] = {}
_SPECS: dict[type[_Content], tuple[tuple[str, ContentFieldSpec], ...]] = {}

C = TypeVar("C", bound=type[_Content])


def _content(kind: ContentKind) -> Callable[[C], C]:
    """Register a content class under its kind and compile its field specs."""

    def register(cls: C) -> C:
        hints = typing.get_type_hints(cls, include_extras=True)
        specs = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            metadata = getattr(hints[f.name], "__metadata__", ())
            spec = next((m for m in metadata if isinstance(m, ContentFieldSpec)), None)
            if spec is None:  # pragma: no cover - a programming error caught at import
                raise TypeError(f"{cls.__name__}.{f.name} has no ContentFieldSpec")
            specs.append((f.name, spec))
        cls.KIND = kind
        CONTENT_TYPES[kind] = cls
        _SPECS[cls] = tuple(specs)
        return cls

    return register


def content_field_specs(cls: type[_Content]) -> tuple[tuple[str, ContentFieldSpec], ...]:
    """Return `(name, spec)` for each field of a content class, in document order."""
    return _SPECS[cls]


@_content(ContentKind.ALERT)
@dataclass(frozen=True, slots=True, kw_only=True)
class Alert(_Content):
    """An urgent, expiring broadcast to the cell: what, how urgent, where, until when.

    The alert's id is its `message_id` (`alert_id` reads it): status replies name it.
    `expires_at` (unix seconds) must be after `sent_at_ms`; the client also gives the
    envelope that carries the alert this expiry, so the alert ceases to exist then.
    """

    message_id: IdField = field(default_factory=new_message_id)
    sent_at_ms: SentAtMs
    text: Annotated[str, _text(MAX_TEXT)] = field(repr=False)
    priority: Annotated[Priority, _choice(Priority)]
    place: Annotated[str | None, _line(MAX_PLACE, optional=True)] = field(default=None, repr=False)
    expires_at: UnixTime
    # Added for escalation (§C10); each may be absent. This alert's own "fewer than
    # `escalate_below` members responding after `escalate_after` seconds" (the cell's
    # setting otherwise), and, on an alert a liaison escalated from another cell, the
    # label it gave that cell and `escalation_ref` of the alert there.
    escalate_below: Annotated[int | None, _later("uint", MAX_ESCALATE_BELOW, 0)] = None
    escalate_after: Annotated[int | None, _later("uint", MAX_ESCALATE_AFTER)] = None
    from_label: Annotated[str | None, _later("line", MAX_NAME)] = None
    from_ref: Annotated[bytes | None, _later("bytes", 16, 16)] = field(default=None, repr=False)

    def _check_relations(self) -> None:
        if self.expires_at * 1000 <= self.sent_at_ms:
            raise ContentError("Alert.expires_at is not after sent_at_ms", ErrorCode.OUT_OF_RANGE)
        if (self.from_label is None) != (self.from_ref is None):
            raise ContentError(
                "Alert.from_label and from_ref: both or neither", ErrorCode.MISSING_FIELD
            )

    @property
    def alert_id(self) -> MessageId:
        """The id status replies use to name this alert (its message id)."""
        return self.message_id


@_content(ContentKind.STATUS)
@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReply(_Content):
    """A member's answer to the alert `alert_id`; a later `sent_at_ms` replaces an earlier one."""

    message_id: IdField = field(default_factory=new_message_id)
    sent_at_ms: SentAtMs
    alert_id: IdField
    status: Annotated[Status, _choice(Status)]
    note: Annotated[str | None, _text(MAX_NOTE, optional=True)] = field(default=None, repr=False)


@_content(ContentKind.VERIFICATION)
@dataclass(frozen=True, slots=True, kw_only=True)
class VerificationStep(_Content):
    """A verifier's step on the alert `alert_id`: verifying, confirmed, false alarm, resolved.

    Only a dispatcher's or an admin's step counts; every member's client refuses anyone
    else's and reports it as a security event (docs/protocol.md §C2, "Verification").
    """

    message_id: IdField = field(default_factory=new_message_id)
    sent_at_ms: SentAtMs
    alert_id: IdField
    step: Annotated[Step, _choice(Step)]
    note: Annotated[str | None, _text(MAX_NOTE, optional=True)] = field(default=None, repr=False)


@_content(ContentKind.ESCALATION)
@dataclass(frozen=True, slots=True, kw_only=True)
class EscalationNote(_Content):
    """A liaison's word on the alert `alert_id`: it went to the neighbouring cell `label`,
    where `responding` and `on_scene` members answer it (a later note replaces an earlier).

    `outcome` is the neighbour's close (resolved or false alarm), else nil. Counted only
    from an admin, a dispatcher or a liaison (docs/protocol.md §C10).
    """

    message_id: IdField = field(default_factory=new_message_id)
    sent_at_ms: SentAtMs
    alert_id: IdField
    label: Annotated[str, _line(MAX_NAME)]
    responding: Annotated[int, _uint(MAX_ESCALATE_BELOW)] = 0
    on_scene: Annotated[int, _uint(MAX_ESCALATE_BELOW)] = 0
    outcome: Annotated[Status | None, ContentFieldSpec("choice", choices=Status, optional=True)] = (
        None
    )

    def _check_relations(self) -> None:
        if self.outcome not in (None, Status.RESOLVED, Status.FALSE_ALARM):
            raise ContentError(
                "EscalationNote.outcome: resolved, false_alarm or nil", ErrorCode.OUT_OF_RANGE
            )


@_content(ContentKind.RECEIPT)
@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt(_Content):
    """The sender has received (or read) the messages `message_ids`."""

    message_id: IdField = field(default_factory=new_message_id)
    sent_at_ms: SentAtMs
    message_ids: Annotated[tuple[MessageId, ...], ContentFieldSpec("ids", 1, MAX_RECEIPT_IDS)]
    state: Annotated[ReceiptState, _choice(ReceiptState)]


@_content(ContentKind.PLAIN)
@dataclass(frozen=True, slots=True, kw_only=True)
class PlainMessage(_Content):
    """An ordinary text message to the cell."""

    message_id: IdField = field(default_factory=new_message_id)
    sent_at_ms: SentAtMs
    text: Annotated[str, _text(MAX_TEXT)] = field(repr=False)


@_content(ContentKind.BURN)
@dataclass(frozen=True, slots=True, kw_only=True)
class Burn(_Content):
    """An admin burns the cell: every member's client deletes the cell's local state.

    It says nothing else: who sent it is what matters, and a client acts on it only when
    the sender is an admin in the signed membership it holds (docs/protocol.md §C1.6).
    """

    message_id: IdField = field(default_factory=new_message_id)
    sent_at_ms: SentAtMs


@_content(ContentKind.MEMBERSHIP)
@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipChange(_Content):
    """A change to the cell's membership, made by the client from the signed membership log.

    Never sent as a message (see the module docstring); it is a content so that apps get
    one union of events. `by_id` is the admin who signed the change (the member itself
    for `LEFT`); `message_id` is chosen by the client, e.g. from the log entry's hash.
    """

    message_id: IdField = field(default_factory=new_message_id)
    sent_at_ms: SentAtMs
    change: Annotated[Change, _choice(Change)]
    member_id: MemberField
    member_name: Name = field(repr=False)
    by_id: MemberField
    by_name: Name = field(repr=False)


@_content(ContentKind.LEAVE)
@dataclass(frozen=True, slots=True, kw_only=True)
class Leave(_Content):
    """The sender leaves the cell: its client forgets the cell right after sending this.

    It says nothing but who (the group layer's signed sender) and when; the cell's admins
    remove the sender (a new epoch it cannot read) and every member shows that it left
    (docs/protocol.md §C9). Apps never see it as such: clients turn it into a
    `MembershipChange` of `Change.LEFT`.
    """

    message_id: IdField = field(default_factory=new_message_id)
    sent_at_ms: SentAtMs


WireContent: TypeAlias = (
    Alert | StatusReply | Receipt | PlainMessage | VerificationStep | EscalationNote
)
"""The contents a member can send (a `Leave` is sent by `Cell.leave` only, a `Burn` by `Cell.burn`)."""
Content: TypeAlias = (
    Alert
    | StatusReply
    | Receipt
    | PlainMessage
    | VerificationStep
    | EscalationNote
    | MembershipChange
)
"""Every content an app sees (a `Leave` reaches apps as a
`MembershipChange`, a `Burn` as the client's `CellBurned` event)."""


def decode_content(kind: int, data: bytes, *, allow_local: bool = False) -> Content | Leave | Burn:
    """Decode the content of kind `kind` from `data`, strictly.

    `allow_local` admits kind 0 (`MembershipChange`), for a client reading back its own
    encrypted store; what arrives from members must never set it.

    Raises:
        ContentError: UNKNOWN_TYPE (a kind this revision does not define),
            UNEXPECTED_MESSAGE (a group-layer kind, or kind 0 without `allow_local`),
            TOO_LARGE (over `MAX_CONTENT` bytes, or a field over its bound), or the codec's
            and field checks' codes: MALFORMED, WRONG_TYPE, MISSING_FIELD, EXTRA_FIELD,
            DUPLICATE_FIELD, OUT_OF_RANGE, TOO_DEEP, EXTENSION_TYPE.
    """
    if kind in GROUP_KINDS:
        raise ContentError(f"kind {kind} belongs to the group layer", ErrorCode.UNEXPECTED_MESSAGE)
    if kind == ContentKind.MEMBERSHIP and not allow_local:
        raise ContentError("membership changes are never sent", ErrorCode.UNEXPECTED_MESSAGE)
    cls = CONTENT_TYPES.get(kind)
    if cls is None:
        raise ContentError(f"unknown content kind {kind}", ErrorCode.UNKNOWN_TYPE)
    if len(data) > MAX_CONTENT:
        raise ContentError(f"content of {len(data)} bytes", ErrorCode.TOO_LARGE)
    try:
        fields = decode_map(data)
    except RemoteProtocolError as exc:
        raise ContentError(f"{cls.__name__}: {exc.args[0]}", exc.code) from None
    specs = _SPECS[cls]
    present = len(specs)
    for name, spec in specs:
        if name not in fields:
            if not spec.omissible:
                raise ContentError(f"{cls.__name__} lacks {name}", ErrorCode.MISSING_FIELD)
            present -= 1
    if len(fields) != present:
        raise ContentError(
            f"{cls.__name__} has {len(fields) - present} extra fields", ErrorCode.EXTRA_FIELD
        )
    # Check the wire values as they are (the constructor would accept a list where an
    # array of ids belongs, and an empty nested map decodes to one), then set them
    # directly: the constructor would only check everything again.
    content = cls.__new__(cls)
    for name, spec in specs:
        object.__setattr__(content, name, _checked(cls, name, spec, fields.get(name)))
    content._check_relations()
    return typing.cast("Content | Leave | Burn", content)
