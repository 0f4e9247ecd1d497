"""The daemon's API end to end: daemons in the test's process, a real relay, real sockets.

Each test speaks HTTP to the daemon over its Unix socket (or loopback TCP with the token)
and checks what a program in any language would see: statuses, JSON, problem documents.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import trio

from cellrelay.client._daemon import DaemonRunningError, check_not_running, run_daemon

from .conftest import RunningRelay
from .daemons import PASSPHRASE, PATIENCE, admit, make_cell, start_daemon


async def test_a_cell_an_alert_and_its_rollup_through_two_daemons(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    lead = await start_daemon(nursery, tmp_path, "lead")
    ana = await start_daemon(nursery, tmp_path, "ana")
    cell = await make_cell(lead, running_relay)
    assert cell["role"] == "admin"
    assert cell["members"] == 1
    await admit(lead, ana)
    members = await lead.ok("GET", "/cells/Eastside/members")
    assert [m["name"] for m in members["members"]] == ["lead", "ana"]

    sent = await lead.ok("POST", "/cells/eastside/alerts", 201,
                         json_body={"text": "Agents at 14th & Main", "priority": "emergency", "place": "14th & Main"})  # fmt: skip
    alert_id = sent["alert"]["message_id"]
    assert sent["alert"]["type"] == "alert"
    assert sent["recipients"] == 1
    with trio.fail_after(PATIENCE):
        while not (await ana.ok("GET", "/cells/Eastside/alerts"))["alerts"]:
            await trio.sleep(0.02)
    seen = (await ana.ok("GET", "/cells/Eastside/alerts"))["alerts"][0]
    assert seen["alert"]["text"] == "Agents at 14th & Main"
    assert seen["author_name"] == "lead"

    reply = await ana.ok("POST", f"/cells/Eastside/alerts/{alert_id[:8]}/replies", 201,
                         json_body={"status": "on_scene", "note": "two vans"})  # fmt: skip
    assert reply["reply"]["status"] == "on_scene"
    with trio.fail_after(PATIENCE):
        while True:
            rollup = await lead.ok("GET", f"/cells/Eastside/alerts/{alert_id}")
            if rollup["responders"]:
                break
            await trio.sleep(0.02)
    (status,) = rollup["responders"].values()
    assert (status["name"], status["status"], status["note"]) == ("ana", "on_scene", "two vans")
    assert rollup["closed"] is False
    await lead.ok(  # its author closes it (one other member's word is only a vote)
        "POST", f"/cells/Eastside/alerts/{alert_id}/replies", 201, json_body={"status": "resolved"}
    )
    with trio.fail_after(PATIENCE):
        while (await ana.ok("GET", "/cells/Eastside/alerts"))["alerts"]:
            await trio.sleep(0.02)  # resolved: no longer active


async def test_plain_text_alert_with_options_in_the_query(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    """The ntfy-style one-liner: `curl -d TEXT '.../alerts?priority=...'` sends a form body."""
    lead = await start_daemon(nursery, tmp_path, "lead", tcp=False)
    await make_cell(lead, running_relay)
    sent = await lead.ok("POST", "/cells/Eastside/alerts?priority=info&place=Main%20St&ttl=600", 201,
                         body=b"Agents at 14th & Main\n", content_type="application/x-www-form-urlencoded")  # fmt: skip
    alert = sent["alert"]
    assert (alert["text"], alert["priority"], alert["place"]) == (
        "Agents at 14th & Main",
        "info",
        "Main St",
    )
    assert alert["expires_at"] - alert["sent_at_ms"] // 1000 in (600, 599)
    bad = await lead.request(
        "POST", "/cells/Eastside/alerts?priority=loud", body=b"x", content_type="text/plain"
    )
    assert (bad.status, bad.json()["code"], bad.json()["field"]) == (
        400,
        "OUT_OF_RANGE",
        "priority",
    )


async def test_messages_receipts_members_and_fingerprints(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    lead = await start_daemon(nursery, tmp_path, "lead", tcp=False)
    ana = await start_daemon(nursery, tmp_path, "ana", tcp=False)
    await make_cell(lead, running_relay)
    await admit(lead, ana)
    message = await lead.ok(
        "POST", "/cells/Eastside/messages", 201, json_body={"text": "meeting at 6"}
    )
    message_id = message["message"]["message_id"]
    with trio.fail_after(PATIENCE):
        while not (await ana.ok("GET", "/cells/Eastside/messages"))["messages"]:
            await trio.sleep(0.02)
    (received,) = [m for m in (await ana.ok("GET", "/cells/Eastside/messages"))["messages"]
                   if m["content"]["type"] == "plain_message"]  # fmt: skip
    assert received["content"]["text"] == "meeting at 6"
    assert received["sender"]["name"] == "lead"
    receipt = await ana.ok(
        "POST", "/cells/Eastside/receipts", 201, json_body={"message_ids": [message_id]}
    )
    assert receipt["receipt"]["message_ids"] == [message_id]

    detail = await lead.ok("GET", "/cells/Eastside/members/ana")
    ana_id = detail["member"]["member_id"]
    assert detail["fingerprint"].replace(" ", "") == ana_id
    assert detail["verified"] is False
    # Issue 9, finding 9: the safety number ana's device shows for the two of them.
    shown = (await ana.ok("GET", "/cells/Eastside/members/lead"))["safety_number"]
    assert detail["safety_number"] == shown
    assert len(shown) == 60
    assert (await ana.ok("GET", "/cells/Eastside/members/ana"))["safety_number"] is None
    wrong = shown[:-1] + ("0" if shown[-1] != "0" else "1")
    assert (
        await lead.ok(
            "POST", "/cells/Eastside/members/ana/verify", json_body={"safety_number": wrong}
        )
    )["verified"] is False
    assert (await lead.ok("GET", "/cells/Eastside/members/ana"))["verified"] is False
    grouped = " ".join(shown[i : i + 5] for i in range(0, 60, 5))
    verified = await lead.ok(
        "POST", "/cells/Eastside/members/ana/verify", json_body={"safety_number": grouped}
    )
    assert verified["verified"] is True
    assert (await lead.ok("GET", "/cells/Eastside/members/ana"))["verified"] is True
    short = await lead.request(
        "POST", "/cells/Eastside/members/ana/verify", json_body={"safety_number": shown[:8]}
    )
    assert (short.status, short.json()["code"], short.json()["field"]) == (
        400,
        "OUT_OF_RANGE",
        "safety_number",
    )

    promoted = await lead.ok("POST", f"/cells/Eastside/members/{ana_id[:8]}/promote")
    assert promoted["member"]["name"] == "ana"
    removed = await ana.ok("DELETE", "/cells/Eastside/members/lead")
    assert removed["member"]["name"] == "lead"
    with trio.fail_after(PATIENCE):
        while (await lead.ok("GET", "/cells/Eastside"))["role"] != "removed":
            await trio.sleep(0.02)
    refused = await lead.request(
        "POST", "/cells/Eastside/alerts", json_body={"text": "still here?"}
    )
    assert (refused.status, refused.json()["code"]) == (409, "REMOVED")
    left = await lead.ok("POST", "/cells/Eastside/leave")
    assert left["cell"] == "Eastside"
    assert (await lead.ok("GET", "/cells"))["cells"] == []


async def test_a_join_request_denied(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    lead = await start_daemon(nursery, tmp_path, "lead", tcp=False)
    eve = await start_daemon(nursery, tmp_path, "eve", tcp=False)
    await make_cell(lead, running_relay)
    invite = await lead.ok("POST", "/cells/Eastside/invites", 201, json_body={"ttl": 3600})
    assert invite["qr_svg"].startswith("<svg")
    assert invite["qr_png"].startswith("data:image/png;base64,")
    waiting = await eve.ok("POST", "/joins", 201, json_body={"link": invite["link"]})
    assert (waiting["cell"], waiting["joined"]) == ("Eastside", False)
    assert [w["cell"] for w in (await eve.ok("GET", "/cells"))["waiting"]] == ["Eastside"]
    with trio.fail_after(PATIENCE):
        while not (await lead.ok("GET", "/cells/Eastside/join-requests"))["requests"]:
            await trio.sleep(0.02)
    denied = await lead.ok("POST", "/cells/Eastside/join-requests/eve/deny")
    assert denied["member"]["name"] == "eve"
    assert (await lead.ok("GET", "/cells/Eastside/join-requests"))["requests"] == []
    again = await lead.request("POST", "/cells/Eastside/join-requests/eve/approve")
    assert (again.status, again.json()["code"]) == (404, "NO_SUCH_MEMBER")


async def test_not_found_not_admin_and_ambiguous(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    lead = await start_daemon(nursery, tmp_path, "lead", tcp=False)
    ana = await start_daemon(nursery, tmp_path, "ana", tcp=False)
    await make_cell(lead, running_relay)
    await admit(lead, ana)
    for path in (
        "/cells/Westside",
        "/cells/Westside/alerts",
        "/cells/Eastside/alerts/abcdef",
        "/nothing/here",
    ):
        answer = await lead.request("GET", path)
        assert answer.status == 404, path
        assert answer.headers["content-type"] == "application/problem+json"
    answer = await ana.request("POST", "/cells/Eastside/invites")
    assert (answer.status, answer.json()["code"]) == (403, "NOT_ADMIN")
    answer = await lead.request("PUT", "/cells")
    assert (answer.status, answer.headers["allow"]) == (405, "GET, POST")
    answer = await lead.request("OPTIONS", "/cells")
    assert answer.status == 405
    assert not any(h.startswith("access-control") for h in answer.headers)
    exists = await lead.request(
        "POST", "/cells", json_body={"name": "eastside", "relay": "cellrelay://x@y:1"}
    )
    assert exists.status == 422


async def test_bad_bodies_are_refused_naming_the_field(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    lead = await start_daemon(nursery, tmp_path, "lead", tcp=False)
    await make_cell(lead, running_relay)

    async def problem(
        body: bytes, content_type: str = "application/json"
    ) -> tuple[int, str, str | None]:
        answer = await lead.request(
            "POST", "/cells/Eastside/alerts", body=body, content_type=content_type
        )
        document = answer.json()
        assert answer.headers["content-type"] == "application/problem+json"
        assert document["status"] == answer.status
        return answer.status, document["code"], document["field"]

    assert await problem(b"{not json") == (400, "MALFORMED", None)
    assert await problem(b"\xff\xfe") == (400, "MALFORMED", None)
    assert await problem(b"[" * 50_000) == (400, "MALFORMED", None)
    assert await problem(b'{"text": NaN}') == (400, "MALFORMED", None)
    assert await problem(b"{}") == (400, "MISSING_FIELD", "text")
    assert await problem(b'{"text": "a", "text": "b"}') == (400, "DUPLICATE_FIELD", "text")
    assert await problem(b'{"text": "a", "colour": "red"}') == (400, "EXTRA_FIELD", "colour")
    assert await problem(b'{"text": ""}') == (400, "OUT_OF_RANGE", "text")
    assert await problem(json.dumps({"text": "x" * 2001}).encode()) == (400, "TOO_LARGE", "text")
    assert await problem(b'{"text": "a\\u001b[31m"}') == (400, "OUT_OF_RANGE", "text")
    assert await problem(b'{"text": "a", "ttl": "soon"}') == (400, "WRONG_TYPE", "ttl")
    assert await problem(b'{"text": "a", "ttl": 1}') == (400, "OUT_OF_RANGE", "ttl")
    assert await problem(b'{"text": "a", "place": "two\\nlines"}') == (400, "OUT_OF_RANGE", "place")
    assert await problem(b'"text"') == (400, "WRONG_TYPE", None)
    assert await problem(b"<xml/>", "application/xml") == (415, "UNSUPPORTED_MEDIA_TYPE", None)
    receipt = await lead.request(
        "POST", "/cells/Eastside/receipts", json_body={"message_ids": ["00" * 16, "00" * 16]}
    )
    assert (receipt.status, receipt.json()["code"]) == (400, "DUPLICATE_FIELD")
    # Still serving, and nothing was sent.
    assert (await lead.ok("GET", "/cells/Eastside/alerts"))["alerts"] == []


async def test_the_body_limit_answers_413_before_reading(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    lead = await start_daemon(nursery, tmp_path, "lead", tcp=False)
    await make_cell(lead, running_relay)
    big = b'{"text": "' + b"x" * 70_000 + b'"}'
    answer = await lead.request(
        "POST", "/cells/Eastside/alerts", body=big, content_type="application/json"
    )
    assert (answer.status, answer.json()["code"]) == (413, "TOO_LARGE")
    # A declared length the daemon will not wait for: refused from the head alone.
    head = (b"POST /cells/Eastside/alerts HTTP/1.1\r\nhost: cellrelay\r\n"
            b"content-type: application/json\r\ncontent-length: 10000000\r\n\r\n")  # fmt: skip
    assert (await raw_exchange(lead.address.socket, head)).startswith(b"HTTP/1.1 413 ")


async def raw_exchange(path: Path, data: bytes) -> bytes:
    """Send raw bytes to the daemon's socket; return everything it answers before closing."""
    with trio.fail_after(PATIENCE):
        stream = await trio.open_unix_socket(str(path))
        async with stream:
            await stream.send_all(data)
            received = b""
            while chunk := await stream.receive_some(65536):
                received += chunk
            return received


async def test_the_socket_is_private_and_a_second_daemon_refuses(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    lead = await start_daemon(nursery, tmp_path, "lead")
    mode = os.stat(lead.address.socket).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(lead.address.token_file).st_mode) == 0o600
    assert len(lead.token) >= 43
    with pytest.raises(DaemonRunningError, match="already running"):
        check_not_running(lead.home)
    with trio.fail_after(PATIENCE), pytest.raises(DaemonRunningError):
        await run_daemon(PASSPHRASE, home=lead.home)
    lead.stop()
    with trio.fail_after(PATIENCE):
        while lead.address.socket.exists():
            await trio.sleep(0.02)
    check_not_running(lead.home)  # and the lock is free again


async def test_tcp_needs_the_token_and_the_right_host(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    lead = await start_daemon(nursery, tmp_path, "lead")
    assert (await lead.tcp("GET", "/cells")).status == 200
    for token in (None, "", "wrong", lead.token[:-1], lead.token + "x"):
        answer = await lead.tcp("GET", "/cells", token=token or None)
        assert answer.status == 401, token
        assert answer.json() == {"type": "about:blank", "title": "Unauthorized", "status": 401,
                                 "code": "UNAUTHORIZED", "detail": None, "field": None}  # fmt: skip
        assert answer.headers["www-authenticate"].startswith("Bearer")
    # Unknown paths look the same without a token: nothing is learnt before authorising.
    assert (await lead.tcp("GET", "/no/such/path", token=None)).status == 401
    # The board's files and the schema are public (they hold no data).
    page = await lead.tcp("GET", "/", token=None)
    assert page.status == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "require-trusted-types-for 'script'" in page.headers["content-security-policy"]
    assert b"<script>" not in page.body  # no inline script: the policy would refuse it anyway
    assert (await lead.tcp("GET", "/openapi.json", token=None)).status == 200
    port = lead.address.url.rsplit(":", 1)[1] if lead.address.url else ""
    for host in (
        "evil.example",
        f"evil.example:{port}",
        "127.0.0.1:1",
        "localhost",
        "cellrelay",
        f"127.0.0.1:{port}, x",
    ):
        answer = await lead.tcp("GET", "/cells", headers={"host": host})
        assert (answer.status, answer.json()["code"]) == (421, "BAD_HOST"), host
    assert (await lead.tcp("GET", "/cells", headers={"host": f"localhost:{port}"})).status == 200
    # On the socket too: a proxy to it must not let a rebound name in.
    answer = await lead.request("GET", "/cells", headers={"host": "evil.example:8080"})
    assert answer.status == 421
    # A request a browser made (through some proxy to the socket) needs a token.
    answer = await lead.request("GET", "/cells", headers={"origin": "http://localhost:3000"})
    assert answer.status == 401
    answer = await lead.request("POST", "/cells/x/alerts", headers={"sec-fetch-site": "cross-site"},
                                body=b"x", content_type="text/plain")  # fmt: skip
    assert answer.status == 401


async def test_board_codes_sessions_and_tickets(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    lead = await start_daemon(nursery, tmp_path, "lead")
    assert lead.address.board_url is not None
    code = lead.address.board_url.split("#code=", 1)[1]
    session = await lead.tcp("POST", "/session", token=None, json_body={"code": code})
    assert session.status == 201
    token = session.json()["token"]
    assert (await lead.tcp("GET", "/cells", token=token)).status == 200
    again = await lead.tcp("POST", "/session", token=None, json_body={"code": code})
    assert again.status == 401  # one use only
    fresh = await lead.ok("POST", "/board/codes", 201)
    assert fresh["url"].startswith(lead.address.url)
    assert fresh["path"] == f"/#code={fresh['code']}"
    bogus = await lead.tcp("GET", "/events?ticket=" + "A" * 43, token=None)
    assert bogus.status == 401
