"""The msgpack codec: every message round-trips; every kind of bad input has its own code."""

from __future__ import annotations

import contextlib
import dataclasses

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.protocol._errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from cellrelay.protocol.wire._codec import decode_messages, decode_single, encode_message
from cellrelay.protocol.wire._messages import (
    MAX_ENVELOPE,
    MAX_PAGE_ITEMS,
    MESSAGE_TYPES,
    Deliver,
    Goodbye,
    MailboxId,
    Message,
    Ok,
    Page,
    PageItem,
    Publish,
    field_specs,
)

from .strategies import ANY_MESSAGE, messages_of

MAILBOX = MailboxId(bytes(range(16)))


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def wire_of(message: Message) -> dict[str, object]:
    decoded = msgpack.unpackb(encode_message(message), raw=False)
    assert isinstance(decoded, dict)
    return decoded


def code_of(data: bytes) -> ErrorCode:
    with pytest.raises(RemoteProtocolError) as info:
        decode_messages(data)
    return info.value.code


@pytest.mark.parametrize("cls", MESSAGE_TYPES.values(), ids=lambda c: c.TYPE)
@given(data=st.data())
def test_every_message_type_round_trips(cls: type[Message], data: st.DataObject) -> None:
    message = data.draw(messages_of(cls))
    assert decode_single(encode_message(message)) == message


@given(st.lists(ANY_MESSAGE, min_size=1, max_size=8))
def test_concatenated_messages_round_trip(messages: list[Message]) -> None:
    assert decode_messages(b"".join(encode_message(m) for m in messages)) == messages


@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_messages_or_remote_error(data: bytes) -> None:
    try:
        messages = decode_messages(data)
    except RemoteProtocolError as exc:
        code: ErrorCode | None = exc.code
        messages = []
    else:
        code = None
    assert code is None or isinstance(code, ErrorCode)
    assert all(isinstance(m, Message) for m in messages)


@given(ANY_MESSAGE, st.data())
def test_mutated_messages_give_messages_or_remote_error(
    message: Message, data: st.DataObject
) -> None:
    raw = bytearray(encode_message(message))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    with contextlib.suppress(RemoteProtocolError):
        decode_messages(bytes(raw))


@given(ANY_MESSAGE, st.data())
def test_wrong_typed_values_are_refused(message: Message, data: st.DataObject) -> None:
    wire = wire_of(message)
    names = [name for name, _ in field_specs(type(message))]
    if not names:
        return
    name = data.draw(st.sampled_from(names))
    original = wire[name]
    replacement = data.draw(
        st.one_of(
            st.none(),
            st.booleans(),
            st.floats(),
            st.text(max_size=3),
            st.binary(max_size=3),
            st.integers(-(2**63), 2**64 - 1),
            st.lists(st.integers(0, 9), max_size=2),
        ).filter(lambda v: type(v) is not type(original))
    )
    wire[name] = replacement
    assert code_of(pack(wire)) is ErrorCode.WRONG_TYPE


def test_not_msgpack_is_malformed() -> None:
    assert code_of(b"\xc1") is ErrorCode.MALFORMED  # 0xc1 is never used


def test_empty_frame_is_malformed() -> None:
    assert code_of(b"") is ErrorCode.MALFORMED


def test_message_cut_off_is_malformed() -> None:
    whole = encode_message(Ok(id=1))
    assert code_of(whole + whole[:-1]) is ErrorCode.MALFORMED


def test_invalid_utf8_is_malformed() -> None:
    assert code_of(b"\x81\xa1t\xa2\xff\xfe") is ErrorCode.MALFORMED


def test_message_that_is_not_a_map() -> None:
    assert code_of(pack([1, 2])) is ErrorCode.WRONG_TYPE
    assert code_of(pack(7)) is ErrorCode.WRONG_TYPE


def test_missing_type_field() -> None:
    assert code_of(pack({"id": 1})) is ErrorCode.MISSING_FIELD


def test_type_field_of_wrong_type() -> None:
    assert code_of(pack({"t": b"ok", "id": 1})) is ErrorCode.WRONG_TYPE


def test_unknown_type() -> None:
    assert code_of(pack({"t": "teleport", "id": 1})) is ErrorCode.UNKNOWN_TYPE


def test_missing_field() -> None:
    assert code_of(pack({"t": "published", "id": 1})) is ErrorCode.MISSING_FIELD


def test_extra_field() -> None:
    assert code_of(pack({"t": "ok", "id": 1, "note": "hi"})) is ErrorCode.EXTRA_FIELD


def test_non_string_key() -> None:
    """Any key that is not a string is WRONG_TYPE (docs/protocol.md §4.1, issue 10)."""
    assert code_of(b"\x82\xa1t\xa2ok\xc4\x02id\x01") is ErrorCode.WRONG_TYPE  # bin key
    assert code_of(b"\x82\xa1t\xa2ok\x01\x01") is ErrorCode.WRONG_TYPE  # int key
    assert code_of(b"\x82\xa1t\xa2ok\xc0\x01") is ErrorCode.WRONG_TYPE  # nil key
    assert code_of(b"\x82\xa1t\xa2ok\x91\x01\x01") is ErrorCode.WRONG_TYPE  # array key
    assert code_of(b"\x82\xa1t\xa2ok\x81\x01\x01\x01") is ErrorCode.WRONG_TYPE  # map key
    assert code_of(b"\x82\x01\xa2ok\xa1t\xa2ok") is ErrorCode.WRONG_TYPE  # before "t" too


def test_duplicate_key() -> None:
    assert code_of(b"\x83\xa1t\xa2ok\xa2id\x01\xa2id\x02") is ErrorCode.DUPLICATE_FIELD


@pytest.mark.parametrize("value", [True, 1.0, None, "1", b"\x01"])
def test_integer_field_refuses_other_types(value: object) -> None:
    assert code_of(pack({"t": "ok", "id": value})) is ErrorCode.WRONG_TYPE


@pytest.mark.parametrize("value", [-1, 2**32])
def test_integer_out_of_range(value: int) -> None:
    assert code_of(pack({"t": "ok", "id": value})) is ErrorCode.OUT_OF_RANGE


def test_bytes_field_refuses_str() -> None:
    wire = wire_of(Deliver(mailbox=MAILBOX, seq=1, expires_at=2, envelope=b"e"))
    wire["envelope"] = "e"
    assert code_of(pack(wire)) is ErrorCode.WRONG_TYPE


def test_oversize_bytes() -> None:
    wire = wire_of(Deliver(mailbox=MAILBOX, seq=1, expires_at=2, envelope=b"e"))
    wire["envelope"] = b"e" * (MAX_ENVELOPE + 1)
    assert code_of(pack(wire)) is ErrorCode.TOO_LARGE
    wire["envelope"] = b"e"
    wire["mailbox"] = MAILBOX + b"!"
    assert code_of(pack(wire)) is ErrorCode.TOO_LARGE


def test_short_bytes_are_out_of_range() -> None:
    wire = wire_of(Deliver(mailbox=MAILBOX, seq=1, expires_at=2, envelope=b"e"))
    wire["mailbox"] = MAILBOX[:15]
    assert code_of(pack(wire)) is ErrorCode.OUT_OF_RANGE
    wire["mailbox"] = MAILBOX
    wire["envelope"] = b""
    assert code_of(pack(wire)) is ErrorCode.OUT_OF_RANGE


def test_unknown_choice_is_out_of_range() -> None:
    wire = {"t": "auth", "id": 1, "mailbox": MAILBOX, "role": "admin", "proof": b"p" * 64}
    assert code_of(pack(wire)) is ErrorCode.OUT_OF_RANGE


def test_extension_types_are_refused() -> None:
    assert code_of(pack({"t": "ok", "id": msgpack.ExtType(5, b"x")})) is ErrorCode.EXTENSION_TYPE
    assert code_of(pack({"t": "ok", "id": msgpack.Timestamp(1, 0)})) is ErrorCode.EXTENSION_TYPE
    assert code_of(pack(msgpack.Timestamp(1, 0))) is ErrorCode.EXTENSION_TYPE


def test_deep_nesting_is_refused() -> None:
    assert code_of(b"\x91" * 5000 + b"\xc0") is ErrorCode.TOO_DEEP


def test_nesting_beyond_the_schema_is_wrong_type() -> None:
    wire = {"t": "ok", "id": [[[1]]]}
    assert code_of(pack(wire)) is ErrorCode.WRONG_TYPE


def page_wire(items: object) -> bytes:
    return pack({"t": "page", "id": 1, "mailbox": MAILBOX, "items": items, "more": False})


def test_page_items_are_validated() -> None:
    assert code_of(page_wire([[1, 2]])) is ErrorCode.MISSING_FIELD
    assert code_of(page_wire([[1, 2, b"e", 4]])) is ErrorCode.EXTRA_FIELD
    assert code_of(page_wire([[1, -2, b"e"]])) is ErrorCode.OUT_OF_RANGE
    assert code_of(page_wire([[1, 2, "e"]])) is ErrorCode.WRONG_TYPE
    assert code_of(page_wire([{"seq": 1}])) is ErrorCode.WRONG_TYPE
    assert code_of(page_wire({"a": 1})) is ErrorCode.WRONG_TYPE
    assert code_of(page_wire([[1, 2, b"e"]] * (MAX_PAGE_ITEMS + 1))) is ErrorCode.TOO_LARGE
    page = decode_single(page_wire([[1, 2, b"e"]]))
    assert isinstance(page, Page)
    assert page.items == (PageItem(seq=1, expires_at=2, envelope=b"e"),)


def test_local_construction_is_validated() -> None:
    with pytest.raises(LocalProtocolError) as info:
        Publish(id=1, mailbox=MAILBOX, expires_at=-1, envelope=b"e")
    assert info.value.code is ErrorCode.OUT_OF_RANGE
    with pytest.raises(LocalProtocolError):
        Publish(id=True, mailbox=MAILBOX, expires_at=1, envelope=b"e")
    with pytest.raises(LocalProtocolError):
        Publish(id=1, mailbox=MAILBOX, expires_at=1, envelope=bytearray(b"e"))  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Page(
            id=1,
            mailbox=MAILBOX,
            items=(PageItem(seq=-1, expires_at=0, envelope=b"e"),),
            more=False,
        )
    with pytest.raises(LocalProtocolError):
        Page(id=1, mailbox=MAILBOX, items=("x",), more=False)  # type: ignore[arg-type]


def test_encode_refuses_non_messages() -> None:
    with pytest.raises(LocalProtocolError):
        encode_message(PageItem(seq=1, expires_at=1, envelope=b"e"))  # type: ignore[arg-type]


def test_secrets_are_not_in_repr() -> None:
    message = Publish(id=1, mailbox=MAILBOX, expires_at=1, envelope=b"CANARY-PLAINTEXT")
    assert "CANARY" not in repr(message)
    assert repr(MAILBOX) not in repr(message)


def test_error_codes_go_out_as_plain_integers() -> None:
    assert wire_of(Goodbye(code=ErrorCode.SLOW_CONSUMER))["code"] == 307
    assert type(wire_of(Goodbye(code=ErrorCode.SLOW_CONSUMER))["code"]) is int


def test_decoded_messages_are_frozen() -> None:
    message = decode_single(encode_message(Ok(id=5)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.id = 6  # type: ignore[attr-defined]
