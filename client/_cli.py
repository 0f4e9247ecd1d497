"""The `cellrelay` command line.

`cellrelay relay ...` hands over to the relay's own command line (`python -m relay`) in a
fresh process image, so the client package never imports the relay (docs/design.md).
"""

from __future__ import annotations

import os
import sys

__all__ = ["main"]

USAGE = """usage: cellrelay COMMAND ...

commands:
  relay init|serve ...   run a relay (see `cellrelay relay --help`)
  demo                   run a relay and a demo cell on this machine
"""


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    command, rest = args[0], args[1:]
    if command == "relay":
        # -P: do not put the current directory on sys.path, or a `relay/` folder wherever
        # the operator happens to stand would run instead of ours.
        os.execv(sys.executable, [sys.executable, "-P", "-m", "relay", *rest])  # noqa: S606 - our own module
    if command == "demo":
        from ._demo import run_demo

        return run_demo(rest)
    print(f"cellrelay: unknown command {command!r}\n\n{USAGE}", file=sys.stderr, end="")
    return 2
