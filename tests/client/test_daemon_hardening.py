"""Issue 10's hardening on the daemon's path: what the command line learned, the API says too.

A lifetime beyond the relay's maximum is refused before anything is sent; a mistyped, an
expired and a used invite each have their own code; a relay that does not hold the key the
address names is said at once, not after the wait runs out; the connection to a relay
(lost, retrying, back and caught up) is a stream of events, and `cellrelay listen`
through the daemon prints it as it does alone.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import trio

from cellrelay.client import RelayKeyMismatchError, open_client
from cellrelay.client._api import USED_INVITE
from cellrelay.client._cli import REFUSALS
from cellrelay.client._client import create_identity
from cellrelay.client._keystore import TEST_COST
from cellrelay.protocol import ErrorCode
from cellrelay.protocol.cell import Invite
from cellrelay.protocol.wire import MailboxId, RelayAddress

from ..relay.conftest import RelayFactory, relays
from ..relay.process import open_relay_process, reap
from .conftest import RunningRelay
from .daemons import PASSPHRASE, PATIENCE, admit, make_cell, start_daemon
from .test_cli import CELLRELAY, cli, environment, one_line_error
from .test_cli_hardening import _Lines
from .test_daemon_events import open_stream

__all__ = ["invite_to", "relays"]


def invite_to(relay: RelayAddress, *, expires_at: int = 2**32 - 1) -> Invite:
    """An invite to a cell that does not exist, on `relay`: a join mailbox nobody created."""
    return Invite(
        relay=relay,
        cell_id=secrets.token_bytes(16),
        cell_name="Eastside",
        join_mailbox=MailboxId(secrets.token_bytes(16)),
        admin_sign_key=secrets.token_bytes(32),
        admin_box_key=secrets.token_bytes(32),
        expires_at=expires_at,
    )


async def test_a_ttl_beyond_the_relay_is_refused_before_sending(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    async with open_relay_process(tmp_path / "relay", max_ttl=3600) as relay:
        lead = await start_daemon(nursery, tmp_path, "lead", tcp=False)
        await lead.ok("POST", "/cells", 201, json_body={"name": "Eastside", "relay": str(relay.address)})  # fmt: skip
        cell = await lead.ok("GET", "/cells/Eastside")
        assert cell["max_ttl"] == 3600
        assert cell["alert_limit"] == 10
        assert cell["muted"] == []
        for path, body in (
            ("/cells/Eastside/alerts", {"text": "Agents at 14th & Main", "ttl": 7200}),
            ("/cells/Eastside/messages", {"text": "hello", "ttl": 7200}),
            ("/cells/Eastside/invites", {"ttl": 7200}),
        ):
            response = await lead.request("POST", path, json_body=body)
            problem = response.json()
            assert (response.status, problem["code"]) == (422, "TTL_TOO_LONG"), path
            assert problem["detail"] == (
                "ttl 2h is longer than the relay of 'Eastside' keeps anything (at most 1h, 3600 s)"
            )
        assert (await lead.ok("GET", "/cells/Eastside/messages"))["messages"] == []
        await lead.ok("POST", "/cells/Eastside/alerts", 201, json_body={"text": "x", "ttl": 3600})
        lead.stop()
        await relay.terminate()


async def test_a_relay_that_keeps_longer_than_7_days_takes_a_longer_ttl(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The relay's max TTL is the bound, as on the command line: not a fixed 7 days."""
    month, ten_days = 30 * 86_400, 10 * 86_400
    async with open_relay_process(tmp_path / "relay", max_ttl=month) as relay:
        lead = await start_daemon(nursery, tmp_path, "lead", tcp=False)
        await lead.ok("POST", "/cells", 201, json_body={"name": "Eastside", "relay": str(relay.address)})  # fmt: skip
        assert (await lead.ok("GET", "/cells/Eastside"))["max_ttl"] == month
        sent = await lead.ok("POST", "/cells/Eastside/alerts", 201,
                             json_body={"text": "Week-long watch at the shelter", "ttl": ten_days})  # fmt: skip
        assert sent["alert"]["expires_at"] >= time.time() + ten_days - 3600
        response = await lead.request("POST", "/cells/Eastside/messages",
                                      json_body={"text": "hello", "ttl": month + 86_400})  # fmt: skip
        assert (response.status, response.json()["code"]) == (422, "TTL_TOO_LONG")
        lead.stop()
        await relay.terminate()


async def test_invites_mistyped_expired_used_and_on_a_relay_with_another_key(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    ana = await start_daemon(nursery, tmp_path, "ana", tcp=False)
    address = RelayAddress("127.0.0.1", running_relay.port, running_relay.public_key)

    link = invite_to(address).to_link()
    position = len("cellrelay://join/") + 10
    typo = link[:position] + ("A" if link[position] != "A" else "B") + link[position + 1 :]
    expired = invite_to(address, expires_at=int(time.time()) - 60).to_link()
    stranger = invite_to(RelayAddress("127.0.0.1", running_relay.port, secrets.token_bytes(32)))
    cases = (
        (typo, 422, "INVITE_TYPO", "the invite has a typo (its checksum does not match)"),
        (expired, 410, "INVITE_EXPIRED", "this invite expired on "),
        (link, 410, "INVITE_USED", USED_INVITE),
        (stranger.to_link(), 502, "RELAY_KEY_MISMATCH", "the relay's key does not match"),
    )
    # Twice each: a join that failed was not asked, so asking again asks again (it used to
    # answer 201 "waiting for approval" the second time, for a request never sent).
    for text, status, code, detail in cases + cases:
        started = trio.current_time()
        response = await ana.request(
            "POST", "/joins", json_body={"link": text}, headers={"prefer": "wait=60"}
        )
        problem = response.json()
        assert (response.status, problem["code"]) == (status, code), problem
        assert problem["detail"].startswith(detail), problem
        # Said at once: not the 60 s the request allowed running out.
        assert trio.current_time() - started < PATIENCE
    assert "127.0.0.1:" in problem["detail"]
    ana.stop()


async def test_relay_connection_states_are_events_and_listen_shows_them(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    data_dir = tmp_path / "relay"
    async with open_relay_process(data_dir) as relay:
        port = relay.port
        lead = await start_daemon(nursery, tmp_path, "lead", tcp=False)
        await lead.ok("POST", "/cells", 201, json_body={"name": "Eastside", "relay": str(relay.address)})  # fmt: skip
        stream = await open_stream(nursery, lead)
        listen = await trio.lowlevel.open_process(
            [CELLRELAY, "listen", "--json", "--home", str(lead.home)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=environment(passphrase=None),
        )  # fmt: skip
        lines = _Lines(listen)
        await lines.wait_for('"type": "listening"')
        await relay.terminate()
    try:
        lost, retrying = (await stream.wait_for("relay_state_changed", 2))[:2]
        assert (lost["state"], lost["connected"], lost["cells"]) == ("lost", False, ["Eastside"])
        assert lost["relay"] == f"127.0.0.1:{port}"
        assert retrying["state"] == "retrying"
        assert retrying["retry_in"] >= 0
        assert json.loads(await lines.wait_for('"state": "lost"'))["relay"] == f"127.0.0.1:{port}"
        await lines.wait_for('"state": "retrying"')
        (down,) = (await lead.ok("GET", "/relays"))["relays"]
        assert (down["connected"], down["state"]) == (False, "retrying")
        assert down["reason"]
        async with open_relay_process(data_dir, listen=f"127.0.0.1:{port}") as relay:
            with trio.fail_after(PATIENCE):
                while not any(e["state"] == "caught_up" for e in stream.of("relay_state_changed")):
                    await stream.changed.wait()
            back = await lines.wait_for('"caught_up"')
            assert json.loads(back) == {
                "type": "connection", "relay": f"127.0.0.1:{port}", "state": "caught_up",
                "reason": None, "retry_in": None,
            }  # fmt: skip
            states = [e["state"] for e in stream.of("relay_state_changed")]
            assert states[-2:] == ["connected", "caught_up"]
            assert (await lead.ok("GET", "/cells/Eastside"))["connected"] is True
            (up,) = (await lead.ok("GET", "/relays"))["relays"]
            assert (up["connected"], up["state"], up["reason"]) == (True, "caught_up", None)
            listen.terminate()
            with trio.fail_after(PATIENCE):
                await listen.wait()
            await relay.terminate()
    finally:
        await reap(listen)
        await lines.aclose()


async def test_a_relay_with_another_key_leaves_no_link_retrying(
    running_relay: RunningRelay, tmp_path: Path
) -> None:
    """A long-lived client (the daemon) kept retrying, for its whole life, a link to an
    address whose key the relay does not hold, after a join through it had failed."""
    create_identity(PASSPHRASE, "ana", home=tmp_path / "ana", cost=TEST_COST)
    stranger = invite_to(RelayAddress("127.0.0.1", running_relay.port, secrets.token_bytes(32)))
    async with open_client(PASSPHRASE, home=tmp_path / "ana") as client:
        for _ in range(2):
            with pytest.raises(RelayKeyMismatchError):
                await client.request_join(stranger.to_link())
            assert str(stranger.relay) not in client._links
            assert not client.asked_to_join(stranger)


async def test_a_relay_whose_disk_is_full_is_said_so(
    nursery: trio.Nursery, relays: RelayFactory, tmp_path: Path
) -> None:
    """Issue 10's STORAGE_FULL through the daemon: 507 with the protocol's code, and
    `cellrelay send` through the daemon says what it says alone (tell the relay's operator)."""
    store = await relays.open_sqlite()
    relay = await relays.start(store=store, sweep_interval=3600)
    lead = await start_daemon(nursery, tmp_path, "lead", tcp=False)
    await make_cell(lead, relay)
    await lead.ok("POST", "/cells/Eastside/alerts", 201, json_body={"text": "before"})
    await store.limit_pages(1)  # SQLite keeps what is in use: no page more
    for _ in range(200):  # what room the pages in use still have fills up first
        response = await lead.request(
            "POST", "/cells/Eastside/alerts", json_body={"text": "Agents at 14th & Main " * 90}
        )
        if response.status != 201:
            break
    problem = response.json()
    assert (response.status, problem["code"]) == (507, "STORAGE_FULL"), problem
    assert problem["detail"].startswith("The relay's storage is full")
    said = await cli("send", "Eastside", "Agents at 14th & Main", home=lead.home,
                     passphrase=None, expect=1)  # fmt: skip
    assert one_line_error(said) == f"cellrelay: {REFUSALS[ErrorCode.STORAGE_FULL]}"
    lead.stop()


async def test_a_flood_and_the_mutes_are_events_on_the_stream(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    """Issue 15's events reach every API client, as the schema says they look."""
    lead = await start_daemon(nursery, tmp_path, "lead", tcp=False)
    eve = await start_daemon(nursery, tmp_path, "eve", tcp=False)
    await make_cell(lead, running_relay)
    await admit(lead, eve)
    await lead.ok("PUT", "/cells/Eastside/alert-limit", json_body={"limit": 3})
    stream = await open_stream(nursery, lead, "/events?cell=Eastside")
    for n in range(5):
        await eve.ok("POST", "/cells/Eastside/alerts", 201, json_body={"text": f"flood {n}"})
    (flood,) = await stream.wait_for("flood_detected")
    assert (flood["member"]["name"], flood["alerts"], flood["limit"]) == ("eve", 4, 3)
    muted = await stream.wait_for("muted_alert_received", 2)
    assert [m["alert"]["text"] for m in muted] == ["flood 3", "flood 4"]
    assert [m["sender"]["name"] for m in muted] == ["eve", "eve"]
    (here,) = await stream.wait_for("mute_changed")
    assert (here["muted"], here["everyone"], here["by"]) == (True, False, None)
    assert [a["alert"]["text"] for a in stream.of("alert_received")] == [
        "flood 0", "flood 1", "flood 2",
    ]  # fmt: skip

    done = await lead.ok("POST", "/cells/Eastside/members/eve/mute")
    assert (done["muted"], done["everyone"], done["member"]["name"]) == (True, True, "eve")
    everyone = await stream.wait_for("mute_changed", 2)
    assert everyone[-1]["member"]["name"] == "eve"
    assert everyone[-1]["everyone"] is True
    again = await lead.ok("POST", "/cells/Eastside/members/eve/unmute", json_body={"here": True})
    assert (again["muted"], again["everyone"]) == (False, False)
    refused = await eve.request("PUT", "/cells/Eastside/alert-limit", json_body={"limit": 5})
    assert (refused.status, refused.json()["code"]) == (403, "NOT_ADMIN")
    itself = await lead.request("POST", "/cells/Eastside/members/lead/mute")
    assert (itself.status, itself.json()["code"]) == (409, "REFUSED")
    before = (await lead.ok("GET", "/cells/Eastside"))["epoch"]
    recovered = await lead.ok("POST", "/cells/Eastside/recover")
    assert recovered == {"cell": "Eastside", "epoch": before + 1}
    await eve.ok("POST", "/cells/Eastside/messages", 201, json_body={"text": "still here"})
