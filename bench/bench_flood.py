"""A planted member floods a cell: how fast the cell posts again, and what parked envelopes cost.

Run: `python bench/bench_flood.py` (about a minute; `--help` for the knobs). Two parts:

(a) **Saving with 256 parked envelopes** (issue 15). A member's state holding the
    parking buffer's worth of envelopes (256 of 4 KiB: 1 MiB, what anyone who can write
    the group mailbox, or the relay, could make it hold), saved the way the client saved
    it before (`CellCrypto.to_bytes()`, parked envelopes inside, re-encoded and rewritten
    by every save) and the way it saves it now (`to_bytes(parked=False)`: the envelopes
    are fetched from the relay again instead, client/_cell_refetch.py), side by side in
    one run: encoding the state, then `Keystore.save` without and with its fsyncs, as the
    client does after deliveries and before sends. Medians of `--saves` saves each.

(b) **Removal to the first post** (issue 15: within 60 s). A `python -m cellrelay.relay
    serve` process (SQLite on disk, durability full) *at its default limits* (16 MiB per
    mailbox, 7-day envelopes, the default publish rates), three members in this process
    (lead, ben, eve; full clients with keystores on disk). Eve floods the group mailbox
    from three raw connections with 16 KiB alerts that live 7 days, until the relay
    refuses even the smallest envelope (`MAILBOX_FULL`); ben's next send fails. Then the
    lead removes eve, and ben posts again and again every 10 ms until the relay accepts:
    the time from calling `Cell.remove` to that acceptance is the figure (also split into
    `remove` itself and the wait after it). `--rounds` fresh cells, medians.

Figures share two cores with the relay and whatever else runs on the machine: "other
load" is printed as in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog
import trio
from _benchlib import (
    PERMISSIVE_RELAY_FLAGS,
    OtherLoad,
    machine_summary,
    run_relay,
    temporary_directory,
    tree_state,
)

from cellrelay.client._cell_member import CellError, MailboxFullError
from cellrelay.client._client import create_identity, open_client
from cellrelay.client._keystore import TEST_COST, Keystore
from cellrelay.client._state import CellRecord, ClientState
from cellrelay.protocol import CellrelayError
from cellrelay.protocol._crypto import random_bytes
from cellrelay.protocol.cell._group import CellCrypto
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._invite import Invite
from cellrelay.protocol.cell._receiver import MAX_PENDING
from cellrelay.protocol.cell._state import Parked
from cellrelay.protocol.wire import MailboxId, RelayAddress
from cellrelay.relay._config import RelayConfig
from tests.client.cells import admit
from tests.client.flood import flood

if TYPE_CHECKING:
    from collections.abc import Callable

    from cellrelay.client._cell_admin import Cell

PASSPHRASE: Final = "benchmark passphrase"  # noqa: S105 - throwaway keystores at TEST_COST
TARGET_SECONDS: Final = 60.0
STEP_TIMEOUT: Final = 300.0


def quiet_logs() -> None:
    """The client library's warnings (a flood makes many) go to stderr, errors only."""
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
    )


# -- (a) saving with parked envelopes -----------------------------------------------------------


def _invite(cell: CellCrypto, now: float) -> Invite:
    """An invite to `cell` for its welcome to answer (a welcome answers one, §G7)."""
    return Invite(
        relay=RelayAddress("127.0.0.1", 7446, bytes(range(32))),
        cell_id=cell.cell_id,
        cell_name=cell.name or "bench",
        join_mailbox=MailboxId(bytes(16)),
        admin_sign_key=cell.me.sign_pub,
        admin_box_key=cell.me.dh_pub,
        expires_at=int(now) + 3600,
    )


def parked_state() -> tuple[CellCrypto, Identity]:
    """A member (bob) whose parking buffer holds 256 envelopes of 4 KiB (1 MiB).

    The old code let anyone who could write the group mailbox, the relay included, fill
    it so; now envelopes of future epochs get half of it and claimed senders a quarter
    each, and none of it is saved. Filled directly, as the old code allowed.
    """
    admin = Identity.generate("admin")
    bob = Identity.generate("bob")
    lead = CellCrypto.create(admin, now=time.time(), group_keys=(bytes(32), bytes(32)),
                             control_read_key=bytes(32), name="bench")  # fmt: skip
    change = lead.add_member(bob.info, now=time.time())
    lead.open_control(change, now=time.time())
    invite = _invite(lead, time.time())
    welcome = lead.welcome_for(bob.member_id, now=time.time(), invite=invite)
    member, _ = CellCrypto.from_welcome(bob, welcome, now=time.time(), invite=invite)
    epoch, now = member.epoch + 1, time.time()
    member._s.parked = [
        Parked(b"\x01" + epoch.to_bytes(4, "big") + random_bytes(4096 - 5), epoch, None, now, seq)
        for seq in range(MAX_PENDING)
    ]
    return member, bob


def save_part(saves: int) -> dict[str, Any]:
    print(
        f"(a) saving a member's state with {MAX_PENDING} parked envelopes of 4 KiB, medians of {saves}"
    )
    member, identity = parked_state()
    figures: dict[str, Any] = {}
    with temporary_directory("cellrelay-bench-save-") as workdir:
        for label, parked in (("before: parked saved", True), ("now: fetched again", False)):
            path = workdir / f"keystore-{parked}"
            state = ClientState(identity=identity.to_bytes())
            record = CellRecord(crypto=b"", relay="cellrelay://bench", group_mailbox=MailboxId(bytes(16)),
                                control_mailbox=MailboxId(bytes([1]) * 16))  # fmt: skip
            state.cells.append(record)
            keystore = Keystore.create(path, PASSPHRASE, state.encode(), cost=TEST_COST)
            try:
                row: dict[str, float] = {}
                for durable in (False, True):
                    times = []
                    for _ in range(saves):
                        start = time.perf_counter()
                        member._s.membership_wire = None  # a changed state, as after a delivery
                        record.crypto = member.to_bytes(parked=parked)
                        keystore.save(state.encode(), durable=durable)
                        times.append((time.perf_counter() - start) * 1000)
                    row["fsync" if durable else "no fsync"] = statistics.median(times)
                row["bytes"] = len(state.encode())
            finally:
                keystore.close()
            figures[label] = row
            print(f"    {label:24} {row['bytes'] / 1024:8.0f} KiB   save {row['no fsync']:6.2f} ms"
                  f"   with fsync {row['fsync']:6.2f} ms")  # fmt: skip
    before, now = figures["before: parked saved"], figures["now: fetched again"]
    print(f"    ratio before/now: {before['no fsync'] / now['no fsync']:.1f}x without fsync,"
          f" {before['fsync'] / now['fsync']:.1f}x with")  # fmt: skip
    return figures


# -- (b) removal to the first post ------------------------------------------------------------


def default_limit_flags() -> list[str]:
    """The relay's own defaults for every limit run_relay raises (passed after, so they win)."""
    defaults = RelayConfig()
    flags = []
    for flag in PERMISSIVE_RELAY_FLAGS[::2]:
        name = flag.removeprefix("--").replace("-", "_")
        flags += [flag, str(getattr(defaults, name))]
    return flags


async def poll(condition: Callable[[], bool]) -> None:
    with trio.fail_after(STEP_TIMEOUT):
        while not condition():  # noqa: ASYNC110 - client state has no event to wait on
            await trio.sleep(0.01)


async def one_round(address: RelayAddress, home: Path) -> dict[str, float]:
    for name in ("lead", "ben", "eve"):
        create_identity(PASSPHRASE, name, home=home / name, cost=TEST_COST)
    async with (
        open_client(PASSPHRASE, home=home / "lead") as lead_client,
        open_client(PASSPHRASE, home=home / "ben") as ben_client,
        open_client(PASSPHRASE, home=home / "eve") as eve_client,
    ):
        lead = await lead_client.create_cell("Flooded", address)
        ben = await admit(lead, ben_client)
        eve = await admit(lead, eve_client)
        flood_start = time.monotonic()
        stored = await flood(address.port, address.public_key, eve)
        flooded = time.monotonic() - flood_start
        try:
            await ben.send_message("during the flood")
        except MailboxFullError:
            pass
        else:
            raise AssertionError("the mailbox was not full")
        start = time.monotonic()
        await lead.remove(lead.find_member("eve"))
        removed = time.monotonic()
        with trio.fail_after(STEP_TIMEOUT):
            await post(ben)
        posted = time.monotonic()
        return {"stored": stored, "flood_s": flooded, "remove_s": removed - start,
                "then_post_s": posted - removed, "total_s": posted - start}  # fmt: skip


async def post(cell: Cell) -> None:
    while True:
        try:
            await cell.send_alert("after the removal")
        except (CellrelayError, CellError):  # the cell is still moving: try again
            await trio.sleep(0.01)
        else:
            return


def removal_part(rounds: int) -> dict[str, Any]:
    print(
        f"(b) removal of a flooder to the next accepted post, relay at its default limits, {rounds} rounds"
    )
    results = []
    with run_relay(*default_limit_flags()) as relay:
        address = RelayAddress("127.0.0.1", relay.port, relay.public_key)
        print(f"    {relay.notes[-1]}; then the defaults: {' '.join(default_limit_flags())}")
        for n in range(rounds):
            load = OtherLoad([relay.pid])
            with temporary_directory("cellrelay-bench-flood-") as home:
                figures = trio.run(one_round, address, home)
            figures["other_load"] = load.cores()
            results.append(figures)
            print(f"    round {n + 1}: {figures['stored']} envelopes filled the mailbox in"
                  f" {figures['flood_s']:.1f} s; remove {figures['remove_s'] * 1000:.0f} ms,"
                  f" then first post {figures['then_post_s'] * 1000:.0f} ms:"
                  f" {figures['total_s'] * 1000:.0f} ms (other load {figures['other_load']:.2f})")  # fmt: skip
    median = statistics.median(r["total_s"] for r in results)
    worst = max(r["total_s"] for r in results)
    verdict = "PASS" if worst <= TARGET_SECONDS else "MISS"
    print(f"    median {median * 1000:.0f} ms, worst {worst * 1000:.0f} ms;"
          f" target ≤ {TARGET_SECONDS:.0f} s: {verdict}")  # fmt: skip
    return {"rounds": results, "median_s": median, "worst_s": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--saves", type=int, default=50, help="saves per case in (a) (default 50)")
    parser.add_argument("--rounds", type=int, default=3, help="flooded cells in (b) (default 3)")
    parser.add_argument("--skip-save", action="store_true", help="only part (b)")
    parser.add_argument("--skip-removal", action="store_true", help="only part (a)")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args()
    quiet_logs()
    print(f"cellrelay flood benchmark: {machine_summary()}")
    print(tree_state())
    figures: dict[str, Any] = {}
    if not args.skip_save:
        figures["save"] = save_part(args.saves)
    if not args.skip_removal:
        figures["removal"] = removal_part(args.rounds)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
