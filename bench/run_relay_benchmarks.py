"""Run the three relay benchmarks of issue 3 one after another, with their defaults.

Run from the repository root: `python bench/run_relay_benchmarks.py` (about 10 minutes). It runs
bench_fanout.py, bench_publish.py and bench_memory.py in turn, each printing its own
tables, and writes each one's figures as JSON under bench/results/ (ignored by git).
Arguments after `--` go to every benchmark (for example `-- --repeats 1`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Final

BENCH: Final = Path(__file__).resolve().parent
BENCHMARKS: Final = ("bench_fanout", "bench_publish", "bench_memory")


def main() -> int:
    """Run each benchmark; return the first non-zero exit status, else 0."""
    extra = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    status = 0
    for name in BENCHMARKS:
        print(f"\n=== {name} ===", flush=True)
        output = BENCH / "results" / f"{name}.json"
        command = [sys.executable, str(BENCH / f"{name}.py"), "--json", str(output), *extra]
        result = subprocess.run(command, cwd=BENCH.parent, check=False)
        status = status or result.returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
