"""`cellrelay demo`, the README's run command: it runs, narrates the roll-up, and cleans up."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import trio

CELLRELAY = str(Path(sys.executable).with_name("cellrelay"))
# Five processes start (a relay and four members) and the demo takes a few seconds here;
# its own bound is 90 s (client/_demo.py), this one a little more.
DEMO_BOUND = 120.0


async def test_the_demo_runs_end_to_end_and_cleans_up() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLRELAY_")}
    with trio.fail_after(DEMO_BOUND):
        done = await trio.run_process(
            [CELLRELAY, "demo"], capture_stdout=True, capture_stderr=True, check=False, env=env
        )
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, out + err
    assert "Traceback" not in err
    for name in ("dana", "ana", "ben"):
        assert re.search(rf"^{name} +joined Eastside", out, re.MULTILINE), out
    # Issue 14 item 7: a report, verified by a dispatcher, confirmed, answered, resolved.
    for name in ("lead", "dana", "ana"):
        assert re.search(
            rf"^{name} +received alert [0-9a-f]{{8}} \(URGENT, UNVERIFIED\) from ben",
            out,
            re.MULTILINE,
        ), out
    for name in ("lead", "ana", "ben"):
        for word in ("VERIFYING", "CONFIRMED", "RESOLVED"):
            assert re.search(
                rf"^{name} +dana marked [0-9a-f]{{8}} {word} .*dana is a dispatcher$",
                out,
                re.MULTILINE,
            ), (word, out)
    assert out.index("CONFIRMED (") < out.index("answered: responding") < out.index("RESOLVED (")
    # Every member computed the same roll-up from what it decrypted itself.
    rollups = re.findall(
        r"^(lead|dana|ana|ben) +roll-up of [0-9a-f]{8}, as \1 computed it: (.*)$", out, re.MULTILINE
    )
    assert sorted(name for name, _ in rollups) == ["ana", "ben", "dana", "lead"], out
    assert {text for _, text in rollups} == {
        'RESOLVED by dana; on scene: ben ("two vans, six agents"); responding: ana'
    }
    assert "not there, the relay only ever held ciphertext" in out
    # The temporary directory (named in the narration) is gone.
    match = re.search(r"storing in SQLite under (\S+)/relay", out)
    assert match is not None, out
    assert not await trio.Path(match.group(1)).exists()
