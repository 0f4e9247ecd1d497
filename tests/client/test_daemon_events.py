"""Server-Sent Events: the hub on its own, then streams from real daemons on a real relay.

What must hold: every library event reaches the stream with an id; a client resumes with
Last-Event-ID and gets exactly what it missed; a client that asks for what the ring no
longer holds is told so; a slow or vanished client never stalls the others.
"""

from __future__ import annotations

import typing
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from cellrelay.client._api_types import StreamEvent
from cellrelay.client._client import create_identity
from cellrelay.client._daemon import run_daemon
from cellrelay.client._daemon_client import SseEvent, open_daemon
from cellrelay.client._events import CellEvent
from cellrelay.client._keystore import TEST_COST
from cellrelay.client._schema import type_name
from cellrelay.client._sse import LISTENER_BUFFER, RING_EVENTS, EventHub, serve_stream

from ..relay.process import open_relay_process
from .conftest import RunningRelay
from .daemons import PASSPHRASE, PATIENCE, RunningDaemon, admit, make_cell, start_daemon

# -- the hub --------------------------------------------------------------------------------


def test_every_library_event_type_is_in_the_stream_union() -> None:
    """New events added to CellEvent flow to the stream without a change in the daemon."""
    streamed = set(typing.get_args(StreamEvent))
    assert set(typing.get_args(CellEvent)) <= streamed
    assert {type_name(t) for t in streamed} >= {"alert_received", "status_received",
                                                "relay_state_changed", "events_missed"}  # fmt: skip


async def test_resume_gives_exactly_what_was_missed() -> None:
    hub = EventHub(run="r1")
    for n in range(5):
        hub.publish({"n": n})
    listener = hub.listen("r1-2")
    assert [f.split(b"\n")[0] for f in listener.replay] == [b"id: r1-3", b"id: r1-4", b"id: r1-5"]
    hub.publish({"n": 5})
    assert listener.receive.receive_nowait().startswith(b"id: r1-6\n")
    assert hub.listen("r1-6").replay == []
    assert hub.listen(None).replay == []


@pytest.mark.parametrize(
    ("last", "reason"),
    [("r0-3", "daemon_restarted"), ("r1-99", "unknown_id"), ("nonsense", "unknown_id")],
)
async def test_an_id_the_hub_cannot_resume_from_is_reported(last: str, reason: str) -> None:
    hub = EventHub(run="r1")
    hub.publish({"n": 1})
    replay = hub.listen(last).replay
    assert replay[0] == f'data: {{"type":"events_missed","reason":"{reason}"}}\n\n'.encode()
    assert not replay[0].startswith(b"id:")  # it does not move the client's Last-Event-ID


async def test_an_id_older_than_the_ring_is_reported_then_the_ring_replayed() -> None:
    hub = EventHub(run="r1")
    for n in range(RING_EVENTS + 10):
        hub.publish({"n": n})
    replay = hub.listen("r1-3").replay
    assert b"too_old" in replay[0]
    assert len(replay) == RING_EVENTS + 1
    assert replay[1].startswith(b"id: r1-11\n")


async def test_a_listener_that_stops_reading_is_dropped_and_the_others_get_everything() -> None:
    hub = EventHub(run="r1")
    slow = hub.listen(None)
    fast = hub.listen(None)
    got: list[bytes] = []
    for n in range(LISTENER_BUFFER * 3):
        hub.publish({"n": n})  # never waits, whoever is behind
        got.append(fast.receive.receive_nowait())
    assert len(got) == LISTENER_BUFFER * 3
    assert slow.dropped
    held = [slow.receive.receive_nowait() for _ in range(LISTENER_BUFFER)]
    with pytest.raises(trio.EndOfChannel):
        slow.receive.receive_nowait()
    assert len(held) == LISTENER_BUFFER  # what it had, then the end: it resumes from the ring
    assert hub.dropped == 1


async def test_streams_filtered_by_cell_and_keepalive_comments() -> None:
    hub = EventHub(run="r1", keepalive=0.05)
    listener = hub.listen(None, cell_id=b"a")
    hub.publish({"n": 1}, cell_id=b"b")
    hub.publish({"n": 2}, cell_id=b"a")
    hub.publish({"n": 3})  # no cell: everyone's
    written: list[bytes] = []

    async def send(data: bytes) -> None:
        written.append(data)

    with trio.move_on_after(0.3):
        await serve_stream(hub, listener, send)
    text = b"".join(written)
    assert text.startswith(b"retry: ")
    assert b'"n":2' in text
    assert b'"n":3' in text
    assert b'"n":1' not in text
    assert b": keep-alive\n\n" in text


# -- streams from daemons ---------------------------------------------------------------------


class Stream:
    """An open /events stream whose events are collected in the background."""

    def __init__(self) -> None:
        self.events: list[SseEvent] = []
        self.changed = trio.Event()

    async def run(
        self, daemon: RunningDaemon, path: str, headers: dict[str, str] | None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:  # fmt: skip
        async with open_daemon(daemon.address.socket) as connection:
            stream = await connection.open_events(path, headers=headers)
            task_status.started()
            async for event in stream:
                self.events.append(event)
                self.changed.set()
                self.changed = trio.Event()

    def of(self, kind: str) -> list[Any]:
        return [e.data for e in self.events if e.data.get("type") == kind]

    async def wait_for(self, kind: str, count: int = 1) -> list[Any]:
        with trio.fail_after(PATIENCE):
            while len(self.of(kind)) < count:
                await self.changed.wait()
        return self.of(kind)


async def open_stream(
    nursery: trio.Nursery, daemon: RunningDaemon, path: str = "/events",
    headers: dict[str, str] | None = None,
) -> Stream:  # fmt: skip
    """Open a stream; return once the daemon has registered it."""
    stream = Stream()
    with trio.fail_after(PATIENCE):
        await nursery.start(stream.run, daemon, path, headers)
    return stream


async def test_alerts_answers_and_join_requests_arrive_as_events(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    lead = await start_daemon(nursery, tmp_path, "lead", tcp=False)
    ana = await start_daemon(nursery, tmp_path, "ana", tcp=False)
    await make_cell(lead, running_relay)
    lead_events = await open_stream(nursery, lead)
    await admit(lead, ana)
    (request,) = await lead_events.wait_for("join_requested")
    assert request["member"]["name"] == "ana"
    ana_events = await open_stream(nursery, ana, "/events?cell=Eastside")
    sent = await lead.ok("POST", "/cells/Eastside/alerts", 201,
                         json_body={"text": "<b>Agents</b> at 14th & Main", "priority": "emergency"})  # fmt: skip
    (alert,) = await ana_events.wait_for("alert_received")
    assert alert["alert"]["text"] == "<b>Agents</b> at 14th & Main"
    assert alert["sender"]["name"] == "lead"
    assert alert["cell"] == "Eastside"
    assert alert["rollup"]["responders"] == {}
    alert_event = next(e for e in ana_events.events if e.data.get("type") == "alert_received")
    assert alert_event.id is not None
    await ana.ok("POST", f"/cells/Eastside/alerts/{sent['alert']['message_id']}/replies", 201,
                 json_body={"status": "responding"})  # fmt: skip
    (status,) = await lead_events.wait_for("status_received")
    assert status["reply"]["status"] == "responding"
    assert [r["name"] for r in status["rollup"]["responders"].values()] == ["ana"]


async def test_a_stream_resumes_with_last_event_id(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    lead = await start_daemon(nursery, tmp_path, "lead", tcp=False)
    ana = await start_daemon(nursery, tmp_path, "ana", tcp=False)
    await make_cell(lead, running_relay)
    await admit(lead, ana)
    async with trio.open_nursery() as inner:
        first = await open_stream(inner, ana)
        await lead.ok("POST", "/cells/Eastside/messages", 201, json_body={"text": "one"})
        await first.wait_for("message_received")
        inner.cancel_scope.cancel()  # the client goes away
    last_id = first.events[-1].id
    assert last_id is not None
    for text in ("two", "three"):
        await lead.ok("POST", "/cells/Eastside/messages", 201, json_body={"text": text})
    with trio.fail_after(PATIENCE):
        while len((await ana.ok("GET", "/cells/Eastside/messages"))["messages"]) < 3:
            await trio.sleep(0.02)
    again = await open_stream(nursery, ana, headers={"last-event-id": last_id})
    received = await again.wait_for("message_received", 2)
    assert [m["message"]["text"] for m in received] == ["two", "three"]
    resumed = await open_stream(nursery, ana, f"/events?last_event_id={last_id}")
    assert [m["message"]["text"] for m in await resumed.wait_for("message_received", 2)] == [
        "two",
        "three",
    ]


async def test_a_client_that_stops_reading_does_not_stall_the_others(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    hub = EventHub()
    home = tmp_path / "lead"
    create_identity(PASSPHRASE, "lead", home=home, cost=TEST_COST)
    address = await nursery.start(partial(run_daemon, PASSPHRASE, home=home, hub=hub))
    daemon = RunningDaemon(name="lead", home=home, address=address, scope=trio.CancelScope())
    # A client that asks for the stream and then never reads, with a tiny receive buffer.
    stalled = await trio.open_unix_socket(str(address.socket))
    stalled.setsockopt(1, 8, 1024)  # SOL_SOCKET, SO_RCVBUF
    await stalled.send_all(b"GET /events HTTP/1.1\r\nhost: cellrelay\r\n\r\n")
    reader = await open_stream(nursery, daemon)
    with trio.fail_after(PATIENCE):
        while hub.listeners < 2:
            await trio.sleep(0.01)
    payload = {"type": "message_received", "text": "x" * 4000}
    rounds, per_round = 16, LISTENER_BUFFER // 4
    for round_ in range(rounds):
        for n in range(round_ * per_round, (round_ + 1) * per_round):
            hub.publish({**payload, "n": n})  # never waits, whoever is behind
        # The reader gets each round while the stalled client holds its connection.
        await reader.wait_for("message_received", (round_ + 1) * per_round)
    received = reader.of("message_received")
    assert [e["n"] for e in received] == list(range(rounds * per_round))
    assert hub.dropped >= 1  # the stalled one, not the reader
    assert (await daemon.ok("GET", "/daemon"))["identity"]["name"] == "lead"
    await stalled.aclose()


async def test_relay_connection_state_changes_are_events(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with open_relay_process(tmp_path / "relay", durability="normal") as relay:
        lead = await start_daemon(nursery, tmp_path, "lead", tcp=False)
        await lead.ok(
            "POST", "/cells", 201, json_body={"name": "Eastside", "relay": str(relay.address)}
        )
        relays = (await lead.ok("GET", "/relays"))["relays"]
        assert [(r["connected"], r["cells"]) for r in relays] == [(True, ["Eastside"])]
        stream = await open_stream(nursery, lead)
        await relay.kill()
        down = (await stream.wait_for("relay_state_changed"))[0]
        assert (down["state"], down["connected"], down["cells"]) == ("lost", False, ["Eastside"])
        assert down["relay"] == f"127.0.0.1:{relay.port}"
        assert (await lead.ok("GET", "/cells/Eastside"))["connected"] is False
