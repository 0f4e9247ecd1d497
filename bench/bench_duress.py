"""Unlocking with the duress passphrase against unlocking normally: does the time give it away?

Run: `python bench/bench_duress.py` (about a minute at the default Argon2id cost; `--help`).

For each state size, `--rounds` fresh keystores are made (at the keystore's default cost,
the one `cellrelay id new` uses, with a duress passphrase set); each is opened once with
its passphrase (`Keystore.open`, then `close`: Argon2id, both slots, reading and opening
the state file) and once with the duress passphrase (Argon2id, both slots, overwriting,
fsyncing and deleting the key and state files, writing the replacement's two files with
their fsyncs), in random order. Medians and the spread of each, side by side, then the
difference of the medians. The person at the keyboard sees the unlock through a command
that also starts Python (about 0.3 s here) and, normally, connects to relays.

Also: `destroy_local_state` (what `cellrelay panic` does after starting) on the same states.
Figures share the machine with whatever else runs on it (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _benchlib import machine_summary, temporary_directory

from cellrelay.client._keystore import DEFAULT_COST, TEST_COST, Keystore
from cellrelay.client._panic import destroy_local_state
from cellrelay.protocol._crypto import random_bytes

PASSPHRASE = "the passphrase of the bench"  # noqa: S105 - a test value
DURESS = "the duress passphrase of the bench"
# A new identity; a busy member (a day of alerts kept, 20,000 seen ids: about 1 MiB);
# a member of many busy cells.
SIZES = {"new identity (200 B)": 200, "busy member (1 MiB)": 1 << 20, "many cells (8 MiB)": 8 << 20}


def _make(path: Path, size: int, cost: tuple[int, int]) -> None:
    with Keystore.create(path, PASSPHRASE, random_bytes(size), cost=cost) as store:
        store.set_duress(DURESS, b"an identity with no cells")


def _time_open(path: Path, passphrase: str) -> float:
    start = time.perf_counter()
    store, _ = Keystore.open(path, passphrase)
    store.close()
    return time.perf_counter() - start


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.1f} ms  ({min(values) * 1000:.0f}-{max(values) * 1000:.0f})"


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=7, help="keystores per size (default 7)")
    parser.add_argument("--test-cost", action="store_true", help="libsodium's smallest cost")
    args = parser.parse_args()
    cost = TEST_COST if args.test_cost else DEFAULT_COST
    print(machine_summary())
    print(f"Argon2id opslimit {cost[0]}, memlimit {cost[1] >> 20} MiB; {args.rounds} rounds\n")
    print(
        f"{'state':24} {'normal unlock':>26} {'duress unlock':>26} {'difference':>12} {'panic':>12}"
    )
    with temporary_directory("bench-duress") as workdir:
        for label, size in SIZES.items():
            normal: list[float] = []
            duress: list[float] = []
            panic: list[float] = []
            for n in range(args.rounds):
                home = workdir / f"{size}-{n}"
                path = home / "keystore"
                _make(path, size, cost)
                order = [(PASSPHRASE, normal), (DURESS, duress)]
                random.shuffle(order)
                for passphrase, figures in order:
                    figures.append(_time_open(path, passphrase))
                    if passphrase == DURESS:  # the real one is gone: make it again
                        destroy_local_state(home)
                        _make(path, size, cost)
                start = time.perf_counter()
                destroy_local_state(home)
                panic.append(time.perf_counter() - start)
            difference = (statistics.median(duress) - statistics.median(normal)) * 1000
            print(
                f"{label:24} {_spread(normal):>26} {_spread(duress):>26} "
                f"{difference:+9.1f} ms {statistics.median(panic) * 1000:9.1f} ms"
            )


if __name__ == "__main__":
    main()
