"""Every example in docs/examples/*.py runs against a real relay process and says what it should.

The examples are complete programs that take the relay address on the command line; the
client guide includes each one verbatim, which this test also checks, so the guide cannot
show code that no longer runs.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import trio

from cellrelay import client

from ..relay.process import open_relay_process

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
GUIDE = ROOT / "docs" / "client-guide.md"
# Each example starts Python, creates two identities (Argon2id at the default cost, about
# half a second each) and runs a cell's whole life; seconds here, more on a loaded machine.
EXAMPLE_BOUND = 120.0

# What each example must print, in order (regular expressions, one per line of output).
EXPECTED: dict[str, list[str]] = {
    "quickstart.py": [
        r"^lead created Eastside and an invite: cellrelay://join/\S+\.\.\.$",
        r"^ana joined Eastside: lead, ana$",
        r"^ana received from lead: Agents at 14th & Main \(urgent, at 14th & Main\)$",
        r"^roll-up on lead: ana is responding \(five minutes away\)$",
    ],
    "blocking.py": [
        r"^desk approves responder bot$",
        r"^desk sends an alert$",
        r"^bot received: Agents at 14th & Main$",
        r"^desk roll-up: responding: responder bot$",
    ],
}


def test_every_example_is_checked_and_in_the_guide() -> None:
    examples = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert examples == sorted(EXPECTED)
    guide = GUIDE.read_text()
    for name in examples:
        assert (EXAMPLES / name).read_text() in guide, (
            f"docs/client-guide.md does not include {name} as it is"
        )


def test_the_guide_documents_every_public_name() -> None:
    guide = GUIDE.read_text()
    missing = [name for name in client.__all__ if not re.search(rf"`[^`\n]*\b{name}\b", guide)]
    assert not missing, f"docs/client-guide.md does not mention {missing}"


async def test_examples_run_against_a_relay(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLRELAY_")}
    outputs: dict[str, tuple[int, str, str]] = {}
    # durability=normal: the examples test the client, not the relay's fsyncs.
    async with open_relay_process(tmp_path / "relay", durability="normal") as relay:

        async def run(name: str) -> None:
            with trio.fail_after(EXAMPLE_BOUND):
                done = await trio.run_process(
                    [sys.executable, "-P", str(EXAMPLES / name), str(relay.address)],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    env=env,
                    cwd=tmp_path,
                )
            outputs[name] = (done.returncode, done.stdout.decode(), done.stderr.decode())

        async with trio.open_nursery() as nursery:
            for name in EXPECTED:
                nursery.start_soon(run, name)
    for name, patterns in EXPECTED.items():
        returncode, out, err = outputs[name]
        assert returncode == 0, f"{name}: {out}\n{err}"
        lines = out.splitlines()
        assert len(lines) == len(patterns), f"{name}: {out}"
        for line, pattern in zip(lines, patterns, strict=True):
            assert re.match(pattern, line), f"{name}: {line!r} does not match {pattern!r}"
        assert err == "", f"{name} wrote to standard error: {err}"
