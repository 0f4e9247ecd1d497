"""Measure SQLiteStore: durable appends per second, append_batch latency, sweeping.

Run from the repository root: `python bench/bench_store.py` (about 50 s; `--help` for the
knobs). For each durability ("full", "normal") and batch size (1, 10, 100, 500) it runs
`--repeats` timed runs of `--seconds` each on a fresh copy of a database holding
`--mailboxes` mailboxes, appending 600-byte envelopes to mailboxes drawn uniformly at
random (the hub's batches mix many cells; one hot mailbox is faster, since its inserts
touch fewer pages). It prints the median over runs of appends per second and of the p50
and p99 latency of one `append_batch` call, timed from the Trio task (so it includes the
hop to the worker thread). Then it times `delete_expired` and `read_after`.

The database goes in a temporary directory under bench/ (on the same disk as the
repository, because tmpfs would make fsync free and the numbers meaningless); the output
names that directory's filesystem. Use `--dir` to measure another disk.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

import structlog
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cellrelay.relay._sqlite_store as sqlite_store
from cellrelay.relay._sqlite_store import DELETE_CHUNK_ROWS, Durability, open_sqlite_store
from cellrelay.relay._store import MailboxId, MailboxRecord, PendingAppend

ENVELOPE_SIZE: Final = 600  # a padded alert with its signature, per the brief
BATCH_SIZES: Final = (1, 10, 100, 500)
DURABILITIES: Final[tuple[Durability, ...]] = ("full", "normal")
TTL: Final = 3600  # seconds; nothing expires during a run
QUOTA: Final = 1 << 40  # bytes per mailbox; the benchmark measures appends, not quotas
BATCH_POOL: Final = 32  # distinct pre-built batches cycled through in a run
SWEEP_ENVELOPES: Final = 20_000
READ_LIMIT: Final = 100
READ_SAMPLES: Final = 500


def filesystem_of(path: Path) -> str:
    """Name the filesystem type and device `path` lives on (Linux; else "unknown")."""
    best = ("", "unknown", "unknown")
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, mount_point, fs_type = line.split()[:3]
                inside = str(path).startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best[0]):
                    best = (mount_point, fs_type, device)
    except OSError:
        return "unknown"
    return f"{best[1]} on {best[2]} (mounted at {best[0]})"


def percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def make_template(path: Path, count: int) -> list[MailboxId]:
    """Create a database holding `count` empty mailboxes; return their ids."""
    ids = [MailboxId(os.urandom(16)) for _ in range(count)]
    async with open_sqlite_store(path, durability="normal") as store:
        for mailbox in ids:
            await store.create_mailbox(
                MailboxRecord(
                    mailbox=mailbox,
                    write_key=os.urandom(32),
                    read_key=os.urandom(32),
                    admin_key=os.urandom(32),
                    max_bytes=QUOTA,
                    created_at=int(time.time()),
                )
            )
    return ids


def copy_database(template: Path, target: Path) -> None:
    """Copy a closed database (a single file once closed: the WAL is checkpointed away)."""
    shutil.copyfile(template, target)
    target.chmod(0o600)


async def timed_run(
    path: Path,
    durability: Durability,
    batches: list[list[PendingAppend]],
    seconds: float,
) -> tuple[float, list[float]]:
    """Append batches for `seconds`; return appends per second and per-call latencies."""
    latencies: list[float] = []
    appended = 0
    async with open_sqlite_store(path, durability=durability) as store:
        await store.append_batch(batches[0], default_max_bytes=QUOTA)  # warm caches
        start = time.perf_counter()
        deadline = start + seconds
        i = 0
        while True:
            batch = batches[i % len(batches)]
            i += 1
            before = time.perf_counter()
            results = await store.append_batch(batch, default_max_bytes=QUOTA)
            after = time.perf_counter()
            assert all(r.seq is not None for r in results)
            latencies.append(after - before)
            appended += len(batch)
            if after >= deadline:
                break
        elapsed = time.perf_counter() - start
    return appended / elapsed, latencies


async def bench_appends(
    work: Path, template: Path, ids: list[MailboxId], args: argparse.Namespace
) -> None:
    """Print the append table."""
    rng = random.Random(1)
    envelope = os.urandom(ENVELOPE_SIZE)
    print(f"{'durability':<10} {'batch':>5} {'appends/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for durability in args.durabilities:
        for size in args.batches:
            rates: list[float] = []
            p50s: list[float] = []
            p99s: list[float] = []
            for repeat in range(args.repeats):
                expires_at = int(time.time()) + TTL
                batches = [
                    [
                        PendingAppend(
                            mailbox=rng.choice(ids), expires_at=expires_at, envelope=envelope
                        )
                        for _ in range(size)
                    ]
                    for _ in range(BATCH_POOL)
                ]
                path = work / f"run-{durability}-{size}-{repeat}.sqlite3"
                copy_database(template, path)
                rate, latencies = await timed_run(path, durability, batches, args.seconds)
                path.unlink()
                rates.append(rate)
                p50s.append(percentile(latencies, 0.50) * 1000)
                p99s.append(percentile(latencies, 0.99) * 1000)
            print(
                f"{durability:<10} {size:>5} {statistics.median(rates):>10,.0f}"
                f" {statistics.median(p50s):>8.2f} {statistics.median(p99s):>8.2f}",
                flush=True,
            )


async def bench_sweep_and_read(work: Path, template: Path, ids: list[MailboxId]) -> None:
    """Print how long delete_expired and read_after take."""
    path = work / "sweep.sqlite3"
    copy_database(template, path)
    envelope = os.urandom(ENVELOPE_SIZE)
    now = int(time.time())
    async with open_sqlite_store(path, durability="full") as store:
        for start in range(0, SWEEP_ENVELOPES, 500):
            await store.append_batch(
                [
                    PendingAppend(mailbox=ids[i % len(ids)], expires_at=now + 1, envelope=envelope)
                    for i in range(start, start + 500)
                ],
                default_max_bytes=QUOTA,
            )
        samples: list[float] = []
        for i in range(READ_SAMPLES):
            before = time.perf_counter()
            found = await store.read_after(ids[i % len(ids)], 0, limit=READ_LIMIT, now=now)
            samples.append(time.perf_counter() - before)
            assert found
        before = time.perf_counter()
        deleted = await store.delete_expired(now + 2)
        elapsed = time.perf_counter() - before
        assert deleted == SWEEP_ENVELOPES
        pending = store.wal_checkpoint_pending
    chunks = -(-SWEEP_ENVELOPES // DELETE_CHUNK_ROWS)
    print(
        f"\nread_after(limit={READ_LIMIT}) of {SWEEP_ENVELOPES // len(ids)} envelopes:"
        f" p50 {percentile(samples, 0.5) * 1000:.2f} ms, p99 {percentile(samples, 0.99) * 1000:.2f} ms"
    )
    print(
        f"delete_expired of {deleted:,} envelopes ({chunks} chunks of {DELETE_CHUNK_ROWS}) plus"
        f" WAL checkpoint: {elapsed * 1000:.0f} ms, {elapsed / chunks * 1000:.1f} ms per chunk"
        f" on average; checkpoint pending afterwards: {pending}"
    )


async def main(args: argparse.Namespace) -> None:
    """Run every measurement and print the results."""
    work = Path(tempfile.mkdtemp(prefix=".bench-store-", dir=args.dir))
    try:
        print(f"database directory: {work}")
        print(f"filesystem: {filesystem_of(work)}")
        print(
            f"SQLite {sqlite3.sqlite_version}, Python {platform.python_version()},"
            f" {os.cpu_count()} CPUs; {ENVELOPE_SIZE}-byte envelopes over {args.mailboxes}"
            f" mailboxes; median of {args.repeats} runs x {args.seconds} s;"
            f" wal_autocheckpoint {sqlite_store.WAL_AUTOCHECKPOINT_PAGES} pages\n",
            flush=True,
        )
        template = work / "template.sqlite3"
        ids = await make_template(template, args.mailboxes)
        await bench_appends(work, template, ids, args)
        if not args.appends_only:
            await bench_sweep_and_read(work, template, ids)
    finally:
        shutil.rmtree(work)


def parse_args() -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration")
    parser.add_argument("--mailboxes", type=int, default=1000, help="mailboxes to spread over")
    parser.add_argument("--dir", help="where to put the temporary directory (default: bench/)")
    parser.add_argument(
        "--batches", type=lambda s: tuple(int(x) for x in s.split(",")), default=BATCH_SIZES,
        help="batch sizes, comma-separated",
    )  # fmt: skip
    parser.add_argument(
        "--durabilities", type=lambda s: tuple(s.split(",")), default=DURABILITIES,
        help="full,normal (or one of them)",
    )  # fmt: skip
    parser.add_argument(
        "--wal-autocheckpoint", type=int,
        help="override the store's WAL_AUTOCHECKPOINT_PAGES (to compare settings)",
    )  # fmt: skip
    parser.add_argument(
        "--appends-only", action="store_true", help="skip the sweep and read measurements"
    )
    args = parser.parse_args()
    args.dir = Path(args.dir or Path(__file__).parent).resolve()
    if args.wal_autocheckpoint is not None:
        sqlite_store.WAL_AUTOCHECKPOINT_PAGES = args.wal_autocheckpoint  # type: ignore[misc]
    return args


if __name__ == "__main__":
    # Quiet the store's info logs (store_opened, ...); warnings still show.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    trio.run(main, parse_args())
