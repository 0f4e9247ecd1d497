"""Padding to size buckets (ISO/IEC 7816-4 style), so envelope sizes hide message lengths.

docs/protocol.md, Part 2, "Padding". A plaintext is followed by one 0x80 byte and then
zero bytes up to the padded length; removing it strips trailing zeros and one 0x80. The
group layer pads so that the *whole envelope* lands exactly on one of `BUCKETS`, which is
what the relay (and anyone watching the network) sees.
"""

from __future__ import annotations

from typing import Final

from ._errors import MalformedError

__all__ = ["BUCKETS", "bucket_for", "pad", "unpad"]

# Envelope sizes in bytes: powers of two from 256 (an alert with a short place text and its
# header fits: ~170 bytes of overhead leaves 81 bytes) up to 16,384, the reference relay's
# default envelope limit (docs/protocol.md §9), so every group envelope passes a default
# relay. Doubling keeps the worst-case overhead under 2x while giving an observer only
# seven sizes to tell apart.
BUCKETS: Final = (256, 512, 1024, 2048, 4096, 8192, 16384)

_MARKER: Final = 0x80


def bucket_for(size: int) -> int:
    """Return the smallest bucket that holds `size` bytes.

    Raises:
        ValueError: `size` exceeds the largest bucket.
    """
    if size > BUCKETS[-1]:
        raise ValueError(f"{size} bytes exceed the largest bucket ({BUCKETS[-1]})")
    # The buckets are the powers of two from 256: round up to a power of two, at least 256.
    return max(BUCKETS[0], 1 << (size - 1).bit_length())


def pad(data: bytes, length: int) -> bytes:
    """Return `data` || 0x80 || zeros, exactly `length` bytes.

    Raises:
        ValueError: `data` needs more than `length - 1` bytes.
    """
    if len(data) >= length:
        raise ValueError(f"{len(data)} bytes do not fit in {length} with padding")
    return data + b"\x80" + bytes(length - len(data) - 1)


def unpad(padded: bytes) -> bytes:
    """Return `padded` without its padding.

    Raises:
        MalformedError: no 0x80 marker after the trailing zeros.
    """
    # The last 0x80 must be followed by zeros only; counting them does not copy the
    # (possibly 16 KiB) buffer the way rstrip would.
    marker = padded.rfind(_MARKER)
    if marker < 0 or padded.count(0, marker + 1) != len(padded) - marker - 1:
        raise MalformedError("bad padding")
    return padded[:marker]
