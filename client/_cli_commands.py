"""The command line's commands: unlock, connect, catch up, act, print.

Every command runs inside one cancel scope whose deadline the command moves from phase to
phase (`Context.bound`): reaching the relays, catching up with a cell, waiting for an
answer. A phase that runs out of time ends the command with one line naming what it was
waiting for, instead of hanging on a relay that is down. Waits that are the point of a
command (`cell join` waiting for approval, `listen`) are bounded by their own options.

A command catches up before it reads or acts (`synced`): membership, alerts and roll-ups
are shown as they are on the relay, and a message is sealed in the cell's current epoch.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

import trio

from cellrelay.protocol import ErrorCode
from cellrelay.protocol.cell import Alert, Invite, Priority, Status, Step
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.wire import RelayAddress

from ._api import USED_INVITE
from ._cell_member import CLOCK_TOLERANCE, CellError
from ._cli_output import (
    Style,
    alert_headline,
    alert_json,
    alerts_listing,
    clock_warning_text,
    command_arg,
    duration_text,
    isolate,
    member_json,
    name_tag_note,
    pad,
    plural,
    short_id,
    show_sent,
    when,
)
from ._client import KEYSTORE_NAME, create_identity, open_client
from ._events import CellRole, Member
from ._keystore import Keystore
from ._link import RelayRefusedError
from ._panic import duress_companions
from ._qr import invite_qr_terminal, write_invite_png
from ._shims import forget_cell, join_known, pending_joins, subscribe
from ._state import ClientState

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncIterator, Awaitable, Callable

    from ._cell_admin import Cell
    from ._client import Client

__all__ = [
    "USED_INVITE",
    "CliError",
    "Context",
    "alerts_of",
    "check_ttl",
    "connected",
    "find_alert",
    "run_command",
    "say_left",
    "synced",
    "ttl_refusal",
]

# A join request sits in a one-time mailbox that the admin's client reads right after it
# connects, separately from the cell's own mailboxes; give it this long to arrive before
# saying nobody is waiting (a few round trips on a slow mobile link).
REQUEST_SETTLE: Final = 3.0


class CliError(Exception):
    """A failure the command line reports as one line; the message says what to do next."""


def read_secret(source: str, what: str) -> str:
    """A passphrase from the file `source` (`-`: the first line of standard input)."""
    try:
        text = sys.stdin.readline() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read the {what} file: {exc.strerror}: {source}") from None
    return text.rstrip("\r\n")


@dataclass(slots=True, kw_only=True)
class Context:
    """What every command gets: where the keystore is, how to print, how long to wait."""

    home: Path
    passphrase: str = field(repr=False)
    json: bool
    timeout: float
    style: Style
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    scope: trio.CancelScope | None = None
    waiting_for: str = ""

    def bound(self, waiting_for: str) -> None:
        """Give what follows `--timeout` seconds; `waiting_for` names it if it runs out."""
        assert self.scope is not None  # noqa: S101 - run_command sets it
        self.waiting_for = waiting_for
        self.scope.deadline = trio.current_time() + self.timeout

    def unbound(self) -> None:
        """Let what follows take as long as it takes (it is bounded by its own option)."""
        assert self.scope is not None  # noqa: S101 - run_command sets it
        self.scope.deadline = math.inf

    def say(self, text: str = "") -> None:
        """Print a line for people (nothing in --json mode)."""
        if not self.json:
            print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        """Print a hint on standard error (in every mode: it is not the command's output)."""
        print(text, file=self.err, flush=True)

    def emit(self, value: object) -> None:
        """Print one JSON value on one line (--json mode only)."""
        if self.json:
            print(json.dumps(value, ensure_ascii=False), file=self.out, flush=True)


async def run_command(
    ctx: Context,
    command: Callable[[Context, argparse.Namespace], Awaitable[None]],
    args: argparse.Namespace,
) -> None:
    """Run one command under its phase deadlines.

    Raises:
        CliError: a phase ran out of time (and whatever the command raises).
    """
    with trio.CancelScope() as scope:
        ctx.scope = scope
        await command(ctx, args)
    if scope.cancelled_caught:
        raise CliError(
            f"{ctx.waiting_for} within {ctx.timeout:g} s; is the relay running and reachable? (--timeout SECONDS waits longer)"
        )


# -- sessions --------------------------------------------------------------------------------


@asynccontextmanager
async def connected(ctx: Context) -> AsyncIterator[Client]:
    """Unlock the keystore and connect to the relays of its cells."""
    ctx.bound("could not reach the relay of your cells")
    async with open_client(ctx.passphrase, home=ctx.home) as client:
        ctx.unbound()
        try:
            yield client
        finally:
            # After a timeout, keep the name of what timed out for the error line.
            if ctx.scope is not None and not ctx.scope.cancel_called:
                ctx.bound("could not say goodbye to the relay")


async def synced(ctx: Context, cells: list[Cell]) -> None:
    """Catch up with what the relay holds for these cells (bounded by --timeout).

    Raises:
        RelayKeyMismatchError: a relay refused the handshake for its key, at once rather
            than when the timeout runs out (issue 10).
    """
    for cell in cells:
        ctx.bound(f"could not reach the relay of {isolate(cell.name)}")
        await cell.wait_connected()  # any relay of a cell on several
        ctx.bound(f"could not catch up with {isolate(cell.name)}")
        await cell.wait_synced()
        if cell.is_admin and not cell.removed:
            # Members who announced they leave while this admin was away (docs/protocol.md
            # §C9): a one-shot command removes them too, when it is this admin's turn.
            ctx.bound(
                f"the relay did not confirm the removal of a member who left {isolate(cell.name)}"
            )
            await cell.remove_leavers()
    ctx.unbound()


async def the_cell(ctx: Context, client: Client, name_or_id: str) -> Cell:
    """Find a cell by name or id prefix and catch up with it.

    Raises:
        CellError: no such cell, or this member was removed from it.
    """
    cell = client.cell(name_or_id)
    await synced(ctx, [cell])
    if cell.removed:
        raise CellError(f"you were removed from {cell.name!r}; an admin can invite you again")
    return cell


def check_ttl(cell: Cell, ttl: int) -> None:
    """Refuse a `--ttl` beyond what the cell's relay keeps (its `Welcome.max_ttl`).

    The relay would cut the envelope's life short while the message inside promised the
    longer one, and members' clients kept it that long (issue 10: `--ttl 365d` on a relay
    that keeps 7 days).

    Raises:
        CliError: naming the relay's maximum.
    """
    welcome = cell.link.welcome
    refusal = ttl_refusal(cell.name, ttl, None if welcome is None else welcome.max_ttl)
    if refusal is not None:
        raise CliError(refusal)


def ttl_refusal(cell: str, ttl: int, max_ttl: int | None) -> str | None:
    """What `--ttl` beyond the relay's `max_ttl` is told (None: it is not beyond)."""
    if max_ttl is None or ttl <= max_ttl:
        return None
    longest = duration_text(max_ttl)
    return (
        f"--ttl {duration_text(ttl)} is longer than the relay of {cell!r} keeps "
        f"anything (at most {longest}): give --ttl {longest} or less"
    )


def alerts_of(cell: Cell) -> dict[bytes, tuple[Member, Alert]]:
    """The cell's unexpired alerts this member holds, by id, with their authors."""
    return {
        content.alert_id: (sender, content)
        for sender, content in cell.recent()
        if isinstance(content, Alert)
    }


def find_alert(cell: Cell, prefix: str) -> bytes:
    """The id of the one unexpired alert whose hex id starts with `prefix`.

    Raises:
        CellError: none or several match.
    """
    wanted = prefix.strip().lower()
    if not wanted or any(c not in "0123456789abcdef" for c in wanted):
        raise CellError(
            f"{prefix!r} is not an alert id (hex digits, as `cellrelay alerts` shows them)"
        )
    found = [alert_id for alert_id in alerts_of(cell) if alert_id.hex().startswith(wanted)]
    if not found:
        raise CellError(
            f"no current alert in {cell.name!r} has an id starting with {wanted} (expired? see `cellrelay alerts {command_arg(cell.name)}`)"
        )
    if len(found) > 1:
        raise CellError(f"several alerts in {cell.name!r} start with {wanted}: give more digits")
    return found[0]


# -- identity ------------------------------------------------------------------------------


async def id_new(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay id new`: create the identity and its keystore."""
    ctx.unbound()
    identity = await trio.to_thread.run_sync(
        lambda: create_identity(ctx.passphrase, args.name, home=ctx.home)
    )
    path = ctx.home / KEYSTORE_NAME
    ctx.emit({"name": identity.name, "member_id": identity.member_id.hex(), "keystore": str(path)})
    ctx.say(f"Created {isolate(identity.name)}, member id {identity.member_id.hex()}")
    ctx.say(
        f"Keystore: {path} (encrypted with your passphrase; there is no way to recover it without)"
    )
    ctx.say(
        "Next: create a cell (cellrelay cell create NAME --relay ADDRESS) or join one (cellrelay cell join LINK)."
    )


async def id_show(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay id show`: the identity, from the keystore alone (no network)."""
    del args
    path = ctx.home / KEYSTORE_NAME
    companions = duress_companions(ctx.home)
    keystore, payload = await trio.to_thread.run_sync(
        partial(Keystore.open, path, ctx.passphrase, companions=companions)
    )
    keystore.close()
    state = ClientState.decode(payload)
    identity = Identity.from_bytes(state.identity)
    ctx.emit(
        {
            "name": identity.name,
            "member_id": identity.member_id.hex(),
            "keystore": str(path),
            "cells": len(state.cells),
        }
    )
    ctx.say(f"{isolate(identity.name)}")
    ctx.say(f"  member id  {identity.member_id.hex()}")
    ctx.say(f"  keystore   {path}")
    ctx.say(f"  cells      {len(state.cells)}")
    ctx.say(
        "The first 8 digits of your member id are a name tag, not a check: to show someone it is"
        " you, compare safety numbers in person (cellrelay cell verify CELL THEIR-NAME)."
    )


# -- cells -------------------------------------------------------------------------------------


async def cell_create(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell create NAME --relay ADDRESS [--relay ADDRESS ...]`."""
    addresses = relay_addresses(args.relay)
    address = addresses[0]
    secret = (args.creation_secret or "").encode()
    async with connected(ctx) as client:
        if any(c.name.casefold() == args.name.casefold() for c in client.cells):
            raise CellError(f"you already have a cell named {args.name!r}; choose another name")
        where = ", ".join(f"{a.host}:{a.port}" for a in addresses)
        ctx.bound(f"could not reach the relay at {where}")
        cell = await client.create_cell(
            args.name, addresses, creation_secret=secret, channel=args.channel
        )
        ctx.unbound()
        created: dict[str, object] = {"cell": cell.name, "cell_id": cell.cell_id.hex(), "relay": str(address), "channel": cell.channel}  # fmt: skip
        if len(addresses) > 1:
            created["more_relays"] = [str(a) for a in addresses[1:]]
        ctx.emit(created)
        ctx.say(
            f"Created {isolate(cell.name)} ({short_id(cell.cell_id)}) on {where}; you are its admin."
        )
        if cell.channel:
            ctx.say(CHANNEL_SENTENCE)
        ctx.say(f"Invite members: cellrelay cell invite {command_arg(cell.name)}")


# Said once a channel is created (docs/protocol.md §C11), by the CLI alone and through the daemon.
CHANNEL_SENTENCE: Final = (
    "It is a broadcast channel: only admins and dispatchers post; what other members send"
    " (replies, receipts) reaches admins and dispatchers only. Make dispatchers with"
    " cellrelay cell role."
)
CHANNEL_NOTE: Final = "  channel"


def relay_addresses(texts: list[str]) -> list[RelayAddress]:
    """The relays `--relay` named, at most three (a cell lives on one to three)."""
    if len(texts) > 3:
        raise CellError("a cell lives on at most three relays: give --relay one to three times")
    return [RelayAddress.parse(text) for text in texts]


def _cell_json(cell: Cell) -> dict[str, object]:
    address = RelayAddress.parse(cell.record.relay)
    removed = cell.removed
    return {
        "name": cell.name,
        "cell_id": cell.cell_id.hex(),
        "relay": cell.record.relay,
        "relay_host": f"{address.host}:{address.port}",
        "role": "removed" if removed else "admin" if cell.is_admin else "member",
        "members": 0 if removed else len(cell.members()),
        "active_alerts": 0 if removed else len(cell.active_alerts()),
        "gone": cell.gone,
        "channel": cell.channel,
    }


# After a cell `cell list` shows whose mailboxes are gone from the relay (docs/protocol.md §C1.6).
GONE_NOTE: Final = "  gone from the relay: cellrelay cell leave deletes it"


async def cell_list(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell list`: every cell, with role, members and active alerts."""
    del args
    async with connected(ctx) as client:
        await synced(ctx, client.cells)
        rows = [_cell_json(c) for c in client.cells]
        waiting = pending_joins(client)
        ctx.emit(
            {
                "cells": rows,
                "waiting": [{"cell": i.cell_name, "cell_id": i.cell_id.hex()} for i in waiting],
            }
        )
        if not rows and not waiting:
            ctx.say(
                "You are in no cell yet: create one (cellrelay cell create NAME --relay ADDRESS)"
            )
            ctx.say("or join one with an invite link (cellrelay cell join LINK).")
        width = max([len(c.name) for c in client.cells] + [len(i.cell_name) for i in waiting] + [0])
        for cell, row in zip(client.cells, rows, strict=True):
            alerts = int(str(row["active_alerts"]))
            alert_text = plural(alerts, "active alert") if alerts else "no active alerts"
            ctx.say(
                f"{pad(cell.name, width)}  {ctx.style.dim(short_id(cell.cell_id))}  {row['role']:7}  "
                f"{plural(int(str(row['members'])), 'member'):11}  {alert_text:16}  {ctx.style.dim('relay ' + str(row['relay_host']))}"
                + (ctx.style.dim(CHANNEL_NOTE) if cell.channel else "")
                + (ctx.style.warn(GONE_NOTE) if cell.gone else "")
            )
        for invite in waiting:
            ctx.say(
                f"{pad(invite.cell_name, width)}  {ctx.style.dim(short_id(invite.cell_id))}  waiting for an admin to approve your request"
            )


async def cell_invite(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell invite CELL`: a one-time link and its QR code."""
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        check_ttl(cell, args.ttl)
        ctx.bound("could not create the invite's mailbox on the relay")
        invite = await cell.invite(ttl=args.ttl)
        ctx.unbound()
        link = invite.to_link()
        if args.png:
            write_invite_png(link, args.png)
        ctx.emit(
            {"cell": cell.name, "link": link, "expires_at": invite.expires_at, "png": args.png}
        )
        if ctx.json:
            return
        print(link, file=ctx.out, flush=True)
        if args.qr or ctx.out.isatty():
            print(invite_qr_terminal(link), file=ctx.out, flush=True)
        ctx.note(f"One-time invite to {isolate(cell.name)}, valid until {when(invite.expires_at)}.")
        ctx.note(
            "Give it privately: whoever holds it can ask to join."
            + (f" QR code saved to {args.png}." if args.png else "")
        )
        ctx.note(f"When they have asked: cellrelay cell approve {command_arg(cell.name)}")


async def cell_join(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell join LINK`: ask to join, then wait for an admin's approval."""
    invite = Invite.parse(args.link)
    invite.check_fresh(time.time())
    async with connected(ctx) as client:
        if join_known(client, invite):  # asked before: the welcome may be on its way in
            ctx.note(
                f"You already asked to join {isolate(invite.cell_name)}; waiting for the approval."
            )
        elif any(c.cell_id == invite.cell_id and not c.removed for c in client.cells):
            cell = client.cell(invite.cell_id.hex())
            ctx.emit({"cell": cell.name, "cell_id": cell.cell_id.hex(), "joined": True})
            ctx.say(f"You are already a member of {isolate(cell.name)}.")
            return
        else:
            ctx.bound(f"could not reach the relay at {invite.relay.host}:{invite.relay.port}")
            try:
                await client.request_join(args.link)
            except RelayRefusedError as exc:
                # The join mailbox is gone: the admin's client deletes it once the invite was
                # used, or has expired (the relay answers BAD_PROOF, whether or not it ever
                # existed: docs/protocol.md §7).
                if exc.code in (ErrorCode.BAD_PROOF, ErrorCode.NO_SUCH_MAILBOX):
                    raise CliError(USED_INVITE) from None
                raise
            ctx.unbound()
        me = short_id(client.identity.member_id)
        if args.wait <= 0:
            ctx.emit({"cell": invite.cell_name, "cell_id": invite.cell_id.hex(), "joined": False})
            ctx.say(
                f"Asked to join {isolate(invite.cell_name)}. An admin approves with: cellrelay cell approve {command_arg(invite.cell_name)} {me}"
            )
            return
        ctx.note(
            f"Asked to join {isolate(invite.cell_name)}; waiting up to {args.wait:g} s for an admin to approve "
            f"(they run: cellrelay cell approve {command_arg(invite.cell_name)} {me})."
        )
        with trio.move_on_after(args.wait):
            cell = await client.wait_joined(invite)
            await synced(ctx, [cell])
            members = cell.members()
            ctx.emit({"cell": cell.name, "cell_id": cell.cell_id.hex(), "joined": True,
                      "members": [member_json(m, me=client.identity.member_id) for m in members]})  # fmt: skip
            names = ", ".join(isolate(m.name) + (" (admin)" if m.is_admin else "") for m in members)
            ctx.say(f"Joined {isolate(cell.name)}: {names}.")
            ctx.say(f"Follow it with: cellrelay listen {command_arg(cell.name)}")
            return
        raise CliError(
            f"no approval within {args.wait:g} s; the request stays with the relay until the invite expires "
            f"({when(invite.expires_at)}): run the same command again to keep waiting"
        )


async def _settle_requests(cell: Cell, member: str | None, seconds: float) -> None:
    """Give join requests that wait on the relay time to arrive (see REQUEST_SETTLE)."""
    now = cell.link.relay_time()
    if not any(not i.used and i.expires_at > now for i in cell.record.invites):
        return  # no open invite, so nobody can be asking

    def arrived() -> bool:
        requests = cell.join_requests
        return bool(requests) and (member is None or any(_matches(m, member) for m in requests))

    with subscribe(cell) as events, trio.move_on_after(seconds):
        # Subscribed before looking, so a request recorded in between still wakes us.
        while not arrived():
            await events.receive()


def _matches(member: Member, text: str) -> bool:
    wanted = text.casefold()
    return member.name.casefold() == wanted or member.member_id.hex().startswith(wanted)


async def cell_requests(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell requests CELL`: who asked to join and waits for approval."""
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        if not cell.is_admin:
            raise CellError(f"only an admin of {cell.name!r} sees join requests")
        await _settle_requests(cell, None, REQUEST_SETTLE)
        requests = cell.join_requests
        ctx.emit([member_json(m) for m in requests])
        if not requests:
            ctx.say(f"Nobody is waiting to join {isolate(cell.name)}.")
        for m in requests:
            ctx.say(
                f"{isolate(m.name)}  {m.short_id}   cellrelay cell approve {command_arg(cell.name)} {m.short_id}"
            )


async def cell_approve(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell approve CELL [MEMBER]`: admit someone who asked to join."""
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        if not cell.is_admin:
            raise CellError(f"only an admin of {cell.name!r} can approve")
        await _settle_requests(cell, args.member, args.wait)
        requests = cell.join_requests
        if args.member is not None:
            chosen = [m for m in requests if _matches(m, args.member)]
            if not chosen:
                raise CellError(
                    f"nobody called {args.member!r} is waiting to join {cell.name!r} (see `cellrelay cell requests`)"
                )
            if len(chosen) > 1:
                raise CellError(
                    f"several people waiting match {args.member!r}: give the id shown by `cellrelay cell requests`"
                )
            wanted: Member | None = chosen[0]
        elif len(requests) > 1:
            raise CellError(
                f"{len(requests)} people are waiting to join: name one (see `cellrelay cell requests`)"
            )
        elif not requests:
            raise CellError(
                f"nobody is waiting to join {cell.name!r} (the request may not have arrived yet; --wait waits longer)"
            )
        else:
            wanted = requests[0]
        ctx.bound("the relay did not confirm the membership change")
        member = await cell.approve(wanted)
        ctx.unbound()
        ctx.emit(member_json(member))
        ctx.say(f"Approved {isolate(member.name)} ({member.short_id}) into {isolate(cell.name)}.")
        ctx.say(name_tag_note(cell.name, member))
        ctx.note(
            "Check that this id is the one their `cellrelay id show` prints: anyone holding the invite could have asked."
        )


async def cell_members(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell members CELL`."""
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        me = client.identity.member_id
        members = cell.members()
        ctx.emit([member_json(m, me=me) for m in members])
        width = max(len(m.name) for m in members)
        for m in members:
            tags = [
                t for t, on in ((str(m.role), m.role != "member"), ("you", m.member_id == me)) if on
            ]
            ctx.say(
                f"{pad(m.name, width)}  {ctx.style.dim(m.short_id)}  {', '.join(tags)}".rstrip()
            )


async def cell_remove(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell remove CELL MEMBER`: a new epoch without them."""
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        member = cell.find_member(args.member)
        if member.member_id == client.identity.member_id:
            raise CellError(
                f"to remove yourself, use: cellrelay cell leave {command_arg(cell.name)}"
            )
        ctx.bound("the relay did not confirm the membership change")
        await cell.remove(member)
        ctx.unbound()
        ctx.emit(member_json(member))
        ctx.say(
            f"Removed {isolate(member.name)} ({member.short_id}) from {isolate(cell.name)}: everyone has new keys"
        )
        ctx.say("and a fresh mailbox, and they can read nothing sent from now on.")


async def cell_promote(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell promote CELL MEMBER`: make a member an admin too."""
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        member = cell.find_member(args.member)
        ctx.bound("the relay did not confirm the membership change")
        await cell.promote(member)
        ctx.unbound()
        ctx.emit(member_json(member))
        ctx.say(
            f"{isolate(member.name)} ({member.short_id}) is now an admin of {isolate(cell.name)}."
        )


async def cell_rotate(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell rotate CELL`: start a new epoch with fresh keys for everyone."""
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        ctx.bound("the relay did not confirm the new epoch")
        await cell.rotate()
        ctx.unbound()
        ctx.emit({"cell": cell.name, "epoch": cell.crypto.epoch})
        ctx.say(f"{isolate(cell.name)} is in epoch {cell.crypto.epoch}: everyone has fresh keys.")


async def cell_recover(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell recover CELL`: move the cell to a fresh group mailbox."""
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        ctx.bound("the relay did not confirm the move")
        await cell.recover()
        ctx.unbound()
        ctx.emit({"cell": cell.name, "epoch": cell.crypto.epoch})
        ctx.say(f"{isolate(cell.name)} moved to a fresh mailbox (epoch {cell.crypto.epoch}):")
        ctx.say("its members can post again. If one of them flooded it, remove them.")


async def cell_mute(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell mute CELL MEMBER [--here]`: stop ringing for a member's alerts."""
    await _muting(ctx, args, mute=True)


async def cell_unmute(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell unmute CELL MEMBER [--here]`: ring for a member's alerts again."""
    await _muting(ctx, args, mute=False)


async def _muting(ctx: Context, args: argparse.Namespace, *, mute: bool) -> None:
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        member = cell.find_member(args.member)
        ctx.bound("the relay did not confirm the new epoch")
        act = cell.mute if mute else cell.unmute
        everyone = await act(member, everyone=False if args.here else None)
        ctx.unbound()
        ctx.emit({**member_json(member), "muted": mute, "everyone": everyone})
        done = "Muted" if mute else "Unmuted"
        where = "for everyone in" if everyone else "on this device, in"
        ctx.say(f"{done} {isolate(member.name)} ({member.short_id}) {where} {isolate(cell.name)}.")
        if mute and not everyone:
            ctx.say(
                "Their alerts are still kept, but do not ring. An admin can mute them for everyone, or remove them."
            )


async def cell_alert_limit(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell alert-limit CELL N`: the cell's flood limit."""
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        ctx.bound("the relay did not confirm the new epoch")
        await cell.set_alert_limit(args.limit)
        ctx.unbound()
        ctx.emit({"cell": cell.name, "alert_limit": cell.alert_limit})
        ctx.say(
            f"In {isolate(cell.name)}, a member who sends more than {cell.alert_limit} alerts"
            " in a minute is now muted by every member's client."
        )


async def cell_add_relay(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell add-relay CELL RELAY`: put the cell on one more relay (admins)."""
    await _change_relay(ctx, args, add=True)


async def cell_drop_relay(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell drop-relay CELL RELAY`: take the cell off a further relay (admins)."""
    await _change_relay(ctx, args, add=False)


async def _change_relay(ctx: Context, args: argparse.Namespace, *, add: bool) -> None:
    (address,) = relay_addresses([args.relay])
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        ctx.bound("the relay did not confirm the new epoch")
        await (cell.add_relay(address) if add else cell.drop_relay(address))
        ctx.unbound()
        say_relays(ctx, cell.name, cell.record.relay, [f.record.relay for f in cell.further])


def say_relays(ctx: Context, name: str, first: str, more: list[str]) -> None:
    """Say which relays a cell lives on now (`cell add-relay`, `cell drop-relay`)."""
    ctx.emit({"cell": name, "relay": first, "more_relays": more})
    where = ", ".join(f"{a.host}:{a.port}" for a in map(RelayAddress.parse, (first, *more)))
    ctx.say(f"{isolate(name)} now lives on {where}; every member's client follows.")


async def cell_role(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell role CELL MEMBER ROLE`: give a member a role (admins)."""
    role = CellRole(args.role)
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        member = cell.find_member(args.member)
        ctx.bound("the relay did not confirm the membership change")
        await cell.set_role(member, role)
        ctx.unbound()
        member = cell.find_member(member.member_id.hex())
        ctx.emit(member_json(member))
        ctx.say(role_sentence(member, cell.name))


def role_sentence(member: Member, cell: str) -> str:
    """What `cell role` says: the member's role now, and what it may do."""
    what = {
        CellRole.ADMIN: "manages the cell and verifies reports",
        CellRole.DISPATCHER: "verifies, confirms and resolves reports",
    }.get(member.role, "answers alerts; only dispatchers and admins verify reports")
    return (
        f"{isolate(member.name)} ({member.short_id}) is now {member.role.value} of"
        f" {isolate(cell)}: {what}."
    )


def verify_first_sentence(cell: str, on: bool) -> str:
    """What `cell verify-first` says."""
    if on:
        return (
            f"In {isolate(cell)}, reports now go to dispatchers and admins first; members see"
            " them once a dispatcher confirms them."
        )
    return f"In {isolate(cell)}, reports now go to every member at once."


async def cell_verify_first(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell verify-first CELL on|off`: unverified reports to verifiers only."""
    on = args.setting == "on"
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        ctx.bound("the relay did not confirm the new epoch")
        await cell.set_verify_first(on)
        ctx.unbound()
        ctx.emit({"cell": cell.name, "verify_first": cell.verify_first})
        ctx.say(verify_first_sentence(cell.name, cell.verify_first))


async def cell_leave(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell leave CELL`: stop following a cell and delete its keys here."""
    async with connected(ctx) as client:
        cell = client.cell(args.cell)
        await synced(ctx, [cell])
        if (
            cell.is_admin
            and not cell.removed
            and len([m for m in cell.members() if m.is_admin]) == 1
            and len(cell.members()) > 1
            and not args.force
        ):
            raise CellError(
                f"you are the only admin of {cell.name!r}: nobody could add or remove members after you leave (--force leaves anyway)"
            )
        if not args.yes:
            raise CellError(
                f"leaving deletes {cell.name!r} from this device and needs a new invite to come back: add --yes to confirm"
            )
        ctx.bound("could not say to the cell that you leave")
        announced = await cell.leave(force=True)  # checked above, with the CLI's words
        await forget_cell(client, cell)
        ctx.unbound()
        say_left(ctx, cell.name, cell.cell_id.hex(), announced=announced)


def say_left(ctx: Context, cell: str, cell_id: str, *, announced: bool) -> None:
    """What `cell leave` prints, alone and through the daemon alike."""
    ctx.emit({"cell": cell, "cell_id": cell_id, "left": True, "announced": announced})
    ctx.say(f"Left {isolate(cell)} and deleted its keys from this device.")
    if announced:
        ctx.say("The cell was told: an admin removes you, and it moves on to keys you never had.")
    else:
        ctx.note(
            "The relay did not take your announcement that you leave: ask an admin to remove you."
        )


async def cell_burn(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay cell burn CELL --yes`: delete the cell on every member's device and the relay."""
    async with connected(ctx) as client:
        cell = client.cell(args.cell)
        await synced(ctx, [cell])
        if not cell.is_admin:
            raise CellError(f"only an admin of {cell.name!r} can burn it")
        if not args.yes:
            raise CellError(burn_confirmation(cell.name))
        ctx.bound("the relay did not confirm the burn")
        name, cell_id = cell.name, cell.cell_id.hex()
        await cell.burn(keep=args.keep)
        say_burned(ctx, name, cell_id, keep=args.keep, pending=client.burns_pending)


def burn_confirmation(name: str) -> str:
    """Why `cell burn` wants --yes."""
    return (
        f"burning deletes {name!r} from every member's device and its mailboxes from the relay,"
        " and cannot be undone: add --yes to confirm"
    )


def say_burned(ctx: Context, name: str, cell_id: str, *, keep: float, pending: int) -> None:
    """What `cell burn` prints, alone or through the daemon."""
    ctx.emit({"cell": name, "cell_id": cell_id, "burned": True, "keep": int(keep),
              "mailboxes_pending": pending})  # fmt: skip
    ctx.say(
        f"Burned {isolate(name)}: every member's client deletes it as it reads the burn;"
        " it is deleted from this device."
    )
    if keep:
        ctx.say(
            f"Its mailboxes stay on the relay for {duration_text(int(keep))}, so that members"
            " who are offline can read the burn; cellrelay deletes them after that, the next"
            " time it runs (a daemon does it on time)."
        )
    elif pending:
        ctx.note(
            f"{pending} of its mailboxes could not be deleted on the relay yet; cellrelay tries"
            " again each time it runs."
        )
    else:
        ctx.say("Its mailboxes are deleted from the relay.")


# -- messages ------------------------------------------------------------------------------------


async def send(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay send CELL TEXT`: an alert to every member."""
    text = sys.stdin.read().rstrip("\n") if args.text == "-" else args.text
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        check_ttl(cell, args.ttl)
        ctx.bound("the relay did not store the alert")
        alert = await cell.send_alert(
            text, priority=Priority(args.priority), place=args.place, ttl=args.ttl,
            escalate_below=args.escalate_below, escalate_after=args.escalate_after,
        )  # fmt: skip
        ctx.unbound()
        ctx.emit({"cell": cell.name, **alert_json(alert, cell.me, None)})
        ctx.say(alert_headline(alert, "you", ctx.style, cell=cell.name))
        others = len(cell.members()) - 1
        ctx.note(
            f"Sent to {others} other member{'s' if others != 1 else ''}. Follow the replies: cellrelay listen {command_arg(cell.name)}"
        )
        note_clocks(ctx, cell)


def note_clocks(ctx: Context, cell: Cell) -> None:
    """Warn on standard error when the device's and the relay's clocks disagree (§C7)."""
    offset = cell.link.clock_offset
    if abs(offset) > CLOCK_TOLERANCE:
        ctx.note(ctx.style.warn(f"warning: {clock_warning_text(offset)}"))


async def reply(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay reply CELL ALERT_ID STATUS`: answer an alert."""
    status = Status(args.status.replace("-", "_"))
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        alert_id = find_alert(cell, args.alert_id)
        ctx.bound("the relay did not store the reply")
        answer = await cell.reply(alert_id, status, note=args.note)
        ctx.unbound()
        show_sent(ctx, cell.name, answer, cell.me, cell.rollup(alert_id), me=cell.me.member_id)
        note_clocks(ctx, cell)


async def mark(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay mark CELL ALERT_ID STEP`: a dispatcher's step on a report."""
    step = Step(args.step.replace("-", "_"))
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        alert_id = find_alert(cell, args.alert_id)
        ctx.bound("the relay did not store the step")
        sent = await cell.verify(alert_id, step, note=args.note)
        ctx.unbound()
        show_sent(ctx, cell.name, sent, cell.me, cell.rollup(alert_id), me=cell.me.member_id)
        note_clocks(ctx, cell)


async def message(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay message CELL TEXT`: an ordinary message (not an alert) to the cell."""
    text = sys.stdin.read().rstrip("\n") if args.text == "-" else args.text
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        check_ttl(cell, args.ttl)
        ctx.bound("the relay did not store the message")
        sent = await cell.send_message(text, ttl=args.ttl)
        ctx.unbound()
        ctx.emit(
            {"cell": cell.name, "message_id": sent.message_id.hex(), "sent_at_ms": sent.sent_at_ms}
        )
        ctx.say(f"Sent to {isolate(cell.name)}.")


async def alerts(ctx: Context, args: argparse.Namespace) -> None:
    """`cellrelay alerts CELL`: active alerts with their roll-ups."""
    async with connected(ctx) as client:
        cell = await the_cell(ctx, client, args.cell)
        active = cell.active_alerts()
        authors = {alert_id: sender for alert_id, (sender, _) in alerts_of(cell).items()}
        receipts = {r.alert_id: c for r in active if (c := cell.receipts(r.alert_id)) is not None}
        alerts_listing(ctx, cell.name, active, authors, receipts, me=client.identity.member_id)
