"""Fuzz dispatch seals (docs/protocol.md §C11): any bytes give an answer or a GroupError.

Byte 0 picks the mode: raw bytes to `open_for_dispatch` as a reader, or a genuine seal
with the fuzz input flipped into it (so the box search and the body's AEAD are reached).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from cellrelay.protocol.cell._dispatch import open_for_dispatch, seal_for_dispatch
    from cellrelay.protocol.cell._errors import GroupError
    from cellrelay.protocol.cell._identity import Identity

READER = Identity.from_seeds(bytes(range(32)), bytes(range(32, 64)), "dana")
OTHER = Identity.from_seeds(bytes(range(64, 96)), bytes(range(96, 128)), "ada")
CELL = bytes(16)
SENDER = bytes(range(16))
GENUINE = seal_for_dispatch(
    cell_id=CELL, sender_id=SENDER, recipients=[OTHER.info, READER.info], kind=2, plaintext=b"x"
)


def test_one_input(data: bytes) -> None:
    """Check one input (atheris entry point)."""
    if not data:
        return
    if data[0] % 2:
        sealed = data[1:]
    else:
        flipped = bytearray(GENUINE)
        for i, byte in enumerate(data[1:65]):
            flipped[(i * 37 + byte) % len(flipped)] ^= byte
        sealed = bytes(flipped)
    try:
        kind, _ = open_for_dispatch(sealed, cell_id=CELL, sender_id=SENDER, me=READER)
    except GroupError:
        return
    assert kind in (2, 3, 16)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
