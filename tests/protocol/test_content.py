"""Message contents: every kind round-trips; every kind of bad input has its own error code."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.protocol._errors import CellrelayError, ErrorCode, ProtocolError
from cellrelay.protocol.cell._content import (
    CONTENT_TYPES,
    GROUP_KINDS,
    MAX_CONTENT,
    MAX_NAME,
    MAX_NOTE,
    MAX_PLACE,
    MAX_RECEIPT_IDS,
    MAX_TEXT,
    Alert,
    Burn,
    Change,
    Content,
    ContentError,
    ContentKind,
    EscalationNote,
    Leave,
    MemberId,
    MembershipChange,
    MessageId,
    PlainMessage,
    Priority,
    Receipt,
    ReceiptState,
    Status,
    StatusReply,
    VerificationStep,
    _Content,
    content_field_specs,
    decode_content,
    new_message_id,
)

from .content_strategies import ANY_CONTENT, contents_of

MID = MessageId(bytes(range(16)))
OTHER = MessageId(bytes(range(16, 32)))
ALICE = MemberId(b"A" * 16)
BOB = MemberId(b"B" * 16)
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def wire_of(content: Content) -> dict[str, object]:
    decoded = msgpack.unpackb(content.encode(), raw=False)
    assert isinstance(decoded, dict)
    return decoded


def code_of(kind: int, data: bytes, *, allow_local: bool = False) -> ErrorCode:
    with pytest.raises(ContentError) as info:
        decode_content(kind, data, allow_local=allow_local)
    return info.value.code


def local_code(build: object) -> ErrorCode:
    assert callable(build)
    with pytest.raises(ContentError) as info:
        build()
    return info.value.code


def alert(**changes: object) -> Alert:
    fields: dict[str, object] = {
        "message_id": MID,
        "sent_at_ms": T0,
        "text": "Agents at 14th & Main, responders needed",
        "priority": Priority.URGENT,
        "place": "14th & Main",
        "expires_at": T0 // 1000 + 3600,
    }
    fields.update(changes)
    return Alert(**fields)  # type: ignore[arg-type]


def kind_of(content: Content) -> int:
    return int(type(content).KIND)


# -- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", CONTENT_TYPES.values(), ids=lambda c: c.__name__)
@given(data=st.data())
def test_every_content_kind_round_trips(cls: type[_Content], data: st.DataObject) -> None:
    content = data.draw(contents_of(cls))
    again = decode_content(kind_of(content), content.encode(), allow_local=True)
    assert again == content
    assert type(again) is type(content)


def test_kinds_are_the_documented_numbers() -> None:
    assert {cls.KIND: cls for cls in CONTENT_TYPES.values()} == {
        0: MembershipChange,
        1: Alert,
        2: StatusReply,
        3: Receipt,
        4: PlainMessage,
        16: Leave,
        17: VerificationStep,
        18: EscalationNote,
        24: Burn,
    }
    assert int(ContentKind.SENDER_KEY) == 5
    assert int(ContentKind.EPOCH_CHANGE) == 6
    assert list(GROUP_KINDS) == list(range(5, 16))


def test_known_encoding_of_an_alert() -> None:
    """The example in docs/protocol.md §C1.4, byte for byte."""
    encoded = alert().encode()
    assert encoded.hex() == (
        "86"
        "aa6d6573736167655f6964c410000102030405060708090a0b0c0d0e0f"
        "aa73656e745f61745f6d73cf0000019b76daa800"
        "a474657874d9284167656e747320617420313474682026204d61696e2c20726573706f6e64657273206e6565646564"
        "a87072696f72697479a6757267656e74"
        "a5706c616365ab313474682026204d61696e"
        "aa657870697265735f6174ce6955c710"
    )
    assert decode_content(1, encoded) == alert()


def test_alert_id_is_the_message_id() -> None:
    assert alert().alert_id == MID


def test_message_ids_are_fresh_by_default() -> None:
    a = PlainMessage(sent_at_ms=T0, text="hi")
    b = PlainMessage(sent_at_ms=T0, text="hi")
    assert len(a.message_id) == 16
    assert a.message_id != b.message_id
    assert len(new_message_id()) == 16


def test_choices_accept_strings_and_become_enums() -> None:
    a = alert(priority="emergency")
    assert a.priority is Priority.EMERGENCY
    reply = StatusReply(sent_at_ms=T0, alert_id=MID, status="on_scene")  # type: ignore[arg-type]
    assert reply.status is Status.ON_SCENE
    assert wire_of(reply)["status"] == "on_scene"


def test_receipt_ids_accept_a_list() -> None:
    receipt = Receipt(sent_at_ms=T0, message_ids=[MID, OTHER], state=ReceiptState.READ)  # type: ignore[arg-type]
    assert receipt.message_ids == (MID, OTHER)
    assert decode_content(3, receipt.encode()) == receipt


def test_maximal_contents_fit_the_size_limit() -> None:
    wide = "\U0001f6a8"  # four bytes of UTF-8
    biggest: list[Content] = [
        alert(text=wide * MAX_TEXT, place=wide * MAX_PLACE, expires_at=2**63 - 1, sent_at_ms=2**62),
        StatusReply(
            sent_at_ms=2**63 - 1, alert_id=MID, status=Status.FALSE_ALARM, note=wide * MAX_NOTE
        ),
        Receipt(
            sent_at_ms=2**63 - 1,
            message_ids=tuple(MessageId(i.to_bytes(16, "big")) for i in range(MAX_RECEIPT_IDS)),
            state=ReceiptState.DELIVERED,
        ),
        PlainMessage(sent_at_ms=2**63 - 1, text=wide * MAX_TEXT),
        MembershipChange(
            sent_at_ms=2**63 - 1,
            change=Change.PROMOTED,
            member_id=ALICE,
            member_name=wide * MAX_NAME,
            by_id=BOB,
            by_name=wide * MAX_NAME,
        ),
    ]
    for content in biggest:
        encoded = content.encode()
        assert len(encoded) <= MAX_CONTENT
        assert decode_content(kind_of(content), encoded, allow_local=True) == content
    assert max(len(c.encode()) for c in biggest) < 9_000  # the bound quoted in _content.py


# -- arbitrary input gives a content or ContentError, nothing else -------------------------


@given(st.integers(-5, 300), st.binary(max_size=200))
def test_arbitrary_bytes_give_content_or_content_error(kind: int, data: bytes) -> None:
    try:
        content: Content | Leave | Burn | None = decode_content(kind, data, allow_local=True)
    except ContentError as exc:
        code: ErrorCode | None = exc.code
        content = None
    else:
        code = None
    assert code is None or isinstance(code, ErrorCode)
    assert content is None or kind == type(content).KIND


@given(ANY_CONTENT, st.data())
def test_mutated_encodings_give_content_or_content_error(
    content: Content, data: st.DataObject
) -> None:
    raw = bytearray(content.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(ContentError):
        decode_content(kind_of(content), bytes(raw), allow_local=True)


@given(ANY_CONTENT, st.data())
def test_wrong_typed_values_are_refused(content: Content, data: st.DataObject) -> None:
    wire = wire_of(content)
    # An optional field left nil would accept a value of its type: replace the others.
    name = data.draw(st.sampled_from(sorted(k for k, v in wire.items() if v is not None)))
    original = wire[name]
    replacement = data.draw(
        st.one_of(
            st.booleans(),
            st.floats(),
            st.text(max_size=3),
            st.binary(max_size=3),
            st.integers(-(2**63), 2**64 - 1),
            st.lists(st.integers(0, 9), max_size=2),
            st.dictionaries(st.text(max_size=2), st.integers(0, 9), max_size=2),
        ).filter(lambda v: type(v) is not type(original))
    )
    wire[name] = replacement
    code = code_of(kind_of(content), pack(wire), allow_local=True)
    # A str where a choice is expected is a wrong choice, not a wrong type; nil where a
    # field is optional is allowed (and not drawn here).
    assert code is ErrorCode.WRONG_TYPE or (
        code is ErrorCode.OUT_OF_RANGE and isinstance(original, str)
    )


# -- the map itself -------------------------------------------------------------------------


def test_codec_level_problems_keep_their_codes() -> None:
    good = wire_of(alert())
    assert code_of(1, b"") is ErrorCode.MALFORMED
    assert code_of(1, b"\xc1") is ErrorCode.MALFORMED
    assert code_of(1, alert().encode()[:-3]) is ErrorCode.MALFORMED
    assert code_of(1, alert().encode() + b"\xc0") is ErrorCode.MALFORMED
    assert code_of(1, b"\x81\xa1a\xc4\x80" + b"\x00" * 5) is ErrorCode.MALFORMED  # cut-off bin
    assert code_of(1, pack([1, 2])) is ErrorCode.WRONG_TYPE
    assert code_of(1, pack({1: 2})) is ErrorCode.MALFORMED  # an integer key
    assert code_of(1, pack({b"text": 2})) is ErrorCode.WRONG_TYPE  # a bin key
    assert code_of(1, b"\x81\xa1a\xc4\x02\xff\xfe" + b"\x00") is ErrorCode.MALFORMED
    assert code_of(1, b"\x91" * 5000 + b"\xc0") is ErrorCode.TOO_DEEP
    good["text"] = msgpack.ExtType(1, b"x")
    assert code_of(1, pack(good)) is ErrorCode.EXTENSION_TYPE
    good["text"] = msgpack.Timestamp(1, 0)
    assert code_of(1, pack(good)) is ErrorCode.EXTENSION_TYPE


def test_invalid_utf8_is_malformed() -> None:
    wire = wire_of(alert(text="x"))
    raw = pack(wire).replace(b"\xa1x", b"\xa1\xff")
    assert code_of(1, raw) is ErrorCode.MALFORMED


def test_duplicate_key() -> None:
    raw = alert().encode()
    # Rewrite the map header to one more entry and repeat the "text" pair at the end.
    text_pair = pack("text") + pack(alert().text)
    assert code_of(1, b"\x87" + raw[1:] + text_pair) is ErrorCode.DUPLICATE_FIELD


@pytest.mark.parametrize(
    "content", [alert(), StatusReply(sent_at_ms=T0, alert_id=MID, status=Status.RESPONDING)]
)
def test_missing_and_extra_fields(content: Content) -> None:
    for name in wire_of(content):
        wire = wire_of(content)
        del wire[name]
        assert code_of(kind_of(content), pack(wire)) is ErrorCode.MISSING_FIELD
    wire = wire_of(content)
    wire["extra"] = 1
    assert code_of(kind_of(content), pack(wire)) is ErrorCode.EXTRA_FIELD


def test_optional_fields_are_present_as_nil() -> None:
    bare = alert(place=None)
    assert wire_of(bare)["place"] is None
    assert decode_content(1, bare.encode()).place is None  # type: ignore[union-attr]


def test_content_of_another_kind_is_refused() -> None:
    assert code_of(ContentKind.STATUS, alert().encode()) is ErrorCode.MISSING_FIELD
    plain = PlainMessage(sent_at_ms=T0, text="hello")
    assert code_of(ContentKind.ALERT, plain.encode()) is ErrorCode.MISSING_FIELD


def test_oversize_input_is_refused_before_decoding() -> None:
    assert code_of(1, b"\x00" * (MAX_CONTENT + 1)) is ErrorCode.TOO_LARGE


# -- kinds ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(GROUP_KINDS))
def test_group_kinds_are_not_app_contents(kind: int) -> None:
    assert code_of(kind, alert().encode()) is ErrorCode.UNEXPECTED_MESSAGE


@pytest.mark.parametrize("kind", [-1, 19, 200, 255, 256, 2**40])
def test_unknown_kinds(kind: int) -> None:
    assert code_of(kind, alert().encode()) is ErrorCode.UNKNOWN_TYPE


def test_known_encoding_of_a_leave() -> None:
    """The leave in docs/protocol.md §C9, byte for byte: two fields and nothing else."""
    leave = Leave(message_id=MID, sent_at_ms=T0)
    assert leave.KIND is ContentKind.LEAVE
    assert int(ContentKind.LEAVE) == 16
    encoded = leave.encode()
    assert encoded.hex() == (
        "82"
        "aa6d6573736167655f6964c410000102030405060708090a0b0c0d0e0f"
        "aa73656e745f61745f6d73cf0000019b76daa800"
    )  # fmt: skip
    assert decode_content(16, encoded) == leave
    # Every field of an alert but the two a leave has is one too many; a leave is no alert.
    assert code_of(16, alert().encode()) is ErrorCode.EXTRA_FIELD
    assert code_of(16, pack({"message_id": MID})) is ErrorCode.MISSING_FIELD
    assert code_of(ContentKind.ALERT, encoded) is ErrorCode.MISSING_FIELD


def test_membership_changes_are_local_only() -> None:
    change = MembershipChange(
        sent_at_ms=T0, change=Change.REMOVED, member_id=ALICE, member_name="Alice",
        by_id=BOB, by_name="Bob",
    )  # fmt: skip
    assert code_of(0, change.encode()) is ErrorCode.UNEXPECTED_MESSAGE
    assert decode_content(0, change.encode(), allow_local=True) == change


# -- field bounds, locally and from the wire ------------------------------------------------


def both_ways(content_kind: int, build: dict[str, object], name: str, value: object) -> ErrorCode:
    """The code for `value` in field `name`, checked by the constructor and by the decoder."""
    cls = CONTENT_TYPES[content_kind]
    fields = dict(build, **{name: value})
    local = local_code(lambda: cls(**fields))
    wire = {k: (v.value if isinstance(v, Priority | Status | ReceiptState | Change) else v)
            for k, v in fields.items()}  # fmt: skip
    remote = code_of(content_kind, pack(wire), allow_local=True)
    assert local is remote
    return local


ALERT_FIELDS: dict[str, object] = {
    "message_id": MID,
    "sent_at_ms": T0,
    "text": "x",
    "priority": "info",
    "place": None,
    "expires_at": T0 // 1000 + 60,
}
STATUS_FIELDS: dict[str, object] = {
    "message_id": MID,
    "sent_at_ms": T0,
    "alert_id": OTHER,
    "status": "responding",
    "note": None,
}
RECEIPT_FIELDS: dict[str, object] = {
    "message_id": MID,
    "sent_at_ms": T0,
    "message_ids": (OTHER,),
    "state": "read",
}
MEMBERSHIP_FIELDS: dict[str, object] = {
    "message_id": MID,
    "sent_at_ms": T0,
    "change": "added",
    "member_id": ALICE,
    "member_name": "Alice",
    "by_id": BOB,
    "by_name": "Bob",
}


@pytest.mark.parametrize(
    ("kind", "fields", "name", "limit"),
    [
        (1, ALERT_FIELDS, "text", MAX_TEXT),
        (1, ALERT_FIELDS, "place", MAX_PLACE),
        (2, STATUS_FIELDS, "note", MAX_NOTE),
        (4, {"message_id": MID, "sent_at_ms": T0, "text": "x"}, "text", MAX_TEXT),
        (0, MEMBERSHIP_FIELDS, "member_name", MAX_NAME),
        (0, MEMBERSHIP_FIELDS, "by_name", MAX_NAME),
    ],
)
def test_text_bounds(kind: int, fields: dict[str, object], name: str, limit: int) -> None:
    cls = CONTENT_TYPES[kind]
    cls(**dict(fields, **{name: "\U0001f6a8" * limit}))  # at the limit, in characters
    assert both_ways(kind, fields, name, "x" * (limit + 1)) is ErrorCode.TOO_LARGE
    assert both_ways(kind, fields, name, "") is ErrorCode.OUT_OF_RANGE


@pytest.mark.parametrize(
    ("kind", "fields", "name"),
    [
        (1, ALERT_FIELDS, "text"),
        (1, ALERT_FIELDS, "place"),
        (2, STATUS_FIELDS, "note"),
        (0, MEMBERSHIP_FIELDS, "member_name"),
    ],
)
@pytest.mark.parametrize("bad", ["\x1b[2J", "a\rb", "\x00", "\x7f", "\x9b31m", "\x85", "\x08"])
def test_control_characters_are_refused(
    kind: int, fields: dict[str, object], name: str, bad: str
) -> None:
    assert both_ways(kind, fields, name, "ok " + bad) is ErrorCode.OUT_OF_RANGE


def test_line_breaks_only_in_multiline_fields() -> None:
    alert(text="line one\nline two\tindented")
    StatusReply(sent_at_ms=T0, alert_id=MID, status=Status.RESPONDING, note="a\nb")
    alert(text="para\u2028graph")  # a line separator is a line break, allowed in text
    for bad in ("a\nb", "a\tb", "a\u2028b", "a\u2029b"):
        assert both_ways(1, ALERT_FIELDS, "place", bad) is ErrorCode.OUT_OF_RANGE
        assert both_ways(0, MEMBERSHIP_FIELDS, "by_name", bad) is ErrorCode.OUT_OF_RANGE


def test_bidirectional_text_is_allowed() -> None:
    """Right-to-left languages need the bidi marks; renderers isolate fields instead."""
    name = "\u202b\u0645\u0631\u062d\u0628\u0627\u202c \u2067x\u2069"
    assert alert(place=name).place == name


def test_surrogates_are_refused_locally() -> None:
    assert local_code(lambda: alert(text="a\ud800")) is ErrorCode.OUT_OF_RANGE


@pytest.mark.parametrize(
    ("kind", "fields", "name", "size"),
    [
        (1, ALERT_FIELDS, "message_id", 16),
        (2, STATUS_FIELDS, "alert_id", 16),
        (0, MEMBERSHIP_FIELDS, "member_id", 16),
        (0, MEMBERSHIP_FIELDS, "by_id", 16),
    ],
)
def test_id_sizes(kind: int, fields: dict[str, object], name: str, size: int) -> None:
    assert both_ways(kind, fields, name, b"\x01" * (size - 1)) is ErrorCode.OUT_OF_RANGE
    assert both_ways(kind, fields, name, b"\x01" * (size + 1)) is ErrorCode.TOO_LARGE
    assert both_ways(kind, fields, name, "x" * size) is ErrorCode.WRONG_TYPE


def test_receipt_bounds() -> None:
    ids = tuple(i.to_bytes(16, "big") for i in range(MAX_RECEIPT_IDS + 1))
    Receipt(sent_at_ms=T0, message_ids=ids[:-1], state=ReceiptState.READ)  # type: ignore[arg-type]
    assert both_ways(3, RECEIPT_FIELDS, "message_ids", ids) is ErrorCode.TOO_LARGE
    assert both_ways(3, RECEIPT_FIELDS, "message_ids", ()) is ErrorCode.OUT_OF_RANGE
    assert both_ways(3, RECEIPT_FIELDS, "message_ids", (MID, MID)) is ErrorCode.DUPLICATE_FIELD
    assert both_ways(3, RECEIPT_FIELDS, "message_ids", (b"short",)) is ErrorCode.OUT_OF_RANGE
    assert both_ways(3, RECEIPT_FIELDS, "message_ids", ("x" * 16,)) is ErrorCode.WRONG_TYPE
    assert both_ways(3, RECEIPT_FIELDS, "message_ids", MID) is ErrorCode.WRONG_TYPE
    # An empty map decodes to an empty list of pairs: still not an array of ids.
    assert both_ways(3, RECEIPT_FIELDS, "message_ids", {}) is ErrorCode.WRONG_TYPE


@pytest.mark.parametrize(
    ("kind", "fields", "name"),
    [
        (1, ALERT_FIELDS, "priority"),
        (2, STATUS_FIELDS, "status"),
        (3, RECEIPT_FIELDS, "state"),
        (0, MEMBERSHIP_FIELDS, "change"),
    ],
)
def test_choices(kind: int, fields: dict[str, object], name: str) -> None:
    assert both_ways(kind, fields, name, "URGENT") is ErrorCode.OUT_OF_RANGE
    assert both_ways(kind, fields, name, "") is ErrorCode.OUT_OF_RANGE
    assert both_ways(kind, fields, name, 1) is ErrorCode.WRONG_TYPE
    assert both_ways(kind, fields, name, None) is ErrorCode.WRONG_TYPE


def test_times() -> None:
    assert both_ways(4, {"message_id": MID, "sent_at_ms": T0, "text": "x"}, "sent_at_ms", -1) is (
        ErrorCode.OUT_OF_RANGE
    )
    assert both_ways(2, STATUS_FIELDS, "sent_at_ms", 2**63) is ErrorCode.OUT_OF_RANGE
    assert both_ways(2, STATUS_FIELDS, "sent_at_ms", True) is ErrorCode.WRONG_TYPE
    assert both_ways(2, STATUS_FIELDS, "sent_at_ms", 1.5) is ErrorCode.WRONG_TYPE
    assert both_ways(1, ALERT_FIELDS, "expires_at", 2**63) is ErrorCode.OUT_OF_RANGE


def test_alert_must_expire_after_it_was_sent() -> None:
    assert both_ways(1, ALERT_FIELDS, "expires_at", T0 // 1000) is ErrorCode.OUT_OF_RANGE
    assert alert(expires_at=T0 // 1000 + 1).expires_at == T0 // 1000 + 1


# -- errors and reprs -----------------------------------------------------------------------


def test_content_error_is_a_value_error_not_a_protocol_error() -> None:
    with pytest.raises(ContentError) as info:
        decode_content(1, b"")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, CellrelayError)
    assert not isinstance(info.value, ProtocolError)
    assert "MALFORMED" in repr(info.value)


def test_errors_name_sizes_not_text() -> None:
    canary = "CANARY-7f3a"
    builds: list[Callable[[], object]] = [
        lambda: alert(text=canary * 500),
        lambda: alert(text=canary + "\x1b"),
        lambda: alert(place=canary * 50),
    ]
    for build in builds:
        with pytest.raises(ContentError) as info:
            build()
        assert canary not in str(info.value)
        assert "Alert." in str(info.value)
    wire = wire_of(alert(text=canary))
    wire["text"] = canary * 500
    with pytest.raises(ContentError) as info:
        decode_content(1, pack(wire))
    assert canary not in str(info.value)
    assert "2000" in str(info.value)


def test_plaintext_is_not_in_reprs() -> None:
    canary = "CANARY-19bd"
    contents: list[Content] = [
        alert(text=canary, place=canary),
        StatusReply(sent_at_ms=T0, alert_id=MID, status=Status.RESOLVED, note=canary),
        PlainMessage(sent_at_ms=T0, text=canary),
        MembershipChange(
            sent_at_ms=T0,
            change=Change.LEFT,
            member_id=ALICE,
            member_name=canary,
            by_id=ALICE,
            by_name=canary,
        ),
    ]
    for content in contents:
        assert canary not in repr(content)


def test_contents_are_frozen() -> None:
    content = alert()
    with pytest.raises(AttributeError):
        content.text = "changed"  # type: ignore[misc]


def test_every_field_has_a_documentable_spec() -> None:
    described = {
        cls.__name__: [f"{name}: {spec.describe()}" for name, spec in content_field_specs(cls)]
        for cls in CONTENT_TYPES.values()
    }
    assert described["Alert"] == [
        "message_id: bytes (16 bytes)",
        "sent_at_ms: uint 0..9223372036854775807",
        "text: text (1..2000 chars)",
        'priority: "info" | "urgent" | "emergency"',
        "place: line (1..200 chars, one line) or nil",
        "expires_at: uint 0..9223372036854775807",
        "escalate_below: uint 0..1024, nil or absent",
        "escalate_after: uint 1..86400, nil or absent",
        "from_label: line (1..64 chars, one line), nil or absent",
        "from_ref: bytes (16 bytes), nil or absent",
    ]
    assert described["Receipt"][2] == "message_ids: ids (1..100 ids)"
