"""Broadcast channels through a real relay (issue 12, "Channels"; docs/protocol.md §C11).

A channel of four real clients with their own keystores: Ada (admin, who created it as a
channel), Dana (dispatcher), Rory and Rita (responders). The dispatcher's alert reaches
everyone; a responder's answers (a status reply, a receipt) reach the admin and the
dispatcher and no other responder, whose client is handed the sealed answers by the relay
like everything else and cannot open them; a responder's alert or message is refused by
the library before it leaves, and, sent by a client that ignores the setting, by every
member's client.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from cellrelay.client import ChannelError
from cellrelay.client._events import (
    AlertReceived,
    CellEvent,
    CellRole,
    MessageReceived,
    ReceiptReceived,
    SecurityWarning,
    StatusReceived,
)
from cellrelay.protocol.cell._content import Change, ReceiptState, Status
from cellrelay.protocol.cell._dispatch import DISPATCH_KIND, NotForMeError, open_for_dispatch
from cellrelay.protocol.cell._group import Opened
from cellrelay.protocol.wire import RelayAddress

from .cells import Recorder, admit, members
from .conftest import RunningRelay
from .hostile import until
from .test_cells import address_of
from .test_cli import cli, identity, one_line_error
from .test_cli_daemon import start_daemon_process
from .test_leave import change_of

TEST_TIMEOUT = 120
Undispatch = Callable[[Opened], "Opened | list[CellEvent]"]
NAMES = ("ada", "dana", "rory", "rita")


async def test_a_channel_through_a_real_relay(running_relay: RunningRelay, tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with members(tmp_path, *NAMES) as clients:
            ada = await clients["ada"].create_cell(
                "Citywide", address_of(running_relay), channel=True
            )
            cells = {"ada": ada}
            for name in NAMES[1:]:
                cells[name] = await admit(ada, clients[name])
            # The setting travels in the admin-signed welcome: every joiner knows it.
            assert all(c.channel for c in cells.values())
            sealed_seen: dict[str, list[Opened]] = {n: [] for n in NAMES}
            for name, cell in cells.items():
                real = cell._undispatch

                def spy(
                    opened: Opened, name: str = name, real: Undispatch = real
                ) -> Opened | list[CellEvent]:
                    sealed_seen[name].append(opened)
                    return real(opened)

                cell._undispatch = spy  # type: ignore[method-assign]
            async with trio.open_nursery() as nursery:
                recorders = {n: Recorder(c) for n, c in cells.items()}
                for recorder in recorders.values():
                    await nursery.start(recorder.run)
                await ada.set_role(cells["dana"].me, CellRole.DISPATCHER)
                for name in ("rory", "rita"):
                    await ada.set_role(cells[name].me, CellRole.RESPONDER)
                await until(
                    lambda: all(
                        c.role_of(c.find_member(cells["rita"].me.member_id.hex()))
                        is CellRole.RESPONDER
                        for c in cells.values()
                    )
                )
                assert [cells[n].may_post for n in NAMES] == [True, True, False, False]

                # The dispatcher's alert reaches everyone.
                alert = await cells["dana"].send_alert("raid at 14th & Main", place="14th")
                for name in ("ada", "rory", "rita"):
                    await recorders[name].wait_for(
                        lambda e: (
                            isinstance(e, AlertReceived) and e.alert.alert_id == alert.alert_id
                        )
                    )

                # A responder answers: the admin and the dispatcher read it...
                await cells["rory"].reply(alert.alert_id, Status.RESPONDING, note="5 min")
                await cells["rory"].send_receipt([alert.alert_id], ReceiptState.READ)
                for name in ("ada", "dana"):
                    status = await recorders[name].wait_for(
                        lambda e: isinstance(e, StatusReceived) and e.sender.name == "rory"
                    )
                    assert isinstance(status, StatusReceived)
                    assert status.reply.note == "5 min"
                    await recorders[name].wait_for(
                        lambda e: isinstance(e, ReceiptReceived) and e.sender.name == "rory"
                    )
                rollup = cells["dana"].rollup(alert.alert_id)
                assert rollup is not None
                assert rollup.responding == {cells["rory"].me.member_id}

                # ...the other responder is handed both, sealed, and opens neither: the
                # dispatcher's message after them shows it has read past them.
                await cells["dana"].send_message("thanks, all")
                await recorders["rita"].wait_for(lambda e: isinstance(e, MessageReceived))
                from_rory = [
                    o
                    for o in sealed_seen["rita"]
                    if o.sender.member_id == cells["rory"].me.member_id
                ]
                assert len(from_rory) == 2
                assert all(o.kind == DISPATCH_KIND for o in from_rory)
                for opened in from_rory:
                    with pytest.raises(NotForMeError):
                        open_for_dispatch(
                            opened.plaintext,
                            cell_id=ada.cell_id,
                            sender_id=opened.sender.member_id,
                            me=cells["rita"]._identity,
                        )
                assert not [
                    e
                    for e in recorders["rita"].events
                    if isinstance(e, StatusReceived | ReceiptReceived) and e.sender.name == "rory"
                ]
                rita_rollup = cells["rita"].rollup(alert.alert_id)
                assert rita_rollup is not None
                assert not rita_rollup.responding

                # A responder may not post: the library refuses before anything leaves...
                with pytest.raises(ChannelError, match="broadcast channel"):
                    await cells["rory"].send_alert("fake alert")
                with pytest.raises(ChannelError, match="broadcast channel"):
                    await cells["rory"].send_message("who else is here?")
                # ...and a client that ignores the setting is refused by every member.
                cells["rory"].record.channel = False
                await cells["rory"].send_alert("fake alert")
                cells["rory"].record.channel = True
                for name in ("ada", "dana", "rita"):
                    warning = await recorders[name].wait_for(
                        lambda e: isinstance(e, SecurityWarning) and e.reason == "ChannelRefused"
                    )
                    assert isinstance(warning, SecurityWarning)
                    assert "rory" in warning.detail
                assert not [
                    e
                    for r in recorders.values()
                    for e in r.events
                    if isinstance(e, AlertReceived) and e.alert.text == "fake alert"
                ]

                # A responder's leave reaches the readers (the admin removes it), sealed:
                # the other responder learns of the removal only, from the signed log.
                assert await cells["rory"].leave() is True
                for name in ("ada", "dana"):
                    await recorders[name].wait_for(lambda e: change_of(e, Change.LEFT, "rory"))
                await recorders["rita"].wait_for(lambda e: change_of(e, Change.REMOVED, "rory"))
                # Rita is handed the sealed leave too (perhaps after the removal: another
                # mailbox), and opens it no more than the answers.
                await until(
                    lambda: len([o for o in sealed_seen["rita"] if o.sender.name == "rory"]) == 3
                )
                assert not [
                    e for e in recorders["rita"].events if change_of(e, Change.LEFT, "rory")
                ]
                nursery.cancel_scope.cancel()


async def test_a_channel_from_the_command_line_alone_and_through_the_daemon(
    running_relay: RunningRelay, tmp_path: Path, nursery: trio.Nursery
) -> None:
    address = str(RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key))
    lead, ana = (identity(tmp_path, name) for name in ("lead", "ana"))
    created = await cli("cell", "create", "Citywide", "--relay", address, "--channel", home=lead)
    assert "broadcast channel" in created.stdout
    link = (await cli("cell", "invite", "Citywide", "--json", home=lead)).json()["link"]
    await cli("cell", "join", link, "--wait", "0", home=ana)
    await cli("cell", "approve", "Citywide", "ana", "--wait", "60", home=lead)
    await cli("cell", "join", link, "--wait", "60", home=ana)
    listed = (await cli("cell", "list", "--json", home=ana)).json()
    assert [c["channel"] for c in listed["cells"]] == [True]
    assert "channel" in (await cli("cell", "list", home=ana)).stdout
    sent = (await cli("send", "Citywide", "raid at 14th", "--json", home=lead)).json()
    # Ana is a plain member: she answers, and does not post.
    refused = await cli("send", "Citywide", "who else is here?", home=ana, expect=1)
    assert "broadcast channel" in one_line_error(refused)
    await cli("reply", "Citywide", sent["alert_id"][:8], "responding", home=ana)
    daemon = await start_daemon_process(ana, nursery)
    try:
        assert daemon.announced["type"] == "daemon_listening"
        refused = await cli("send", "Citywide", "who else is here?", home=ana, expect=1)
        assert "broadcast channel" in one_line_error(refused)
        listed = (await cli("cell", "list", "--json", home=ana)).json()
        assert [c["channel"] for c in listed["cells"]] == [True]
        await cli("reply", "Citywide", sent["alert_id"][:8], "on-scene", home=ana)
    finally:
        daemon.process.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            code = await daemon.process.wait()
        assert daemon.process.stdout is not None
        await daemon.process.stdout.aclose()
    assert code == 0, daemon.stderr.decode()
    # The lead reads Ana's sealed answers: her latest status is on scene.
    alerts = (await cli("alerts", "Citywide", "--json", home=lead)).json()
    responders = alerts[0]["rollup"]["responders"]
    assert [(r["name"], r["status"]) for r in responders] == [("ana", "on_scene")]
