"""Fuzz message contents: bytes give a content that round-trips, or a ContentError.

Input layout: byte 0 is the kind (any value, so group-layer, local and unknown kinds are
exercised too); the rest is the content's encoding.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from cellrelay.protocol.cell._content import ContentError, MemberId, decode_content
    from cellrelay.protocol.cell._rollup import CLAIM_TOLERANCE, RollupBook


def test_one_input(data: bytes) -> None:
    """Check one input (atheris entry point)."""
    if not data:
        return
    kind, body = data[0], data[1:]
    try:
        content = decode_content(kind, body, allow_local=True)
    except ContentError:
        return
    # Whatever we accept must survive our own encoder and decode back to the same thing.
    if decode_content(type(content).KIND, content.encode(), allow_local=True) != content:
        raise AssertionError("accepted content does not round-trip")
    # And the roll-up must take it without raising, under the close rule with or without
    # the sender as an admin, whatever time it claims (far-future claims are clamped).
    book = RollupBook()
    book.set_admins(frozenset({b"\x01" * 16}) if kind % 2 else frozenset())
    book.set_liaisons(frozenset({b"\x01" * 16}) if kind % 3 else frozenset())  # notes (§C10)
    book.add(MemberId(b"\x01" * 16), "fuzz", content, 1.0)
    for rollup in book.active(0.0):
        if rollup.sent_at_ms > (1.0 + CLAIM_TOLERANCE) * 1000:
            raise AssertionError("a claimed time was not clamped")
    book.prune(0.0)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
