"""`cellrelay demo`: a relay, a cell of four members in separate processes, a report from
reported to resolved (docs/workflow.md).

What runs, all on loopback and in a temporary directory deleted at the end:

* a relay process (`python -P -m cellrelay.relay serve`) on the embedded default store, SQLite;
* four member processes (client/_demo_member.py), each with its own keystore, identity,
  relay connection and group keys: `lead` creates the cell "Eastside" and invites `dana`,
  `ana` and `ben`; they ask to join with the links and `lead` approves them; `lead` makes
  `dana` a dispatcher and the others responders; `ben` reports a sighting, which every
  member shows as unverified; `dana` takes it, checks it and confirms it; `ana` answers
  "responding" and `ben` "on scene"; `dana` resolves it; every member prints the roll-up
  it computed from what it decrypted, with who verified it.

At the end the demo stops the relay and searches its database files for the alert's
text, which is not there: the relay only ever held ciphertext. The whole run is bounded
by `DEMO_TIMEOUT`; any failure stops every process and is reported on one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

import trio

from cellrelay.protocol.cell import Status, Step
from cellrelay.protocol.cell._rollup import ReportState

from ._cli_output import REPORT_WORDS, STATUS_WORDS, Style, isolate
from ._demo_member import PASSPHRASE_ENV

__all__ = ["run_demo"]

# Each member process imports the client and derives its keystore key in about a second;
# the whole demo takes a few seconds here. This bounds it on a loaded machine too.
DEMO_TIMEOUT: Final = 90.0
STOP_TIMEOUT: Final = 15.0  # for a process to exit after being asked
READ_SIZE: Final = 65_536
CELL: Final = "Eastside"
ALERT: Final = "Agents at 14th & Main, responders needed"
PLACE: Final = "14th & Main"
# Not a secret: the demo's keystores are temporary and deleted at the end.
DEMO_PASSPHRASE: Final = "demo passphrase, not secret"  # noqa: S105
NAMES: Final = ("lead", "dana", "ana", "ben")
ROLES: Final = {"dana": "dispatcher", "ana": "responder", "ben": "responder"}
REPORTER: Final = "ben"
DISPATCHER: Final = "dana"
# The dispatcher's steps, with what it found (docs/workflow.md).
STEPS: Final[tuple[tuple[Step, str | None], ...]] = (
    (Step.VERIFYING, "calling ben back"),
    (Step.CONFIRMED, "two vans, six agents: confirmed by phone"),
)
RESOLUTION: Final = "agents left; the family is with the legal team"
ANSWERS: Final[dict[str, tuple[Status, str | None]]] = {
    "ana": (Status.RESPONDING, None),
    "ben": (Status.ON_SCENE, "two vans, six agents"),
}
# Each name gets a colour on a terminal, so the interleaved processes are easy to follow.
COLOURS: Final = {
    "relay": "\033[2m",
    "lead": "\033[1;34m",
    "dana": "\033[1;33m",
    "ana": "\033[1;35m",
    "ben": "\033[1;36m",
}


class DemoError(Exception):
    """A step of the demo failed; the message says which."""


def _clean_environment() -> dict[str, str]:
    # The relay reads CELLRELAY_* settings and the client CELLRELAY_HOME: keep the user's out.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLRELAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _Narrator:
    def __init__(self, style: Style) -> None:
        self.style = style
        self.started = time.monotonic()

    def __call__(self, who: str, text: str) -> None:
        label = f"{who:<6}"
        if self.style.colour:
            label = f"{COLOURS.get(who, '')}{label}\033[0m"
        print(f"{label} {text}", flush=True)


class _Process:
    """A child process whose standard output arrives as lines and whose error output is kept."""

    def __init__(self, name: str, process: trio.Process, nursery: trio.Nursery) -> None:
        self.name = name
        self.process = process
        self.errors = bytearray()
        self.lines_send, self.lines = trio.open_memory_channel[str](1000)
        assert process.stdout is not None  # noqa: S101 - opened with pipes
        assert process.stderr is not None  # noqa: S101
        nursery.start_soon(self._pump_lines, process.stdout)
        nursery.start_soon(self._pump_errors, process.stderr)

    async def _pump_lines(self, stream: trio.abc.ReceiveStream) -> None:
        buffer = b""
        async with self.lines_send:
            while data := await stream.receive_some(READ_SIZE):
                buffer += data
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    await self.lines_send.send(line.decode("utf-8", "replace"))

    async def _pump_errors(self, stream: trio.abc.ReceiveStream) -> None:
        while data := await stream.receive_some(READ_SIZE):
            self.errors += data

    def last_error(self) -> str:
        """The last line the process wrote on standard error (a traceback's ends with the error)."""
        lines = self.errors.decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else "(nothing on standard error)"

    async def next_line(self) -> str:
        try:
            return await self.lines.receive()
        except trio.EndOfChannel:
            raise DemoError(f"{self.name} exited unexpectedly: {self.last_error()}") from None

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
        with trio.move_on_after(STOP_TIMEOUT):
            await self.process.wait()
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


class _Member(_Process):
    """A member process: commands in, answers and events out (client/_demo_member.py)."""

    def __init__(
        self, name: str, process: trio.Process, nursery: trio.Nursery, say: _Narrator
    ) -> None:
        super().__init__(name, process, nursery)
        self.say = say
        self.answers_send, self.answers = trio.open_memory_channel[dict[str, object]](100)
        nursery.start_soon(self._dispatch)

    async def _dispatch(self) -> None:
        async with self.answers_send:
            while True:
                try:
                    line = await self.next_line()
                except DemoError:
                    return  # ask() reports it
                message = json.loads(line)
                if "event" in message:
                    self._narrate(message["event"])
                else:
                    await self.answers_send.send(message)

    async def answer(self, op: str) -> dict[str, object]:
        """The member's answer to the command `op` sent last (or to its start-up)."""
        try:
            answer = await self.answers.receive()
        except trio.EndOfChannel:
            raise DemoError(f"{self.name} exited during {op}: {self.last_error()}") from None
        if not answer.get("ok"):
            raise DemoError(f"{self.name} could not {op}: {answer.get('error')}")
        return answer

    async def ask(self, op: str, **fields: object) -> dict[str, object]:
        """Send the command `op` and return the member's answer."""
        stdin = self.process.stdin
        assert stdin is not None  # noqa: S101 - opened with a pipe
        await stdin.send_all((json.dumps({"op": op, **fields}) + "\n").encode())
        return await self.answer(op)

    async def quit(self) -> None:
        """Ask the member to close its client (saying goodbye to the relay) and exit."""
        stdin = self.process.stdin
        assert stdin is not None  # noqa: S101 - opened with a pipe
        await stdin.send_all(b'{"op": "quit"}\n')
        with trio.move_on_after(STOP_TIMEOUT):
            await self.process.wait()

    def _narrate(self, event: dict[str, object]) -> None:
        kind = event.get("type")
        sender = event.get("from", event.get("by"))
        who = isolate(str(sender["name"])) if isinstance(sender, dict) else "?"
        if kind == "alert":
            priority = str(event["priority"]).upper()
            rollup = event.get("rollup")
            state = rollup.get("verification") if isinstance(rollup, dict) else None
            marked = f", {REPORT_WORDS[ReportState(str(state))]}" if state else ""
            self.say(self.name, f"received alert {str(event['alert_id'])[:8]} ({priority}{marked}) from {who}, decrypted and "
                                f"its signature checked: {isolate(str(event['text']))!r} @ {isolate(str(event['place']))}")  # fmt: skip
        elif kind == "verification":
            note = f' ("{isolate(str(event["note"]))}")' if event.get("note") else ""
            word = REPORT_WORDS[ReportState(str(event["step"]))]
            self.say(
                self.name,
                f"{who} marked {str(event['alert_id'])[:8]} {word}{note}; signed, and {who} is a dispatcher",
            )
        elif kind == "role":
            member = event.get("member")
            name = isolate(str(member["name"])) if isinstance(member, dict) else "?"
            self.say(self.name, f"membership: {name} is now {event['role']} (signed by {who})")
        elif kind == "status":
            note = f' ("{isolate(str(event["note"]))}")' if event.get("note") else ""
            word = STATUS_WORDS[Status(str(event["status"]))]
            self.say(self.name, f"{who} answered {str(event['alert_id'])[:8]}: {word}{note}")
        elif kind == "membership":
            member = event.get("member")
            name = isolate(str(member["name"])) if isinstance(member, dict) else "?"
            self.say(self.name, f"membership: {name} {event['change']} (signed by an admin)")
        elif kind == "join_request":
            member = event.get("member")
            if isinstance(member, dict):
                self.say(
                    self.name,
                    f"{isolate(str(member['name']))} ({str(member['member_id'])[:8]}) asks to join",
                )
        elif kind == "security_warning":
            self.say(self.name, f"SECURITY WARNING: {event.get('reason')}")


def _rollup_text(rollup: dict[str, object]) -> str:
    """A roll-up in its `--json` form (client/_cli_output.py) as a line for people."""
    responders = rollup.get("responders")
    if not isinstance(responders, list):
        return "?"
    parts = []
    for status in (Status.ON_SCENE, Status.RESPONDING, Status.RESOLVED, Status.FALSE_ALARM):
        names = [
            isolate(str(r["name"])) + (f' ("{isolate(str(r["note"]))}")' if r.get("note") else "")
            for r in responders
            if r["status"] == status
        ]
        if names:
            parts.append(f"{STATUS_WORDS[status]}: {', '.join(names)}")
    state = REPORT_WORDS[ReportState(str(rollup.get("verification", "reported")))]
    by = rollup.get("verified_by")
    if isinstance(by, dict):
        state += f" by {isolate(str(by['name']))}"
    return f"{state}; " + "; ".join(parts)


async def _start(argv: list[str], env: dict[str, str]) -> trio.Process:
    return await trio.lowlevel.open_process(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )


class _Demo:
    """The demo's steps, in order (module docstring)."""

    def __init__(self, tmp: Path, say: _Narrator, nursery: trio.Nursery) -> None:
        self.tmp = tmp
        self.say = say
        self.nursery = nursery
        self.relay_dir = tmp / "relay"
        self.processes: list[_Process] = []
        self.members: dict[str, _Member] = {}

    async def start(self) -> str:
        """Start the relay and the members' processes; return the relay address."""
        env = _clean_environment()
        relay = [sys.executable, "-P", "-m", "cellrelay.relay"]  # -P: see client/_cli.py
        settings = [
            "--data-dir",
            str(self.relay_dir),
            "--listen",
            "127.0.0.1:0",
            "--ops-listen",
            "",
        ]
        await trio.run_process(
            [*relay, "init", *settings], env=env, capture_stdout=True, capture_stderr=True
        )
        serve = [
            *relay,
            "serve",
            *settings,
            "--log-format",
            "console",
            "--log-level",
            "warning",
            "--shutdown-grace",
            "1",
        ]
        relay_process = _Process("relay", await _start(serve, env), self.nursery)
        self.processes.append(relay_process)
        member_env = {**env, PASSPHRASE_ENV: DEMO_PASSPHRASE}
        for name in NAMES:
            argv = [
                sys.executable,
                "-P",
                "-m",
                "cellrelay.client._demo_member",
                "--home",
                str(self.tmp / name),
                "--name",
                name,
            ]
            self.members[name] = _Member(
                name, await _start(argv, member_env), self.nursery, self.say
            )
            self.processes.append(self.members[name])
        address = (await relay_process.next_line()).strip()
        self.say(
            "relay",
            f"listening at {address.split('@')[-1]}, storing in SQLite under {self.relay_dir}",
        )
        for name, member in self.members.items():
            member_id = str((await member.answer("start"))["member_id"])
            self.say(
                name, f"started: its own process, keystore and identity (member id {member_id[:8]})"
            )
        return address

    async def form_cell(self, address: str) -> None:
        """The lead creates the cell, invites the others, and approves them as they ask."""
        lead = self.members["lead"]
        await lead.ask("create", name=CELL, relay=address)
        self.say("lead", f"created the cell {CELL!r} on the relay; lead is its admin")
        for name in NAMES[1:]:
            link = str((await lead.ask("invite"))["link"])
            self.say("lead", f"invited {name} with a one-time link: {link[:28]}...{link[-8:]}")
            joined: dict[str, object] = {}

            async def join(
                name: str = name, link: str = link, joined: dict[str, object] = joined
            ) -> None:
                joined.update(await self.members[name].ask("join", link=link))

            async with trio.open_nursery() as step:
                step.start_soon(join)
                self.say(name, f"asks to join {CELL} with the link, and waits for the admin")
                member = (await lead.ask("approve"))["member"]
                assert isinstance(member, dict)  # noqa: S101 - the member's own answer
                self.say(
                    "lead",
                    f"approved {member['name']} (id {str(member['member_id'])[:8]}, which {name} can confirm)",
                )
            roster = joined.get("members")
            who = ", ".join(str(m["name"]) for m in roster) if isinstance(roster, list) else "?"
            self.say(name, f"joined {CELL}: members {who}")

    async def roles(self) -> None:
        """The admin gives roles: a signed membership change each, which every client enforces."""
        for name, role in ROLES.items():
            await self.members["lead"].ask("role", member=name, role=role)
            self.say("lead", f"made {name} a {role} (a membership change lead signs)")

    async def report_to_resolved(self) -> None:
        """A report, verified and confirmed by the dispatcher, answered, resolved (workflow.md)."""
        reporter, dispatcher = self.members[REPORTER], self.members[DISPATCHER]
        alert_id = str(
            (await reporter.ask("alert", text=ALERT, priority="urgent", place=PLACE))["alert_id"]
        )
        self.say(
            REPORTER,
            f"reported a sighting, {alert_id[:8]}: {ALERT!r}; it is UNVERIFIED until a dispatcher checks it",
        )
        for name in NAMES:
            await self.members[name].ask("wait_alert", alert_id=alert_id)
        for step, note in STEPS:
            await dispatcher.ask("verify", alert_id=alert_id, step=step, note=note)
            self.say(
                DISPATCHER, f"marked {alert_id[:8]} {REPORT_WORDS[ReportState(step.value)]}: {note}"
            )
            for member in self.members.values():
                await member.ask("wait_state", alert_id=alert_id, state=step.value)
        for name, (status, note) in ANSWERS.items():
            await self.members[name].ask("reply", alert_id=alert_id, status=status, note=note)
            self.say(name, f"answered: {STATUS_WORDS[status]}" + (f' ("{note}")' if note else ""))
        for member in self.members.values():
            await member.ask("wait_rollup", alert_id=alert_id, responders=len(ANSWERS))
        await dispatcher.ask("verify", alert_id=alert_id, step=Step.RESOLVED, note=RESOLUTION)
        self.say(DISPATCHER, f"marked {alert_id[:8]} RESOLVED: {RESOLUTION}")
        for member in self.members.values():
            await member.ask("wait_state", alert_id=alert_id, state=Step.RESOLVED.value)
        rollups = {name: (await member.ask("wait_rollup", alert_id=alert_id, responders=len(ANSWERS)))["rollup"]
                   for name, member in self.members.items()}  # fmt: skip
        print(flush=True)
        for name, rollup in rollups.items():
            assert isinstance(rollup, dict)  # noqa: S101 - the member's own answer
            self.say(
                name, f"roll-up of {alert_id[:8]}, as {name} computed it: {_rollup_text(rollup)}"
            )
        print(flush=True)

    async def stop(self) -> None:
        """Ask the members to quit (they say goodbye to the relay), then stop every process."""
        for member in self.members.values():
            if member.process.returncode is None:
                await member.quit()
        for process in reversed(self.processes):
            await process.stop()

    def check_relay_files(self) -> None:
        """Search the stopped relay's files for the alert's text: it must not be there."""
        files = [
            p for p in sorted(self.relay_dir.iterdir()) if p.is_file() and p.name != "relay.key"
        ]
        stored = b"".join(p.read_bytes() for p in files)
        if ALERT.encode() in stored or PLACE.encode() in stored:
            raise DemoError("the alert's text is in the relay's files: the relay saw plaintext")
        self.say("relay", f"stopped; searched its {len(stored) // 1024} KB of files for the alert's text: "
                          "not there, the relay only ever held ciphertext")  # fmt: skip


async def _demo(tmp: Path, say: _Narrator) -> None:
    async with trio.open_nursery() as nursery:
        demo = _Demo(tmp, say, nursery)
        try:
            address = await demo.start()
            await demo.form_cell(address)
            await demo.roles()
            await demo.report_to_resolved()
        finally:
            with trio.CancelScope(shield=True):
                await demo.stop()
            nursery.cancel_scope.cancel()
    demo.check_relay_files()


def run_demo(*, keep: bool = False) -> int:
    """Run the demo (module docstring); return the exit status."""
    style = Style(colour=sys.stdout.isatty() and "NO_COLOR" not in os.environ)
    say = _Narrator(style)
    print(
        "cellrelay demo: a relay and a cell of four members, each its own process, on this machine:"
        " a report, verified by a dispatcher, answered, resolved.\n",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="cellrelay-demo-"))
    try:
        trio.run(_run_bounded, tmp, say)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        leaves = _leaves(exc)
        failure = next(
            (e for e in leaves if isinstance(e, DemoError | trio.TooSlowError)), leaves[0]
        )
        if isinstance(failure, trio.TooSlowError):
            print(
                f"cellrelay demo: did not finish within {DEMO_TIMEOUT:g} s (is this machine very busy?)",
                file=sys.stderr,
            )
        else:
            print(f"cellrelay demo: {failure}", file=sys.stderr)
        return 1
    finally:
        if keep:
            print(f"\n(kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - say.started
    print(
        f"\nDone in {elapsed:.1f} s. To do it yourself: docs/client-guide.md, or `cellrelay --help`."
    )
    return 0


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


async def _run_bounded(tmp: Path, say: _Narrator) -> None:
    with trio.fail_after(DEMO_TIMEOUT):
        await _demo(tmp, say)
