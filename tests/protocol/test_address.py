"""Relay address strings parse, print and refuse garbage."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.protocol.wire._address import DEFAULT_PORT, AddressError, RelayAddress

KEY = bytes(range(32))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "relay.example.org", "localhost", "fe80::1"])
def test_round_trip(host: str) -> None:
    address = RelayAddress(host, 7446, KEY)
    assert RelayAddress.parse(str(address)) == address


def test_ipv6_is_bracketed() -> None:
    assert str(RelayAddress("::1", 9, KEY)).endswith("@[::1]:9")


def test_default_port() -> None:
    text = str(RelayAddress("relay.example.org", 1, KEY)).rsplit(":", 1)[0]
    assert RelayAddress.parse(text).port == DEFAULT_PORT


@given(st.binary(min_size=32, max_size=32), st.integers(1, 65535))
def test_any_key_and_port_round_trip(key: bytes, port: int) -> None:
    address = RelayAddress("10.0.0.1", port, key)
    assert RelayAddress.parse(str(address)) == address


@pytest.mark.parametrize(
    "text",
    [
        "",
        "http://x@y:1",
        "cellrelay://short@host:1",
        "cellrelay://" + "A" * 43 + "host:1",
        "cellrelay://" + "!" * 43 + "@host:1",
        "cellrelay://" + "A" * 42 + "B@host:1",  # non-canonical: stray low bits
        "cellrelay://" + "A" * 43 + "@host:0",
        "cellrelay://" + "A" * 43 + "@host:70000",
        "cellrelay://" + "A" * 43 + "@host:x",
        "cellrelay://" + "A" * 43 + "@[::1:1",
        "cellrelay://" + "A" * 43 + "@bad_host:1",
        "cellrelay://" + "A" * 43 + "@:1",
    ],
)
def test_garbage_is_refused(text: str) -> None:
    with pytest.raises(AddressError):
        RelayAddress.parse(text)


@given(st.text(max_size=80))
def test_arbitrary_text_parses_or_raises_address_error(text: str) -> None:
    with contextlib.suppress(AddressError):
        RelayAddress.parse(text)


def test_key_is_not_in_repr() -> None:
    assert repr(KEY) not in repr(RelayAddress("h", 1, KEY))
