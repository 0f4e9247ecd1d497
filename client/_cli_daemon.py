"""The command line and the daemon: `cellrelay daemon`, `cellrelay board`, and every command through a running daemon.

When a daemon runs for the identity (its socket answers), the command line does not
unlock the keystore (the daemon holds it) but asks the daemon, over its Unix socket, with
the same API any program uses (docs/daemon.md): no passphrase, no lock conflict, and an
answer in milliseconds instead of the second an unlock costs. What it prints is what the
command prints on its own: the same JSON for scripts (tests/client/test_cli_daemon.py
compares the two) and the same lines for people, rendered by client/_cli_output.py from
the library's own types, which the API's JSON decodes back into (client/_schema.py).

With no daemon running, `through_daemon` returns None and the command runs alone as before.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import ipaddress
import signal
import sys
import time
import typing
import urllib.parse
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import trio

from cellrelay.protocol import ErrorCode
from cellrelay.protocol._errors import DESCRIPTIONS
from cellrelay.protocol.cell import (
    Alert,
    AlertRollup,
    Invite,
    MessageId,
    ReceiptCounts,
    Status,
    Step,
)
from cellrelay.protocol.wire import RelayAddress

from ._api_types import (
    AlertLimitSet,
    AlertList,
    AlertSent,
    CellList,
    CellSummary,
    InviteCreated,
    JoinStatus,
    MemberDetail,
    MemberList,
    MessageList,
    MuteResult,
    NewEpoch,
    RelaysChanged,
    RelayStateChanged,
    ReplySent,
    StepSent,
    StreamEvent,
    VerifyFirstSet,
)
from ._cell_moves import MAX_ALERT_LIMIT
from ._cli_commands import (
    CHANNEL_NOTE,
    CHANNEL_SENTENCE,
    GONE_NOTE,
    CliError,
    Context,
    burn_confirmation,
    relay_addresses,
    role_sentence,
    say_burned,
    say_left,
    say_relays,
    ttl_refusal,
    verify_first_sentence,
)
from ._cli_listen import (
    INTERACTIVE_HELP,
    CountLines,
    read_typed_replies,
    show_snapshot,
    show_status,
)
from ._cli_output import (
    Style,
    alert_headline,
    alert_json,
    alerts_listing,
    command_arg,
    event_json,
    event_lines,
    isolate,
    member_json,
    name_tag_note,
    pad,
    plural,
    short_id,
    show_sent,
    when,
)
from ._daemon import DaemonAddress, DaemonRunningError, check_not_running, run_daemon, socket_path
from ._daemon_client import DaemonConnection, DaemonResponse, open_daemon
from ._events import (
    AlertReceived,
    CellEvent,
    Member,
    MembershipChanged,
    ReceiptsCounted,
    StatusReceived,
)
from ._link import LinkStatus
from ._openapi import api_registry
from ._qr import invite_qr_terminal, write_invite_png

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from pathlib import Path

__all__ = ["add_parsers", "daemon_command", "through_daemon"]

DEFAULT_PORT_HOST: Final = "127.0.0.1"
_REGISTRY: Final = api_registry()


def _listen_address(text: str) -> tuple[str, int]:
    """`PORT` or `HOST:PORT` (a loopback address) for `--listen`."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or DEFAULT_PORT_HOST
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not PORT or ADDRESS:PORT: {text!r}") from None
    if not address.is_loopback or not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(
            f"the daemon listens on loopback addresses only (127.0.0.1, ::1), not {host}"
        )
    return host, number


def add_parsers(
    commands: argparse._SubParsersAction[Any], common: Sequence[argparse.ArgumentParser]
) -> None:
    """Add `daemon` and `board` to the command line."""
    text = "run in the background for this identity: unlocked once, the local API and the board"
    daemon = commands.add_parser(
        "daemon", help=text, description=text + " (docs/daemon.md)", parents=list(common)
    )
    daemon.add_argument(
        "--listen", type=_listen_address, metavar="[ADDRESS:]PORT",
        help="also serve on loopback TCP (with the token in daemon.token), e.g. 8765 or 127.0.0.1:8765",
    )  # fmt: skip
    text = "print a one-time link that opens the dispatch board (a daemon must be running)"
    commands.add_parser("board", help=text, description=text, parents=list(common))


# -- cellrelay daemon -------------------------------------------------------------------------


async def daemon_command(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay daemon`: run until SIGTERM or Ctrl-C, then save and exit 0."""
    ctx.unbound()

    async def stop_on_signal(scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                scope.cancel()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_signal, nursery.cancel_scope)
        address: DaemonAddress = await nursery.start(
            partial(run_daemon, ctx.passphrase, home=ctx.home, listen=args.listen)
        )
        _announce(ctx, address)


def _announce(ctx: Context, address: DaemonAddress) -> None:
    ctx.emit({"type": "daemon_listening", "socket": str(address.socket), "url": address.url,
              "board_url": address.board_url, "token_file": str(address.token_file)})  # fmt: skip
    ctx.say(f"cellrelay daemon: serving this identity on {address.socket}")
    if address.url is not None:
        ctx.say(f"API: {address.url} (Authorization: Bearer, token in {address.token_file})")
    if address.board_url is not None:
        ctx.say(f"Board: {address.board_url}")
        ctx.note("The board link works once, for 10 minutes; `cellrelay board` prints a new one.")
    ctx.note("Other cellrelay commands now go through this daemon. Ctrl-C or SIGTERM stops it.")


# -- routing a command through a running daemon --------------------------------------------------


def through_daemon(key: str, args: argparse.Namespace, home: Path, *, json_mode: bool,
                   timeout: float, style: Style) -> int | None:  # fmt: skip
    """Run `key` through the daemon running for `home`; None if none runs (run it alone).

    Raises:
        CliError: for `daemon` when one already runs, for `board` when none does, and
            whatever the command itself says went wrong.
    """
    if key == "daemon":
        try:
            check_not_running(home)
        except DaemonRunningError as exc:
            raise CliError(
                f"{exc}; stop it first, or use it: other commands go through it"
            ) from None
        return None
    command = _COMMANDS.get(key)
    if command is None:
        return None
    ctx = Context(home=home, passphrase="", json=json_mode, timeout=timeout, style=style)
    outcome = trio.run(_run_through, ctx, command, args, home)
    if outcome is _NO_DAEMON:
        if key == "board":
            raise CliError(
                "no daemon runs for this identity: start one with `cellrelay daemon --listen PORT`"
            )
        return None
    return 0


_NO_DAEMON: Final = object()


async def _run_through(
    ctx: Context, command: Callable[[Api, argparse.Namespace], Awaitable[None]],
    args: argparse.Namespace, home: Path,
) -> object:  # fmt: skip
    try:
        async with open_daemon(socket_path(home)) as connection:
            api = Api(ctx, connection, home)
            await command(api, args)
    except (FileNotFoundError, ConnectionRefusedError):
        return _NO_DAEMON
    return None


class Api:
    """The daemon as the commands here use it: typed answers, problems as CliError."""

    def __init__(self, ctx: Context, connection: DaemonConnection, home: Path) -> None:
        self.ctx = ctx
        self.connection = connection
        self.home = home

    def _wait_header(self) -> dict[str, str]:
        return {"prefer": f"wait={max(1, round(self.ctx.timeout))}"}

    async def call(self, method: str, path: str, answer: object = None, *, body: object = None,
                   problems: dict[str, str] | None = None) -> Any:  # noqa: ANN401 - the type `answer` names  # fmt: skip
        """One request; its answer decoded as `answer` (JSON as it is if None).

        Raises:
            CliError: the daemon refused; `problems` maps codes to what to say instead.
        """
        response = await self.connection.request(
            method, path, json_body=body, headers=self._wait_header()
        )
        if response.status >= 400:
            raise self._error(response, problems or {})
        data = response.json()
        return data if answer is None else _REGISTRY.decode(data, answer)

    def _error(self, response: DaemonResponse, problems: dict[str, str]) -> CliError:
        try:
            problem = response.json()
            code, detail = str(problem.get("code", "")), problem.get("detail")
        except ValueError:
            return CliError(f"the daemon answered {response.status}")
        if code in problems:
            return CliError(problems[code])
        if code == "RELAY_TIMEOUT":
            return CliError(f"{detail} within {self.ctx.timeout:g} s; is the relay running and reachable? (--timeout SECONDS waits longer)")  # fmt: skip
        from ._cli import REFUSALS  # _cli imports this module: imported when first needed

        with contextlib.suppress(KeyError):
            # A relay's refusal comes with the protocol's description of its code: say what
            # the command says alone. Any other detail is the library's own message (a full
            # mailbox says what an admin can do about it): say it as it is.
            if detail is None or detail == DESCRIPTIONS[ErrorCode[code]]:
                return CliError(REFUSALS[ErrorCode[code]])
        return CliError(str(detail or code))


async def _check_ttl(api: Api, cell: str, ttl: int) -> None:
    """Refuse a `--ttl` beyond what the cell's relay keeps, as the command does alone."""
    summary: CellSummary = await api.call(
        "GET", _path("cells", cell), CellSummary, problems=_no_cell(cell)
    )
    if summary.role == "removed":
        raise CliError(_no_cell(cell)["REMOVED"])
    refusal = ttl_refusal(summary.name, ttl, summary.max_ttl)
    if refusal is not None:
        raise CliError(refusal)


def _path(*parts: str) -> str:
    return "/" + "/".join(urllib.parse.quote(p, safe="") for p in parts)


def _not_admin(cell: str, what: str = "can do that") -> dict[str, str]:
    return {"NOT_ADMIN": f"only an admin of {cell!r} {what}"}


def _no_cell(cell: str) -> dict[str, str]:
    return {
        "NO_SUCH_CELL": f"no cell matches {cell!r} (see `cellrelay cell list`)",
        "AMBIGUOUS": f"more than one cell matches {cell!r}: give more of its id",
        "REMOVED": f"you were removed from {cell!r}; an admin can invite you again",
    }


# -- identity and cells ---------------------------------------------------------------------------


async def id_show(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay id show` through the daemon."""
    ctx = api.ctx
    daemon = await api.call("GET", "/daemon")
    cells = await api.call("GET", "/cells")
    name, member_id = daemon["identity"]["name"], daemon["identity"]["member_id"]
    path = api.home / "keystore"
    ctx.emit(
        {"name": name, "member_id": member_id, "keystore": str(path), "cells": len(cells["cells"])}
    )
    ctx.say(f"{isolate(name)}")
    ctx.say(f"  member id  {member_id}")
    ctx.say(f"  keystore   {path}")
    ctx.say(f"  cells      {len(cells['cells'])}")
    ctx.say(
        "The first 8 digits of your member id are a name tag, not a check: to show someone it is"
        " you, compare safety numbers in person (cellrelay cell verify CELL THEIR-NAME)."
    )


async def cell_create(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell create` through the daemon."""
    ctx = api.ctx
    addresses = relay_addresses(args.relay)
    address = addresses[0]
    body: dict[str, object] = {"name": args.name, "relay": args.relay[0],
                               "creation_secret": args.creation_secret or None}  # fmt: skip
    if len(addresses) > 1:
        body["more_relays"] = args.relay[1:]
    if args.channel:
        body["channel"] = True
    cell = await api.call("POST", "/cells", body=body, problems={
        "EXISTS": f"you already have a cell named {args.name!r}; choose another name"})  # fmt: skip
    created: dict[str, object] = {"cell": cell["name"], "cell_id": cell["cell_id"], "relay": str(address), "channel": cell["channel"]}  # fmt: skip
    if len(addresses) > 1:
        created["more_relays"] = [str(a) for a in addresses[1:]]
    ctx.emit(created)
    where = ", ".join(f"{a.host}:{a.port}" for a in addresses)
    ctx.say(
        f"Created {isolate(cell['name'])} ({cell['cell_id'][:8]}) on {where}; you are its admin."
    )
    if cell["channel"]:
        ctx.say(CHANNEL_SENTENCE)
    ctx.say(f"Invite members: cellrelay cell invite {command_arg(cell['name'])}")


async def cell_list(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell list` through the daemon."""
    ctx = api.ctx
    listing: CellList = await api.call("GET", "/cells", CellList)
    rows = []
    for cell in listing.cells:
        address = RelayAddress.parse(cell.relay)
        rows.append({"name": cell.name, "cell_id": cell.cell_id.hex(), "relay": cell.relay,
                     "relay_host": f"{address.host}:{address.port}", "role": cell.role,
                     "members": cell.members, "active_alerts": cell.active_alerts,
                     "gone": cell.gone, "channel": cell.channel})  # fmt: skip
    ctx.emit(
        {
            "cells": rows,
            "waiting": [{"cell": w.cell, "cell_id": w.cell_id.hex()} for w in listing.waiting],
        }
    )
    if not rows and not listing.waiting:
        ctx.say("You are in no cell yet: create one (cellrelay cell create NAME --relay ADDRESS)")
        ctx.say("or join one with an invite link (cellrelay cell join LINK).")
    width = max([len(c.name) for c in listing.cells] + [len(w.cell) for w in listing.waiting] + [0])
    for cell, row in zip(listing.cells, rows, strict=True):
        alerts = cell.active_alerts
        alert_text = plural(alerts, "active alert") if alerts else "no active alerts"
        ctx.say(
            f"{pad(cell.name, width)}  {ctx.style.dim(short_id(cell.cell_id))}  {row['role']:7}  "
            f"{plural(cell.members, 'member'):11}  {alert_text:16}  {ctx.style.dim('relay ' + str(row['relay_host']))}"
            + (ctx.style.dim(CHANNEL_NOTE) if cell.channel else "")
            + (ctx.style.warn(GONE_NOTE) if cell.gone else "")
        )
    for waiting in listing.waiting:
        ctx.say(
            f"{pad(waiting.cell, width)}  {ctx.style.dim(short_id(waiting.cell_id))}  waiting for an admin to approve your request"
        )


async def cell_invite(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell invite` through the daemon (the PNG is written here, not by the daemon)."""
    ctx = api.ctx
    await _check_ttl(api, args.cell, args.ttl)
    invite: InviteCreated = await api.call(
        "POST", _path("cells", args.cell, "invites"), InviteCreated, body={"ttl": args.ttl},
        problems={**_no_cell(args.cell), **_not_admin(args.cell)},
    )  # fmt: skip
    if args.png:
        write_invite_png(invite.link, args.png)
    ctx.emit(
        {"cell": invite.cell, "link": invite.link, "expires_at": invite.expires_at, "png": args.png}
    )
    if ctx.json:
        return
    print(invite.link, file=ctx.out, flush=True)
    if args.qr or ctx.out.isatty():
        print(invite_qr_terminal(invite.link), file=ctx.out, flush=True)
    ctx.note(f"One-time invite to {isolate(invite.cell)}, valid until {when(invite.expires_at)}.")
    ctx.note(
        "Give it privately: whoever holds it can ask to join."
        + (f" QR code saved to {args.png}." if args.png else "")
    )
    ctx.note(f"When they have asked: cellrelay cell approve {command_arg(invite.cell)}")


async def cell_join(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell join` through the daemon."""
    ctx = api.ctx
    invite = Invite.parse(args.link)
    invite.check_fresh(time.time())
    listing: CellList = await api.call("GET", "/cells", CellList)
    me = (await api.call("GET", "/daemon"))["identity"]["member_id"][:8]
    if any(w.cell_id == invite.cell_id for w in listing.waiting):
        ctx.note(
            f"You already asked to join {isolate(invite.cell_name)}; waiting for the approval."
        )
    status: JoinStatus = await api.call(
        "POST", "/joins", JoinStatus, body={"link": args.link, "wait": 0}
    )
    member_of = any(c.cell_id == invite.cell_id and c.role != "removed" for c in listing.cells)
    if status.joined and member_of:
        ctx.emit({"cell": status.cell, "cell_id": status.cell_id.hex(), "joined": True})
        ctx.say(f"You are already a member of {isolate(status.cell)}.")
        return
    if args.wait <= 0:
        ctx.emit({"cell": invite.cell_name, "cell_id": invite.cell_id.hex(), "joined": False})
        ctx.say(
            f"Asked to join {isolate(invite.cell_name)}. An admin approves with: cellrelay cell approve {command_arg(invite.cell_name)} {me}"
        )
        return
    if not any(w.cell_id == invite.cell_id for w in listing.waiting):
        ctx.note(
            f"Asked to join {isolate(invite.cell_name)}; waiting up to {args.wait:g} s for an admin to approve "
            f"(they run: cellrelay cell approve {command_arg(invite.cell_name)} {me})."
        )
    deadline = trio.current_time() + args.wait
    while not status.joined and trio.current_time() < deadline:
        wait = max(1, min(600, round(deadline - trio.current_time())))
        status = await api.call(
            "POST", "/joins", JoinStatus, body={"link": args.link, "wait": wait}
        )
    if not status.joined:
        raise CliError(
            f"no approval within {args.wait:g} s; the request stays with the relay until the invite expires "
            f"({when(invite.expires_at)}): run the same command again to keep waiting"
        )
    mine = bytes.fromhex((await api.call("GET", "/daemon"))["identity"]["member_id"])
    ctx.emit({"cell": status.cell, "cell_id": status.cell_id.hex(), "joined": True,
              "members": [member_json(m, me=mine) for m in status.members]})  # fmt: skip
    names = ", ".join(isolate(m.name) + (" (admin)" if m.is_admin else "") for m in status.members)
    ctx.say(f"Joined {isolate(status.cell)}: {names}.")
    ctx.say(f"Follow it with: cellrelay listen {command_arg(status.cell)}")


async def cell_requests(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell requests` through the daemon."""
    ctx = api.ctx
    requests = await api.call("GET", _path("cells", args.cell, "join-requests"), problems={
        **_no_cell(args.cell), **_not_admin(args.cell, "sees join requests")})  # fmt: skip
    members = [_REGISTRY.decode(m, Member) for m in requests["requests"]]
    ctx.emit([member_json(m) for m in members])
    if not members:
        ctx.say(f"Nobody is waiting to join {isolate(requests['cell'])}.")
    for m in members:
        ctx.say(
            f"{isolate(m.name)}  {m.short_id}   cellrelay cell approve {command_arg(requests['cell'])} {m.short_id}"
        )


def _matches(member: Member, text: str) -> bool:
    wanted = text.casefold()
    return member.name.casefold() == wanted or member.member_id.hex().startswith(wanted)


async def cell_approve(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell approve` through the daemon: waits (--wait) for the request on the event stream."""
    ctx = api.ctx
    problems = {**_no_cell(args.cell), **_not_admin(args.cell, "can approve")}
    path = _path("cells", args.cell, "join-requests")
    async with open_daemon(socket_path(api.home)) as events_connection:
        stream = await events_connection.open_events(
            "/events?" + urllib.parse.urlencode({"cell": args.cell})
        )
        listing = await api.call("GET", path, problems=problems)
        cell_name = listing["cell"]
        requests = [_REGISTRY.decode(m, Member) for m in listing["requests"]]
        with trio.move_on_after(args.wait):
            while not requests or (
                args.member is not None and not any(_matches(m, args.member) for m in requests)
            ):
                async for event in stream:  # wake on the next join request
                    if event.data.get("type") == "join_requested":
                        break
                listing = await api.call("GET", path, problems=problems)
                requests = [_REGISTRY.decode(m, Member) for m in listing["requests"]]
    if args.member is not None:
        chosen = [m for m in requests if _matches(m, args.member)]
        if not chosen:
            raise CliError(
                f"nobody called {args.member!r} is waiting to join {cell_name!r} (see `cellrelay cell requests`)"
            )
        if len(chosen) > 1:
            raise CliError(
                f"several people waiting match {args.member!r}: give the id shown by `cellrelay cell requests`"
            )
        wanted = chosen[0]
    elif len(requests) > 1:
        raise CliError(
            f"{len(requests)} people are waiting to join: name one (see `cellrelay cell requests`)"
        )
    elif not requests:
        raise CliError(
            f"nobody is waiting to join {cell_name!r} (the request may not have arrived yet; --wait waits longer)"
        )
    else:
        wanted = requests[0]
    detail: MemberDetail = await api.call(
        "POST", _path("cells", args.cell, "join-requests", wanted.member_id.hex(), "approve"),
        MemberDetail, problems=problems,
    )  # fmt: skip
    member = detail.member
    ctx.emit(member_json(member))
    ctx.say(f"Approved {isolate(member.name)} ({member.short_id}) into {isolate(cell_name)}.")
    ctx.say(name_tag_note(cell_name, member))
    ctx.note(
        "Check that this id is the one their `cellrelay id show` prints: anyone holding the invite could have asked."
    )


async def _me(api: Api) -> bytes:
    return bytes.fromhex((await api.call("GET", "/daemon"))["identity"]["member_id"])


async def cell_members(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell members` through the daemon."""
    ctx = api.ctx
    listing: MemberList = await api.call(
        "GET", _path("cells", args.cell, "members"), MemberList, problems=_no_cell(args.cell)
    )
    me = await _me(api)
    members = listing.members
    ctx.emit([member_json(m, me=me) for m in members])
    width = max(len(m.name) for m in members)
    for m in members:
        tags = [
            t for t, on in ((str(m.role), m.role != "member"), ("you", m.member_id == me)) if on
        ]
        ctx.say(f"{pad(m.name, width)}  {ctx.style.dim(m.short_id)}  {', '.join(tags)}".rstrip())


def _member_problems(cell: str, member: str) -> dict[str, str]:
    return {
        **_no_cell(cell),
        **_not_admin(cell),
        "NO_SUCH_MEMBER": f"no member matches {member!r}; see `cellrelay cell members`",
        "SELF": f"to remove yourself, use: cellrelay cell leave {command_arg(cell)}",
    }


async def cell_remove(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell remove` through the daemon."""
    ctx = api.ctx
    detail: MemberDetail = await api.call("DELETE", _path("cells", args.cell, "members", args.member), MemberDetail,
                                          problems=_member_problems(args.cell, args.member))  # fmt: skip
    member = detail.member
    ctx.emit(member_json(member))
    ctx.say(
        f"Removed {isolate(member.name)} ({member.short_id}) from {isolate(detail.cell)}: everyone has new keys"
    )
    ctx.say("and a fresh mailbox, and they can read nothing sent from now on.")


async def cell_promote(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell promote` through the daemon."""
    ctx = api.ctx
    detail: MemberDetail = await api.call("POST", _path("cells", args.cell, "members", args.member, "promote"),
                                          MemberDetail, problems=_member_problems(args.cell, args.member))  # fmt: skip
    ctx.emit(member_json(detail.member))
    ctx.say(
        f"{isolate(detail.member.name)} ({detail.member.short_id}) is now an admin of {isolate(detail.cell)}."
    )


async def cell_rotate(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell rotate` through the daemon."""
    ctx = api.ctx
    rotated = await api.call(
        "POST",
        _path("cells", args.cell, "rotate"),
        problems={**_no_cell(args.cell), **_not_admin(args.cell)},
    )
    ctx.emit({"cell": rotated["cell"], "epoch": rotated["epoch"]})
    ctx.say(f"{isolate(rotated['cell'])} is in epoch {rotated['epoch']}: everyone has fresh keys.")


async def cell_burn(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell burn` through the daemon."""
    ctx = api.ctx
    cell = await api.call("GET", _path("cells", args.cell), problems=_no_cell(args.cell))
    if cell["role"] != "admin":
        raise CliError(f"only an admin of {cell['name']!r} can burn it")
    if not args.yes:
        raise CliError(burn_confirmation(cell["name"]))
    burned = await api.call("POST", _path("cells", args.cell, "burn"), body={"keep": int(args.keep)},
                            problems={**_no_cell(args.cell), **_not_admin(args.cell, "can burn it")})  # fmt: skip
    say_burned(ctx, burned["cell"], burned["cell_id"], keep=burned["keep"],
               pending=burned["mailboxes_pending"])  # fmt: skip


async def cell_recover(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell recover` through the daemon."""
    ctx = api.ctx
    moved: NewEpoch = await api.call("POST", _path("cells", args.cell, "recover"), NewEpoch,
                                      problems={**_no_cell(args.cell), **_not_admin(args.cell)})  # fmt: skip
    ctx.emit({"cell": moved.cell, "epoch": moved.epoch})
    ctx.say(f"{isolate(moved.cell)} moved to a fresh mailbox (epoch {moved.epoch}):")
    ctx.say("its members can post again. If one of them flooded it, remove them.")


async def cell_mute(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell mute` through the daemon."""
    await _muting(api, args, mute=True)


async def cell_unmute(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell unmute` through the daemon."""
    await _muting(api, args, mute=False)


async def _muting(api: Api, args: argparse.Namespace, *, mute: bool) -> None:
    ctx = api.ctx
    verb = "mute" if mute else "unmute"
    problems = {**_member_problems(args.cell, args.member),
                "NOT_ADMIN": f"only an admin of {args.cell!r} can {verb} someone for everyone"}  # fmt: skip
    done: MuteResult = await api.call("POST", _path("cells", args.cell, "members", args.member, verb),
                                      MuteResult, body={"here": bool(args.here)}, problems=problems)  # fmt: skip
    member = done.member
    ctx.emit({**member_json(member), "muted": done.muted, "everyone": done.everyone})
    where = "for everyone in" if done.everyone else "on this device, in"
    ctx.say(
        f"{'Muted' if mute else 'Unmuted'} {isolate(member.name)} ({member.short_id}) {where} {isolate(done.cell)}."
    )
    if mute and not done.everyone:
        ctx.say(
            "Their alerts are still kept, but do not ring. An admin can mute them for everyone, or remove them."
        )


async def cell_alert_limit(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell alert-limit` through the daemon."""
    ctx = api.ctx
    if not 1 <= args.limit <= MAX_ALERT_LIMIT:
        # As the library says it alone (the API's own bound would name the field instead).
        raise CliError(
            f"the alert limit must be 1..{MAX_ALERT_LIMIT} alerts per minute (alert_limit: 1..{MAX_ALERT_LIMIT})"
        )
    limit: AlertLimitSet = await api.call("PUT", _path("cells", args.cell, "alert-limit"), AlertLimitSet,
                                          body={"limit": args.limit},
                                          problems={**_no_cell(args.cell), **_not_admin(args.cell)})  # fmt: skip
    ctx.emit({"cell": limit.cell, "alert_limit": limit.alert_limit})
    ctx.say(
        f"In {isolate(limit.cell)}, a member who sends more than {limit.alert_limit} alerts"
        " in a minute is now muted by every member's client."
    )


async def cell_add_relay(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell add-relay` through the daemon."""
    await _change_relay(api, args, "add-relay")


async def cell_drop_relay(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell drop-relay` through the daemon."""
    await _change_relay(api, args, "drop-relay")


async def _change_relay(api: Api, args: argparse.Namespace, verb: str) -> None:
    (address,) = relay_addresses([args.relay])
    changed: RelaysChanged = await api.call("POST", _path("cells", args.cell, verb), RelaysChanged,
                                            body={"relay": str(address)},
                                            problems={**_no_cell(args.cell), **_not_admin(args.cell)})  # fmt: skip
    say_relays(api.ctx, changed.cell, changed.relay, changed.more_relays)


async def cell_role(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell role` through the daemon."""
    ctx = api.ctx
    detail: MemberDetail = await api.call(
        "PUT", _path("cells", args.cell, "members", args.member, "role"), MemberDetail,
        body={"role": args.role},
        problems={**_member_problems(args.cell, args.member),
                  "ALREADY": f"{args.member!r} is a {args.role} already"},
    )  # fmt: skip
    ctx.emit(member_json(detail.member))
    ctx.say(role_sentence(detail.member, detail.cell))


async def cell_verify_first(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell verify-first` through the daemon."""
    ctx = api.ctx
    done: VerifyFirstSet = await api.call("PUT", _path("cells", args.cell, "verify-first"), VerifyFirstSet,
                                          body={"verify_first": args.setting == "on"},
                                          problems={**_no_cell(args.cell), **_not_admin(args.cell)})  # fmt: skip
    ctx.emit({"cell": done.cell, "verify_first": done.verify_first})
    ctx.say(verify_first_sentence(done.cell, done.verify_first))


async def cell_leave(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell leave` through the daemon."""
    ctx = api.ctx
    cell = await api.call("GET", _path("cells", args.cell), problems=_no_cell(args.cell))
    name = cell["name"]
    only_admin = f"you are the only admin of {name!r}: nobody could add or remove members after you leave (--force leaves anyway)"
    if cell["role"] == "admin" and not args.force and not args.yes:
        members = (await api.call("GET", _path("cells", args.cell, "members")))["members"]
        if len(members) > 1 and len([m for m in members if m["is_admin"]]) == 1:
            raise CliError(only_admin)
    if not args.yes:
        raise CliError(
            f"leaving deletes {name!r} from this device and needs a new invite to come back: add --yes to confirm"
        )
    left = await api.call("POST", _path("cells", args.cell, "leave"), body={"force": bool(args.force)},
                          problems={**_no_cell(args.cell), "ONLY_ADMIN": only_admin})  # fmt: skip
    say_left(ctx, left["cell"], left["cell_id"], announced=bool(left["announced"]))


# -- messages -----------------------------------------------------------------------------------------


async def send(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay send` through the daemon."""
    ctx = api.ctx
    text = sys.stdin.read().rstrip("\n") if args.text == "-" else args.text
    await _check_ttl(api, args.cell, args.ttl)
    body = {"text": text, "priority": args.priority, "place": args.place, "ttl": args.ttl,
            "escalate_below": args.escalate_below, "escalate_after": args.escalate_after}  # fmt: skip
    sent: AlertSent = await api.call("POST", _path("cells", args.cell, "alerts"), AlertSent, body=body,
                                     problems=_no_cell(args.cell))  # fmt: skip
    ctx.emit({"cell": sent.cell, **alert_json(sent.alert, sent.sender, None)})
    ctx.say(alert_headline(sent.alert, "you", ctx.style, cell=sent.cell))
    others = sent.recipients
    ctx.note(
        f"Sent to {others} other member{'s' if others != 1 else ''}. Follow the replies: cellrelay listen {command_arg(sent.cell)}"
    )


def _alert_problems(cell: str, prefix: str) -> dict[str, str]:
    return {**_no_cell(cell),
            "NO_SUCH_ALERT": f"no current alert in {cell!r} has an id starting with {prefix} (expired? see `cellrelay alerts {command_arg(cell)}`)",
            "AMBIGUOUS": f"several alerts in {cell!r} start with {prefix}: give more digits"}  # fmt: skip


def _check_alert_prefix(prefix: str) -> str:
    wanted = prefix.strip().lower()
    if not wanted or any(c not in "0123456789abcdef" for c in wanted):
        raise CliError(
            f"{prefix!r} is not an alert id (hex digits, as `cellrelay alerts` shows them)"
        )
    return wanted


async def _as_member(api: Api, cell: str) -> tuple[bytes, Member]:
    """Our member id, and ourselves as a member of `cell` (what we send is shown as from it)."""
    me = await _me(api)
    listed = (await api.call("GET", _path("cells", cell, "members"), MemberList)).members
    return me, next(m for m in listed if m.member_id == me)


async def reply(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay reply` through the daemon."""
    ctx = api.ctx
    status = Status(args.status.replace("-", "_"))
    prefix = _check_alert_prefix(args.alert_id)
    answer: ReplySent = await api.call(
        "POST", _path("cells", args.cell, "alerts", prefix, "replies"), ReplySent,
        body={"status": str(status), "note": args.note}, problems=_alert_problems(args.cell, prefix),
    )  # fmt: skip
    me, sender = await _as_member(api, args.cell)
    show_sent(ctx, answer.cell, answer.reply, sender, answer.rollup, me=me)


async def mark(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay mark` through the daemon."""
    ctx = api.ctx
    step = Step(args.step.replace("-", "_"))
    prefix = _check_alert_prefix(args.alert_id)
    verb = step.value.replace("_", " ")
    sent: StepSent = await api.call(
        "POST", _path("cells", args.cell, "alerts", prefix, "steps"), StepSent,
        body={"step": str(step), "note": args.note},
        problems={**_alert_problems(args.cell, prefix),
                  "NOT_VERIFIER": f"only a dispatcher or an admin of {args.cell!r} can mark a report {verb}"},
    )  # fmt: skip
    me, sender = await _as_member(api, args.cell)
    show_sent(ctx, sent.cell, sent.step, sender, sent.rollup, me=me)


async def message(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay message` through the daemon."""
    ctx = api.ctx
    text = sys.stdin.read().rstrip("\n") if args.text == "-" else args.text
    await _check_ttl(api, args.cell, args.ttl)
    sent = await api.call("POST", _path("cells", args.cell, "messages"), body={"text": text, "ttl": args.ttl},
                          problems=_no_cell(args.cell))  # fmt: skip
    ctx.emit(
        {
            "cell": sent["cell"],
            "message_id": sent["message"]["message_id"],
            "sent_at_ms": sent["message"]["sent_at_ms"],
        }
    )
    ctx.say(f"Sent to {isolate(sent['cell'])}.")


async def _authors(api: Api, cell: str) -> dict[bytes, Member]:
    """Who sent each alert this member holds (for alert_json's `from`)."""
    messages: MessageList = await api.call("GET", _path("cells", cell, "messages"), MessageList)
    return {m.content.alert_id: m.sender for m in messages.messages if isinstance(m.content, Alert)}


async def _rollups(
    api: Api, cell: str
) -> tuple[str, list[AlertRollup], dict[MessageId, ReceiptCounts]]:
    """The cell's name, its active alerts, and for our own alerts how far they got."""
    listing = _REGISTRY.decode(
        await api.call("GET", _path("cells", cell, "alerts"), problems=_no_cell(cell)), AlertList
    )
    return listing.cell, listing.alerts, dict(listing.receipts)


async def alerts(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay alerts` through the daemon."""
    ctx = api.ctx
    name, active, receipts = await _rollups(api, args.cell)
    authors = await _authors(api, args.cell)
    alerts_listing(ctx, name, active, authors, receipts, me=await _me(api))


async def listen(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay listen` through the daemon: the same snapshot, then the daemon's event stream."""
    ctx = api.ctx
    listing: CellList = await api.call("GET", "/cells", CellList)
    wanted = [c.casefold() for c in args.cells]
    cells = [c for c in listing.cells if (not wanted and c.role != "removed")
             or c.name.casefold() in wanted or any(c.cell_id.hex().startswith(w) for w in wanted)]  # fmt: skip
    for name in args.cells:
        if not any(
            c.name.casefold() == name.casefold() or c.cell_id.hex().startswith(name.casefold())
            for c in cells
        ):
            raise CliError(f"no cell matches {name!r} (see `cellrelay cell list`)")
    for cell in cells:
        if cell.role == "removed":
            raise CliError(f"you were removed from {cell.name!r}")
    if not cells:
        raise CliError("you are in no cell yet: nothing to listen to (cellrelay cell join LINK)")
    names = {c.name for c in cells}
    daemon = await api.call("GET", "/daemon")
    me = bytes.fromhex(daemon["identity"]["member_id"])
    label = len(cells) > 1
    async with open_daemon(socket_path(api.home)) as events_connection:
        # Subscribed before the snapshot, so nothing that arrives from here on is missed.
        stream = await events_connection.open_events("/events")
        shown: set[bytes] = set()
        ctx.emit({"type": "listening", "cells": [c.name for c in cells],
                  "as": {"name": daemon["identity"]["name"], "member_id": me.hex()}})  # fmt: skip
        interactive = args.interactive or (sys.stdin.isatty() and not ctx.json)
        if not ctx.json:
            ctx.note(
                f"Listening to {', '.join(isolate(c.name) for c in cells)} as {isolate(daemon['identity']['name'])}; Ctrl-C stops."
            )
            if interactive:
                ctx.note(INTERACTIVE_HELP)
        for cell in cells:
            name, active, receipts = await _rollups(api, cell.cell_id.hex())
            authors = await _authors(api, cell.cell_id.hex())
            for rollup in active:
                shown.add(rollup.alert_id)
                shown.update(s.message_id for s in rollup.responders.values())
                show_snapshot(ctx, name, rollup, authors.get(rollup.alert_id),
                              receipts.get(rollup.alert_id), me=me, label=label)  # fmt: skip

        count_lines = CountLines(ctx, label=label)

        def show(event: CellEvent) -> None:
            if event.cell not in names:
                return
            if isinstance(event, AlertReceived) and event.alert.alert_id in shown:
                return
            if isinstance(event, StatusReceived) and event.reply.message_id in shown:
                return
            ctx.emit(event_json(event))
            if isinstance(event, ReceiptsCounted):
                count_lines.add(event)
                return
            for line in event_lines(event, ctx.style, me=me, cell_label=label):
                ctx.say(line)
            change = event.change if isinstance(event, MembershipChanged) else None
            if change is not None and change.member_id == me and change.change == "removed":
                ctx.note(
                    f"You were removed from {isolate(event.cell)}; nothing more will come from it."
                )

        async def pump() -> None:
            async for item in stream:
                try:
                    event = _REGISTRY.decode(item.data, StreamEvent)
                except ValueError:
                    continue  # a newer daemon's event this command does not know
                if isinstance(event, _CELL_EVENTS):
                    show(event)
                elif isinstance(event, RelayStateChanged) and names & set(event.cells):
                    # As `listen` alone shows it: a member must know when they are not
                    # listening (issue 10).
                    status = LinkStatus(event.state, event.reason or "", event.retry_in)
                    show_status(ctx, event.relay, status)
                elif item.data.get("type") == "events_missed":
                    ctx.note(
                        "cellrelay: the daemon's event stream skipped some events; run `cellrelay alerts` to see the state"
                    )
            raise CliError("the daemon stopped")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump)
            nursery.start_soon(_stop_on_signal, nursery.cancel_scope)
            nursery.start_soon(count_lines.run)
            if interactive:
                typed = functools.partial(_typed_reply, api, [c.cell_id.hex() for c in cells])
                nursery.start_soon(read_typed_replies, ctx, typed, (CliError,))
            if args.duration is not None:
                nursery.cancel_scope.deadline = trio.current_time() + args.duration


_CELL_EVENTS: Final = typing.get_args(CellEvent)


async def _stop_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def _typed_reply(
    api: Api, cells: list[str], prefix: str, status: Status, note: str | None
) -> None:
    """One typed reply while listening, sent through the daemon."""
    wanted = _check_alert_prefix(prefix)
    found = []
    for cell in cells:
        _, active, _ = await _rollups(api, cell)
        authors = await _authors(api, cell)
        ids = {r.alert_id for r in active} | set(authors)
        found += [(cell, a) for a in ids if a.hex().startswith(wanted)]
    if len(found) != 1:
        raise CliError(f"no current alert has an id starting with {prefix}" if not found
                       else f"alerts in several cells start with {prefix}: give more digits")  # fmt: skip
    cell, alert_id = found[0]
    answer: ReplySent = await api.call("POST", _path("cells", cell, "alerts", alert_id.hex(), "replies"), ReplySent,
                                       body={"status": str(status), "note": note})  # fmt: skip
    me, sender = await _as_member(api, cell)
    show_sent(api.ctx, answer.cell, answer.reply, sender, answer.rollup, me=me,
              label=len(cells) > 1, json_type="reply_sent")  # fmt: skip


async def board(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay board`: a one-time link to the board."""
    ctx = api.ctx
    code = await api.call("POST", "/board/codes")
    ctx.emit(code)
    if code["url"] is not None:
        ctx.say(code["url"])
        ctx.note("Open it in a browser on this computer: it works once, for 10 minutes.")
    else:
        ctx.say(code["path"])
        ctx.note(
            "The daemon listens on its socket only: restart it with --listen PORT, or open this path on your own proxy of the socket."
        )


async def _cell_verify(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell verify` through the daemon: client/_cli_verify.py."""
    from ._cli_verify import cell_verify_daemon  # it imports this module: imported when used

    await cell_verify_daemon(api, args)


async def _escalate(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay escalate` through the daemon: client/_cli_escalate.py."""
    from ._cli_escalate import escalate_daemon  # it imports this module: imported when used

    await escalate_daemon(api, args)


async def _cell_neighbour(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell neighbour` through the daemon: client/_cli_escalate.py."""
    from ._cli_escalate import cell_neighbour_daemon  # as above

    await cell_neighbour_daemon(api, args)


async def _cell_escalation(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell escalation` through the daemon: client/_cli_escalate.py."""
    from ._cli_escalate import cell_escalation_daemon  # as above

    await cell_escalation_daemon(api, args)


_COMMANDS: Final[dict[str, Callable[[Api, argparse.Namespace], Awaitable[None]]]] = {
    "id show": id_show,
    "cell create": cell_create,
    "cell list": cell_list,
    "cell invite": cell_invite,
    "cell join": cell_join,
    "cell requests": cell_requests,
    "cell approve": cell_approve,
    "cell members": cell_members,
    "cell remove": cell_remove,
    "cell promote": cell_promote,
    "cell rotate": cell_rotate,
    "cell recover": cell_recover,
    "cell mute": cell_mute,
    "cell unmute": cell_unmute,
    "cell alert-limit": cell_alert_limit,
    "cell add-relay": cell_add_relay,
    "cell drop-relay": cell_drop_relay,
    "cell role": cell_role,
    "cell verify-first": cell_verify_first,
    "cell leave": cell_leave,
    "cell burn": cell_burn,
    "send": send,
    "reply": reply,
    "mark": mark,
    "message": message,
    "alerts": alerts,
    "listen": listen,
    "board": board,
    "cell verify": _cell_verify,
    "cell neighbour": _cell_neighbour,
    "cell escalation": _cell_escalation,
    "escalate": _escalate,
}
