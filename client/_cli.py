"""The `cellrelay` command line: identities, cells, alerts and replies, for people and scripts.

`cellrelay relay ...` hands over to the relay's own command line (`python -m relay`) in a
fresh process image, so the client package never imports the relay (docs/design.md).
Everything else is parsed here and run by client/_cli_commands.py (and client/_cli_listen.py)
inside one `trio.run`; client/_cli_output.py renders what they print.

Failures are one line on standard error and a non-zero exit status, never a traceback
(`--debug` adds it): 1 for an error, 2 for a command line that does not parse, 130 when
interrupted. `--json` makes the output one JSON value per line, for scripts; hints for
people go to standard error in every mode.

The passphrase comes from `--passphrase-file` (`-` reads standard input), else
`$CELLRELAY_PASSPHRASE`, else a prompt on the terminal. The keystore lives in `--home`,
else `$CELLRELAY_HOME`, else the platform's data directory (client/_keystore.py).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Final, NoReturn

import structlog
import trio

from cellrelay import __version__
from cellrelay._undumpable import make_undumpable
from cellrelay.protocol import CellrelayError, ErrorCode
from cellrelay.protocol.cell import ContentError, InviteError
from cellrelay.protocol.wire import AddressError

from . import _cli_commands as commands
from . import _cli_daemon, _cli_escalate, _cli_panic, _cli_verify
from ._cell_member import CellError
from ._cli_commands import CliError, Context, read_secret, run_command
from ._cli_listen import listen
from ._cli_output import Style, parse_duration
from ._client import KEYSTORE_NAME
from ._keystore import KeystoreBusyError, KeystoreError, WrongPassphraseError, default_data_dir
from ._link import LinkClosedError, RelayKeyMismatchError, RelayRefusedError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping, Sequence

__all__ = ["build_parser", "describe_error", "main"]

PROGRAM: Final = "cellrelay"
# Reaching a relay and catching up takes well under a second on a good network; a phone
# on a poor mobile link or a relay behind Tor may take several. Commands wait this long for
# each step before saying which one failed.
DEFAULT_TIMEOUT: Final = 20.0
# `cell join` waits this long for an admin's approval: long enough for an admin who was
# told over the phone, short enough that a forgotten terminal does not wait all day.
DEFAULT_JOIN_WAIT: Final = 600.0
DEFAULT_APPROVE_WAIT: Final = 10.0
MIN_PASSPHRASE: Final = 8  # the keystore's floor (client/_keystore.py)
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report it

# What a relay's refusal means to the person at the keyboard (docs/protocol.md §8).
REFUSALS: Final = {
    ErrorCode.CREATE_FORBIDDEN: "the relay requires a creation secret and this one is missing or wrong (ask its operator; --creation-secret)",
    ErrorCode.NO_SUCH_MAILBOX: "the relay no longer has this mailbox: the cell was deleted there, or the relay lost its data",
    ErrorCode.BAD_PROOF: "the relay did not accept this device's keys for the mailbox: keys rotated, a removed member, or the mailbox is gone (deleted, or the relay lost its data)",
    ErrorCode.UNAUTHORIZED: "the relay did not accept this device's keys for the mailbox (keys rotated, or a removed member?)",
    ErrorCode.RATE_LIMITED: "the relay is rate-limiting this connection: wait a minute and try again",
    ErrorCode.TOO_MANY_MAILBOXES: "the relay refuses more mailboxes on one connection (its operator sets the limit)",
    ErrorCode.TOO_MANY_CONNECTIONS: "the relay refuses more connections from this address: close other cellrelay programs",
    ErrorCode.MAILBOX_FULL: "the cell's mailbox on the relay is full (a member flooding it?): an admin can remove the flooder or run `cellrelay cell recover CELL`",
    ErrorCode.ENVELOPE_TOO_LARGE: "the message is larger than the relay accepts",
    ErrorCode.TTL_TOO_LONG: "the relay keeps messages for less time than asked: use a shorter --ttl",
    ErrorCode.EXPIRED: "the message expired before the relay got it: check this computer's clock",
    ErrorCode.SHUTTING_DOWN: "the relay is shutting down: try again shortly",
    ErrorCode.BUSY: "the relay is busy: try again shortly",
    ErrorCode.STORAGE_FULL: "the relay's disk is full, so it stored nothing: try again later, and tell its operator",
}


COMMANDS: Final[dict[str, Callable[[Context, argparse.Namespace], Awaitable[None]]]] = {
    "id new": commands.id_new,
    "id show": commands.id_show,
    "cell create": commands.cell_create,
    "cell list": commands.cell_list,
    "cell invite": commands.cell_invite,
    "cell join": commands.cell_join,
    "cell requests": commands.cell_requests,
    "cell approve": commands.cell_approve,
    "cell members": commands.cell_members,
    "cell remove": commands.cell_remove,
    "cell promote": commands.cell_promote,
    "cell rotate": commands.cell_rotate,
    "cell recover": commands.cell_recover,
    "cell mute": commands.cell_mute,
    "cell unmute": commands.cell_unmute,
    "cell alert-limit": commands.cell_alert_limit,
    "cell add-relay": commands.cell_add_relay,
    "cell drop-relay": commands.cell_drop_relay,
    "cell role": commands.cell_role,
    "cell verify-first": commands.cell_verify_first,
    "cell leave": commands.cell_leave,
    "cell burn": commands.cell_burn,
    "cell verify": _cli_verify.cell_verify,
    "cell neighbour": _cli_escalate.cell_neighbour,
    "cell escalation": _cli_escalate.cell_escalation,
    "escalate": _cli_escalate.escalate,
    "send": commands.send,
    "reply": commands.reply,
    "mark": commands.mark,
    "message": commands.message,
    "alerts": commands.alerts,
    "listen": listen,
    "daemon": _cli_daemon.daemon_command,
    "keystore set-duress": _cli_panic.set_duress,
    "keystore clear-duress": _cli_panic.clear_duress,
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points at --help."""

    def error(self, message: str) -> NoReturn:
        """Print the error on one line and exit with status 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _duration(text: str) -> float:
    try:
        return float(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    """A wait in seconds: a duration, or 0."""
    return 0.0 if text.strip() in ("0", "0s") else _duration(text)


def _ttl(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _common_options(*, suppress: bool) -> _Parser:
    """Options every command takes, before or after its name (`SUPPRESS` keeps one from
    overwriting the other)."""
    common = _Parser(add_help=False)
    default = argparse.SUPPRESS if suppress else None
    group = common.add_argument_group("common options")
    group.add_argument(
        "--home",
        type=Path,
        default=default,
        metavar="DIR",
        help="where the keystore is (default: $CELLRELAY_HOME, else the platform's data directory)",
    )
    group.add_argument(
        "--passphrase-file",
        default=default,
        metavar="FILE",
        help="read the passphrase from FILE ('-' for standard input; default: $CELLRELAY_PASSPHRASE, else ask)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print JSON (one value per line) for scripts",
    )
    group.add_argument(
        "--timeout",
        type=_duration,
        default=default,
        metavar="SECONDS",
        help=f"how long to wait for each step with the relay (default {DEFAULT_TIMEOUT:g})",
    )
    group.add_argument(
        "--no-color",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="no colours even on a terminal (also: $NO_COLOR)",
    )
    group.add_argument("--debug", action="store_true", default=argparse.SUPPRESS if suppress else False,
                       help="log what the client does, and show tracebacks")  # fmt: skip
    return common


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (except `relay`, which the relay parses)."""
    common = [_common_options(suppress=True)]
    parser = _Parser(
        prog=PROGRAM,
        description="End-to-end-encrypted alerts for rapid-response cells.",
        parents=[_common_options(suppress=False)],
        epilog="Run a relay with `cellrelay relay init|serve` (see `cellrelay relay --help`).",
    )
    parser.add_argument("--version", action="version", version=f"{PROGRAM} {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )

    def leaf(
        group: argparse._SubParsersAction[_Parser], name: str, text: str
    ) -> argparse.ArgumentParser:
        return group.add_parser(name, help=text, description=text, parents=common)

    identity = commands.add_parser("id", help="your identity: id new, id show").add_subparsers(
        dest="subcommand", metavar="SUBCOMMAND", required=True, parser_class=_Parser
    )
    new = leaf(identity, "new", "create your identity and its encrypted keystore")
    new.add_argument("--name", help="the name other members see (ask if not given)")
    leaf(identity, "show", "show your name and member id (no network)")

    cell = commands.add_parser("cell", help="create, join and manage cells").add_subparsers(
        dest="subcommand", metavar="SUBCOMMAND", required=True, parser_class=_Parser
    )
    create = leaf(
        cell, "create", "create a cell on a relay (or two or three); you become its admin"
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument(
        "--relay",
        required=True,
        action="append",
        metavar="ADDRESS",
        help="the relay address (cellrelay://KEY@HOST:PORT); give it up to three times for a"
        " cell on several relays, each run by another operator",
    )
    create.add_argument("--creation-secret", metavar="SECRET", default=os.environ.get("CELLRELAY_CREATION_SECRET"),
                        help="the relay's creation secret, if it has one (default: $CELLRELAY_CREATION_SECRET)")  # fmt: skip
    create.add_argument("--channel", action="store_true",
                        help="a broadcast channel: only admins and dispatchers post, and other"
                        " members' answers reach admins and dispatchers only (fixed for good)")  # fmt: skip
    leaf(cell, "list", "the cells you are in")
    invite = leaf(cell, "invite", "a one-time invite link and QR code (admins)")
    invite.add_argument("cell", metavar="CELL")
    invite.add_argument(
        "--png", metavar="FILE", help="also write the QR code to FILE (readable by you only)"
    )
    invite.add_argument(
        "--ttl",
        type=_ttl,
        default=24 * 3600,
        metavar="DURATION",
        help="how long the invite is valid (default 24h)",
    )
    invite.add_argument(
        "--qr", action="store_true", help="print the QR code even when not on a terminal"
    )
    join = leaf(cell, "join", "ask to join a cell with an invite link, and wait for approval")
    join.add_argument("link", metavar="LINK")
    join.add_argument("--wait", type=_seconds, default=DEFAULT_JOIN_WAIT, metavar="DURATION",
                      help="how long to wait for an admin's approval (default 10m; 0: just ask)")  # fmt: skip
    requests = leaf(cell, "requests", "who asked to join and waits for approval (admins)")
    requests.add_argument("cell", metavar="CELL")
    approve = leaf(cell, "approve", "admit someone who asked to join (admins)")
    approve.add_argument("cell", metavar="CELL")
    approve.add_argument(
        "member", metavar="MEMBER", nargs="?", help="name or id prefix (needed when several wait)"
    )
    approve.add_argument("--wait", type=_seconds, default=DEFAULT_APPROVE_WAIT, metavar="DURATION",
                         help="how long to wait for the request to arrive (default 10s)")  # fmt: skip
    members = leaf(cell, "members", "the cell's members")
    members.add_argument("cell", metavar="CELL")
    _cli_verify.add_parser(cell, common)
    remove = leaf(cell, "remove", "remove a member: new keys, they read nothing new (admins)")
    remove.add_argument("cell", metavar="CELL")
    remove.add_argument("member", metavar="MEMBER", help="name or id prefix")
    promote = leaf(cell, "promote", "make a member an admin too (admins)")
    promote.add_argument("cell", metavar="CELL")
    promote.add_argument("member", metavar="MEMBER", help="name or id prefix")
    rotate = leaf(
        cell, "rotate", "start a new epoch: fresh keys for everyone (admins; also done daily)"
    )
    rotate.add_argument("cell", metavar="CELL")
    recover = leaf(
        cell,
        "recover",
        "move the cell to a fresh mailbox when a flood filled it: it posts again at once (admins)",
    )
    recover.add_argument("cell", metavar="CELL")
    for verb, what in (("mute", "stop ringing for"), ("unmute", "ring again for")):
        muting = leaf(
            cell,
            verb,
            f"{what} a member's alerts: for everyone (admins), else on this device",
        )
        muting.add_argument("cell", metavar="CELL")
        muting.add_argument("member", metavar="MEMBER", help="name or id prefix")
        muting.add_argument(
            "--here", action="store_true", help="on this device only, even as an admin"
        )
    limit = leaf(
        cell,
        "alert-limit",
        "alerts a member may send per minute before every client mutes it (admins)",
    )
    limit.add_argument("cell", metavar="CELL")
    limit.add_argument("limit", metavar="N", type=int, help="1..10000 (default 10)")
    for verb, what in (
        ("add-relay", "put the cell on one more relay, run by another operator (admins)"),
        ("drop-relay", "take the cell off one of its further relays (admins)"),
    ):
        changing = leaf(cell, verb, what)
        changing.add_argument("cell", metavar="CELL")
        changing.add_argument("relay", metavar="RELAY", help="cellrelay://KEY@HOST:PORT")
    role = leaf(cell, "role", "give a member a role: who may verify reports (admins)")
    role.add_argument("cell", metavar="CELL")
    role.add_argument("member", metavar="MEMBER", help="name or id prefix")
    role.add_argument("role", metavar="ROLE", choices=["admin", "dispatcher", "responder", "observer", "liaison", "member"],
                      help="admin, dispatcher, responder, observer (a legal observer), liaison"
                           " (escalates to a neighbouring cell) or member")  # fmt: skip
    first = leaf(
        cell,
        "verify-first",
        "send reports to dispatchers first, to everyone once confirmed (admins)",
    )
    first.add_argument("cell", metavar="CELL")
    first.add_argument("setting", metavar="on|off", choices=["on", "off"])
    leave = leaf(cell, "leave", "leave a cell and delete its keys from this device")
    leave.add_argument("cell", metavar="CELL")
    leave.add_argument("--yes", action="store_true", help="confirm")
    leave.add_argument("--force", action="store_true", help="leave even as the only admin")
    burn = leaf(
        cell,
        "burn",
        "delete a cell on every member's device and its mailboxes on the relay (admins; cannot be undone)",
    )
    burn.add_argument("cell", metavar="CELL")
    burn.add_argument("--yes", action="store_true", help="confirm")
    burn.add_argument(
        "--keep",
        type=_seconds,
        default=0.0,
        metavar="DURATION",
        help="keep the mailboxes on the relay this long, so members who are offline can read the burn (default: delete them now)",
    )

    send = leaf(commands, "send", "send an alert to a cell")
    send.add_argument("cell", metavar="CELL")
    send.add_argument("text", metavar="TEXT", help="what is happening ('-' reads standard input)")
    send.add_argument(
        "--priority",
        choices=["info", "urgent", "emergency"],
        default="urgent",
        help="default urgent",
    )
    send.add_argument(
        "--ttl",
        type=_ttl,
        default=3600,
        metavar="DURATION",
        help="when it expires everywhere (default 1h)",
    )
    send.add_argument("--place", metavar="TEXT", help="where (one line)")
    send.add_argument("--escalate-below", type=int, metavar="N",
                      help="this alert's N: call a neighbouring cell while fewer than N members"
                           " answer (0: never; default: the cell's setting)")  # fmt: skip
    send.add_argument("--escalate-after", type=_cli_escalate.after_duration, metavar="DURATION",
                      help="this alert's T: how long after confirmation (default: the cell's setting)")  # fmt: skip
    reply = leaf(commands, "reply", "answer an alert")
    reply.add_argument("cell", metavar="CELL")
    reply.add_argument(
        "alert_id",
        metavar="ALERT_ID",
        help="the alert's id or a prefix, as listen and alerts show it",
    )
    reply.add_argument("status", metavar="STATUS", choices=["responding", "on_scene", "on-scene", "resolved", "false_alarm", "false-alarm"],
                       help="responding, on-scene, resolved or false-alarm")  # fmt: skip
    reply.add_argument("--note", metavar="TEXT", help="a few words (e.g. 'two vans')")
    mark = leaf(
        commands,
        "mark",
        "verify a report: verifying, confirmed, false-alarm, resolved (dispatchers)",
    )
    mark.add_argument("cell", metavar="CELL")
    mark.add_argument(
        "alert_id",
        metavar="ALERT_ID",
        help="the alert's id or a prefix, as listen and alerts show it",
    )
    mark.add_argument("step", metavar="STEP", choices=["verifying", "confirmed", "false_alarm", "false-alarm", "resolved"],
                      help="verifying (you are checking it), confirmed, false-alarm or resolved")  # fmt: skip
    mark.add_argument(
        "--note", metavar="TEXT", help="what you found (e.g. 'two vans, confirmed by phone')"
    )
    message = leaf(commands, "message", "send an ordinary message (not an alert) to a cell")
    message.add_argument("cell", metavar="CELL")
    message.add_argument("text", metavar="TEXT", help="the message ('-' reads standard input)")
    message.add_argument(
        "--ttl",
        type=_ttl,
        default=24 * 3600,
        metavar="DURATION",
        help="when it expires (default 1d)",
    )
    alerts = leaf(commands, "alerts", "a cell's active alerts and who is answering")
    alerts.add_argument("cell", metavar="CELL")
    listen = leaf(commands, "listen", "follow alerts and replies live (Ctrl-C stops)")
    listen.add_argument("cells", metavar="CELL", nargs="*", help="default: all your cells")
    listen.add_argument(
        "--duration", type=_duration, metavar="DURATION", help="stop after this long"
    )
    listen.add_argument(
        "--interactive",
        action="store_true",
        help="read `reply ALERT_ID STATUS [NOTE]` lines from standard input (the default on a terminal)",
    )
    _cli_escalate.add_parsers(commands, cell, common)
    _cli_daemon.add_parsers(commands, common)
    _cli_panic.add_parsers(commands, common)
    demo_text = "run a relay and a three-member cell on this machine, and show an alert"
    demo = commands.add_parser("demo", help=demo_text, description=demo_text)
    demo.add_argument("--keep", action="store_true", help="keep the demo's temporary directory")
    commands.add_parser("relay", help="run a relay (see `cellrelay relay --help`)", add_help=False)
    return parser


# -- running --------------------------------------------------------------------------------


def _passphrase(args: argparse.Namespace, env: MutableMapping[str, str], *, new: bool) -> str:
    source = getattr(args, "passphrase_file", None)
    if source is not None:
        return read_secret(source, "passphrase")
    if env.get("CELLRELAY_PASSPHRASE"):
        return env["CELLRELAY_PASSPHRASE"]
    if not sys.stdin.isatty():
        raise CliError(
            "no passphrase: set CELLRELAY_PASSPHRASE, use --passphrase-file, or run in a terminal"
        )
    if not new:
        return _ask(getpass.getpass, "Passphrase: ", "no passphrase given")
    print(
        f"Choose a passphrase of at least {MIN_PASSPHRASE} characters; a few random words is best.",
        file=sys.stderr,
    )
    first = _ask(getpass.getpass, "New passphrase: ", "no passphrase given; nothing was created")
    if _ask(getpass.getpass, "Again: ", "no passphrase given; nothing was created") != first:
        raise CliError("the passphrases do not match; nothing was created")
    return first


def _ask(prompt: Callable[[str], str], question: str, nothing: str) -> str:
    """Ask on the terminal; Ctrl-D (end of input) is a one-line `CliError` saying `nothing`."""
    try:
        return prompt(question)
    except EOFError:
        print(file=sys.stderr)  # end the prompt's line: the error gets one of its own
        raise CliError(f"{nothing} (input ended)") from None


def _name(args: argparse.Namespace) -> str:
    if args.name is not None:
        return str(args.name)
    if not sys.stdin.isatty():
        raise CliError("give the name other members will see: --name NAME")
    question = "The name other members see (not necessarily your real one): "
    return _ask(input, question, "no name given; nothing was created").strip()


def _style(args: argparse.Namespace, env: MutableMapping[str, str]) -> Style:
    colour = (
        sys.stdout.isatty()
        and not getattr(args, "no_color", False)
        and "NO_COLOR" not in env
        and env.get("TERM") != "dumb"
    )
    return Style(colour=colour)


def _configure_logging(debug: bool) -> None:
    """Client logs go to standard error, warnings only unless --debug, one short line each."""
    level = 10 if debug else 30  # logging.DEBUG, logging.WARNING

    def render(_logger: object, method: str, event: MutableMapping[str, object]) -> str:
        name = event.pop("event", "")
        fields = " ".join(f"{k}={v}" for k, v in event.items())
        return f"{PROGRAM}: {method}: {name} {fields}".rstrip()

    structlog.configure(
        processors=[render],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def describe_error(error: BaseException, *, home: Path | None = None) -> str:
    """One line for a person: what went wrong and, where we know it, what to do."""
    leaves = [e for e in _leaves(error) if not isinstance(e, trio.Cancelled)] or [error]
    error = leaves[0]
    if isinstance(error, KeystoreBusyError):
        return "another cellrelay command is using this identity (for example `cellrelay listen`): stop it, or wait for it to finish"
    if isinstance(error, WrongPassphraseError):
        where = f" for {home / KEYSTORE_NAME}" if home is not None else ""
        return f"wrong passphrase{where} (or the keystore file was altered)"
    if isinstance(error, RelayRefusedError):
        try:
            return REFUSALS[ErrorCode(error.code)]
        except (KeyError, ValueError):
            return f"the relay refused: error code {error.code}"
    if isinstance(error, RelayKeyMismatchError):
        where = f"{error.address.host}:{error.address.port}"
        return (
            f"the relay's key does not match the invite or address you have ({where} refused the "
            "handshake): check it was copied exactly, or ask whoever gave it to you for a new one"
        )
    if isinstance(error, LinkClosedError):
        return "the connection to the relay closed before it answered: try again"
    if isinstance(error, InviteError):
        return f"bad invite link: {error}"
    if isinstance(error, AddressError):
        return f"bad relay address: {error} (it looks like cellrelay://KEY@HOST:PORT, as `cellrelay relay init` prints it)"
    if isinstance(error, ContentError):
        return f"cannot send that: {error}"
    if isinstance(error, CliError | CellError | KeystoreError | CellrelayError | ValueError):
        return str(error)
    if isinstance(error, OSError):
        return f"{error.strerror or error}{': ' + str(error.filename) if error.filename else ''}"
    return f"unexpected {type(error).__name__}: {error} (--debug shows where)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (130, and one line, after Ctrl-C)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # wherever it came: parsing the command line, say (issue 10)
        print(f"{PROGRAM}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["relay"]:
        # -P: do not put the current directory on sys.path, or a `cellrelay/` folder
        # wherever the operator happens to stand would run instead of ours.
        os.execv(sys.executable, [sys.executable, "-P", "-m", "cellrelay.relay", *arguments[1:]])  # noqa: S606 - our own module
    # Before any passphrase is read: no core dump may hold it, or what it unlocks.
    make_undumpable(lock_limit=False)
    args = build_parser().parse_args(arguments)
    debug = bool(getattr(args, "debug", False))
    _configure_logging(debug)
    if args.command == "demo":
        from ._demo import run_demo  # only the demo needs it

        try:
            return run_demo(keep=args.keep)
        except KeyboardInterrupt:
            print(f"{PROGRAM}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    env = os.environ
    home: Path = getattr(args, "home", None) or default_data_dir()
    try:
        return _run(args, home, env)
    except KeyboardInterrupt:
        print(f"{PROGRAM}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`cellrelay listen | head`): not an error of ours.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except BaseException as error:
        if isinstance(error, SystemExit):
            raise
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in _leaves(error)):
            print(f"{PROGRAM}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        if debug:
            traceback.print_exception(error)
        print(f"{PROGRAM}: {describe_error(error, home=home)}", file=sys.stderr)
        return EXIT_ERROR


def _run(args: argparse.Namespace, home: Path, env: MutableMapping[str, str]) -> int:
    key = f"{args.command} {args.subcommand}" if getattr(args, "subcommand", None) else args.command
    if key == "panic":  # at once: no passphrase, no daemon to ask (client/_cli_panic.py)
        return _cli_panic.panic(home, json_mode=bool(getattr(args, "json", False)))
    # A daemon running for this identity holds the keystore: go through it (no passphrase).
    timeout = getattr(args, "timeout", None) or DEFAULT_TIMEOUT
    json_mode = bool(getattr(args, "json", False))
    routed = _cli_daemon.through_daemon(
        key, args, home, json_mode=json_mode, timeout=timeout, style=_style(args, env)
    )
    if routed is not None:
        return routed
    keystore = home / KEYSTORE_NAME
    # Check for the keystore before asking for a passphrase that could not be used.
    if key == "id new":
        if keystore.exists():
            raise CliError(
                f"you already have an identity in {home} (cellrelay id show); use --home for another"
            )
        args.name = _name(args)
        passphrase = _passphrase(args, env, new=True)
    else:
        if not keystore.exists():
            raise CliError(
                f"no identity in {home}: create one with `cellrelay id new` (or pass --home)"
            )
        passphrase = _passphrase(args, env, new=False)
    ctx = Context(
        home=home,
        passphrase=passphrase,
        json=bool(getattr(args, "json", False)),
        timeout=getattr(args, "timeout", None) or DEFAULT_TIMEOUT,
        style=_style(args, env),
    )
    trio.run(run_command, ctx, COMMANDS[key], args)
    return 0
