"""The command line's panic and duress commands: `cellrelay panic`, `cellrelay keystore ...`.

`cellrelay panic` asks nothing: no passphrase (the person may be made to type it) and no
confirmation (someone whose door is being forced has seconds, and a prompt is one more
thing to get wrong). The word is the confirmation: argparse never takes an abbreviation
of a command name, and nothing else starts with it. It prints one line.

`cellrelay keystore set-duress` unlocks the keystore with the passphrase, then asks for
the duress passphrase twice (or reads `--duress-passphrase-file`, or
`$CELLRELAY_DURESS_PASSPHRASE`). client/_panic.py says what both do.
"""

from __future__ import annotations

import getpass
import os
import sys
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import trio

from ._cli_commands import CliError, Context, read_secret
from ._cli_output import isolate
from ._panic import clear_duress_passphrase, destroy_local_state, set_duress_passphrase

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence
    from pathlib import Path

__all__ = ["add_parsers", "clear_duress", "panic", "set_duress"]

DURESS_ENV: Final = "CELLRELAY_DURESS_PASSPHRASE"


def add_parsers(
    commands: argparse._SubParsersAction[Any], common: Sequence[argparse.ArgumentParser]
) -> None:
    """Add `panic` and `keystore set-duress|clear-duress` to the command line."""
    text = "destroy this identity and its cells on this device now (no passphrase, no question)"
    commands.add_parser(
        "panic",
        help=text,
        description=text
        + ": stops any cellrelay process using it, overwrites and deletes the keystore (docs/client-guide.md)",
        parents=list(common),
    )
    keystore = commands.add_parser(
        "keystore", help="the keystore: keystore set-duress, keystore clear-duress"
    ).add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
    text = (
        "set a duress passphrase: unlocking with it destroys this identity and opens an empty one"
    )
    duress = keystore.add_parser("set-duress", help=text, description=text, parents=list(common))
    duress.add_argument(
        "--duress-passphrase-file",
        metavar="FILE",
        help=f"read the duress passphrase from FILE ('-' for standard input; default: ${DURESS_ENV}, else ask)",
    )
    duress.add_argument(
        "--name",
        help="the name of the empty identity it opens (default: your name, as others see it now)",
    )
    text = "forget the duress passphrase (it becomes a wrong passphrase like any other)"
    keystore.add_parser("clear-duress", help=text, description=text, parents=list(common))


def panic(home: Path, *, json_mode: bool) -> int:
    """`cellrelay panic`: destroy at once, print one line, exit 0."""
    done = destroy_local_state(home)
    if json_mode:
        import json

        print(json.dumps({"destroyed": done.found, "stopped": done.stopped, "home": str(home)}))
    elif done.found:
        stopped = f" (stopped {done.stopped} cellrelay process{'es' if done.stopped != 1 else ''})"
        print(f"Destroyed the identity and its cells in {home}{stopped if done.stopped else ''}")
    else:
        print(f"Nothing to destroy in {home}")
    return 0


def _duress_passphrase(args: argparse.Namespace) -> str:
    source = getattr(args, "duress_passphrase_file", None)
    if source is not None:
        return read_secret(source, "duress passphrase")
    if os.environ.get(DURESS_ENV):
        return os.environ[DURESS_ENV]
    if not sys.stdin.isatty():
        raise CliError(
            f"no duress passphrase: set {DURESS_ENV}, use --duress-passphrase-file, or run in a terminal"
        )
    print(
        "Choose a duress passphrase, different from your passphrase. Unlocking with it destroys this identity and its cells.",
        file=sys.stderr,
    )
    try:
        first = getpass.getpass("Duress passphrase: ")
        again = getpass.getpass("Again: ")
    except EOFError:
        print(file=sys.stderr)
        raise CliError("no duress passphrase given; nothing was changed (input ended)") from None
    if first != again:
        raise CliError("the duress passphrases do not match; nothing was changed")
    return first


async def set_duress(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay keystore set-duress`."""
    duress = _duress_passphrase(args)
    if duress == ctx.passphrase:
        raise CliError(
            "the duress passphrase must differ from your passphrase; nothing was changed"
        )
    await trio.to_thread.run_sync(
        partial(set_duress_passphrase, ctx.passphrase, duress, home=ctx.home, name=args.name)
    )
    ctx.emit({"duress": True})
    name = f" named {isolate(args.name)}" if args.name else ""
    ctx.say(
        "Duress passphrase set. Unlocking with it (any command, the daemon, an app) destroys this"
        f" identity and its cells and opens an empty identity{name}, as on a new install."
    )


async def clear_duress(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay keystore clear-duress`."""
    del args
    await trio.to_thread.run_sync(partial(clear_duress_passphrase, ctx.passphrase, home=ctx.home))
    ctx.emit({"duress": False})
    ctx.say("Duress passphrase cleared (if there was one).")
