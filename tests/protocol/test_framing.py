"""The 2-byte length framing: any chunking gives the same frames; lies are caught."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.protocol._errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from cellrelay.protocol.wire._framing import MAX_FRAME, FrameDecoder, encode_frame

bodies = st.lists(st.binary(min_size=1, max_size=600), max_size=10)


def _feed_in_chunks(stream: bytes, cuts: list[int]) -> list[bytes]:
    decoder = FrameDecoder()
    frames = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        frames += decoder.receive_data(stream[start:cut])
        start = max(start, cut)
    decoder.receive_eof()
    return frames


@given(bodies, st.data())
def test_any_split_gives_the_same_frames(frame_bodies: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(b) for b in frame_bodies)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    assert _feed_in_chunks(stream, cuts) == frame_bodies


@given(bodies)
def test_one_byte_at_a_time(frame_bodies: list[bytes]) -> None:
    stream = b"".join(encode_frame(b) for b in frame_bodies)
    assert _feed_in_chunks(stream, list(range(len(stream)))) == frame_bodies


def test_maximum_frame_round_trips() -> None:
    body = bytes(range(256)) * 255 + b"x" * 255  # 65,535 bytes
    assert len(body) == MAX_FRAME
    assert FrameDecoder().receive_data(encode_frame(body)) == [body]


@pytest.mark.parametrize("size", [0, MAX_FRAME + 1])
def test_encode_refuses_impossible_sizes(size: int) -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(b"x" * size)


def test_length_that_lies_long_is_truncated_at_eof() -> None:
    decoder = FrameDecoder()
    assert decoder.receive_data(b"\x01\x00" + b"x" * 10) == []
    assert decoder.buffered == 12
    with pytest.raises(RemoteProtocolError) as info:
        decoder.receive_eof()
    assert info.value.code is ErrorCode.TRUNCATED


def test_half_a_length_field_is_truncated_at_eof() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(b"\x00")
    with pytest.raises(RemoteProtocolError) as info:
        decoder.receive_eof()
    assert info.value.code is ErrorCode.TRUNCATED


@pytest.mark.parametrize("length", [0, 1, 16])
def test_frame_below_minimum_is_bad(length: int) -> None:
    decoder = FrameDecoder(min_frame=17)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.receive_data(length.to_bytes(2, "big") + b"x" * length)
    assert info.value.code is ErrorCode.BAD_FRAME


def test_buffer_holds_at_most_one_partial_frame() -> None:
    decoder = FrameDecoder()
    stream = b"".join(encode_frame(b"y" * 1000) for _ in range(50))
    frames = decoder.receive_data(stream + b"\x03\xe8" + b"y" * 999)
    assert len(frames) == 50
    assert decoder.buffered == 1001


@pytest.mark.parametrize("bad", [0, MAX_FRAME + 1])
def test_minimum_is_validated(bad: int) -> None:
    with pytest.raises(LocalProtocolError):
        FrameDecoder(min_frame=bad)


def test_frames_before_a_bad_length_come_first_however_the_stream_is_cut() -> None:
    """docs/protocol.md §8.1: a bad length hides none of the frames before it."""
    stream = encode_frame(b"one") + encode_frame(b"two") + b"\x00\x00" + encode_frame(b"x")
    whole = FrameDecoder()
    assert whole.receive_data(stream) == [b"one", b"two"]
    with pytest.raises(RemoteProtocolError) as info:
        whole.receive_data(b"")
    assert info.value.code is ErrorCode.BAD_FRAME
    byte_by_byte = FrameDecoder()
    frames: list[bytes] = []

    def feed_one_at_a_time() -> None:
        for i in range(len(stream)):
            frames.extend(byte_by_byte.receive_data(stream[i : i + 1]))

    with pytest.raises(RemoteProtocolError):
        feed_one_at_a_time()
    assert frames == [b"one", b"two"]
    at_the_end = FrameDecoder()
    assert at_the_end.receive_data(encode_frame(b"one") + b"\x00\x00") == [b"one"]
    with pytest.raises(RemoteProtocolError) as info:
        at_the_end.receive_eof()
    assert info.value.code is ErrorCode.BAD_FRAME  # not TRUNCATED
