"""The codec's fast paths agree with the reference ones, byte for byte and code for code.

The trusted encoders (`encode_published`, ...) must give exactly `encode_message`'s bytes;
the decoder's fast path (`_decode_fast`) must give exactly what `_from_wire` gives, or
defer to it; `FieldSpec.predicate` must never accept what `FieldSpec.check` refuses.
"""

from __future__ import annotations

import enum

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.protocol._errors import ErrorCode, RemoteProtocolError
from cellrelay.protocol.wire._codec import (
    _decode_fast,
    _from_wire,
    decode_messages,
    encode_deliver,
    encode_error,
    encode_message,
    encode_ok,
    encode_published,
)
from cellrelay.protocol.wire._messages import (
    ITEM_SPECS,
    MAX_ENVELOPE,
    MESSAGE_TYPES,
    Deliver,
    Error,
    FieldSpec,
    MailboxId,
    Message,
    Ok,
    Page,
    Published,
    field_specs,
)

from .strategies import ANY_MESSAGE

U16 = 2**16 - 1
U32 = 2**32 - 1
U64 = 2**64 - 1

request_ids = st.integers(0, U32)
uint64s = st.integers(0, U64)
# Small, boundary and large envelopes: the bin header changes at 256 and 65,536 bytes.
envelopes = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.sampled_from([255, 256, 257, MAX_ENVELOPE]).map(lambda n: b"e" * n),
)
codes = st.one_of(st.sampled_from(list(ErrorCode)), st.integers(0, U16))


def unpack(data: bytes) -> object:
    """Unpack one message the way `decode_messages` does."""
    return msgpack.unpackb(
        data, raw=False, use_list=False, object_pairs_hook=list, strict_map_key=True
    )


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


# -- trusted encoders ----------------------------------------------------------------------------


@given(request_ids, uint64s)
def test_encode_published_matches_encode_message(request_id: int, seq: int) -> None:
    expected = encode_message(Published(id=request_id, seq=seq))
    assert encode_published(request_id, seq) == expected


@given(st.binary(min_size=16, max_size=16), uint64s, uint64s, envelopes)
def test_encode_deliver_matches_encode_message(
    mailbox: bytes, seq: int, expires_at: int, envelope: bytes
) -> None:
    message = Deliver(mailbox=MailboxId(mailbox), seq=seq, expires_at=expires_at, envelope=envelope)
    assert encode_deliver(mailbox, seq, expires_at, envelope) == encode_message(message)


@given(request_ids)
def test_encode_ok_matches_encode_message(request_id: int) -> None:
    assert encode_ok(request_id) == encode_message(Ok(id=request_id))


@given(request_ids, codes)
def test_encode_error_matches_encode_message(request_id: int, code: int) -> None:
    assert encode_error(request_id, code) == encode_message(Error(id=request_id, code=code))


# -- the decoder's fast path -------------------------------------------------------------------


def reference(obj: object) -> Message | ErrorCode:
    """What `_from_wire` makes of `obj`: a message, or the error code it raises."""
    try:
        return _from_wire(obj)
    except RemoteProtocolError as exc:
        return exc.code


def assert_fast_agrees(obj: object) -> None:
    fast = _decode_fast(obj)
    if fast is not None:
        assert type(fast) is type(reference(obj))
        assert fast == reference(obj)


@given(ANY_MESSAGE)
def test_fast_path_decodes_every_message_in_declared_order(message: Message) -> None:
    obj = unpack(encode_message(message))
    fast = _decode_fast(obj)
    if isinstance(message, Page):
        assert fast is None  # items are left to the reference decoder
    else:
        assert fast == message
        assert type(fast) is type(message)
    assert reference(obj) == message


@given(ANY_MESSAGE, st.randoms(use_true_random=False))
def test_fast_path_defers_on_other_key_orders(message: Message, rng: object) -> None:
    pairs = list(unpack(encode_message(message)))  # type: ignore[call-overload]
    rng.shuffle(pairs)  # type: ignore[attr-defined]
    assert_fast_agrees(pairs)
    assert decode_messages(pack(dict(pairs))) == [message]


# Values of every type msgpack produces (and some it does not), at and around bounds.
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), U64),
    st.sampled_from([0, 1, 15, 16, 17, 64, 65, U16, U16 + 1, U32, U32 + 1, U64, -1]),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.sampled_from(["read", "write", "admin", "t"]),
    st.binary(max_size=70),
    st.sampled_from([0, 1, 16, 32, 64, MAX_ENVELOPE, MAX_ENVELOPE + 1]).map(lambda n: b"x" * n),
    st.tuples(st.integers(0, 9)),
    st.just([("a", 1)]),
)


@given(ANY_MESSAGE, st.data())
def test_fast_path_never_accepts_what_the_reference_refuses(
    message: Message, data: st.DataObject
) -> None:
    pairs = list(unpack(encode_message(message)))  # type: ignore[call-overload]
    mutation = data.draw(st.sampled_from(["value", "key", "drop", "extra", "repeat", "type"]))
    position = data.draw(st.integers(0, len(pairs) - 1))
    key, value = pairs[position]
    if mutation == "value":
        pairs[position] = (key, data.draw(ANY_VALUE))
    elif mutation == "key":
        pairs[position] = (data.draw(st.sampled_from(["id", "seq", "t", "code", "x"])), value)
    elif mutation == "drop":
        del pairs[position]
    elif mutation == "extra":
        pairs.insert(position, (data.draw(st.sampled_from(["x", "id", "t"])), data.draw(ANY_VALUE)))
    elif mutation == "repeat":
        pairs.insert(position, pairs[position])
    else:
        pairs[0] = ("t", data.draw(st.sampled_from([*MESSAGE_TYPES, "teleport"])))
    assert_fast_agrees(pairs)


@pytest.mark.parametrize(
    "obj",
    [[], [("t", "ok")], [("x", 1)], [("t", 5), ("id", 1)], [("t", "ok"), ("id", True)], (1, 2), 7],
)
def test_fast_path_defers_on_odd_shapes(obj: object) -> None:
    assert _decode_fast(obj) is None


# -- field predicates --------------------------------------------------------------------------


class _Level(enum.IntEnum):
    ONE = 1


SPECS = sorted(
    {spec for cls in MESSAGE_TYPES.values() for _, spec in field_specs(cls)}
    | {spec for _, spec in ITEM_SPECS},
    key=repr,
)


@pytest.mark.parametrize("spec", SPECS, ids=repr)
@given(value=st.one_of(ANY_VALUE, st.just(_Level.ONE)))
def test_predicate_accepts_only_what_check_accepts(spec: FieldSpec, value: object) -> None:
    test = spec.predicate()
    if test is None:
        assert spec.kind == "items"
        return
    if test(value):
        assert spec.check(value) is None
    elif type(value) in (int, bytes, str, bool):  # what msgpack produces: exact agreement
        assert spec.check(value) is not None
