"""Fixed-layout binary fields for the group layer: big-endian integers and length-prefixed bytes.

The group layer's envelopes, log entries, welcomes and saved state are sequences of these
fields (docs/protocol.md, Part 2, "Notation"); nothing there is msgpack, so an implementer
needs only `struct`. A `Reader` raises `MalformedError` on anything short, long or out of
range, so a parser built on it cannot fail any other way.
"""

from __future__ import annotations

from typing import Final

from ._errors import MalformedError

__all__ = ["Reader", "Writer"]

_U8: Final = 0xFF
_U16: Final = 0xFFFF


class Writer:
    """Append fields to a growing byte string."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        """Start empty."""
        self._parts: list[bytes] = []

    def raw(self, data: bytes | bytearray) -> Writer:
        """Append `data` as is (a copy of a bytearray, so later changes do not leak in)."""
        self._parts.append(data if type(data) is bytes else bytes(data))
        return self

    def u8(self, value: int) -> Writer:
        """Append one byte."""
        self._parts.append(value.to_bytes(1, "big"))
        return self

    def u16(self, value: int) -> Writer:
        """Append a 2-byte big-endian integer."""
        self._parts.append(value.to_bytes(2, "big"))
        return self

    def u32(self, value: int) -> Writer:
        """Append a 4-byte big-endian integer."""
        self._parts.append(value.to_bytes(4, "big"))
        return self

    def u64(self, value: int) -> Writer:
        """Append an 8-byte big-endian integer."""
        self._parts.append(value.to_bytes(8, "big"))
        return self

    def short(self, data: bytes | bytearray) -> Writer:
        """Append a 1-byte length, then `data` (at most 255 bytes)."""
        if len(data) > _U8:
            raise ValueError("a short field holds at most 255 bytes")
        return self.u8(len(data)).raw(data)

    def long(self, data: bytes | bytearray) -> Writer:
        """Append a 2-byte length, then `data` (at most 65,535 bytes)."""
        if len(data) > _U16:
            raise ValueError("a long field holds at most 65,535 bytes")
        return self.u16(len(data)).raw(data)

    def bytes(self) -> bytes:
        """Return everything appended so far."""
        return b"".join(self._parts)


class Reader:
    """Read fields from `data` in order; `MalformedError` if anything does not fit."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        """Start at the first byte of `data`."""
        self._data = data
        self._pos = 0

    def take(self, size: int) -> bytes:
        """Return the next `size` bytes."""
        end = self._pos + size
        if end > len(self._data):
            raise MalformedError("truncated")
        out = self._data[self._pos : end]
        self._pos = end
        return out

    def u8(self) -> int:
        """Return the next byte."""
        return self.take(1)[0]

    def u16(self) -> int:
        """Return the next 2-byte big-endian integer."""
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        """Return the next 4-byte big-endian integer."""
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        """Return the next 8-byte big-endian integer."""
        return int.from_bytes(self.take(8), "big")

    def short(self, limit: int = _U8) -> bytes:
        """Return a field with a 1-byte length, refusing one longer than `limit`."""
        size = self.u8()
        if size > limit:
            raise MalformedError("field too long")
        return self.take(size)

    def long(self, limit: int = _U16) -> bytes:
        """Return a field with a 2-byte length, refusing one longer than `limit`."""
        size = self.u16()
        if size > limit:
            raise MalformedError("field too long")
        return self.take(size)

    def flag(self) -> bool:
        """Return a one-byte boolean (0 or 1; anything else is malformed)."""
        value = self.u8()
        if value > 1:
            raise MalformedError("bad flag")
        return value == 1

    def rest(self) -> bytes:
        """Return everything not read yet."""
        out = self._data[self._pos :]
        self._pos = len(self._data)
        return out

    def remaining(self) -> int:
        """Return how many bytes are left."""
        return len(self._data) - self._pos

    def end(self) -> None:
        """Require that everything was read."""
        if self._pos != len(self._data):
            raise MalformedError("trailing bytes")
