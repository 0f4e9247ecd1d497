"""docs/daemon.md is true: its generated sections match the code, and every example runs.

The examples (curl, a shell script, JavaScript with fetch under Node, JavaScript with
EventSource in Debian's chromium) run against real daemons on a real relay and must print
what the guide says. The guide includes each example file verbatim.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from cellrelay.client import _api, _app, _http, _schema
from cellrelay.protocol import ErrorCode

from . import docgen_daemon
from .conftest import RunningRelay
from .daemons import PATIENCE, RunningDaemon, admit, make_cell, start_daemon
from .test_board import Scenario, run_in_browser

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
GUIDE = ROOT / "docs" / "client-guide.md"
DAEMON_EXAMPLES = (
    "daemon_curl.sh",
    "alert_and_wait.sh",
    "daemon_fetch.mjs",
    "daemon_eventsource.js",
)


def test_generated_sections_match_the_code() -> None:
    text = docgen_daemon.DOC.read_text()
    assert len(docgen_daemon.SECTION.findall(text)) == len(docgen_daemon.RENDERERS)
    assert docgen_daemon.render_document(text) == text, "run: python -m tests.client.docgen_daemon"


def test_every_example_is_in_the_guides_as_it_is() -> None:
    guide = docgen_daemon.DOC.read_text()
    for name in DAEMON_EXAMPLES:
        assert (EXAMPLES / name).read_text() in guide, (
            f"docs/daemon.md does not include {name} as it is"
        )
    assert (EXAMPLES / "cellrelay-daemon.service").read_text() in GUIDE.read_text()
    assert "daemon.md" in GUIDE.read_text()
    assert "docs/daemon.md" in (ROOT / "README.md").read_text()


def test_every_error_code_the_daemon_gives_is_documented() -> None:
    sources = "".join(Path(m.__file__ or "").read_text() for m in (_api, _app, _http, _schema))
    given = set(
        re.findall(r"(?:ApiError|_problem|_problem_response)\(\s*\d+,\s*\"([A-Z_]+)\"", sources)
    )
    given |= set(re.findall(r"FieldError\([^,]+,\s*\"([A-Z_]+)\"", sources))
    given |= set(_http._H11_CODES.values())
    protocol = {code.name for code in ErrorCode}
    assert given - protocol <= set(docgen_daemon.API_CODES), (
        given - protocol - set(docgen_daemon.API_CODES)
    )
    assert len(given) > 20  # the patterns above still find the codes


async def _cell_of_two(
    nursery: trio.Nursery, relay: RunningRelay, tmp_path: Path
) -> tuple[RunningDaemon, RunningDaemon]:
    lead = await start_daemon(nursery, tmp_path, "lead")
    ana = await start_daemon(nursery, tmp_path, "ana", tcp=False)
    await make_cell(lead, relay)
    await admit(lead, ana)
    return lead, ana


async def test_the_curl_example(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    lead, _ = await _cell_of_two(nursery, running_relay, tmp_path)
    with trio.fail_after(PATIENCE):
        done = await trio.run_process(["bash", str(EXAMPLES / "daemon_curl.sh"), str(lead.address.socket)],
                                      capture_stdout=True, capture_stderr=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    expected = [
        r"sent [0-9a-f]{8} to 1 other members",
        r"sent emergency [0-9a-f]{8}",
        r"emergency: Two vans on 15th \(0 answers\)",
        r"urgent: Agents at 14th & Main \(0 answers\)",
        r"404 NO_SUCH_CELL",
    ]
    lines = done.stdout.decode().splitlines()
    assert len(lines) == len(expected), lines
    for pattern, line in zip(expected, lines, strict=True):
        assert re.fullmatch(pattern, line), (pattern, line)


async def _answer_when_it_arrives(member: RunningDaemon, text: str) -> None:
    """Member's side: wait for the alert `text`, then answer it as on scene."""
    with trio.fail_after(PATIENCE):
        while True:
            alerts = (await member.ok("GET", "/cells/Eastside/alerts"))["alerts"]
            found = [a for a in alerts if a["alert"]["text"] == text]
            if found:
                break
            await trio.sleep(0.05)
    alert_id = found[0]["alert"]["message_id"]
    await member.ok(
        "POST", f"/cells/Eastside/alerts/{alert_id}/replies", 201, json_body={"status": "on_scene"}
    )


async def _run_until_answered(command: list[str], member: RunningDaemon, text: str) -> list[str]:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_answer_when_it_arrives, member, text)
        with trio.fail_after(PATIENCE):
            done = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False,
                                          stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().splitlines()


async def test_the_shell_script_sends_and_waits_for_the_answer(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    lead, ana = await _cell_of_two(nursery, running_relay, tmp_path)
    command = [
        "bash",
        str(EXAMPLES / "alert_and_wait.sh"),
        "Eastside",
        "Agents on 3rd",
        str(lead.address.socket),
    ]
    lines = await _run_until_answered(command, ana, "Agents on 3rd")
    assert re.fullmatch(r"sent [0-9a-f]{8}; waiting for an answer", lines[0]), lines
    assert lines[1:] == ["ana: on_scene"]


async def test_the_fetch_example_under_node(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "install Node.js (apt-get install nodejs): the guide's JavaScript example runs under it"
        )
    lead, ana = await _cell_of_two(nursery, running_relay, tmp_path)
    assert lead.address.url is not None
    command = [
        node,
        str(EXAMPLES / "daemon_fetch.mjs"),
        lead.address.url,
        str(lead.address.token_file),
    ]
    lines = await _run_until_answered(command, ana, "Agents at 14th & Main")
    assert lines[0] == "daemon of lead"
    assert re.fullmatch(r"sent [0-9a-f]{8} to 1 other members", lines[1]), lines
    assert lines[2:] == ["ana: on_scene"]


SPY = """() => {
    window.sources = [];
    const Original = window.EventSource;
    window.EventSource = class extends Original {
        constructor(...args) { super(...args); window.sources.push(this); }
    };
}"""


async def test_the_eventsource_example_in_chromium(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    lead, ana = await _cell_of_two(nursery, running_relay, tmp_path)
    code = (EXAMPLES / "daemon_eventsource.js").read_text()
    received: dict[str, Any] = {}

    async def send() -> None:
        await ana.ok(
            "POST", "/cells/Eastside/alerts", 201, json_body={"text": "Seen from EventSource"}
        )

    def scenario(session: Scenario) -> None:
        page = session.open_board("lead", lead)  # a page of the daemon's own origin
        # Record the example's EventSource, to know when its stream is open.
        page.evaluate(SPY)
        page.evaluate(
            code + f"\nwindow.seen = []; followAlerts({lead.token!r}, (e) => window.seen.push(e));"
        )
        page.wait_for_function(
            "() => window.sources.some((s) => s.readyState === EventSource.OPEN)"
        )
        trio.from_thread.run(send)
        page.wait_for_function(
            "() => window.seen.some((e) => e.alert.text === 'Seen from EventSource')"
        )
        received.update(
            page.evaluate("() => window.seen.find((e) => e.alert.text === 'Seen from EventSource')")
        )

    await run_in_browser("eventsource-example", scenario)
    assert received["sender"]["name"] == "ana"
    assert received["cell"] == "Eastside"
