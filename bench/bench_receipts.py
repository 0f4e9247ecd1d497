"""Receipts per alert: one receipt per member per alert (before) against sampled, batched ones.

Run: `python bench/bench_receipts.py` (a few seconds; `--help`).

Before issue 14 item 6, a member said "delivered" and "read" with `Cell.send_receipt`, one
receipt each per alert: 2 (N - 1) group messages per alert, each fanned out by the relay
to all N members. Now (protocol/cell/_receipts.py, docs/protocol.md §C1.7) only the
alert's sampled reporters (32) report, and each reporter batches what it has to say
into at most one receipt per state per window (5 to 15 s).

For N = 10, 100 and 1,000 members this drives the real code: `reporters` picks the sample
for each alert, every member's `ReceiptBatch` is fed the alerts it must report on, as
delivered at once and read a minute later, and every receipt its `take` gives is counted,
with the relay's deliveries (each group message goes to N members). It does this for one
alert alone, and for a burst of ten alerts in ten seconds, which batching merges. Then the
sender's estimate of "delivered" against the truth, when a random 70% of members got the
alert (the median and 90th percentile absolute error over 500 alerts), and what one member
spends on `reporters` per alert (median of 200 alerts). Note that the group layer caps a
cell at 128 members today (protocol/cell/_membership.py): 1,000 is the scale the design
must hold at, computed here rather than run through a relay.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _benchlib import machine_summary

from cellrelay.protocol.cell._content import MessageId, ReceiptState
from cellrelay.protocol.cell._receipts import (
    RECEIPT_SAMPLE,
    ReceiptBatch,
    ReceiptTally,
    reporters,
)

READ_AFTER = 60.0  # seconds after delivery that a member reads the alert


def _member(n: int) -> bytes:
    return n.to_bytes(16, "big")


def old_scheme(members: int, alerts: int) -> int:
    """Receipts sent for `alerts` alerts when every member sends delivered and read per alert."""
    return alerts * 2 * (members - 1)


def new_scheme(members: int, alert_times: list[float], rng: random.Random) -> int:
    """Receipts sent with sampling and batching, counted from the real `ReceiptBatch`es."""
    ids = [_member(n) for n in range(members)]
    sender = ids[0]
    batches = {m: ReceiptBatch() for m in ids[1:]}
    events: list[tuple[float, bytes, MessageId, ReceiptState]] = []
    for t in alert_times:
        alert_id = MessageId(rng.randbytes(16))
        for m in reporters(alert_id, sender, ids):
            events.append((t, m, alert_id, ReceiptState.DELIVERED))
            events.append((t + READ_AFTER, m, alert_id, ReceiptState.READ))
    events.sort(key=lambda e: e[0])
    sent = 0
    horizon = max(alert_times) + READ_AFTER + 60.0
    step, now, i = 0.5, 0.0, 0
    while now <= horizon:
        while i < len(events) and events[i][0] <= now:
            _, m, alert_id, state = events[i]
            batches[m].add(alert_id, state, now=now, draw=rng.random())
            i += 1
        for batch in batches.values():
            sent += len(batch.take(now))
        now += step
    return sent


def estimate_error(members: int, rng: random.Random, trials: int = 500) -> tuple[float, float]:
    """Median and p90 of |estimated delivered - true delivered| when 70% got the alert."""
    ids = [_member(n) for n in range(members)]
    errors = []
    for _ in range(trials):
        alert_id = MessageId(rng.randbytes(16))
        tally = ReceiptTally()
        tally.track(alert_id, ids[0], ids)
        got = set(rng.sample(ids[1:], round(0.7 * (members - 1))))
        for m in reporters(alert_id, ids[0], ids):
            if m in got:
                tally.add(alert_id, m, ReceiptState.DELIVERED)
        counts = tally.counts(alert_id)
        assert counts is not None
        errors.append(abs(counts.estimated_delivered - len(got)))
    errors.sort()
    return statistics.median(errors), errors[int(0.9 * len(errors))]


def reporters_cost(members: int, rng: random.Random, rounds: int = 200) -> float:
    """Median microseconds for one member to compute an alert's sample."""
    ids = [_member(n) for n in range(members)]
    times = []
    for _ in range(rounds):
        alert_id = rng.randbytes(16)
        start = time.perf_counter()
        reporters(alert_id, ids[0], ids)
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(machine_summary())
    print(
        f"sample {RECEIPT_SAMPLE}; reads {READ_AFTER:.0f} s after delivery; relay deliveries = messages x N"
    )
    print()
    head = (
        f"{'members':>7}  {'alerts':>6}  {'old msgs/alert':>14}  {'new msgs/alert':>14}  "
        f"{'old deliveries/alert':>20}  {'new deliveries/alert':>20}  {'ratio':>6}"
    )
    print(head)
    for n in args.members:
        for label, times in (("1", [0.0]), ("10 in 10 s", [float(t) for t in range(10)])):
            old = old_scheme(n, len(times)) / len(times)
            new = new_scheme(n, times, rng) / len(times)
            print(
                f"{n:>7}  {label:>6}  {old:>14.1f}  {new:>14.1f}  {old * n:>20,.0f}  "
                f"{new * n:>20,.0f}  {old / new:>5.1f}x"
            )
    print()
    print(f"{'members':>7}  {'|estimate - true| median':>25}  {'p90':>5}  {'reporters() us':>15}")
    for n in args.members:
        med, p90 = estimate_error(n, rng)
        print(f"{n:>7}  {med:>25.0f}  {p90:>5.0f}  {reporters_cost(n, rng):>15.0f}")


if __name__ == "__main__":
    main()
