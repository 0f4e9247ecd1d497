"""Run `python -m relay` under cProfile counting the main thread's CPU time, not wall time.

`python bench/_cprofile_relay.py OUT ARGS...` runs `relay` with ARGS and writes the
statistics to OUT when it exits. Wall-clock profiles of a relay on a shared two-core
machine are dominated by time spent descheduled (a write to a loopback socket wakes the
reader, which often runs in our place); `time.thread_time_ns` counts only the CPU this
thread used. Worker threads (SQLite) are not profiled.
"""

from __future__ import annotations

import cProfile
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cellrelay.relay._cli import main


def run() -> int:
    """Profile `relay` with the arguments after OUT; write the statistics to OUT."""
    output, *argv = sys.argv[1:]
    profiler = cProfile.Profile(time.thread_time_ns, 1e-9)
    profiler.enable()
    try:
        return main(argv)
    finally:
        profiler.disable()
        profiler.dump_stats(output)


if __name__ == "__main__":
    sys.exit(run())
