"""A cell on three relays (issue 13): real relay processes, killed, frozen and replaced.

Each member's client publishes every envelope to all three relays and reads all three;
the tests take relays away mid-burst and check that every alert reaches every member
exactly once, in the order it was sent, and that a relay answering with another key is
refused and reported while the cell carries on.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Final

import pytest
import trio

from cellrelay.client._cell_admin import Cell
from cellrelay.client._events import AlertReceived, CellEvent, SecurityWarning
from cellrelay.client._link import RelayKeyMismatchError
from cellrelay.protocol.wire import RelayAddress

from ..relay.conftest import RelayFactory, relays
from ..relay.process import RelayProcess, open_relay_process, reap
from ..relay.test_ops_endpoints import scrape
from .cells import Recorder, admit, members
from .test_cli import cli, identity, one_line_error
from .test_cli_daemon import start_daemon_process

__all__ = ["relays"]

TEST_TIMEOUT: Final = 90
BURST: Final = 30  # alerts per burst; a relay is taken away after the first third
KEY_MISMATCH: Final = "the relay's key does not match"  # client/_link.py, a link's status
FREEZE_FOR: Final = 3.0  # seconds a relay stays frozen after the burst (see the test)


@asynccontextmanager
async def three_relays(tmp_path: Path) -> AsyncIterator[list[RelayProcess]]:
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(open_relay_process(tmp_path / f"relay-{n}"))
            for n in range(3)
        ]


def texts(recorder: Recorder) -> Counter[str]:
    return Counter(e.alert.text for e in recorder.events if isinstance(e, AlertReceived))


def _alert(text: str) -> Callable[[CellEvent], bool]:
    return lambda event: isinstance(event, AlertReceived) and event.alert.text == text


async def burst(
    lead: Cell, prefix: str, around: Callable[[], Awaitable[object]], recorders: list[Recorder]
) -> None:
    """Send BURST alerts, calling `around` after the first third; check every member got
    each exactly once and in order."""
    sent = [f"{prefix} {n}" for n in range(BURST)]
    for n, text in enumerate(sent):
        await lead.send_alert(text)
        if n == BURST // 3:
            await around()
    marker = f"{prefix} end"
    await lead.send_alert(marker)
    for recorder in recorders:
        await recorder.wait_for(_alert(marker), timeout=60)
        got = texts(recorder)
        assert [t for t in sent if got[t] != 1] == [], "every alert exactly once"
        order = [
            e.alert.text
            for e in recorder.events
            if isinstance(e, AlertReceived) and e.alert.text.startswith(prefix + " ")
        ]
        assert order == [*sent, marker], "in the order it was sent"
        assert not [e for e in recorder.events if isinstance(e, SecurityWarning)]


@asynccontextmanager
async def cell_on_three(
    tmp_path: Path, relays: list[RelayProcess], nursery: trio.Nursery
) -> AsyncIterator[tuple[Cell, list[Cell], list[Recorder]]]:
    async with members(tmp_path, "lead", "ana", "ben") as clients:
        lead = await clients["lead"].create_cell("Eastside", [str(r.address) for r in relays])
        # A burst is faster than flood control lets one member be (10 a minute): an epoch
        # change, which every relay carries, raises the limit first.
        await lead.set_alert_limit(1000)
        cells = [await admit(lead, clients[name]) for name in ("ana", "ben")]
        recorders = [Recorder(cell) for cell in cells]
        for recorder in recorders:
            await nursery.start(recorder.run)
        yield lead, cells, recorders


async def test_every_relay_holds_the_cell_with_its_own_keys(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """The mailboxes exist on each relay, and the joiners learned every relay."""
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            three_relays(tmp_path) as relays,
            cell_on_three(tmp_path, relays, nursery) as (
                lead,
                cells,
                recorders,
            ),
        ):
            for cell in (lead, *cells):
                assert [f.record.relay for f in cell.further] == [
                    str(r.address) for r in relays[1:]
                ]
                assert len({link.address.port for link in cell.links}) == 3
            await lead.send_alert("to all three")
            for recorder in recorders:
                await recorder.wait_for(_alert("to all three"))
            for cell in cells:  # each member read the alert on every relay
                for further in cell.further:
                    with trio.fail_after(20):
                        while further.record.group_cursor == 0:
                            await trio.sleep(0.02)
            # Mailbox ids are each relay's own.
            ids = {lead.record.group_mailbox, *(f.record.group_mailbox for f in lead.further)}
            assert len(ids) == 3


@pytest.mark.parametrize("victim", [0, 2])
async def test_a_relay_killed_mid_burst_loses_no_alert(
    tmp_path: Path, nursery: trio.Nursery, victim: int
) -> None:
    """kill -9 of the first relay, or of a further one, during a burst of alerts."""
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            three_relays(tmp_path) as relays,
            cell_on_three(tmp_path, relays, nursery) as (
                lead,
                _,
                recorders,
            ),
        ):
            await burst(lead, "killed", lambda: relays[victim].kill(), recorders)


async def test_a_relay_frozen_then_resumed_shows_nothing_twice(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """SIGSTOP the first relay during a burst; SIGCONT later; nothing lost, nothing twice.

    The issue says 30 s. What the length changes is only what the frozen relay holds when
    it wakes: the publishes and subscriptions the clients left waiting on its sockets,
    which it then stores and delivers late, as second copies. FREEZE_FOR past the end of
    the burst covers that without the suite waiting half a minute; a freeze longer than
    three ping intervals (the link then gives up and reconnects, client/_link.py) is the
    kill -9 case above, plus a late reconnect.
    """
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            three_relays(tmp_path) as relays,
            cell_on_three(tmp_path, relays, nursery) as (lead, _, recorders),
        ):
            pid = relays[0].process.pid

            async def freeze() -> None:
                os.kill(pid, signal.SIGSTOP)

            try:
                await burst(lead, "frozen", freeze, recorders)
                await trio.sleep(FREEZE_FOR)  # the scenario's length, not a wait for a condition
            finally:
                os.kill(pid, signal.SIGCONT)
            # The first relay's subscribers get the whole burst again from it: all quiet
            # replays, seen here as no alert twice in the next burst's check.
            await burst(lead, "thawed", _nothing, recorders)
            for recorder in recorders:
                # Read to its end on the thawed relay too (the lead reads its own back).
                while recorder.cell.record.group_cursor < lead.record.group_cursor:
                    await trio.sleep(0.02)
                assert texts(recorder)["frozen 0"] == 1


async def _nothing() -> None:
    pass


@pytest.mark.parametrize("victim", [0, 1])
async def test_a_relay_replaced_by_another_key_is_refused_and_the_cell_carries_on(
    tmp_path: Path, nursery: trio.Nursery, victim: int
) -> None:
    """The first relay (or a further one) is stopped and another relay, with another key,
    takes its address.

    Every client refuses it (the handshake fails: the key is pinned) and says so in that
    relay's link status; alerts go on through the other two, to a member that was
    running and to one that starts while the impostor holds the address (its start must
    not wait on the first relay).
    """
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            three_relays(tmp_path) as relays,
            members(tmp_path, "lead", "ana") as clients,
        ):
            lead = await clients["lead"].create_cell("Eastside", [str(r.address) for r in relays])
            ana = await admit(lead, clients["ana"])
            async with members(tmp_path, "ben") as later:
                await admit(lead, later["ben"])
            heard = Recorder(ana)
            await nursery.start(heard.run)

            original = relays[victim]
            port = original.port
            await original.terminate()
            async with (
                open_relay_process(tmp_path / "impostor", listen=f"127.0.0.1:{port}") as impostor,
                members(tmp_path, "ben") as again,
            ):
                assert impostor.public_key != original.public_key
                ben = again["ben"].cell("Eastside")
                heard_by_ben = Recorder(ben)
                await nursery.start(heard_by_ben.run)
                await lead.send_alert("despite the impostor")
                for recorder in (heard, heard_by_ben):
                    await recorder.wait_for(_alert("despite the impostor"))
                # Ben started while the impostor held the first relay's address: heard too.
                await ben.send_alert("ben is heard")
                await heard.wait_for(_alert("ben is heard"))
                for cell in (lead, ana, ben):
                    link = cell.links[victim]  # the replaced relay's: refused for its key
                    while link.status is None or link.status.reason != KEY_MISMATCH:
                        await trio.sleep(0.02)
                    assert not link.connected
                    assert all(other.connected for other in cell.links if other is not link)
                if victim:  # Ben's client never watched the impostor, and says why
                    with pytest.raises(RelayKeyMismatchError):
                        await ben.further[victim - 1].wait_synced()
                # The impostor never got past a handshake: nothing of the cell reached it.
                samples = await scrape(impostor.ops_port)
                assert samples.get('cellrelay_handshakes_total{result="ok"}', 0) == 0
                assert samples["cellrelay_mailboxes"] == 0


async def test_the_command_line_creates_a_cell_on_several_relays_alone_and_through_a_daemon(
    relays: RelayFactory, tmp_path: Path, nursery: trio.Nursery
) -> None:
    """`cell create --relay A --relay B`, standing alone and through a daemon; four refused."""
    running = [await relays.start() for _ in range(3)]
    addresses = [str(RelayAddress("127.0.0.1", r.port, r.public_key)) for r in running]
    lead = identity(tmp_path, "lead")
    created = (
        await cli(
            "cell",
            "create",
            "North",
            "--relay",
            addresses[0],
            "--relay",
            addresses[1],
            "--json",
            home=lead,
        )
    ).json()
    assert created["relay"] == addresses[0]
    assert created["more_relays"] == [addresses[1]]
    await cli("send", "North", "on both", home=lead)
    # Two mailboxes on each relay, and the alert (after the distribution) stored on both.
    for relay in running[:2]:
        assert relay.relay.metrics.mailboxes_created.value == 2
        assert relay.relay.metrics.publishes.value >= 2
    four = await cli("cell", "create", "X", *(a for r in (*addresses, addresses[0]) for a in ("--relay", r)), home=lead, expect=1)  # fmt: skip
    assert "at most three relays" in one_line_error(four)

    daemon = await start_daemon_process(lead, nursery)
    try:
        through = await cli("cell", "create", "South", "--relay", addresses[1], "--relay", addresses[2], "--json", home=lead, passphrase=None)  # fmt: skip
        assert through.json()["more_relays"] == [addresses[2]]
        assert running[2].relay.metrics.mailboxes_created.value == 2
        twice = await cli("cell", "create", "Y", "--relay", addresses[0], "--relay", addresses[0], home=lead, passphrase=None, expect=1)  # fmt: skip
        assert "another relay" in one_line_error(twice)
    finally:
        daemon.process.send_signal(signal.SIGTERM)
        await reap(daemon.process)

    # The first relay of "North" is replaced by another key on its address: the command
    # line refuses it and still sends through the second relay, without waiting it out.
    port = running[0].port
    await running[0].relay.shutdown()
    impostor = await relays.start(listen=(f"127.0.0.1:{port}",))
    sent = await cli("send", "North", "despite the impostor", "--timeout", "30", home=lead)
    assert sent.returncode == 0
    assert impostor.relay.metrics.publishes.value == 0


async def test_a_member_removed_while_a_relay_is_down_reads_nothing_new_when_it_returns(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Relay 3 is stopped; the lead removes ben; relay 3 comes back with its data.

    The removal reaches relay 3 when it returns (the admin's client rotates the keys
    there, then posts the change: a member reading relay 3 catches up), and ben reads
    nothing sent after his removal, on any relay.
    """
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            three_relays(tmp_path) as relays,
            cell_on_three(tmp_path, relays, nursery) as (lead, (ana, ben), (heard, heard_by_ben)),
        ):
            down = relays[2]
            port, data_dir = down.port, down.data_dir
            await down.terminate()
            epoch = lead.crypto.epoch
            await lead.remove(ben.me)
            assert lead.crypto.epoch == epoch + 1
            await lead.send_alert("after the removal")
            await heard.wait_for(_alert("after the removal"))
            returned = ana.further[1]
            control_before, group_before = (
                returned.record.control_cursor,
                returned.record.group_cursor,
            )
            async with open_relay_process(data_dir, listen=f"127.0.0.1:{port}"):
                # Ana reads the removal on the returned relay too: it caught up.
                while returned.record.control_cursor <= control_before:
                    await trio.sleep(0.02)
                await lead.send_alert("with every relay back")
                await heard.wait_for(_alert("with every relay back"))
                # And reads the new epoch's messages there, with the new keys: the alert,
                # or at least the sender key distributions of the new epoch.
                while returned.record.group_cursor <= group_before:
                    await trio.sleep(0.02)
            assert ben.removed
            new = {"after the removal", "with every relay back"}
            assert not [
                e
                for e in heard_by_ben.events
                if isinstance(e, AlertReceived) and e.alert.text in new
            ]


async def test_members_who_each_reach_only_another_relay_hear_each_other(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """Ana reaches only the first relay, Ben only the second; the lead reaches all three.

    Their links to the other relays are closed (as if a network blocked them): what each
    sends reaches one relay only, and the lead's client, which reads it there and not on
    the others, copies it over within COPY_AFTER.
    """
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            three_relays(tmp_path) as relays,
            cell_on_three(tmp_path, relays, nursery) as (
                lead,
                (ana, ben),
                (heard_by_ana, heard_by_ben),
            ),
        ):
            for link in ana.links[1:]:
                await link.aclose()
            for link in (ben.links[0], ben.links[2]):
                await link.aclose()
            await ana.send_alert("from ana, on the first relay only")
            await heard_by_ben.wait_for(_alert("from ana, on the first relay only"), timeout=30)
            await ben.send_alert("from ben, on the second relay only")
            await heard_by_ana.wait_for(_alert("from ben, on the second relay only"), timeout=30)
            # Each exactly once, though it now reached every relay.
            await lead.send_alert("marker")
            for recorder in (heard_by_ana, heard_by_ben):
                await recorder.wait_for(_alert("marker"))
            assert texts(heard_by_ben)["from ana, on the first relay only"] == 1
            assert texts(heard_by_ana)["from ben, on the second relay only"] == 1


async def test_an_invite_names_every_relay_and_works_while_the_first_is_down(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """The invite is format 2 with a join mailbox on each relay; the first relay is then
    stopped, and a joiner asks, is approved, is welcomed and hears the cell through the
    other two."""
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            three_relays(tmp_path) as relays,
            members(tmp_path, "lead", "cy") as clients,
        ):
            lead = await clients["lead"].create_cell("Eastside", [str(r.address) for r in relays])
            invite = await lead.invite()
            assert [str(e.relay) for e in invite.relays] == [str(r.address) for r in relays]
            assert len({e.join_mailbox for e in invite.relays}) == 3
            link = invite.to_link()
            assert link.startswith("cellrelay://join/")
            await relays[0].terminate()
            pending = await clients["cy"].request_join(link)
            while not lead.join_requests:
                await trio.sleep(0.02)
            await lead.approve()
            cy = await clients["cy"].wait_joined(pending)
            assert [f.record.relay for f in cy.further] == [str(r.address) for r in relays[1:]]
            heard = Recorder(cy)
            await nursery.start(heard.run)
            await lead.send_alert("welcome, cy")
            await heard.wait_for(_alert("welcome, cy"))
            heard_by_lead = Recorder(lead)
            await nursery.start(heard_by_lead.run)
            await cy.send_alert("cy is heard")
            await heard_by_lead.wait_for(_alert("cy is heard"))
