"""Run every atheris harness in fuzz/ for a bounded time; exit non-zero if any finds a crash.

Each harness runs in its own process, on a scratch copy of its seed corpus (so the
repository stays clean), with crash inputs written to a scratch directory and printed.
Used by `.ci/run` with about 20 seconds per harness; see fuzz/README.md for long runs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def harnesses() -> list[Path]:
    """Return every harness script (fuzz_*.py), sorted."""
    return sorted(HERE.glob("fuzz_*.py"))


def run(harness: Path, seconds: int, scratch: Path) -> bool:
    """Fuzz one harness for `seconds`; return True when it found nothing."""
    name = harness.stem.removeprefix("fuzz_")
    corpus = scratch / f"corpus-{name}"
    seeds = HERE / "seeds" / name
    if seeds.is_dir():
        shutil.copytree(seeds, corpus)
    else:
        corpus.mkdir()
    artifacts = scratch / f"crashes-{name}"
    artifacts.mkdir()
    command = [
        sys.executable,
        str(harness),
        f"-max_total_time={seconds}",
        "-timeout=10",
        "-rss_limit_mb=2048",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
        str(corpus),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - our own harness
    stats = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("stat::number_of_executed_units")
    ]
    runs = stats[-1].split(":")[-1].strip() if stats else "?"
    crashes = sorted(artifacts.iterdir())
    ok = result.returncode == 0 and not crashes
    print(f"{harness.name}: {'ok' if ok else 'FAILED'} ({runs} inputs in {seconds} s)")
    if not ok:
        print(result.stderr[-4000:])
        for crash in crashes:
            print(f"  crash input {crash.name}: {crash.read_bytes()[:512].hex()}")
    return ok


def main() -> int:
    """Parse arguments and run the harnesses."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=20, help="time per harness")
    parser.add_argument("names", nargs="*", help="harness names (default: all)")
    args = parser.parse_args()
    selected = [
        h for h in harnesses() if not args.names or h.stem.removeprefix("fuzz_") in args.names
    ]
    if not selected:
        print("no harness selected", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cellrelay-fuzz-") as scratch:
        results = [run(h, args.seconds, Path(scratch)) for h in selected]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
