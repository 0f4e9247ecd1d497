"""Fuzz invite links: text or bytes give an invite that re-encodes identically, or an InviteError.

Input layout: byte 0 picks the entry point: even feeds the rest to `Invite.from_bytes`
and, wrapped as a link with its checksum (so parsing gets past it), to `Invite.parse`;
odd decodes the rest as UTF-8 (replacing bad bytes) and feeds that text to `Invite.parse`.
Both formats are reached: 1 (one relay) and 2 (two or three relays, issue 13); the seeds
hold both.
"""

from __future__ import annotations

import base64
import sys
import zlib

import atheris

with atheris.instrument_imports():
    from cellrelay.protocol.cell._invite import (
        INVITE_PREFIX,
        MAX_INVITE_LINK,
        Invite,
        InviteError,
    )


def _check(invite: Invite) -> None:
    # The encoding is canonical: what we accept re-encodes to a link that parses the same.
    if Invite.parse(invite.to_link()) != invite:
        raise AssertionError("accepted invite does not round-trip")
    if Invite.from_bytes(invite.to_bytes()) != invite:
        raise AssertionError("accepted invite bytes do not round-trip")
    # One invite, one text: a one-relay invite is always format 1, more relays format 2.
    if invite.to_bytes()[0] != (1 if len(invite.relays) == 1 else 2):
        raise AssertionError("accepted invite in the wrong format")
    if len(invite.to_link()) > MAX_INVITE_LINK:
        raise AssertionError("accepted invite whose link is too long")


def test_one_input(data: bytes) -> None:
    """Check one input (atheris entry point)."""
    if not data:
        return
    mode, body = data[0], data[1:]
    if mode % 2 == 0:
        try:
            invite = Invite.from_bytes(body)
        except InviteError:
            pass
        else:
            _check(invite)
            if invite.to_bytes() != body:
                raise AssertionError("accepted bytes are not canonical")
        checked = body + zlib.crc32(body).to_bytes(4, "big")
        text = INVITE_PREFIX + base64.urlsafe_b64encode(checked).rstrip(b"=").decode()
    else:
        text = body.decode("utf-8", "replace")
    try:
        invite = Invite.parse(text)
    except InviteError as exc:
        if "\n" in str(exc):
            raise AssertionError("an invite error is more than one line") from None
        return
    _check(invite)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
