"""Fuzz the frame decoder: any chunking of any bytes gives the same frames or BAD_FRAME.

Input layout: byte 0 picks how many cut points to use; the next bytes are cut
positions; the rest is the stream. Frames shorter than 2 bytes are refused, so the
BAD_FRAME path is exercised too.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from cellrelay.protocol._errors import RemoteProtocolError
    from cellrelay.protocol.wire._framing import FrameDecoder


def _decode(stream: bytes, cuts: list[int]) -> tuple[list[bytes], str | None]:
    decoder = FrameDecoder(min_frame=2)
    frames: list[bytes] = []
    start = 0
    try:
        for cut in [*cuts, len(stream)]:
            frames += decoder.receive_data(stream[start:cut])
            start = max(start, cut)
        decoder.receive_eof()
    except RemoteProtocolError as exc:
        return frames, exc.code.name
    return frames, None


def test_one_input(data: bytes) -> None:
    """Check one input (atheris entry point)."""
    if not data:
        return
    n_cuts = data[0] % 8
    stream = data[1 + n_cuts :]
    cuts = sorted(b * len(stream) // 255 for b in data[1 : 1 + n_cuts])
    whole, whole_error = _decode(stream, [])
    chunked, chunked_error = _decode(stream, cuts)
    if whole_error != chunked_error:
        raise AssertionError("chunking changed the outcome")
    # The frames before a bad length come out however the stream was cut (docs/protocol.md
    # §8.1), so the frames are identical with an error too.
    if whole != chunked:
        raise AssertionError("chunking changed the decoded frames")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
