"""Fuzz the join mailbox: arbitrary envelopes give a verified request or a GroupError.

Byte 0 picks the mode: raw bytes to `open_join_request`, or a genuine request with the
fuzz input flipped into it (so the AEAD and signature paths are reached).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from cellrelay.protocol.cell._errors import GroupError
    from cellrelay.protocol.cell._identity import Identity
    from cellrelay.protocol.cell._join import (
        open_join_request,
        seal_join_request,
        split_join_envelope,
    )

ADMIN = Identity.from_seeds(bytes(range(32)), bytes(range(32, 64)), "lead")
JOINER = Identity.from_seeds(bytes(range(64, 96)), bytes(range(96, 128)), "ana")
MAILBOX = bytes(16)
PROOF_KEY = bytes(range(32))
GENUINE = seal_join_request(
    JOINER, admin_box_key=ADMIN.dh_pub, join_mailbox=MAILBOX, proof_key=PROOF_KEY
)


def test_one_input(data: bytes) -> None:
    """Check one input (atheris entry point)."""
    if not data:
        return
    if data[0] % 2:
        envelope = data[1:]
    else:
        flipped = bytearray(GENUINE)
        for i, byte in enumerate(data[1:65]):
            flipped[(i * 37 + byte) % len(flipped)] ^= byte
        envelope = bytes(flipped)
    try:
        split_join_envelope(envelope)
        open_join_request(ADMIN, envelope, join_mailbox=MAILBOX, proof_key=PROOF_KEY)
    except GroupError:
        return


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
