"""Safety numbers (docs/protocol.md §C8): the spec's vector, from the spec alone, and properties.

Issue 9, finding 9: members compared 8 hex digits (32 bits); a safety number is 60 digits.
"""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from cellrelay.protocol.cell._identity import Identity, MemberInfo
from cellrelay.protocol.cell._safety import (
    format_safety_number,
    member_digits,
    parse_safety_number,
    safety_number,
    safety_qr_text,
)

ANA = Identity.from_seeds(bytes([1]) * 32, bytes([2]) * 32, "ana").info
BEN = Identity.from_seeds(bytes([3]) * 32, bytes([4]) * 32, "ben").info
# docs/protocol.md §C8, "Example".
VECTOR = "729475999279983623730163215390964608884844459231434254109299"


def _from_the_spec(info: MemberInfo) -> str:
    """§C8 with hashlib's BLAKE2b, not the implementation's (libsodium's)."""
    keys = info.sign_pub + info.dh_pub
    digest = hashlib.blake2b(
        b"cellrelay/1 safety-number\x00" + (0).to_bytes(2, "big") + keys + info.member_id
    ).digest()
    for _ in range(5200):
        digest = hashlib.blake2b(digest + keys).digest()
    return "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )


def test_the_spec_vector() -> None:
    assert ANA.sign_pub.hex().startswith("8a88e3dd")
    assert member_digits(ANA) == _from_the_spec(ANA) == VECTOR[:30]
    assert member_digits(BEN) == _from_the_spec(BEN) == VECTOR[30:]
    assert safety_number(ANA, BEN) == safety_number(BEN, ANA) == VECTOR
    assert format_safety_number(VECTOR).splitlines() == [
        "72947 59992 79983 62373",
        "01632 15390 96460 88848",
        "44459 23143 42541 09299",
    ]


def test_reading_a_number_back() -> None:
    assert parse_safety_number(format_safety_number(VECTOR)) == VECTOR
    assert parse_safety_number(safety_qr_text(VECTOR)) == VECTOR
    assert parse_safety_number("7294-7599 9279 98362373" + VECTOR[20:]) == VECTOR
    assert parse_safety_number(VECTOR[:-1]) is None
    assert parse_safety_number(VECTOR[:-1] + "x") is None
    assert parse_safety_number("٣" * 60) is None  # Arabic-Indic digits are not ASCII digits


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_any_other_keys_give_another_number(sign_pub: bytes, dh_pub: bytes) -> None:
    other = MemberInfo.create(sign_pub, dh_pub, "ana")
    if other.member_id == ANA.member_id:  # pragma: no cover - the same keys
        return
    number = safety_number(other, BEN)
    assert number != VECTOR
    assert len(number) == 60
    assert number == safety_number(BEN, other)
