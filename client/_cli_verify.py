"""`cellrelay cell verify CELL [MEMBER] [--mark-verified]`: safety numbers, compared in person.

Issue 9, finding 9. The 8 hex digits people compared were a name tag, 32 bits: anyone who
knows a member's id can make keys whose id starts the same. A safety number is 60 digits
(docs/protocol.md §C8), the same on both members' devices: each reads theirs out, or one
scans the other's QR code, and when every digit matches, `--mark-verified` records it. A
verified member's keys then never change quietly: a member of that name with other keys
raises `VerifiedKeyChanged` (a security line in `listen`).

One module for both ways a command runs (directly, and through a running daemon), so the
command stays in one place: `_cli.COMMANDS` and `_cli_daemon._COMMANDS` each name it once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cellrelay.protocol.cell._safety import format_safety_number

from ._api_types import MemberDetail, MemberList, Verification
from ._cell_member import CellError
from ._cli_commands import connected, the_cell
from ._cli_daemon import _me, _no_cell, _path
from ._cli_output import command_arg, isolate, member_json
from ._qr import safety_qr_terminal

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from ._cell_admin import Cell
    from ._cli_commands import Context
    from ._cli_daemon import Api
    from ._events import Member

__all__ = ["add_parser", "cell_verify", "cell_verify_daemon"]

HELP = "compare safety numbers with a member in person; --mark-verified records a match"


def add_parser(
    cell: argparse._SubParsersAction[Any], common: Sequence[argparse.ArgumentParser]
) -> None:
    """Add `cell verify` to the `cell` command group."""
    verify = cell.add_parser("verify", help=HELP, description=HELP, parents=list(common))
    verify.add_argument("cell", metavar="CELL")
    verify.add_argument(
        "member", metavar="MEMBER", nargs="?",
        help="name or id prefix (also someone waiting to join); all members when not given",
    )  # fmt: skip
    verify.add_argument(
        "--mark-verified", action="store_true",
        help="record that every digit matched, compared in person (needs MEMBER)",
    )  # fmt: skip
    verify.add_argument(
        "--qr", action="store_true", help="print the QR code even when not on a terminal"
    )


def _check(args: argparse.Namespace) -> None:
    if args.mark_verified and args.member is None:
        raise CellError("--mark-verified needs the MEMBER whose safety number matched")


def _find(cell: Cell, text: str) -> Member:
    """A member, or else someone waiting to join (an admin compares before approving)."""
    try:
        return cell.find_member(text)
    except CellError:
        wanted = text.casefold()
        waiting = [
            m
            for m in cell.join_requests
            if m.name.casefold() == wanted or m.member_id.hex().startswith(wanted)
        ]
        if len(waiting) == 1:
            return waiting[0]
        raise


def _show(
    ctx: Context, cell: str, member: Member, number: str, *, verified: bool, qr: bool
) -> None:
    """One member's safety number for people: the digits, the QR code, what to do."""
    ctx.emit({"cell": cell, "member": member_json(member), "safety_number": number,
              "verified": verified})  # fmt: skip
    state = ctx.style.bold("verified") if verified else "not verified"
    ctx.say(f"Safety number of you and {isolate(member.name)} ({member.short_id}), {state}:")
    ctx.say("")
    for line in format_safety_number(number).splitlines():
        ctx.say("    " + line)
    ctx.say("")
    if qr and not ctx.json:
        print(safety_qr_terminal(number), file=ctx.out, flush=True)
    if not verified:
        ctx.say(
            f"Compare it with what {isolate(member.name)}'s device shows (cellrelay cell verify"
            f" {command_arg(cell)} YOU), in person or on a call you trust. If every digit"
            f" matches: cellrelay cell verify {command_arg(cell)} {member.short_id} --mark-verified"
        )
    ctx.say(
        ctx.style.dim(
            f"The short id {member.short_id} is a name tag only: anyone can make keys whose id"
            " starts the same."
        )
    )


def _marked(ctx: Context, cell: str, member: Member) -> None:
    ctx.say(
        f"Marked {isolate(member.name)} ({member.short_id}) verified in {isolate(cell)}: if a"
        f" member named {isolate(member.name)} ever has other keys, you will be warned."
    )


async def cell_verify(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell verify CELL [MEMBER] [--mark-verified]`."""
    _check(args)
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        me = client.identity.member_id
        if args.member is None:
            others = [m for m in cell.members() if m.member_id != me]
            if not others:
                ctx.say(f"Nobody else is in {isolate(cell.name)} yet.")
            for m in others:
                _show(ctx, cell.name, m, cell.safety_number(m), verified=cell.is_verified(m),
                      qr=False)  # fmt: skip
            return
        member = _find(cell, args.member)
        if member.member_id == me:
            raise CellError("that is you: compare safety numbers with another member")
        number = cell.safety_number(member)
        if args.mark_verified:
            await cell.mark_verified(member)
            ctx.emit({"cell": cell.name, "member": member_json(member), "safety_number": number,
                      "verified": True})  # fmt: skip
            _marked(ctx, cell.name, member)
            return
        _show(ctx, cell.name, member, number, verified=cell.is_verified(member),
              qr=args.qr or ctx.out.isatty())  # fmt: skip


async def cell_verify_daemon(api: Api, args: argparse.Namespace) -> None:
    """`cellrelay cell verify` through the daemon (`/cells/{cell}/members/{member}`)."""
    _check(args)
    ctx = api.ctx
    problems = {
        **_no_cell(args.cell),
        "NO_SUCH_MEMBER": f"no member matches {args.member!r}; see `cellrelay cell members`",
        "SELF": "that is you: compare safety numbers with another member",
    }
    if args.member is None:
        listing: MemberList = await api.call(
            "GET", _path("cells", args.cell, "members"), MemberList, problems=problems
        )
        me = await _me(api)
        others = [m for m in listing.members if m.member_id != me]
        if not others:
            ctx.say(f"Nobody else is in {isolate(listing.cell)} yet.")
        for m in others:
            detail: MemberDetail = await api.call(
                "GET", _path("cells", args.cell, "members", m.member_id.hex()), MemberDetail,
                problems=problems,
            )  # fmt: skip
            assert detail.safety_number is not None  # noqa: S101 - not ours
            _show(ctx, detail.cell, detail.member, detail.safety_number, verified=detail.verified,
                  qr=False)  # fmt: skip
        return
    one: MemberDetail = await api.call(
        "GET", _path("cells", args.cell, "members", args.member), MemberDetail, problems=problems
    )
    if one.safety_number is None:
        raise CellError("that is you: compare safety numbers with another member")
    if args.mark_verified:
        done: Verification = await api.call(
            "POST", _path("cells", args.cell, "members", one.member.member_id.hex(), "verify"),
            Verification, body={"safety_number": one.safety_number}, problems=problems,
        )  # fmt: skip
        if not done.verified:  # pragma: no cover - the member's keys changed in between
            raise CellError("the member's keys changed meanwhile: compare again")
        ctx.emit({"cell": one.cell, "member": member_json(one.member),
                  "safety_number": one.safety_number, "verified": True})  # fmt: skip
        _marked(ctx, one.cell, one.member)
        return
    _show(ctx, one.cell, one.member, one.safety_number, verified=one.verified,
          qr=args.qr or ctx.out.isatty())  # fmt: skip
