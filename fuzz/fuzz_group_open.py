"""Fuzz the group layer's parsers: arbitrary bytes give a result or a GroupError, nothing else.

The first input byte picks what the rest is fed to, in a state restored afresh for every
input (so a crash reproduces from its input alone):

* 0: `CellCrypto.open` (a group envelope);
* 1: `CellCrypto.open_control` (an epoch change);
* 2: a group envelope whose sealed header is genuine (sealed with the epoch's header key)
  around fuzzed H || signature, then fuzzed body bytes: reaches the checks behind the
  header AEAD;
* 3: `CellCrypto.from_welcome`;
* 4: `CellCrypto.from_bytes` (a saved state);
* 5: `CellCrypto.take_key_update` on the admin, of a kind 8 envelope from alice whose
  plaintext is the input (docs/protocol.md §G6.5): whatever it takes, it holds one update;
* 6: an announcement's plaintext (behind the distribution key's AEAD, which the other
  modes rarely get through), read by `AnnouncementPayload.for_recipient` at the index
  in the first byte: it must refuse and read exactly what `from_bytes` does.

Keys are pinned (fuzz/group_fixture.py). Anything but a result or a `GroupError` is a bug.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from group_fixture import NOW, build

    from cellrelay.protocol.cell._envelope import (
        BODY_OFFSET,
        CLEAR_SIZE,
        SEALED_HEADER_SIZE,
        AnnouncementPayload,
        Kind,
    )
    from cellrelay.protocol.cell._errors import GroupError
    from cellrelay.protocol.cell._group import CellCrypto, Opened
    from cellrelay.protocol.cell._padding import bucket_for

FIXTURE = build()
MODES = 7


def _genuine_header(cell: CellCrypto, rest: bytes) -> bytes:
    """Seal `rest`'s first bytes as H || signature under the real header key; add a body."""
    state = cell._s
    epoch = state.epochs[state.current]
    inner_size = SEALED_HEADER_SIZE - 16
    inner = rest[:inner_size].ljust(inner_size, b"\x00")
    body = rest[inner_size:]
    clear = bytes([1]) + state.current.to_bytes(4, "big")
    nonce = bytes(24)
    sealed = epoch.keys.header.encrypt(nonce, clear, inner)
    size = bucket_for(min(len(body), 16384 - BODY_OFFSET) + BODY_OFFSET)
    envelope = clear + nonce + sealed + body
    assert len(clear + nonce) == CLEAR_SIZE
    return envelope[:size].ljust(size, b"\x00")


def _announcement(rest: bytes) -> None:
    """Mode 6: `for_recipient` against `from_bytes` on the same bytes."""
    if not rest:
        return
    index, payload = rest[0], rest[1:]
    try:
        full = AnnouncementPayload.from_bytes(payload)
    except GroupError:
        try:
            AnnouncementPayload.for_recipient(payload, index)
        except GroupError:
            return
        raise AssertionError("for_recipient read what from_bytes refuses") from None
    mine, count = AnnouncementPayload.for_recipient(payload, index)
    expected = (full.macs[index],) if index < len(full.macs) else ()
    if count != len(full.macs) or mine.macs != expected or mine.start != full.start:
        raise AssertionError("for_recipient read other bytes than from_bytes")


def test_one_input(data: bytes) -> None:
    """Check one input (atheris entry point)."""
    if not data:
        return
    mode, rest = data[0] % MODES, data[1:]
    if mode == 6:
        _announcement(rest)
        return
    alice = CellCrypto.from_bytes(FIXTURE.alice_state, FIXTURE.alice)
    try:
        if mode == 0:
            alice.open(rest, now=NOW)
        elif mode == 1:
            alice.open_control(rest, now=NOW)
        elif mode == 2:
            alice.open(_genuine_header(alice, rest), now=NOW)
        elif mode == 3:
            CellCrypto.from_welcome(FIXTURE.alice, rest, now=NOW, invite=FIXTURE.invite)
        elif mode == 4:
            CellCrypto.from_bytes(rest, FIXTURE.alice)
        else:
            admin = CellCrypto.from_bytes(FIXTURE.admin_state, FIXTURE.admin)
            opened = Opened(
                kind=Kind.KEY_UPDATE,
                plaintext=rest,
                sender=FIXTURE.alice.info,
                epoch=admin.epoch,
                counter=1,
                expires_at=2**40,
            )
            if admin.take_key_update(opened) and admin.waiting_key_updates != 1:
                raise AssertionError("a key update taken, but not held")
    except GroupError:
        return


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
