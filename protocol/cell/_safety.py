"""Safety numbers: what two members compare, in person, to know they hold each other's keys.

docs/protocol.md §C8. A member id is 128 bits, but people compared its first 8 hex digits
(32 bits): someone who knows a victim's id could make a key pair whose id starts the same
with about 2^32 key generations (issue 9, finding 9). A safety number is Signal's design
on libsodium's generic hash (BLAKE2b) instead of SHA-512:

    F(member) = H^5200 over  BLAKE2b-512("cellrelay/1 safety-number" || 0x00 || version (u16)
                                          || sign_pub || dh_pub || member_id)
                with each step  h = BLAKE2b-512(h || sign_pub || dh_pub)
    digits(member) = six 5-digit groups: the big-endian value of each 5-byte slice of the
                     first 30 bytes of F, modulo 100,000, zero-padded
    safety number(a, b) = the two 30-digit strings, the smaller first: 60 digits

Each half is about 99.7 bits (30 decimal digits); matching a victim's half means a second
preimage of it, and each try costs 5,201 BLAKE2b calls (Signal's iteration count), so the
number is worth about 112 bits of work against a targeted forgery. It depends only on the
two members' public keys, in either order, so both see the same 60 digits, and it changes
whenever either member's keys do.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Final

from .._crypto import blake2b

if TYPE_CHECKING:
    from ._identity import MemberInfo

__all__ = [
    "SAFETY_ITERATIONS",
    "SAFETY_NUMBER_DIGITS",
    "SAFETY_QR_PREFIX",
    "SAFETY_VERSION",
    "format_safety_number",
    "member_digits",
    "parse_safety_number",
    "safety_number",
    "safety_qr_text",
]

SAFETY_VERSION: Final = 0  # u16 in the first hash, as in Signal's fingerprint version
SAFETY_ITERATIONS: Final = 5200  # Signal's: each try at a forged half costs 5,201 hashes
SAFETY_NUMBER_DIGITS: Final = 60
_HALF_DIGITS: Final = 30
_LABEL: Final = b"cellrelay/1 safety-number\x00"
# The text a QR code carries: the scheme, the version, the 60 digits. Both members' codes
# are the same (the number is order-independent): a scanning app compares it to its own.
SAFETY_QR_PREFIX: Final = "cellrelay://safety/1/"
_SEPARATORS: Final = re.compile(r"[\s-]+")


@functools.lru_cache(maxsize=512)
def _digits(sign_pub: bytes, dh_pub: bytes, member_id: bytes) -> str:
    keys = sign_pub + dh_pub
    digest = blake2b(_LABEL + SAFETY_VERSION.to_bytes(2, "big") + keys + member_id, size=64)
    for _ in range(SAFETY_ITERATIONS):
        digest = blake2b(digest + keys, size=64)
    return "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100_000:05d}" for i in range(0, 30, 5)
    )


def member_digits(member: MemberInfo) -> str:
    """The 30 digits one member contributes to every safety number it is part of."""
    return _digits(member.sign_pub, member.dh_pub, member.member_id)


def safety_number(a: MemberInfo, b: MemberInfo) -> str:
    """The 60-digit safety number of two members (the same whichever comes first)."""
    return "".join(sorted((member_digits(a), member_digits(b))))


def format_safety_number(number: str) -> str:
    """The 60 digits in twelve groups of five, four groups a line, as people read them."""
    groups = [number[i : i + 5] for i in range(0, len(number), 5)]
    return "\n".join(" ".join(groups[i : i + 4]) for i in range(0, len(groups), 4))


def parse_safety_number(text: str) -> str | None:
    """The 60 digits of a safety number typed or pasted (spaces, dashes ignored), or None."""
    if text.startswith(SAFETY_QR_PREFIX):
        text = text[len(SAFETY_QR_PREFIX) :]
    digits = _SEPARATORS.sub("", text)
    if len(digits) != SAFETY_NUMBER_DIGITS or not digits.isascii() or not digits.isdigit():
        return None
    return digits


def safety_qr_text(number: str) -> str:
    """What the QR code of a safety number encodes."""
    if parse_safety_number(number) != number:
        raise ValueError("a safety number is 60 digits")
    return SAFETY_QR_PREFIX + number
