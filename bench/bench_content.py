"""Speed of message contents, the alert roll-up and invite links, on one core.

Run: `python bench/bench_content.py` (about 5 seconds). Prints the median time per
operation over several repeats (`time.perf_counter_ns`):

* encode and decode of a typical alert (a sentence, a place) and status reply: next to
  the ~100 µs a group message costs to decrypt and verify, these should be a few µs;
* `RollupBook.add` of a status reply into an alert 100 members answer (the issue's cell
  size), and `active(now)` over 20 live alerts;
* an invite's `to_link` and `Invite.parse`, and its terminal QR rendering (once per
  invite, so milliseconds are fine).
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellrelay.client._qr import invite_qr_terminal
from cellrelay.protocol.cell._content import (
    Alert,
    MemberId,
    MessageId,
    Priority,
    Status,
    StatusReply,
)
from cellrelay.protocol.cell._content import decode_content as decode
from cellrelay.protocol.cell._invite import Invite
from cellrelay.protocol.cell._rollup import RollupBook
from cellrelay.protocol.wire._address import RelayAddress
from cellrelay.protocol.wire._messages import MailboxId

if TYPE_CHECKING:
    from collections.abc import Callable

REPEATS: Final = 7
T0: Final = 1_767_225_600


def median_us(op: Callable[[], object], per_repeat: int) -> float:
    """Return the median over REPEATS of the mean time of `op`, in microseconds."""
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter_ns()
        for _ in range(per_repeat):
            op()
        times.append((time.perf_counter_ns() - start) / per_repeat / 1000)
    return statistics.median(times)


def main() -> None:
    """Measure and print the table."""
    alert = Alert(
        sent_at_ms=T0 * 1000,
        text="Agents at 14th & Main, two vans, responders needed",
        priority=Priority.URGENT,
        place="14th & Main, outside the laundromat",
        expires_at=T0 + 3600,
    )
    reply = StatusReply(
        sent_at_ms=T0 * 1000 + 1,
        alert_id=alert.alert_id,
        status=Status.ON_SCENE,
        note="at the corner",
    )
    alert_bytes, reply_bytes = alert.encode(), reply.encode()

    book = RollupBook()
    book.add(MemberId(bytes(16)), "lead", alert, T0)
    members = [MemberId(n.to_bytes(16, "big")) for n in range(100)]
    for n, member in enumerate(members):
        book.add(member, f"m{n}", reply, T0)
    later = [
        StatusReply(sent_at_ms=T0 * 1000 + 2 + n, alert_id=alert.alert_id, status=Status.RESOLVED)
        for n in range(100)
    ]
    step = iter(range(10**9))

    def add_status() -> None:
        n = next(step)
        book.add(members[n % 100], "m", later[n % 100], T0)

    many = RollupBook()
    for n in range(20):
        many.add(MemberId(bytes(16)), "lead", Alert(
            message_id=MessageId(n.to_bytes(16, "big")), sent_at_ms=T0 * 1000 + n, text="x",
            priority=Priority.INFO, expires_at=T0 + 3600,
        ), T0)  # fmt: skip

    invite = Invite(
        relay=RelayAddress("relay.example.org", 7446, bytes(32)),
        cell_id=bytes(16),
        cell_name="Eastside Rapid Response",
        join_mailbox=MailboxId(bytes(16)),
        admin_sign_key=bytes(32),
        admin_box_key=bytes(32),
        expires_at=T0 + 86_400,
    )
    link = invite.to_link()

    rows = [
        ("encode alert", median_us(alert.encode, 20_000), f"{len(alert_bytes)} bytes"),
        ("decode alert", median_us(lambda: decode(1, alert_bytes), 20_000), ""),
        ("encode status reply", median_us(reply.encode, 20_000), f"{len(reply_bytes)} bytes"),
        ("decode status reply", median_us(lambda: decode(2, reply_bytes), 20_000), ""),
        ("RollupBook.add (status, 100 responders)", median_us(add_status, 5_000), ""),
        ("RollupBook.active (20 alerts)", median_us(lambda: many.active(T0 + 1), 5_000), ""),
        ("Invite.to_link", median_us(invite.to_link, 5_000), f"{len(link)} characters"),
        ("Invite.parse", median_us(lambda: Invite.parse(link), 5_000), ""),
        ("invite_qr_terminal", median_us(lambda: invite_qr_terminal(link), 20), ""),
    ]
    print(f"cellrelay content benchmark: Python {platform.python_version()}, {platform.machine()}")
    print(f"{'operation':<42} {'median µs':>10}  note")
    for name, us, note in rows:
        print(f"{name:<42} {us:>10.1f}  {note}")


if __name__ == "__main__":
    main()
