"""Fuzz the client data an epoch change and a welcome carry (docs/protocol.md §G6.3, §C5).

An admin signs them, but an admin can be hostile (or its client buggy): whatever the bytes,
parsing gives a value that round-trips or its own error, never anything else.

Input layout: byte 0 picks the entry point, the rest is its input:

* 0: `ChangeBody.from_bytes` (an epoch change's padded body plaintext);
* 1: `ChangeExtra.decode` (the client data of §C5.1);
* 2: `CellInfo.decode` (a welcome's `extra`, §C5).
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from cellrelay.client._cell_member import CellError, CellInfo
    from cellrelay.client._cell_moves import ChangeExtra, ChangeExtraError
    from cellrelay.protocol import RemoteProtocolError
    from cellrelay.protocol.cell._control import ChangeBody
    from cellrelay.protocol.cell._errors import MalformedError


def test_one_input(data: bytes) -> None:
    """Check one input (atheris entry point)."""
    if not data:
        return
    mode, body = data[0] % 3, data[1:]
    if mode == 0:
        try:
            parsed = ChangeBody.from_bytes(body)
        except MalformedError:
            return
        if ChangeBody.from_bytes(parsed.to_bytes()) != parsed:
            raise AssertionError("an accepted body does not round-trip")
    elif mode == 1:
        try:
            extra = ChangeExtra.decode(body)
        except ChangeExtraError:
            return
        if ChangeExtra.decode(extra.encode()) != extra:
            raise AssertionError("accepted client data does not round-trip")
    else:
        try:
            info = CellInfo.decode(body)
        except (CellError, RemoteProtocolError):
            return
        again = CellInfo.decode(info.encode())
        if vars(again) != vars(info):
            raise AssertionError("an accepted cell info does not round-trip")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
