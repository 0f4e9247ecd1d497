"""The `cellrelay` command's entry point: catch Ctrl-C before the client is even imported.

Importing the client (Trio, PyNaCl, msgpack, structlog, the protocol) takes most of a
second on a small machine, and a Ctrl-C in that time used to print a `KeyboardInterrupt`
traceback from the middle of some import (issue 10). This module imports nothing heavy:
it installs a SIGINT handler that prints one line and exits with status 130, imports the
command line, then gives SIGINT back to Python's default handler, which the command line
turns into the same line from then on (client/_cli.py).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["main"]

EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report it


def _interrupted(signum: int, frame: FrameType | None) -> None:
    del signum, frame
    os.write(sys.stderr.fileno(), b"cellrelay: interrupted\n")
    os._exit(EXIT_INTERRUPTED)  # nothing to clean up yet: no file, no keystore, no socket


def main() -> int:
    """Run the `cellrelay` command line; return its exit status."""
    previous = signal.signal(signal.SIGINT, _interrupted)
    from cellrelay.client._cli import main as run  # the slow part

    try:
        signal.signal(signal.SIGINT, previous)  # Ctrl-C is a KeyboardInterrupt again
        return run()
    except KeyboardInterrupt:  # between the two lines above and run's own handling
        print("cellrelay: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
