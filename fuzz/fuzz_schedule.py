"""Fuzz the second key schedule's parsers (protocol/cell/_schedule.py, docs/design.md).

Input layout: byte 0 picks the entry point, the rest is its input:

* 0: `KeyUpdate.from_bytes`, then `verify` against a fixed member: a member's key update
  comes from the group mailbox, so from any member or a hostile relay;
* 1: `open_keys` on a change's key section, as a fixed member whose receive and bucket
  keys are `MEMBER_RECEIVE` and `MEMBER_BUCKET` (the seeds are real sections sealed to
  them, `fuzz/make_seeds.py`): an admin signs a change, but an admin can be hostile;
* 2: `bucketed_keys` on a version 3 epoch change whose key section and bucket table are
  the input (what a member parses after the signature: the layout an admin chose);
* 3: `WelcomeContent.from_bytes` of version 3 (its join box and bucket table): whatever
  it accepts must re-encode to the same bytes;
* 4: `open_welcome_page` with a fixed page key (a page comes from the join mailbox, which
  the invite's holders can write): whatever opens must be at most `PAGE_MEMBERS` members;
* 5: `committed_updates` on a version 4 epoch change whose key section, bucket table and
  committed key updates are the input (docs/protocol.md §G6.5): at most `MAX_COMMITTED`
  updates, each re-encoding to the bytes it was read from.

Whatever the bytes, the result is a value or a `GroupError`, never anything else.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from cellrelay.protocol._crypto import x25519_public_from_private
    from cellrelay.protocol.cell._control import (
        COMMITTING_VERSION,
        KEYS_OFFSET_V3,
        MAX_COMMITTED,
        PAGE_MEMBERS,
        WelcomeContent,
        bucketed_keys,
        committed_updates,
        open_welcome_page,
    )
    from cellrelay.protocol.cell._errors import GroupError
    from cellrelay.protocol.cell._identity import Identity
    from cellrelay.protocol.cell._schedule import KeyUpdate, open_keys, receive_dh

CELL = bytes(range(16))
AD = b"fuzz change header"
NONCE = bytes(24)
MEMBER_RECEIVE = bytes(range(32, 64))
MEMBER_BUCKET = bytes(range(64, 96))
PAGE_KEY = bytes(range(128, 160))
IDENTITY = Identity.from_seeds(bytes(range(32)), bytes(range(96, 128)), "fuzz")


def test_one_input(data: bytes) -> None:
    """Check one input (atheris entry point)."""
    if not data:
        return
    mode, body = data[0] % 6, data[1:]
    try:
        if mode == 0:
            update = KeyUpdate.from_bytes(body)
            if update.to_bytes() != body:
                raise AssertionError("an accepted key update does not round-trip")
            update.verify(CELL, IDENTITY.info, after=0)
        elif mode == 2:
            section, table = bucketed_keys(bytes(KEYS_OFFSET_V3) + body)
            if len(table) != 64 or not body.startswith(section):
                raise AssertionError("a parsed change's parts do not add up")
        elif mode == 5:
            change = bytes([COMMITTING_VERSION]) + bytes(KEYS_OFFSET_V3 - 1) + body
            updates = committed_updates(change)
            if not 0 < len(updates) <= MAX_COMMITTED:
                raise AssertionError("a committed update count out of range")
            if b"".join(u.to_bytes() for u in updates) not in body:
                raise AssertionError("committed updates do not re-encode")
        elif mode == 4:
            if len(open_welcome_page(PAGE_KEY, IDENTITY.member_id, 0, body)) > PAGE_MEMBERS:
                raise AssertionError("a page with too many members")
        elif mode == 3:
            content = WelcomeContent.from_bytes(body, 3)
            if content.to_bytes() != body:
                raise AssertionError("an accepted welcome does not round-trip")
        else:
            opened = open_keys(
                body,
                cell_id=CELL,
                ad=AD,
                nonce=NONCE,
                me=IDENTITY.member_id,
                bucket_members=[IDENTITY.member_id],
                dh=receive_dh(bytearray(MEMBER_RECEIVE)),
                receive_pub=x25519_public_from_private(bytearray(MEMBER_RECEIVE)),
                bucket_private=bytearray(MEMBER_BUCKET),
            )
            opened.clear()
    except GroupError:
        return


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
