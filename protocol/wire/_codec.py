"""The msgpack codec: messages to bytes and back, with strict validation (docs/protocol.md §4).

This is the only module that imports msgpack (an untyped dependency); everything it
returns is one of the typed classes in `_messages.py`.

Decoding is strict on purpose: a relay and a third-party client must never disagree
about what a message says, so anything a lenient parser would "fix" is an error with a
stable code. A received message is refused when it is not a map, repeats a key, lacks
`"t"`, names an unknown type, lacks a field, carries an extra one, holds a value of the
wrong msgpack type (ints must be ints, not bools or floats; bytes must be bin, not str),
an integer or length outside its bounds, or any msgpack extension type (timestamps
included). A frame that ends inside a message, or holds no message at all, is MALFORMED.
docs/protocol.md §8.1 gives the order of these checks, which decides the code when a
message has several faults: this module is its reference.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import msgpack

from .._errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from ._messages import ITEM_SPECS, MESSAGE_TYPES, Message, PageItem, field_specs

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "decode_map",
    "decode_messages",
    "decode_single",
    "encode_deliver",
    "encode_error",
    "encode_map",
    "encode_message",
    "encode_ok",
    "encode_published",
]

_EXT_TYPES: Final = (msgpack.Timestamp, msgpack.ExtType)


class _ExtensionRefusedError(Exception):
    """Raised inside the unpacker when it meets an extension type."""


# What msgpack's unpacking raises for bad input, besides running out of data or finding
# more than one object (the callers name those themselves). ValueError covers invalid
# UTF-8, reserved bytes and non-str map keys; StackError is a ValueError too.
_UNPACK_ERRORS: Final = (_ExtensionRefusedError, ValueError, TypeError, msgpack.UnpackException)


def _unpack_error(exc: Exception) -> RemoteProtocolError:
    """The protocol error, with its stable code, for one of `_UNPACK_ERRORS`."""
    if isinstance(exc, msgpack.StackError):
        return RemoteProtocolError("nesting too deep", ErrorCode.TOO_DEEP)
    if isinstance(exc, _ExtensionRefusedError):
        return RemoteProtocolError("extension type", ErrorCode.EXTENSION_TYPE)
    return RemoteProtocolError(f"undecodable msgpack ({type(exc).__name__})", ErrorCode.MALFORMED)


def _refuse_extension(code: int, data: bytes) -> object:
    raise _ExtensionRefusedError


def encode_message(message: Message) -> bytes:
    """Return the msgpack encoding of one message: a map with `"t"` and every field."""
    cls = type(message)
    try:
        specs = field_specs(cls)
    except KeyError:
        raise LocalProtocolError(f"{cls.__name__} is not a wire message") from None
    wire: dict[str, object] = {"t": cls.TYPE}
    for name, spec in specs:
        value = getattr(message, name)
        if spec.kind == "items":
            value = [[item.seq, item.expires_at, item.envelope] for item in value]
        elif spec.kind == "uint":
            value = int(value)  # IntEnum members go out as plain integers
        wire[name] = value
    return msgpack.packb(wire, use_bin_type=True)  # type: ignore[no-any-return]


# -- trusted encoders: what the relay sends on its hot path ----------------------------------
# Building a message object (whose constructor validates every field) and then encoding it
# through its field specs cost 6.5 µs for a `Published` and 9 µs for a `Deliver` here,
# about a fifth of the relay's CPU per publish (docs/benchmarks.md). These build the same
# map, in the same key order, from values the caller vouches for: sequence numbers the
# store assigned, request ids and envelopes taken from messages that were validated when
# they arrived. They check nothing, so they are for those values only; anything else goes
# through the message classes and `encode_message`. tests/protocol/test_codec.py pins each
# one byte for byte to `encode_message`.


class _Packers(threading.local):
    """One reusable msgpack packer per thread.

    `Packer.pack` costs about half of `packb`, which builds a packer per call. A packer
    keeps a buffer between calls, so threads (a client's portal thread, say) get their own.
    """

    def __init__(self) -> None:
        self.pack: Callable[[object], bytes] = msgpack.Packer(use_bin_type=True).pack


_packers: Final = _Packers()


def encode_published(request_id: int, seq: int) -> bytes:
    """Return `encode_message(Published(id=request_id, seq=seq))` for values known to be valid."""
    return _packers.pack({"t": "published", "id": request_id, "seq": seq})


def encode_deliver(mailbox: bytes, seq: int, expires_at: int, envelope: bytes) -> bytes:
    """Return `encode_message(Deliver(...))` of these fields, for values known to be valid."""
    return _packers.pack(
        {
            "t": "deliver",
            "mailbox": mailbox,
            "seq": seq,
            "expires_at": expires_at,
            "envelope": envelope,
        }
    )


def encode_ok(request_id: int) -> bytes:
    """Return `encode_message(Ok(id=request_id))` for a request id known to be valid."""
    return _packers.pack({"t": "ok", "id": request_id})


def encode_error(request_id: int, code: int) -> bytes:
    """Return `encode_message(Error(id=request_id, code=code))` for values known to be valid."""
    return _packers.pack({"t": "error", "id": request_id, "code": int(code)})


def decode_messages(data: bytes) -> list[Message]:
    """Decode one or more concatenated messages, as carried by one transport frame.

    Raises:
        RemoteProtocolError: with the code of the first problem found.
    """
    end = len(data)
    if end == 0:
        raise RemoteProtocolError("a frame must carry at least one message", ErrorCode.MALFORMED)
    unpacker = msgpack.Unpacker(
        raw=False,
        use_list=False,  # arrays become tuples, maps (via the hook) lists of pairs
        object_pairs_hook=list,
        # Any key type decodes, and `_from_wire` refuses what is not a string with
        # WRONG_TYPE, as docs/protocol.md §4.1 says. (msgpack's strict mode refused integer
        # keys itself, as a ValueError, which became MALFORMED: issue 10.) With the pairs
        # hook no key is ever hashed, so an array or map as a key costs nothing extra.
        strict_map_key=False,
        ext_hook=_refuse_extension,
        max_buffer_size=end,
    )
    unpacker.feed(data)
    messages: list[Message] = []
    start = 0
    while start < end:
        try:
            obj = unpacker.unpack()
        except msgpack.OutOfData:
            raise RemoteProtocolError(
                f"message cut off with {end - start} bytes left in the frame", ErrorCode.MALFORMED
            ) from None
        except _UNPACK_ERRORS as exc:
            raise _unpack_error(exc) from None
        message = _decode_fast(obj)
        messages.append(_from_wire(obj) if message is None else message)
        start = unpacker.tell()
    return messages


def decode_single(data: bytes) -> Message:
    """Decode exactly one message (a handshake payload).

    Raises:
        RemoteProtocolError: malformed, or not exactly one message (UNEXPECTED_MESSAGE).
    """
    messages = decode_messages(data)
    if len(messages) != 1:
        raise RemoteProtocolError(
            f"expected one message, got {len(messages)}", ErrorCode.UNEXPECTED_MESSAGE
        )
    return messages[0]


def _wrong_type(where: str, value: object) -> RemoteProtocolError:
    if isinstance(value, _EXT_TYPES):
        return RemoteProtocolError(f"{where} is an extension type", ErrorCode.EXTENSION_TYPE)
    return RemoteProtocolError(
        f"{where} has msgpack type {type(value).__name__}", ErrorCode.WRONG_TYPE
    )


# -- the decoder's fast path --------------------------------------------------------------------
# `_from_wire` is the definition of what is accepted and of the error code for everything
# else. It builds a dict of the fields and asks each field's spec, which cost about 3 µs
# for a `Publish`. Nearly every message arrives with its keys in the order the classes
# declare them ("t" first), which every encoder built from docs/protocol.md produces, so
# `_decode_fast` handles exactly that shape with one precompiled test per field (about
# 1.5 µs) and returns None for anything else, which then goes through `_from_wire`. It
# never accepts what `_from_wire` refuses: keys that match the declared ones one for one
# cannot be missing, repeated or extra, and each field test accepts only what its spec
# accepts (`FieldSpec.predicate`). tests/protocol/test_codec.py checks that the two
# agree on valid, shuffled and mutated messages.


class _Plan(NamedTuple):
    """How `_decode_fast` decodes one message class."""

    cls: type[Message]
    size: int  # pairs in the map: "t" and each field
    # (wire key, test, slot setter) per field, in declared order. The setter is the slot's
    # descriptor: frozen dataclasses refuse `setattr`, and this skips `object.__setattr__`.
    fields: tuple[tuple[str, Callable[[object], bool], Callable[[Message, object], None]], ...]


def _plans() -> dict[str, _Plan]:
    plans: dict[str, _Plan] = {}
    for type_name, cls in MESSAGE_TYPES.items():
        fields = []
        for name, spec in field_specs(cls):
            test = spec.predicate()
            if test is None:  # a Page's items: decoded by `_items_from_wire` only
                break
            fields.append((name, test, vars(cls)[name].__set__))
        else:
            plans[type_name] = _Plan(cls, len(fields) + 1, tuple(fields))
    return plans


_PLANS: Final = _plans()
_new: Final = object.__new__


def _decode_fast(obj: Any) -> Message | None:  # noqa: ANN401 - raw msgpack output
    """Decode a message whose keys come in declared order; None if anything differs."""
    if type(obj) is not list or not obj:
        return None
    key, type_name = obj[0]
    if key != "t" or type(type_name) is not str:
        return None
    plan = _PLANS.get(type_name)
    if plan is None or len(obj) != plan.size:
        return None
    message: Message = _new(plan.cls)
    position = 1
    for name, test, assign in plan.fields:
        key, value = obj[position]
        if key != name or not test(value):
            return None
        assign(message, value)
        position += 1
    return message


def _from_wire(obj: Any) -> Message:  # noqa: ANN401 - raw msgpack output is narrowed here
    if type(obj) is not list:
        raise _wrong_type("message", obj)
    fields: dict[str, Any] = {}
    for key, value in obj:
        if type(key) is not str:
            raise RemoteProtocolError("map key is not a string", ErrorCode.WRONG_TYPE)
        if key in fields:
            raise RemoteProtocolError("map repeats a key", ErrorCode.DUPLICATE_FIELD)
        fields[key] = value
    type_name = fields.pop("t", None)
    if type_name is None:
        raise RemoteProtocolError("message has no type field", ErrorCode.MISSING_FIELD)
    if type(type_name) is not str:
        raise _wrong_type("type field", type_name)
    cls = MESSAGE_TYPES.get(type_name)
    if cls is None:
        raise RemoteProtocolError(
            f"unknown message type of {len(type_name)} chars", ErrorCode.UNKNOWN_TYPE
        )
    specs = field_specs(cls)
    for name, _ in specs:
        if name not in fields:
            raise RemoteProtocolError(f"{cls.__name__} lacks {name}", ErrorCode.MISSING_FIELD)
    if len(fields) != len(specs):
        raise RemoteProtocolError(
            f"{cls.__name__} has {len(fields) - len(specs)} extra fields", ErrorCode.EXTRA_FIELD
        )
    message = cls.__new__(cls)
    for name, spec in specs:
        value = fields[name]
        if spec.kind == "items":
            value = _items_from_wire(cls.__name__, value, spec.hi)
        else:
            code = spec.check(value)
            if code is not None:
                if code is ErrorCode.WRONG_TYPE:
                    raise _wrong_type(f"{cls.__name__}.{name}", value)
                raise RemoteProtocolError(f"{cls.__name__}.{name}: {code.name}", code)
        object.__setattr__(message, name, value)
    return message


def _items_from_wire(owner: str, value: Any, max_items: int) -> tuple[PageItem, ...]:  # noqa: ANN401
    if type(value) is not tuple:
        raise _wrong_type(f"{owner}.items", value)
    if len(value) > max_items:
        raise RemoteProtocolError(f"{owner}.items holds {len(value)} items", ErrorCode.TOO_LARGE)
    items = []
    for raw in value:
        if type(raw) is not tuple:
            raise _wrong_type(f"{owner}.items[]", raw)
        if len(raw) != len(ITEM_SPECS):
            count = ErrorCode.MISSING_FIELD if len(raw) < len(ITEM_SPECS) else ErrorCode.EXTRA_FIELD
            raise RemoteProtocolError(f"{owner}.items[] has {len(raw)} elements", count)
        for element, (name, spec) in zip(raw, ITEM_SPECS, strict=True):
            problem = spec.check(element)
            if problem is not None:
                if problem is ErrorCode.WRONG_TYPE:
                    raise _wrong_type(f"{owner}.items[].{name}", element)
                raise RemoteProtocolError(f"{owner}.items[].{name}: {problem.name}", problem)
        items.append(PageItem(seq=raw[0], expires_at=raw[1], envelope=raw[2]))
    return tuple(items)


# ---------------------------------------------------------------------------------------
# Generic maps, for encodings outside the relay protocol's message set (the group layer's
# message contents, docs/protocol.md Part 3). Same strictness, no `"t"` field: the caller
# knows the type from context and validates the fields itself.


def encode_map(fields: Mapping[str, object]) -> bytes:
    """Return the msgpack encoding of one map with string keys (bytes as bin, str as str)."""
    return msgpack.packb(dict(fields), use_bin_type=True)  # type: ignore[no-any-return]


def decode_map(data: bytes) -> dict[str, object]:
    """Decode exactly one msgpack map whose keys are distinct strings.

    Arrays come back as tuples; a nested map comes back as a list of (key, value) pairs,
    which a caller's field checks refuse as the wrong type. Extension types are refused
    wherever they appear.

    Raises:
        RemoteProtocolError: MALFORMED (not msgpack, cut off, trailing bytes, empty, a
            map key that is neither str nor bin), WRONG_TYPE (not a map, a bin key),
            DUPLICATE_FIELD, TOO_DEEP or EXTENSION_TYPE.
    """
    if not data:
        raise RemoteProtocolError("no data", ErrorCode.MALFORMED)
    try:
        # unpackb, not an Unpacker: one object is wanted, and it costs half as much.
        obj = msgpack.unpackb(
            data,
            raw=False,
            use_list=False,
            object_pairs_hook=list,
            strict_map_key=True,
            ext_hook=_refuse_extension,
        )
    except msgpack.ExtraData as exc:
        raise RemoteProtocolError(
            f"{len(exc.extra)} bytes after the map", ErrorCode.MALFORMED
        ) from None
    except _UNPACK_ERRORS as exc:  # here ValueError also covers a cut-off map
        raise _unpack_error(exc) from None
    if type(obj) is not list:
        raise _wrong_type("top level", obj)
    # msgpack decodes its timestamp extension itself, without calling ext_hook: find any.
    stack: list[Any] = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, msgpack.Timestamp):
            raise RemoteProtocolError("extension type", ErrorCode.EXTENSION_TYPE)
        if type(item) in (list, tuple):
            stack.extend(item)
    fields: dict[str, object] = {}
    for key, value in obj:
        if type(key) is not str:  # a bin key: strict_map_key admits str and bytes only
            raise RemoteProtocolError("map key is not a string", ErrorCode.WRONG_TYPE)
        if key in fields:
            raise RemoteProtocolError("map repeats a key", ErrorCode.DUPLICATE_FIELD)
        fields[key] = value
    return fields
