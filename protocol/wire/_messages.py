"""Every message of the cellrelay wire protocol, as typed, validated, immutable objects.

A message is one msgpack map with string keys: `"t"` names its type and every other key
is one field of the class below, spelled as in Python (docs/protocol.md §4 lists them).
The field types are declared once, as `Annotated` metadata on the dataclass fields; the
constructor checks them (raising `LocalProtocolError`) and the codec in `_codec.py` checks
received messages against the same declarations (raising `RemoteProtocolError`). So what we
can send and what we accept cannot drift apart.

This module knows nothing about msgpack, directions or states: `_codec.py` turns messages
into bytes and back, `_connection.py` decides who may send what when.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Final, NewType, TypeVar

from .._errors import ErrorCode, LocalProtocolError

if typing.TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "MAX_ENVELOPE",
    "MAX_PAGE_ITEMS",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "TTL_TOLERANCE",
    "Auth",
    "Create",
    "Created",
    "Delete",
    "Deliver",
    "Error",
    "Fetch",
    "FieldSpec",
    "Goodbye",
    "Hello",
    "MailboxId",
    "Message",
    "Ok",
    "Page",
    "PageItem",
    "Ping",
    "Pong",
    "Publish",
    "Published",
    "Revoked",
    "Rotate",
    "SetLimits",
    "Subscribe",
    "Subscribed",
    "Unsubscribe",
    "Welcome",
    "field_specs",
]

PROTOCOL_VERSION: Final = 1

MailboxId = NewType("MailboxId", bytes)

# The largest envelope the protocol can carry. A Deliver of one maximal envelope must fit in
# one transport frame: 65,535 - 16 (AEAD tag) = 65,519 bytes of plaintext, minus the map
# header, keys, the mailbox id and integers (under 100 bytes). 60,000 leaves room and is a
# round number. Relays usually configure a much lower limit (Welcome.max_envelope).
MAX_ENVELOPE: Final = 60_000
# A Page must fit in one frame too; the relay fills it by bytes, this caps the count.
MAX_PAGE_ITEMS: Final = 256
# How far past "now + maximum TTL" a publish's expires_at may be (docs/protocol.md §7): a
# client that computes it from its own clock, a little fast, or from the relay's time
# learned at the handshake a while ago, is not refused for a second's difference.
TTL_TOLERANCE: Final = 60
MAX_SECRET: Final = 64  # creation secrets: 32 random bytes is plenty; 64 leaves room
U16: Final = 2**16 - 1
U32: Final = 2**32 - 1
U64: Final = 2**64 - 1

# ---------------------------------------------------------------------------------------
# Field specifications


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """How one field is represented and bounded on the wire.

    `kind` is one of "uint", "bytes", "choice", "bool", "items". For "uint" the value
    must lie in `lo..hi`; for "bytes" the length must; "choice" lists its allowed strings;
    "items" is a list of at most `hi` `PageItem`s.
    """

    kind: str
    lo: int = 0
    hi: int = 0
    choices: tuple[str, ...] = ()

    def check(self, value: object) -> ErrorCode | None:
        """Return None if `value` satisfies this spec, else the error code that says why."""
        kind = self.kind
        if kind == "uint":
            # bool is an int subclass: refuse it. IntEnum members (ErrorCode) are fine.
            if not isinstance(value, int) or type(value) is bool:
                return ErrorCode.WRONG_TYPE
            return None if self.lo <= value <= self.hi else ErrorCode.OUT_OF_RANGE
        if kind == "bytes":
            if type(value) is not bytes:
                return ErrorCode.WRONG_TYPE
            n = len(value)
            if n > self.hi:
                return ErrorCode.TOO_LARGE
            return None if n >= self.lo else ErrorCode.OUT_OF_RANGE
        if kind == "choice":
            if type(value) is not str:
                return ErrorCode.WRONG_TYPE
            return None if value in self.choices else ErrorCode.OUT_OF_RANGE
        if kind == "bool":
            return None if type(value) is bool else ErrorCode.WRONG_TYPE
        # "items": only reachable from local construction; the codec decodes items itself.
        if type(value) is not tuple or not all(type(v) is PageItem for v in value):
            return ErrorCode.WRONG_TYPE
        return None if len(value) <= self.hi else ErrorCode.TOO_LARGE

    def predicate(self) -> Callable[[object], bool] | None:
        """Return a fast test that is True only for values `check` accepts (None for "items").

        The codec's fast path (`_codec.py`) calls it for every field of every received
        message, so it is one closure with no dispatch on `kind`: `check` costs about
        0.4 µs per field, this about 0.1. It may refuse a value `check` would accept (an
        `IntEnum` member, which msgpack never produces; the codec then asks `check` for
        the exact error), but it never accepts a value `check` refuses, and
        tests/protocol/test_codec.py holds it to that.
        """
        lo, hi = self.lo, self.hi
        if self.kind == "uint":
            return lambda value: type(value) is int and lo <= value <= hi
        if self.kind == "bytes":
            return lambda value: type(value) is bytes and lo <= len(value) <= hi
        if self.kind == "choice":
            choices = frozenset(self.choices)
            return lambda value: type(value) is str and value in choices
        if self.kind == "bool":
            return lambda value: type(value) is bool
        return None


def _uint(hi: int, lo: int = 0) -> FieldSpec:
    return FieldSpec("uint", lo, hi)


def _bytes(lo: int, hi: int | None = None) -> FieldSpec:
    return FieldSpec("bytes", lo, lo if hi is None else hi)


RequestId = Annotated[int, _uint(U32)]  # chosen by the client, echoed by the relay
Seq = Annotated[int, _uint(U64)]  # relay-assigned, per mailbox, from 1
UnixTime = Annotated[int, _uint(U64)]  # seconds since the epoch
Code = Annotated[int, _uint(U16)]  # an ErrorCode; unknown codes are accepted (newer peers)
Counter = Annotated[int, _uint(2**63 - 1)]  # signed 64-bit: what SQLite stores
Mailbox = Annotated[MailboxId, _bytes(16)]
PublicKey = Annotated[bytes, _bytes(32)]
Signature = Annotated[bytes, _bytes(64)]
Envelope = Annotated[bytes, _bytes(1, MAX_ENVELOPE)]

# ---------------------------------------------------------------------------------------
# Messages


class Message:
    """Base class of every wire message; `TYPE` is the value of its `"t"` key."""

    __slots__ = ()
    TYPE: ClassVar[str]


MESSAGE_TYPES: Final[dict[str, type[Message]]] = {}
_SPECS: dict[type[Message], tuple[tuple[str, FieldSpec], ...]] = {}

M = TypeVar("M", bound=type[Message])


def _message(type_name: str) -> Callable[[M], M]:
    """Register a message class under its wire type name and compile its field specs."""

    def register(cls: M) -> M:
        hints = typing.get_type_hints(cls, include_extras=True)
        specs = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            metadata = getattr(hints[f.name], "__metadata__", ())
            spec = next((m for m in metadata if isinstance(m, FieldSpec)), None)
            if spec is None:  # pragma: no cover - a programming error caught at import
                raise TypeError(f"{cls.__name__}.{f.name} has no FieldSpec")
            specs.append((f.name, spec))
        cls.TYPE = type_name
        MESSAGE_TYPES[type_name] = cls
        _SPECS[cls] = tuple(specs)
        return cls

    return register


def field_specs(cls: type[Message]) -> tuple[tuple[str, FieldSpec], ...]:
    """Return `(name, spec)` for each field of `cls`, in wire-document order."""
    return _SPECS[cls]


class _Validated(Message):
    __slots__ = ()

    def __post_init__(self) -> None:
        for name, spec in _SPECS[type(self)]:
            code = spec.check(getattr(self, name))
            if code is not None:
                raise LocalProtocolError(
                    f"{type(self).__name__}.{name} is invalid ({code.name})", code
                )


# -- handshake payloads ---------------------------------------------------------------


@_message("hello")
@dataclass(frozen=True, slots=True, kw_only=True)
class Hello(_Validated):
    """The client's first words, inside Noise handshake message 1.

    `v` is the highest protocol revision the client speaks (at least 1); the relay answers
    with the revision both will use in `Welcome.v` (docs/protocol.md §1.2).
    """

    v: Annotated[int, _uint(U16, 1)] = PROTOCOL_VERSION


@_message("welcome")
@dataclass(frozen=True, slots=True, kw_only=True)
class Welcome(_Validated):
    """The relay's answer inside Noise handshake message 2: its clock and its limits."""

    v: Annotated[int, _uint(U16, 1)] = PROTOCOL_VERSION  # the negotiated revision
    time_ms: Annotated[int, _uint(U64)]  # the relay's clock, for expires_at on skewed clients
    max_envelope: Annotated[int, _uint(MAX_ENVELOPE, 1)]
    max_ttl: Annotated[int, _uint(U32, 1)]  # seconds
    ping_interval: Annotated[int, _uint(U32, 1)]  # seconds; silence for 3x this is a dead link


# -- requests (client to relay) ---------------------------------------------------------


@_message("create")
@dataclass(frozen=True, slots=True, kw_only=True)
class Create(_Validated):
    """Create a mailbox guarded by three capability public keys (Ed25519)."""

    id: RequestId
    write_key: PublicKey
    read_key: PublicKey
    admin_key: PublicKey
    max_ttl: Annotated[int, _uint(U32)] = 0  # seconds; 0: the relay's maximum
    secret: Annotated[bytes, _bytes(0, MAX_SECRET)] = field(repr=False)


@_message("auth")
@dataclass(frozen=True, slots=True, kw_only=True)
class Auth(_Validated):
    """Prove the read or write capability of a mailbox for the rest of this connection."""

    id: RequestId
    mailbox: Mailbox = field(repr=False)
    role: Annotated[str, FieldSpec("choice", choices=("read", "write"))]
    proof: Signature = field(repr=False)


@_message("publish")
@dataclass(frozen=True, slots=True, kw_only=True)
class Publish(_Validated):
    """Store an envelope in a mailbox and fan it out; needs the write capability."""

    id: RequestId
    mailbox: Mailbox = field(repr=False)
    expires_at: UnixTime
    envelope: Envelope = field(repr=False)


@_message("subscribe")
@dataclass(frozen=True, slots=True, kw_only=True)
class Subscribe(_Validated):
    """Receive every envelope with seq > `after`, backlog first, then live."""

    id: RequestId
    mailbox: Mailbox = field(repr=False)
    after: Seq = 0


@_message("unsubscribe")
@dataclass(frozen=True, slots=True, kw_only=True)
class Unsubscribe(_Validated):
    """Stop live delivery from a mailbox."""

    id: RequestId
    mailbox: Mailbox = field(repr=False)


@_message("fetch")
@dataclass(frozen=True, slots=True, kw_only=True)
class Fetch(_Validated):
    """Ask for one page of stored envelopes with seq > `after`, without subscribing."""

    id: RequestId
    mailbox: Mailbox = field(repr=False)
    after: Seq = 0
    limit: Annotated[int, _uint(MAX_PAGE_ITEMS, 1)] = MAX_PAGE_ITEMS


@_message("rotate")
@dataclass(frozen=True, slots=True, kw_only=True)
class Rotate(_Validated):
    """Admin: replace the mailbox's capability keys; old authorisations are revoked."""

    id: RequestId
    mailbox: Mailbox = field(repr=False)
    write_key: PublicKey
    read_key: PublicKey
    admin_key: PublicKey
    counter: Counter
    sig: Signature = field(repr=False)


@_message("set_limits")
@dataclass(frozen=True, slots=True, kw_only=True)
class SetLimits(_Validated):
    """Admin: set the mailbox's maximum TTL and stored-bytes quota (0: relay default)."""

    id: RequestId
    mailbox: Mailbox = field(repr=False)
    max_ttl: Annotated[int, _uint(U32)]
    max_bytes: Annotated[int, _uint(U64)]
    counter: Counter
    sig: Signature = field(repr=False)


@_message("delete")
@dataclass(frozen=True, slots=True, kw_only=True)
class Delete(_Validated):
    """Admin: delete the mailbox and everything stored in it."""

    id: RequestId
    mailbox: Mailbox = field(repr=False)
    counter: Counter
    sig: Signature = field(repr=False)


# -- responses (relay to client) --------------------------------------------------------


@_message("ok")
@dataclass(frozen=True, slots=True, kw_only=True)
class Ok(_Validated):
    """The request `id` succeeded (auth, unsubscribe, rotate, set_limits, delete)."""

    id: RequestId


@_message("error")
@dataclass(frozen=True, slots=True, kw_only=True)
class Error(_Validated):
    """The request `id` was refused with `code`; the connection goes on."""

    id: RequestId
    code: Code


@_message("created")
@dataclass(frozen=True, slots=True, kw_only=True)
class Created(_Validated):
    """The mailbox asked for by `Create` exists; here is its id."""

    id: RequestId
    mailbox: Mailbox = field(repr=False)


@_message("published")
@dataclass(frozen=True, slots=True, kw_only=True)
class Published(_Validated):
    """The envelope is durably stored under `seq`."""

    id: RequestId
    seq: Seq


@_message("subscribed")
@dataclass(frozen=True, slots=True, kw_only=True)
class Subscribed(_Validated):
    """The subscription is live; `head` was the mailbox's last seq when it began."""

    id: RequestId
    mailbox: Mailbox = field(repr=False)
    head: Seq


@dataclass(frozen=True, slots=True, kw_only=True)
class PageItem:
    """One stored envelope in a `Page`; on the wire a 3-element array."""

    seq: int
    expires_at: int
    envelope: bytes = field(repr=False)


ITEM_SPECS: Final = (
    ("seq", _uint(U64)),
    ("expires_at", _uint(U64)),
    ("envelope", _bytes(1, MAX_ENVELOPE)),
)


@_message("page")
@dataclass(frozen=True, slots=True, kw_only=True)
class Page(_Validated):
    """The answer to `Fetch`: envelopes in seq order; `more` if the mailbox holds further ones."""

    id: RequestId
    mailbox: Mailbox = field(repr=False)
    items: Annotated[tuple[PageItem, ...], FieldSpec("items", hi=MAX_PAGE_ITEMS)]
    more: Annotated[bool, FieldSpec("bool")]

    def __post_init__(self) -> None:
        items: object = self.items
        if isinstance(items, list):  # accept a list from callers; store the immutable form
            object.__setattr__(self, "items", tuple(items))
        for item in self.items if type(self.items) is tuple else ():
            if type(item) is PageItem:
                for name, spec in ITEM_SPECS:
                    code = spec.check(getattr(item, name))
                    if code is not None:
                        raise LocalProtocolError(f"PageItem.{name} is invalid ({code.name})", code)
        _Validated.__post_init__(self)


# -- events (relay to client, unrequested) ----------------------------------------------


@_message("deliver")
@dataclass(frozen=True, slots=True, kw_only=True)
class Deliver(_Validated):
    """An envelope from a subscribed mailbox, in seq order, at least once."""

    mailbox: Mailbox = field(repr=False)
    seq: Seq
    expires_at: UnixTime
    envelope: Envelope = field(repr=False)


@_message("revoked")
@dataclass(frozen=True, slots=True, kw_only=True)
class Revoked(_Validated):
    """This connection lost its authorisations and subscription for a mailbox, with why."""

    mailbox: Mailbox = field(repr=False)
    code: Code


# -- either direction ---------------------------------------------------------------------


@_message("ping")
@dataclass(frozen=True, slots=True, kw_only=True)
class Ping(_Validated):
    """Are you there? The peer answers with a Pong carrying the same id."""

    id: RequestId


@_message("pong")
@dataclass(frozen=True, slots=True, kw_only=True)
class Pong(_Validated):
    """The answer to the Ping with this id."""

    id: RequestId


@_message("goodbye")
@dataclass(frozen=True, slots=True, kw_only=True)
class Goodbye(_Validated):
    """The sender is closing the connection, for the reason `code`."""

    code: Code = ErrorCode.NORMAL


def _check_registry(types: Mapping[str, type[Message]]) -> None:
    # Every message's Python field names are its wire keys; "t" is reserved for the type.
    for cls in types.values():
        if any(name == "t" for name, _ in _SPECS[cls]):  # pragma: no cover
            raise TypeError(f"{cls.__name__} may not have a field named t")


_check_registry(MESSAGE_TYPES)
