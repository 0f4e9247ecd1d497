"""One member of `cellrelay demo`, as its own process: `python -P -m client._demo_member`.

The demo (client/_demo.py) starts one of these per member, each with its own keystore
directory, and drives it over standard input and output, one JSON object per line:

* in: a command, `{"op": "create" | "invite" | "join" | "approve" | "role" | "alert" |
  "wait_alert" | "reply" | "verify" | "wait_state" | "wait_rollup" | "quit", ...}`, answered by one `{"ok": true, ...}` or
  `{"ok": false, "error": "..."}` line, in order;
* out, at any time: `{"event": {...}}`, a cell event in the `--json` form of
  `cellrelay listen` (client/_cli_output.py), as soon as the member's client has it.

The member is the real client library end to end: its own identity, keystore, relay
connection and group keys; nothing is shared with the other members but the invite link
the demo passes on, as a person would. Its keystore uses libsodium's smallest Argon2id
cost because it is deleted with the demo; real keystores use `DEFAULT_COST`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Final

import structlog
import trio

from cellrelay.protocol import CellrelayError
from cellrelay.protocol.cell import Priority, Status, Step

from ._cell_member import CellError
from ._cli_output import event_json, member_json, rollup_json
from ._client import create_identity, open_client
from ._events import AlertReceived, CellRole, StatusReceived
from ._keystore import TEST_COST
from ._shims import subscribe

if TYPE_CHECKING:
    from ._cell_admin import Cell
    from ._client import Client
    from ._events import CellEvent

__all__ = ["main"]

PASSPHRASE_ENV: Final = "CELLRELAY_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret


def _out(value: object) -> None:
    print(json.dumps(value, ensure_ascii=False), flush=True)


class _Member:
    """The client of one demo member, and the commands the demo gives it."""

    def __init__(self, client: Client, nursery: trio.Nursery) -> None:
        self.client = client
        self.nursery = nursery
        self.cell: Cell | None = None
        # What this member has seen and printed, so that an answer to `wait_*` comes after
        # the event lines it depends on: alerts received, and who answered each alert.
        self.alerts: set[bytes] = set()
        self.answered: dict[bytes, set[bytes]] = {}
        self.progress = trio.Event()

    def _watch(self, cell: Cell) -> None:
        self.cell = cell
        channel = subscribe(cell)

        async def forward() -> None:
            async with channel:
                event: CellEvent
                async for event in channel:
                    _out({"event": event_json(event)})
                    if isinstance(event, AlertReceived):
                        self.alerts.add(event.alert.alert_id)
                    elif isinstance(event, StatusReceived):
                        self.answered.setdefault(event.reply.alert_id, set()).add(
                            event.sender.member_id
                        )
                    self._advance()

        self.nursery.start_soon(forward)

    def _advance(self) -> None:
        self.progress.set()
        self.progress = trio.Event()

    def _the_cell(self) -> Cell:
        if self.cell is None:
            raise CellError("no cell yet")
        return self.cell

    async def handle(self, command: dict[str, object]) -> dict[str, object]:
        op = command.get("op")
        if op == "create":
            cell = await self.client.create_cell(str(command["name"]), str(command["relay"]))
            self._watch(cell)
            return {"cell_id": cell.cell_id.hex()}
        if op == "invite":
            invite = await self._the_cell().invite(ttl=600)
            return {"link": invite.to_link(), "expires_at": invite.expires_at}
        if op == "join":
            cell = await self.client.join(str(command["link"]))
            self._watch(cell)
            await cell.wait_synced()
            return {"cell": cell.name, "members": [member_json(m) for m in cell.members()]}
        if op == "approve":
            cell = self._the_cell()
            while not cell.join_requests:  # the JoinRequested event sets progress
                await self.progress.wait()
            member = await cell.approve(cell.join_requests[0])
            return {"member": member_json(member)}
        if op == "alert":
            alert = await self._the_cell().send_alert(
                str(command["text"]),
                priority=Priority(str(command["priority"])),
                place=str(command["place"]),
            )
            self.alerts.add(alert.alert_id)
            return {"alert_id": alert.alert_id.hex()}
        if op == "wait_alert":
            alert_id = bytes.fromhex(str(command["alert_id"]))
            while alert_id not in self.alerts:
                await self.progress.wait()
            return {}
        if op == "reply":
            note = command.get("note")
            alert_id = bytes.fromhex(str(command["alert_id"]))
            answer = await self._the_cell().reply(
                alert_id, Status(str(command["status"])), note=None if note is None else str(note)
            )
            self.answered.setdefault(alert_id, set()).add(self.client.identity.member_id)
            return {"message_id": answer.message_id.hex()}
        if op == "role":
            cell = self._the_cell()
            await cell.set_role(
                cell.find_member(str(command["member"])), CellRole(str(command["role"]))
            )
            return {}
        if op == "verify":
            note = command.get("note")
            step = await self._the_cell().verify(
                bytes.fromhex(str(command["alert_id"])),
                Step(str(command["step"])),
                note=None if note is None else str(note),
            )
            return {"message_id": step.message_id.hex()}
        if op == "wait_state":
            cell, alert_id = self._the_cell(), bytes.fromhex(str(command["alert_id"]))
            while (r := cell.rollup(alert_id)) is None or r.verification != command["state"]:
                await self.progress.wait()
            return {}
        if op == "wait_rollup":
            cell, alert_id, wanted = (
                self._the_cell(),
                bytes.fromhex(str(command["alert_id"])),
                int(str(command["responders"])),
            )
            while len(self.answered.get(alert_id, ())) < wanted:
                await self.progress.wait()
            rollup = cell.rollup(alert_id)
            return {"rollup": None if rollup is None else rollup_json(rollup)}
        raise CellError(f"unknown command {op!r}")


async def _serve(home: Path, name: str, passphrase: str) -> None:
    create_identity(passphrase, name, home=home, cost=TEST_COST)
    async with open_client(passphrase, home=home) as client, trio.open_nursery() as nursery:
        member = _Member(client, nursery)
        _out({"ok": True, "member_id": client.identity.member_id.hex()})
        while True:
            line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line:
                break
            command = json.loads(line)
            if command.get("op") == "quit":
                break
            try:
                result = await member.handle(command)
            except (CellrelayError, CellError, ValueError) as exc:
                _out({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
            else:
                _out({"ok": True, **result})
        nursery.cancel_scope.cancel()


def main() -> int:
    """Run one demo member until the demo says quit (or closes standard input)."""
    parser = argparse.ArgumentParser(prog="python -m client._demo_member")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(30),  # warnings
    )
    trio.run(_serve, args.home, args.name, os.environ[PASSPHRASE_ENV])
    return 0


if __name__ == "__main__":
    sys.exit(main())
