"""Fuzz the message codec: bytes give messages that re-encode identically, or a RemoteProtocolError."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from cellrelay.protocol._errors import RemoteProtocolError
    from cellrelay.protocol.wire._codec import decode_messages, encode_message


def test_one_input(data: bytes) -> None:
    """Check one input (atheris entry point)."""
    try:
        messages = decode_messages(data)
    except RemoteProtocolError:
        return
    # Whatever we accept must survive our own encoder and decode back to the same thing.
    again = decode_messages(b"".join(encode_message(m) for m in messages))
    if again != messages:
        raise AssertionError("accepted message does not round-trip")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
