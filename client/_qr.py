"""QR codes of invite links (for a terminal, in Unicode half blocks, and as a PNG file) and of
safety numbers (for a terminal: two members compare them in person, issue 9).

The QR encoding itself is segno's (pure Python, no dependencies, ISO/IEC 18004). Links
are checked with `Invite.parse` first, so a QR code is never made of something that is not
an invite.

A terminal cell is about twice as tall as it is wide, so each character shows two module
rows, with the upper and lower half blocks. Most terminals draw light text on a dark
background; a QR code needs dark modules on a light field, so by default the *light*
modules and the quiet zone are drawn as blocks and the dark ones left as background
(what `qrencode -t UTF8` does). Phones read a 61-module code (version 11, a typical
invite) off a screen with a 2-module quiet zone, which keeps it 65 columns wide; the PNG
keeps the standard 4.

An invite's QR code is as secret as the link: the PNG is written readable by its owner
only (mode 0600).
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Final

import segno

from cellrelay.protocol.cell import Invite
from cellrelay.protocol.cell._safety import safety_qr_text

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "PNG_BORDER",
    "PNG_SCALE",
    "TERMINAL_BORDER",
    "invite_qr_png_data_uri",
    "invite_qr_svg",
    "invite_qr_terminal",
    "safety_qr_terminal",
    "write_invite_png",
]

TERMINAL_BORDER: Final = 2  # modules of quiet zone on a screen (ISO/IEC 18004 asks 4 on paper)
PNG_BORDER: Final = 4  # the standard quiet zone
# Pixels per module: a version 11 code is (61 + 8) x 8 = 552 pixels square, sharp when
# printed at 5 cm or shown full-screen on a phone.
PNG_SCALE: Final = 8

# (upper module drawn, lower module drawn) -> character
_HALF_BLOCKS: Final = {
    (False, False): " ",
    (True, False): "\u2580",  # upper half block
    (False, True): "\u2584",  # lower half block
    (True, True): "\u2588",  # full block
}


def _qr(link: str) -> segno.QRCode:
    Invite.parse(link)  # raises InviteError on anything that is not an invite
    # segno picks the smallest version for the link in byte mode, at error correction L or
    # higher when the same version has room (boost_error).
    return segno.make(link, micro=False)


def invite_qr_terminal(
    link: str, *, dark_background: bool = True, border: int = TERMINAL_BORDER
) -> str:
    """Return the QR code of an invite link as lines of half-block characters.

    Every line has the same width (the symbol plus `border` modules each side) and there
    are half as many lines, rounded up. Set `dark_background=False` for terminals that
    draw dark text on a light background.

    Raises:
        InviteError: `link` is not a valid invite link.
    """
    return _terminal(_qr(link), dark_background=dark_background, border=border)


def safety_qr_terminal(
    number: str, *, dark_background: bool = True, border: int = TERMINAL_BORDER
) -> str:
    """Return the QR code of a safety number (docs/protocol.md §C8) as half-block lines.

    It encodes `cellrelay://safety/1/` and the 60 digits; both members' codes are the
    same, so a device that scans the other's compares it with its own.

    Raises:
        ValueError: `number` is not 60 digits.
    """
    code = segno.make(safety_qr_text(number), micro=False)
    return _terminal(code, dark_background=dark_background, border=border)


def _terminal(code: segno.QRCode, *, dark_background: bool, border: int) -> str:
    rows: list[Sequence[bool]] = [
        [bool(module) for module in row] for row in code.matrix_iter(border=border)
    ]
    # Draw the modules that must look light where the background is dark, and vice versa.
    drawn = [[module is not dark_background for module in row] for row in rows]
    # A symbol is 17 + 4 x version modules a side, an odd number, and the quiet zone adds an
    # even one: the last row's character gets a lower half of background, below the code.
    drawn.append([False] * len(drawn[0]))
    lines = []
    for upper, lower in zip(drawn[::2], drawn[1::2], strict=True):
        lines.append("".join(_HALF_BLOCKS[pair] for pair in zip(upper, lower, strict=True)))
    return "\n".join(lines)


def write_invite_png(link: str, path: str | os.PathLike[str], *, scale: int = PNG_SCALE) -> None:
    """Write the QR code of an invite link to `path` as a PNG, readable by its owner only.

    An existing file is replaced, and its mode set to 0600.

    Raises:
        InviteError: `link` is not a valid invite link.
        OSError: the file could not be written.
    """
    qr = _qr(link)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)  # O_CREAT's mode applies only to a new file
        qr.save(out, kind="png", scale=scale, border=PNG_BORDER)


def invite_qr_svg(link: str, *, scale: int = PNG_SCALE) -> str:
    """Return the QR code of an invite link as an SVG document (for the daemon's API).

    Raises:
        InviteError: `link` is not a valid invite link.
    """
    out = io.BytesIO()
    # A light field behind the dark modules: a page with a dark theme must not swallow it.
    _qr(link).save(out, kind="svg", scale=scale, border=PNG_BORDER, xmldecl=False, light="#fff")
    return out.getvalue().decode("ascii")


def invite_qr_png_data_uri(link: str, *, scale: int = PNG_SCALE) -> str:
    """Return the QR code of an invite link as a `data:image/png;base64,...` URL.

    Raises:
        InviteError: `link` is not a valid invite link.
    """
    return str(_qr(link).png_data_uri(scale=scale, border=PNG_BORDER))
