"""QR codes of invite links: the terminal rendering and the PNG show exactly segno's symbol.

No QR decoder is needed: the terminal characters and the PNG pixels are read back into
modules and compared with the symbol segno encoded for the link (segno's own encoding is
tested by segno). The PNG is parsed by hand, CRCs and all, so a broken file fails here.
"""

from __future__ import annotations

import stat
import struct
import zlib
from pathlib import Path

import pytest
import segno

from cellrelay.client._qr import (
    PNG_BORDER,
    PNG_SCALE,
    TERMINAL_BORDER,
    invite_qr_terminal,
    write_invite_png,
)
from cellrelay.protocol.cell import Invite, InviteError
from cellrelay.protocol.cell._invite import InviteRelay
from cellrelay.protocol.wire import MailboxId, RelayAddress

UPPER, LOWER, FULL = "\u2580", "\u2584", "\u2588"


OTHER_RELAYS = (
    InviteRelay(
        RelayAddress("relay.example.net", 7446, bytes([1]) * 32), MailboxId(bytes([1]) * 16)
    ),
    InviteRelay(
        RelayAddress("relay.example.com", 7446, bytes([2]) * 32), MailboxId(bytes([2]) * 16)
    ),
)


def make_link(name: str = "Eastside Rapid Response", relays: int = 1) -> str:
    return Invite(
        relay=RelayAddress("relay.example.org", 7446, bytes(range(32))),
        cell_id=bytes(16),
        cell_name=name,
        join_mailbox=MailboxId(bytes(16)),
        admin_sign_key=bytes(32),
        admin_box_key=bytes(32),
        expires_at=1_767_830_400,
        secret=bytes(range(32)),
        more_relays=OTHER_RELAYS[: relays - 1],
    ).to_link()


def modules(link: str, border: int) -> list[list[bool]]:
    """segno's symbol for `link` with a quiet zone, True for dark modules."""
    qr = segno.make(link, micro=False)
    return [[bool(m) for m in row] for row in qr.matrix_iter(border=border)]


def unrender(text: str) -> list[list[bool]]:
    """Turn half-block lines back into rows of drawn (True) and blank modules."""
    halves = {" ": (False, False), UPPER: (True, False), LOWER: (False, True), FULL: (True, True)}
    rows: list[list[bool]] = []
    for line in text.split("\n"):
        pairs = [halves[ch] for ch in line]
        rows.append([upper for upper, _ in pairs])
        rows.append([lower for _, lower in pairs])
    return rows


# -- terminal -------------------------------------------------------------------------------


def test_terminal_rendering_has_the_right_shape() -> None:
    link = make_link()
    text = invite_qr_terminal(link)
    lines = text.split("\n")
    size = segno.make(link, micro=False).symbol_size(border=0)[0]
    assert size == 61  # version 11 for a 303-character invite
    width = size + 2 * TERMINAL_BORDER
    assert {len(line) for line in lines} == {width}
    assert len(lines) == (width + 1) // 2
    assert set(text) <= {" ", UPPER, LOWER, FULL, "\n"}
    assert width <= 80  # fits a standard terminal


@pytest.mark.parametrize("dark_background", [True, False])
@pytest.mark.parametrize("border", [1, 2, 4])
def test_terminal_rendering_shows_segnos_modules(dark_background: bool, border: int) -> None:
    link = make_link()
    expected = modules(link, border)
    drawn = unrender(invite_qr_terminal(link, dark_background=dark_background, border=border))
    # On a dark background the light modules are drawn; on a light one the dark modules.
    shown = [[cell is not dark_background for cell in row] for row in drawn]
    assert shown[: len(expected)] == expected
    # The symbol's odd number of rows leaves one half-row of background below the quiet zone.
    assert len(expected) % 2 == 1
    assert len(drawn) == len(expected) + 1
    assert all(not cell for row in drawn[len(expected) :] for cell in row)


def test_quiet_zone_is_drawn_light_on_a_dark_background() -> None:
    lines = invite_qr_terminal(make_link()).split("\n")
    assert set(lines[0]) == {FULL}  # two rows of quiet zone: both halves light
    assert all(line[:TERMINAL_BORDER] == FULL * TERMINAL_BORDER for line in lines[:-1])


def test_terminal_refuses_what_is_not_an_invite() -> None:
    with pytest.raises(InviteError):
        invite_qr_terminal("https://example.org")


# -- PNG --------------------------------------------------------------------------------------


def read_png(data: bytes) -> tuple[int, int, list[list[int]]]:
    """Parse a greyscale or palette PNG: (width, height, rows of sample values)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, kind
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR"
    assert chunks[-1][0] == b"IEND"
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert colour in (0, 3)  # greyscale or palette
    assert interlace == 0
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = (width * depth + 7) // 8
    assert len(raw) == height * (stride + 1)
    rows, previous = [], bytes(stride)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        current = unfilter(line[0], line[1:], previous)
        bits = "".join(f"{byte:08b}" for byte in current)
        rows.append([int(bits[x * depth : (x + 1) * depth], 2) for x in range(width)])
        previous = current
    return width, height, rows


def unfilter(kind: int, line: bytes, above: bytes) -> bytes:
    """Undo one PNG row filter (PNG spec §9.2), for one byte per pixel group (depth <= 8)."""
    out = bytearray(len(line))
    for i, value in enumerate(line):
        left = out[i - 1] if i else 0
        up = above[i]
        up_left = above[i - 1] if i else 0
        if kind == 0:
            predicted = 0
        elif kind == 1:
            predicted = left
        elif kind == 2:
            predicted = up
        elif kind == 3:
            predicted = (left + up) // 2
        else:
            assert kind == 4, kind
            p = left + up - up_left
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
            predicted = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
        out[i] = (value + predicted) & 0xFF
    return bytes(out)


def test_png_is_a_valid_png_of_the_symbol(tmp_path: Path) -> None:
    link = make_link()
    path = tmp_path / "invite.png"
    write_invite_png(link, path)
    data = path.read_bytes()
    width, height, rows = read_png(data)
    expected = modules(link, PNG_BORDER)
    side = len(expected) * PNG_SCALE
    assert (width, height) == (side, side) == (552, 552)
    assert 500 < len(data) < 20_000  # a 1-bit image compresses well
    dark = rows[0][0]  # the quiet zone is light
    for y, row in enumerate(expected):
        for x, module in enumerate(row):
            # Every pixel of the module's square has the module's colour.
            block = {
                rows[y * PNG_SCALE + dy][x * PNG_SCALE + dx]
                for dy in range(PNG_SCALE)
                for dx in range(PNG_SCALE)
            }
            assert len(block) == 1
            assert (block.pop() != dark) is module


def test_png_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.png"
    write_invite_png(make_link(), fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    existing = tmp_path / "existing.png"
    existing.write_bytes(b"old contents, longer than nothing")
    existing.chmod(0o644)
    write_invite_png(make_link(), existing)
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    assert existing.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_scale(tmp_path: Path) -> None:
    path = tmp_path / "small.png"
    write_invite_png(make_link(), path, scale=2)
    width, height, _ = read_png(path.read_bytes())
    assert width == height == (61 + 2 * PNG_BORDER) * 2


def test_png_refuses_what_is_not_an_invite(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    with pytest.raises(InviteError):
        write_invite_png("cellrelay://join/AAAA", path)
    assert not path.exists()


# -- a real decoder, where one is installed ---------------------------------------------------


@pytest.mark.parametrize(
    ("relays", "length", "version", "width"), [(1, 303, 11, 65), (2, 395, 13, 73), (3, 485, 15, 81)]
)
def test_size_of_an_invite_on_one_to_three_relays(
    relays: int, length: int, version: int, width: int
) -> None:
    """docs/protocol.md §C3.5's measurements: link length, QR version, terminal columns.

    Relays with 17-byte hosts and a 23-character cell name; error correction L, as segno
    raises it where the version has room (a three-relay code stays at L).
    """
    link = make_link(relays=relays)
    assert len(link) == length
    code = segno.make(link, micro=False)
    assert code.version == version
    assert code.error == "L"
    lines = invite_qr_terminal(link).splitlines()
    assert {len(line) for line in lines} == {width}


@pytest.mark.parametrize("relays", [1, 2, 3])
def test_a_qr_decoder_reads_back_the_link(tmp_path: Path, relays: int) -> None:
    """zxing-cpp (a binary wheel, not a dependency) reads the PNG and both terminal renderings.

    Skipped unless `zxingcpp` is importable; checked by hand with zxing-cpp 3.1.1.
    """
    zxingcpp = pytest.importorskip("zxingcpp")
    link = make_link(relays=relays)
    path = tmp_path / "invite.png"
    write_invite_png(link, path)
    width, height, rows = read_png(path.read_bytes())
    light = rows[0][0]
    images = [(height, width, [[v == light for v in row] for row in rows])]
    for dark_background in (True, False):
        drawn = unrender(invite_qr_terminal(link, dark_background=dark_background))
        # What a screen shows: drawn cells in the foreground colour, 4 pixels per module.
        lit = [[cell is dark_background for cell in row] for row in drawn]
        big = [[cell for cell in row for _ in range(4)] for row in lit for _ in range(4)]
        images.append((len(big), len(big[0]), big))
    for h, w, image in images:
        pixels = bytes(255 if is_light else 0 for row in image for is_light in row)
        found = zxingcpp.read_barcodes(memoryview(pixels).cast("B", shape=(h, w)))
        assert [r.text for r in found] == [link]
