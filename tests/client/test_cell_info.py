"""The welcome's cell information (docs/protocol.md §C5, §C5.2): a cell's relays and mailboxes.

An admin signs it, but an admin (or its client) can be hostile: whatever the bytes, parsing
gives a value that round-trips, or `CellError` / `RemoteProtocolError`, nothing else.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.client._cell_member import CellError, CellInfo, RelayInfo
from cellrelay.protocol import RemoteProtocolError
from cellrelay.protocol.wire import MailboxId, RelayAddress
from cellrelay.protocol.wire._codec import decode_map, encode_map

FIRST = f"cellrelay://{'A' * 43}@relay.example:7446"
MAILBOX = MailboxId(bytes(range(16)))


def further(n: int) -> RelayInfo:
    return RelayInfo(relay=str(RelayAddress(f"relay{n}.example", 7446, bytes([n]) * 32)), group=MAILBOX,
                     control=MAILBOX, group_from=n, control_from=n + 1)  # fmt: skip


def test_a_cell_on_three_relays_round_trips_and_one_relay_is_as_before() -> None:
    three = CellInfo(relay=FIRST, group=MAILBOX, control=MAILBOX, more_relays=(further(2), further(3)))  # fmt: skip
    again = CellInfo.decode(three.encode())
    assert again.more_relays == three.more_relays
    one = CellInfo(relay=FIRST, group=MAILBOX, control=MAILBOX)
    assert "more_relays" not in decode_map(one.encode())  # older clients read it unchanged


@pytest.mark.parametrize(
    "more",
    [
        [further(2).encode(), further(3).encode(), further(4).encode()],  # four relays
        [further(2).encode(), further(2).encode()],  # one relay twice
        [[FIRST, MAILBOX, MAILBOX, 0, 0]],  # the first relay again
        [["not an address", MAILBOX, MAILBOX, 0, 0]],
        [[further(2).relay, MAILBOX[:15], MAILBOX, 0, 0]],
        [[further(2).relay, MAILBOX, MAILBOX, -1, 0]],
        [[further(2).relay, MAILBOX, MAILBOX, 0]],
        "a string",
    ],
)
def test_a_damaged_relay_list_is_refused(more: object) -> None:
    fields = decode_map(CellInfo(relay=FIRST, group=MAILBOX, control=MAILBOX).encode())
    fields["more_relays"] = more
    with pytest.raises(CellError, match="relay list is damaged"):
        CellInfo.decode(encode_map(fields))


@given(st.binary(max_size=600))
def test_any_bytes_give_a_cell_info_that_round_trips_or_an_error(data: bytes) -> None:
    try:
        info = CellInfo.decode(data)
    except (CellError, RemoteProtocolError):
        return
    assert vars(CellInfo.decode(info.encode())) == vars(info)


@given(
    st.lists(
        st.tuples(
            st.text(max_size=80), st.binary(min_size=16, max_size=16), st.integers(-2, 2**40)
        ),
        max_size=4,
    )
)
def test_relay_lists_of_any_shape_round_trip_or_are_refused(
    entries: list[tuple[str, bytes, int]],
) -> None:
    fields = decode_map(CellInfo(relay=FIRST, group=MAILBOX, control=MAILBOX).encode())
    fields["more_relays"] = [[text, box, box, seq, seq] for text, box, seq in entries]
    try:
        info = CellInfo.decode(encode_map(fields))
    except CellError:
        return
    assert vars(CellInfo.decode(info.encode())) == vars(info)


@given(st.one_of(st.integers(-3, 3), st.text(max_size=3), st.binary(max_size=3), st.none()))
def test_the_channel_setting_is_0_or_1_and_absent_from_an_ordinary_cell(value: object) -> None:
    assert "channel" not in decode_map(
        CellInfo(relay=FIRST, group=MAILBOX, control=MAILBOX).encode()
    )
    channel = CellInfo(relay=FIRST, group=MAILBOX, control=MAILBOX, channel=True)
    assert decode_map(channel.encode())["channel"] == 1
    assert CellInfo.decode(channel.encode()).channel
    fields = decode_map(channel.encode())
    fields["channel"] = value
    if type(value) is int and value in (0, 1):
        assert CellInfo.decode(encode_map(fields)).channel is bool(value)
    else:
        with pytest.raises(CellError, match="settings are damaged"):
            CellInfo.decode(encode_map(fields))
