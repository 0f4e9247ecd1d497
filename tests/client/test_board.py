"""The dispatch board in a real browser: Debian's chromium, driven by Playwright, against real daemons.

Two daemons (a lead and a member) on one real relay; each person opens their own board
from the one-time link their daemon printed, in their own browser context, and works the
board as a dispatcher would: sending an alert, answering it, approving a join. Alert text
is attacker-controlled, so one test sends HTML and script and checks that the board shows
it as text and runs nothing.

Playwright's synchronous API runs in a worker thread (`trio.to_thread`) while the daemons
and the relay run in the test's Trio loop. The browser is the system's /usr/bin/chromium
(never a downloaded one; .ci/run installs the Debian package). When a scenario fails, a
screenshot of every open page is saved under test-results/ (ignored by git) and named in
the failure message.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import Browser, Page, sync_playwright

from ..relay.process import open_relay_process
from .conftest import RunningRelay
from .daemons import RunningDaemon, admit, make_cell, start_daemon

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RESULTS = Path(__file__).resolve().parents[2] / "test-results"
# Playwright's own waits, in milliseconds: generous for a loaded machine; they end as soon
# as what they wait for is on the page.
WAIT_MS = 30_000
# The bound from the lead's click to the member's board showing the alert.
DELIVERY_BOUND = 1.0


@contextlib.contextmanager
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            "install Debian's chromium (apt-get install chromium): the board is tested in it"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Scenario:
    """Pages opened in one browser; screenshots of all of them if the scenario fails."""

    def __init__(self, browser: Browser, name: str) -> None:
        self.browser = browser
        self.name = name
        self.pages: dict[str, Page] = {}
        self.errors: list[str] = []

    def open_board(self, who: str, daemon: RunningDaemon) -> Page:
        assert daemon.address.board_url is not None
        context = self.browser.new_context()
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda error: self.errors.append(f"{who}: {error}"))
        page.on(
            "console",
            lambda m: self.errors.append(f"{who}: {m.text}") if m.type == "error" else None,
        )
        page.goto(daemon.address.board_url)
        page.wait_for_selector("body[data-ready=true]")
        self.pages[who] = page
        return page

    def screenshots(self) -> list[Path]:
        RESULTS.mkdir(exist_ok=True)
        saved = []
        for who, page in self.pages.items():
            path = RESULTS / f"{self.name}-{who}.png"
            with contextlib.suppress(Exception):
                page.screenshot(path=str(path), full_page=True)
                saved.append(path)
        return saved


async def run_in_browser(name: str, scenario: Callable[[Scenario], None]) -> None:
    """Run a synchronous browser scenario in a worker thread; screenshots if it fails."""

    def run() -> None:
        with browser() as launched:
            session = Scenario(launched, name)
            try:
                scenario(session)
            except BaseException as exc:
                shots = ", ".join(str(p) for p in session.screenshots())
                raise AssertionError(
                    f"{exc!r}; screenshots: {shots}; page errors: {session.errors}"
                ) from exc

    with trio.fail_after(180):
        await trio.to_thread.run_sync(run)


def alert_item(page: Page, text: str) -> Any:  # noqa: ANN401 - a Playwright locator
    return page.locator("li.alert", has_text=text)


async def test_an_alert_from_the_lead_board_reaches_the_member_board_and_the_answer_comes_back(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    lead = await start_daemon(nursery, tmp_path, "lead")
    ana = await start_daemon(nursery, tmp_path, "ana")
    await make_cell(lead, running_relay)
    await admit(lead, ana)
    timings: dict[str, float] = {}

    def scenario(session: Scenario) -> None:
        lead_page = session.open_board("lead", lead)
        ana_page = session.open_board("ana", ana)
        assert "connected" in (lead_page.text_content("#relays") or "")
        assert (lead_page.text_content("#identity") or "").startswith("lead (")
        text = "Agents at 14th & Main, two vans"
        lead_page.fill("#send-text", text)
        lead_page.select_option("#send-priority", "emergency")
        lead_page.fill("#send-place", "14th & Main")
        lead_page.select_option("#send-ttl", "900")
        started = time.monotonic()
        lead_page.click("#send-button")
        alert_item(ana_page, text).wait_for()
        timings["delivery"] = time.monotonic() - started
        item = alert_item(ana_page, text)
        assert item.locator(".badge").text_content() == "EMERGENCY"
        assert item.locator(".place-text").text_content() == "14th & Main"
        assert item.locator(".author").text_content() == "From lead"
        alert_item(lead_page, text).wait_for()  # the sender's own board shows it too

        item.locator('button[data-status="on_scene"]').click()
        on_scene = alert_item(lead_page, text).locator(".rollup .on_scene")
        on_scene.wait_for()
        assert on_scene.text_content() == "On scene: ana"
        # Its author closes it (another member's "resolved" is only a vote, §C2).
        alert_item(lead_page, text).locator('button[data-status="resolved"]').click()
        item.locator('.rollup-state[data-state="resolved"]').wait_for()
        assert not session.errors, session.errors

    await run_in_browser("alert-and-answer", scenario)
    assert timings["delivery"] <= DELIVERY_BOUND, (
        f"the member's board showed the alert after {timings['delivery']:.3f} s"
    )


HOSTILE_TEXT = (
    '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> & <b>bold</b>'
)
HOSTILE_PLACE = "<svg onload=window.__pwned=3>"


async def test_html_and_script_in_an_alert_are_shown_as_text_and_run_nothing(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    lead = await start_daemon(nursery, tmp_path, "lead")
    mallory = await start_daemon(nursery, tmp_path, "mallory")
    await make_cell(lead, running_relay)
    await admit(lead, mallory)
    # One arrives before the board opens (loaded), one while it is open (an event).
    await mallory.ok("POST", "/cells/Eastside/alerts", 201,
                     json_body={"text": "before " + HOSTILE_TEXT, "place": HOSTILE_PLACE, "priority": "emergency"})  # fmt: skip

    def scenario(session: Scenario) -> None:
        page = session.open_board("lead", lead)
        alert_item(page, "before <img").wait_for()
        trio.from_thread.run(partial_send, mallory)
        alert_item(page, "after <img").wait_for()
        for prefix in ("before ", "after "):
            item = alert_item(page, prefix + "<img")
            assert item.locator(".alert-text").text_content() == prefix + HOSTILE_TEXT
            assert item.locator(".place-text").text_content() == HOSTILE_PLACE
        assert page.locator("#alerts img, #alerts script, #alerts svg, #alerts b").count() == 0
        assert page.evaluate("() => window.__pwned") is None
        # The policy itself: HTML cannot be assigned to the DOM at all (Trusted Types).
        refused = page.evaluate(
            "() => { try { document.body.innerHTML = '<b>x</b>'; return 'assigned' } catch (e) { return e.name } }"
        )
        assert refused == "TypeError"
        assert page.evaluate("() => window.__pwned") is None

    await run_in_browser("hostile-text", scenario)


async def partial_send(daemon: RunningDaemon) -> None:
    await daemon.ok("POST", "/cells/Eastside/alerts", 201,
                    json_body={"text": "after " + HOSTILE_TEXT, "place": HOSTILE_PLACE})  # fmt: skip


async def test_a_join_request_approved_from_the_board(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    lead = await start_daemon(nursery, tmp_path, "lead")
    ben = await start_daemon(nursery, tmp_path, "ben")
    await make_cell(lead, running_relay)
    joined: dict[str, Any] = {}

    async def ask_and_wait(link: str) -> None:
        await ben.ok("POST", "/joins", 201, json_body={"link": link})

    async def wait_joined(link: str) -> None:
        joined.update(await ben.ok("POST", "/joins", 201, json_body={"link": link, "wait": 60}))

    def scenario(session: Scenario) -> None:
        page = session.open_board("lead", lead)
        page.click("#invite-button")
        page.wait_for_selector("#invite:not([hidden])")
        link = page.text_content("#invite-link")
        assert link is not None
        assert link.startswith("cellrelay://join/")
        assert page.get_attribute("#invite-qr", "src").startswith("data:image/png;base64,")  # type: ignore[union-attr]
        assert page.evaluate("() => document.getElementById('invite-qr').naturalWidth") > 100
        trio.from_thread.run(ask_and_wait, link)
        request = page.locator("li.request", has_text="ben")
        request.wait_for()
        request.locator("button.approve").click()
        page.locator('ul.members[data-cell="Eastside"] li', has_text="ben").wait_for()
        trio.from_thread.run(wait_joined, link)
        assert page.locator("li.request").count() == 0

    await run_in_browser("join-approved", scenario)
    assert joined["joined"] is True
    assert [m["name"] for m in joined["members"]] == ["lead", "ben"]


async def test_a_used_link_opens_no_session(nursery: trio.Nursery, tmp_path: Path) -> None:
    lead = await start_daemon(nursery, tmp_path, "lead")

    def scenario(session: Scenario) -> None:
        session.open_board("lead", lead)
        again = session.browser.new_context().new_page()
        session.pages["again"] = again
        assert lead.address.board_url is not None
        again.goto(lead.address.board_url)  # the same one-time code, used already
        again.wait_for_selector("#login:not([hidden])")
        assert "used or has expired" in (again.text_content("#login-error") or "")
        assert again.url.endswith("/")  # the code is gone from the address bar
        assert again.evaluate("() => sessionStorage.length") == 0

    await run_in_browser("used-link", scenario)


# Stands in for the browser's Notification: records what the board would ring for.
RECORD_NOTIFICATIONS = """() => {
  window.__rung = [];
  window.Notification = class {
    static permission = "granted";
    constructor(title, options) { window.__rung.push(options.body); }
  };
}"""


async def test_a_flood_is_flagged_its_alerts_do_not_ring_and_one_click_mutes_for_everyone(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    """Issue 15 on the board: a member over the cell's alert limit is named in the security
    panel (with a one-click mute for everyone, for admins), its further alerts are listed
    as muted and never ring, and the active alerts keep only what rang."""
    lead = await start_daemon(nursery, tmp_path, "lead")
    eve = await start_daemon(nursery, tmp_path, "eve")
    await make_cell(lead, running_relay)
    await admit(lead, eve)
    limit = await lead.ok("PUT", "/cells/Eastside/alert-limit", json_body={"limit": 3})
    assert limit["alert_limit"] == 3

    async def flood() -> None:
        for n in range(5):
            await eve.ok("POST", "/cells/Eastside/alerts", 201,
                         json_body={"text": f"flood {n}", "priority": "emergency"})  # fmt: skip

    def scenario(session: Scenario) -> None:
        page = session.open_board("lead", lead)
        page.evaluate(RECORD_NOTIFICATIONS)
        trio.from_thread.run(flood)
        notice = page.locator("#warnings li.flood", has_text="eve")
        notice.wait_for()
        assert "sent 4 alerts within a minute (the cell allows 3): muted on this device" in (
            notice.text_content() or ""
        )
        page.locator("#muted-alerts li", has_text="flood 4").wait_for()
        assert page.is_visible("#muted-panel")
        muted = page.locator("#muted-alerts li .alert-text").all_text_contents()
        assert muted == ["flood 4", "flood 3"]
        shown = page.locator("#alerts li.alert .alert-text").all_text_contents()
        assert sorted(shown) == ["flood 0", "flood 1", "flood 2"]
        assert sorted(page.evaluate("() => window.__rung")) == ["flood 0", "flood 1", "flood 2"]
        page.locator('ul.members[data-cell="Eastside"] li', has_text="eve").locator(
            ".muted-tag"
        ).wait_for()

        notice.locator("button.mute-everyone").click()
        page.locator("#status", has_text="Muted eve").wait_for()
        assert "for everyone in Eastside" in (page.text_content("#status") or "")
        assert not session.errors, session.errors

    await run_in_browser("flood", scenario)
    members = await eve.ok("GET", "/cells/Eastside")
    assert members["alert_limit"] == 3
    lead_cell = await lead.ok("GET", "/cells/Eastside")
    eve_id = (await eve.ok("GET", "/daemon"))["identity"]["member_id"]
    assert lead_cell["muted"] == [eve_id]


async def test_the_board_says_when_a_relay_is_lost_and_back(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """Issue 10 on the board: a relay outage shows as lost and retrying, not as silence."""
    data_dir = tmp_path / "relay"
    async with open_relay_process(data_dir) as relay:
        port = relay.port
        lead = await start_daemon(nursery, tmp_path, "lead")
        await lead.ok("POST", "/cells", 201, json_body={"name": "Eastside", "relay": str(relay.address)})  # fmt: skip

    async def restart(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Killed when the test's nursery is cancelled at its end.
        async with open_relay_process(data_dir, listen=f"127.0.0.1:{port}"):
            task_status.started()
            await trio.sleep_forever()

    def scenario(session: Scenario) -> None:
        page = session.open_board("lead", lead)
        relay_item = page.locator(f'#relays li[data-relay="127.0.0.1:{port}"]')
        relay_item.locator("text=trying again in").wait_for()
        assert "down" in (relay_item.get_attribute("class") or "")
        trio.from_thread.run(nursery.start, restart)
        page.wait_for_function(
            f"() => document.querySelector('#relays li[data-relay=\"127.0.0.1:{port}\"]').textContent.endsWith(' connected')"
        )
        assert "up" in (relay_item.get_attribute("class") or "")
        assert not session.errors, session.errors

    await run_in_browser("relay-state", scenario)


async def test_a_report_is_verified_from_the_dispatchers_board_and_rings_for_members_once_confirmed(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    """Issue 14 on the board: in a verify-first cell a responder's report shows on the
    dispatcher's board marked unverified, with the verifier's buttons; a member's board
    shows nothing (and rings for nothing) until the dispatcher confirms it, then rings for
    it with its priority and says who confirmed it. A responder's board has no verify
    buttons, and the daemon refuses a responder's step."""
    lead = await start_daemon(nursery, tmp_path, "lead")
    dana = await start_daemon(nursery, tmp_path, "dana")
    rory = await start_daemon(nursery, tmp_path, "rory")
    mo = await start_daemon(nursery, tmp_path, "mo")
    await make_cell(lead, running_relay)
    for joiner in (dana, rory, mo):
        await admit(lead, joiner)
    await lead.ok("PUT", "/cells/Eastside/members/dana/role", json_body={"role": "dispatcher"})
    await lead.ok("PUT", "/cells/Eastside/members/rory/role", json_body={"role": "responder"})
    await lead.ok("PUT", "/cells/Eastside/verify-first", json_body={"verify_first": True})
    for daemon in (dana, rory, mo):
        with trio.fail_after(30):
            while not (await daemon.ok("GET", "/cells/Eastside"))["verify_first"]:
                await trio.sleep(0.05)
    assert (await dana.ok("GET", "/cells/Eastside"))["cell_role"] == "dispatcher"
    text = "ICE van outside the school"
    ids: list[str] = []

    async def report() -> None:
        sent = await rory.ok("POST", "/cells/Eastside/alerts", 201,
                             json_body={"text": text, "priority": "emergency"})  # fmt: skip
        ids.append(sent["alert"]["message_id"])

    async def forge() -> None:
        refused = await rory.request("POST", f"/cells/Eastside/alerts/{ids[0]}/steps",
                                     json_body={"step": "confirmed"})  # fmt: skip
        assert refused.status == 403
        assert refused.json()["code"] == "NOT_VERIFIER"

    def scenario(session: Scenario) -> None:
        dana_page = session.open_board("dana", dana)
        mo_page = session.open_board("mo", mo)
        rory_page = session.open_board("rory", rory)
        mo_page.evaluate(RECORD_NOTIFICATIONS)
        trio.from_thread.run(report)
        item = alert_item(dana_page, text)
        item.locator('.verification[data-verification="reported"]').wait_for()
        assert "unverified" in (item.get_attribute("class") or "")
        assert item.locator(".verification").text_content() == "Unverified report"
        alert_item(rory_page, text).wait_for()  # its author sees it
        assert alert_item(rory_page, text).locator(".steps").count() == 0
        trio.from_thread.run(forge)

        item.locator('button[data-step="verifying"]').click()
        item.locator('.verification[data-verification="verifying"]').wait_for()
        assert (item.locator(".verification").text_content() or "").startswith(
            "Being verified by you, "
        )
        # Held on the member's board: not shown, not rung.
        dana_page.wait_for_timeout(300)
        assert alert_item(mo_page, text).count() == 0
        assert mo_page.evaluate("() => window.__rung") == []

        item.locator('button[data-step="confirmed"]').click()
        shown = alert_item(mo_page, text)
        shown.locator('.verification[data-verification="confirmed"]').wait_for()
        assert (shown.locator(".verification").text_content() or "").startswith(
            "Confirmed by dana, "
        )
        assert shown.locator(".badge").text_content() == "EMERGENCY"
        assert "unverified" not in (shown.get_attribute("class") or "")
        assert mo_page.evaluate("() => window.__rung") == [text]
        assert shown.locator(".steps").count() == 0  # a member does not verify
        members = dana_page.locator('ul.members[data-cell="Eastside"]')
        assert members.locator("li", has_text="rory").locator(".role").text_content() == (
            "responder"
        )

        item.locator('button[data-step="resolved"]').click()
        shown.locator('.verification[data-verification="resolved"]').wait_for()
        assert not session.errors, session.errors

    await run_in_browser("verify-first", scenario)


# Every distinct receipts line the page shows, in order (the line is redrawn on each change).
RECORD_RECEIPT_LINES = """() => {
  window.__receiptLines = [];
  new MutationObserver(() => {
    for (const line of document.querySelectorAll(".receipts")) {
      const seen = window.__receiptLines;
      if (seen[seen.length - 1] !== line.textContent) seen.push(line.textContent);
    }
  }).observe(document.body, { childList: true, subtree: true, characterData: true });
}"""


async def test_the_senders_board_shows_how_far_its_alert_got(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    """Issue 14 item 6 on the board: under the sender's own alert, the delivered and read
    counts (docs/protocol.md §C1.7), "0 of N" from the start, updated as receipts arrive (the stream's
    `receipts_counted`) and shown again on a fresh load (GET .../alerts); none on the
    member's board. Both daemons report by themselves, in the protocol's own batches."""
    lead = await start_daemon(nursery, tmp_path, "lead")
    ana = await start_daemon(nursery, tmp_path, "ana")
    await make_cell(lead, running_relay)
    await admit(lead, ana)
    text = "Two vans on 5th"
    ids: list[str] = []

    async def read_it() -> None:
        marked = await ana.ok("POST", f"/cells/Eastside/alerts/{ids[0]}/read")
        assert marked["reported"] is True

    def scenario(session: Scenario) -> None:
        lead_page = session.open_board("lead", lead)
        ana_page = session.open_board("ana", ana)
        lead_page.evaluate(RECORD_RECEIPT_LINES)
        lead_page.fill("#send-text", text)
        lead_page.click("#send-button")
        item = alert_item(lead_page, text)
        # A batch is due 5 to 15 s after the alert: within Playwright's generous wait.
        item.locator('.receipts[data-delivered="1"][data-read="0"]').wait_for()
        assert item.locator(".receipts").text_content() == "Delivered to 1 of 1 \u00b7 read by 0"
        # Before the first receipt the line said so: nothing is not shown as nothing.
        seen = lead_page.evaluate("() => window.__receiptLines")
        assert seen[:2] == [
            "Delivered to 0 of 1 \u00b7 read by 0",
            "Delivered to 1 of 1 \u00b7 read by 0",
        ]
        ids.append(item.get_attribute("data-alert-id") or "")
        alert_item(ana_page, text).wait_for()
        assert alert_item(ana_page, text).locator(".receipts").count() == 0
        trio.from_thread.run(read_it)
        item.locator('.receipts[data-read="1"]').wait_for()
        assert item.locator(".receipts").text_content() == "Delivered to 1 of 1 \u00b7 read by 1"
        lead_page.reload()
        lead_page.wait_for_selector("body[data-ready=true]")
        reloaded = alert_item(lead_page, text).locator(".receipts")
        assert reloaded.text_content() == "Delivered to 1 of 1 \u00b7 read by 1"
        assert not session.errors, session.errors

    await run_in_browser("receipts", scenario)


async def test_an_escalated_alert_shows_where_it_went_and_where_it_came_from(
    nursery: trio.Nursery, running_relay: RunningRelay, tmp_path: Path
) -> None:
    """Issue 14 item 3 on the board: the liaison's board shows under the origin alert where
    it went and, as counts only, how the neighbour answers; the neighbour's board shows the
    forwarded alert as escalated from the label the liaison chose, never the cell's name."""
    lead = await start_daemon(nursery, tmp_path, "lead")
    ana = await start_daemon(nursery, tmp_path, "ana")
    await make_cell(lead, running_relay, "Eastside")
    await make_cell(lead, running_relay, "Westside")
    await admit(lead, ana, "Westside")
    await lead.ok("PUT", "/cells/Eastside/neighbours/Westside", json_body={"label": "East crew"})
    text = "Checkpoint on the bridge"
    sent = await lead.ok("POST", "/cells/Eastside/alerts", 201, json_body={"text": text})
    alert = sent["alert"]["message_id"]
    await lead.ok(
        "POST", f"/cells/Eastside/alerts/{alert}/steps", 201, json_body={"step": "confirmed"}
    )

    async def escalate() -> None:
        done = await lead.ok("POST", f"/cells/Eastside/alerts/{alert}/escalate",
                             json_body={"to": "Westside"})  # fmt: skip
        assert done["forwarded"] is True

    def scenario(session: Scenario) -> None:
        lead_page = session.open_board("lead", lead)
        ana_page = session.open_board("ana", ana)
        origin = lead_page.locator(f'li.alert[data-alert-id="{alert}"]')
        origin.wait_for()
        assert origin.locator(".escalation").count() == 0
        trio.from_thread.run(escalate)
        line = origin.locator(".escalation")
        line.wait_for()
        assert line.text_content() == "Escalated to Westside (via you): no answers yet"
        forwarded = alert_item(ana_page, text)
        forwarded.locator(".escalated-from").wait_for()
        assert forwarded.locator(".escalated-from").text_content() == "Escalated from East crew"
        assert "Eastside" not in (forwarded.text_content() or "")
        forwarded.locator('button[data-status="responding"]').click()
        origin.locator(".escalation", has_text="1 responding").wait_for()
        assert line.text_content() == "Escalated to Westside (via you): 0 on scene, 1 responding"
        assert not session.errors, session.errors

    await run_in_browser("escalation", scenario)
