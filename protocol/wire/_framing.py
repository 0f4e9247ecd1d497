"""Length-prefixed framing of Noise messages on a byte stream (docs/protocol.md §2).

Every Noise message, handshake or transport, travels as a 2-byte big-endian length
followed by that many bytes. Noise itself caps a message at 65,535 bytes, which is
exactly what 2 bytes can express, so the length field cannot ask for more than the
protocol allows; it can still lie by announcing more bytes than will ever arrive,
which `FrameDecoder.receive_eof` reports as `TRUNCATED`.

The decoder never holds more than one incomplete frame: everything complete is
returned from `receive_data` at once, so its buffer is bounded by `MAX_FRAME + 1`
bytes plus whatever the caller hands it in one call.
"""

from __future__ import annotations

from typing import Final

from .._errors import ErrorCode, LocalProtocolError, RemoteProtocolError

__all__ = ["FRAME_HEADER", "MAX_FRAME", "FrameDecoder", "encode_frame"]

FRAME_HEADER: Final = 2
# Noise spec rev 34 §3: "Noise messages ... are limited to 65535 bytes in length".
MAX_FRAME: Final = 65535


def encode_frame(body: bytes) -> bytes:
    """Return `body` with its 2-byte length prefix.

    Raises:
        LocalProtocolError: the body is empty or longer than `MAX_FRAME`.
    """
    n = len(body)
    if not 0 < n <= MAX_FRAME:
        raise LocalProtocolError(f"frame body of {n} bytes is outside 1..{MAX_FRAME}")
    return n.to_bytes(2, "big") + body


class FrameDecoder:
    """Split an incoming byte stream into frame bodies, whatever the chunking.

    Bytes may arrive split at any position or with several frames at once; the frames
    returned are the same either way.
    """

    __slots__ = ("_buffer", "_min_frame")

    def __init__(self, *, min_frame: int = 1) -> None:
        """Create a decoder that rejects frames shorter than `min_frame` bytes."""
        if not 1 <= min_frame <= MAX_FRAME:
            raise LocalProtocolError(f"min_frame {min_frame} is outside 1..{MAX_FRAME}")
        self._buffer = bytearray()
        self._min_frame = min_frame

    @property
    def buffered(self) -> int:
        """How many bytes of an incomplete frame are held."""
        return len(self._buffer)

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add `data` and return every frame body it completes, oldest first.

        A length field below the minimum ends the stream of frames: the frames before it
        are returned first, and this call (if there were none) or the next one raises.

        Raises:
            RemoteProtocolError: a length field below the minimum frame size (BAD_FRAME).
        """
        buf = self._buffer
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        min_frame = self._min_frame
        while end - pos >= FRAME_HEADER:
            n = (buf[pos] << 8) | buf[pos + 1]
            if n < min_frame:
                if frames:
                    break  # these first; the bad length stays at the front for the next call
                raise RemoteProtocolError(
                    f"frame length {n} is below the minimum of {min_frame}", ErrorCode.BAD_FRAME
                )
            stop = pos + FRAME_HEADER + n
            if stop > end:
                break
            frames.append(bytes(buf[pos + FRAME_HEADER : stop]))
            pos = stop
        if pos:
            del buf[:pos]
        return frames

    def receive_eof(self) -> None:
        """Note that the stream ended.

        Raises:
            RemoteProtocolError: a length below the minimum was waiting (BAD_FRAME), or
                the stream ended inside a frame (TRUNCATED).
        """
        self.receive_data(b"")  # a bad length left for the next call comes first
        if self._buffer:
            raise RemoteProtocolError(
                f"stream ended with {len(self._buffer)} bytes of an incomplete frame",
                ErrorCode.TRUNCATED,
            )
