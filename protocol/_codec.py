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
"""

from __future__ import annotations

from typing import Any, Final

import msgpack

from ._errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from ._messages import ITEM_SPECS, MESSAGE_TYPES, Message, PageItem, field_specs

__all__ = ["decode_messages", "decode_single", "encode_message"]

_EXT_TYPES: Final = (msgpack.Timestamp, msgpack.ExtType)


class _ExtensionRefusedError(Exception):
    """Raised inside the unpacker when it meets an extension type."""


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
        strict_map_key=True,
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
        except msgpack.StackError:
            raise RemoteProtocolError("nesting too deep", ErrorCode.TOO_DEEP) from None
        except _ExtensionRefusedError:
            raise RemoteProtocolError("extension type", ErrorCode.EXTENSION_TYPE) from None
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            # ValueError covers invalid UTF-8, reserved bytes and non-str map keys.
            raise RemoteProtocolError(
                f"undecodable msgpack ({type(exc).__name__})", ErrorCode.MALFORMED
            ) from None
        messages.append(_from_wire(obj))
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
