// The cellrelay dispatch board: a page the daemon serves itself (docs/daemon.md, "The board").
//
// Rules this file keeps, because alert text, places, notes and names are written by
// whichever member sent them, and a member can be hostile:
// * Everything a member wrote reaches the page through textContent (via `el`), never as
//   HTML. The page's Content-Security-Policy requires Trusted Types and allows none, so
//   any assignment of a string to innerHTML throws instead of parsing it.
// * No inline script or style, no eval, no third-party anything: the daemon serves every
//   file, and the policy allows requests to the daemon only.
// * The session token (from the one-time code in the URL's fragment) stays in
//   sessionStorage for this tab, and goes only into the Authorization header. Event
//   streams use one-time tickets, because EventSource cannot send headers.

const PRIORITY_RANK = { emergency: 0, urgent: 1, info: 2 };
const STATUS_WORDS = {
  responding: "Responding",
  on_scene: "On scene",
  resolved: "Resolved",
  false_alarm: "False alarm",
};
// A report's verification state (docs/workflow.md): unverified ones must look different.
const REPORT_WORDS = {
  reported: "Unverified report",
  verifying: "Being verified",
  confirmed: "Confirmed",
  false_alarm: "False alarm",
  resolved: "Resolved",
};
const STEP_WORDS = {
  verifying: "Verifying",
  confirmed: "Confirm",
  false_alarm: "False alarm",
  resolved: "Resolve",
};
const SESSION_KEY = "cellrelay.session";
const RECONNECT_MS = 2000;

const state = {
  token: null,
  me: null, // { name, member_id }
  cells: [], // CellSummary
  alerts: new Map(), // alert id -> { cell, rollup }
  receipts: new Map(), // alert id -> ReceiptCounts, for your own alerts (protocol §C1.7)
  requests: new Map(), // cell name -> [Member]
  members: new Map(), // cell name -> [Member]
  relays: new Map(), // relay -> { connected, cells, state, reason, retry_in }
  warnings: [], // security_warning and flood_detected events, newest first
  muted: [], // muted_alert_received events, newest first: shown, never rung
  lastEventId: null,
  source: null,
  audio: null,
};

// -- the DOM, as text only ----------------------------------------------------------------

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else if (name === "type" || name === "title" || name === "disabled") node[name] = value;
    else throw new Error(`el: attribute ${name} is not allowed`);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function $(id) {
  return document.getElementById(id);
}

function say(text) {
  $("status").textContent = text;
}

function shortId(hex) {
  return hex.slice(0, 8);
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// -- talking to the daemon --------------------------------------------------------------

class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.code = problem ? problem.code : "";
  }
}

async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` };
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    if (response.status === 401) showLogin("The session has ended: open a new link from `cellrelay board`.");
    throw new ApiError(response.status, data);
  }
  return data;
}

function cellPath(cell, ...rest) {
  return ["", "cells", cell, ...rest].map(encodeURIComponent).join("/");
}

// -- session ----------------------------------------------------------------------------

async function openSession() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const code = fragment.get("code");
  if (code) {
    history.replaceState(null, "", "/"); // the code is used up either way: out of sight
    const response = await fetch("/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ code }),
      cache: "no-store",
      credentials: "omit",
    });
    if (!response.ok) {
      showLogin("That link has been used or has expired: run `cellrelay board` for a new one.");
      return false;
    }
    const session = await response.json();
    sessionStorage.setItem(SESSION_KEY, session.token);
  }
  state.token = sessionStorage.getItem(SESSION_KEY);
  if (!state.token) {
    showLogin("");
    return false;
  }
  return true;
}

function showLogin(message) {
  sessionStorage.removeItem(SESSION_KEY);
  if (state.source) state.source.close();
  $("board").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
}

// -- loading state ------------------------------------------------------------------------

async function loadAll() {
  const [daemon, cells, relays] = await Promise.all([
    call("GET", "/daemon"),
    call("GET", "/cells"),
    call("GET", "/relays"),
  ]);
  state.me = daemon.identity;
  state.cells = cells.cells.filter((c) => c.role !== "removed");
  state.relays = new Map(relays.relays.map((r) => [r.relay, r]));
  state.alerts.clear();
  state.receipts.clear();
  await Promise.all(state.cells.map((cell) => loadCell(cell.name)));
  render();
}

async function loadCell(name) {
  const cell = state.cells.find((c) => c.name === name);
  if (!cell) return;
  const [alerts, members] = await Promise.all([
    call("GET", cellPath(name, "alerts")),
    call("GET", cellPath(name, "members")),
  ]);
  for (const rollup of alerts.alerts) state.alerts.set(rollup.alert.message_id, { cell: name, rollup });
  for (const [id, counts] of Object.entries(alerts.receipts)) state.receipts.set(id, counts);
  state.members.set(name, members.members);
  if (cell.role === "admin") {
    state.requests.set(name, (await call("GET", cellPath(name, "join-requests"))).requests);
  } else {
    state.requests.delete(name);
  }
}

// -- events ------------------------------------------------------------------------------------

async function connectEvents() {
  if (state.source) state.source.close();
  let ticket;
  try {
    ticket = (await call("POST", "/events/tickets")).ticket;
  } catch (error) {
    if (error.status !== 401) setTimeout(connectEvents, RECONNECT_MS);
    return;
  }
  const query = new URLSearchParams({ ticket });
  if (state.lastEventId) query.set("last_event_id", state.lastEventId);
  const source = new EventSource(`/events?${query}`);
  state.source = source;
  source.onopen = () => document.body.classList.remove("offline");
  source.onmessage = (message) => {
    if (message.lastEventId) state.lastEventId = message.lastEventId;
    handle(JSON.parse(message.data));
  };
  source.onerror = () => {
    // A ticket works once: reconnecting means a new ticket, resuming from the last id.
    source.close();
    document.body.classList.add("offline");
    setTimeout(connectEvents, RECONNECT_MS);
  };
}

function handle(event) {
  switch (event.type) {
    case "alert_received":
      if (event.rollup) state.alerts.set(event.alert.message_id, { cell: event.cell, rollup: event.rollup });
      if (event.alert.priority === "emergency" && event.sender.member_id !== state.me.member_id) {
        alarm(event);
      }
      break;
    case "status_received":
    case "verification_received":
    case "escalation_received":
      // The daemon says nothing of a report it holds back (verify-first); a step that
      // arrives for an alert this board never listed still lists it only once confirmed.
      if (event.rollup && (state.alerts.has(event.rollup.alert.message_id) || !held(event.cell, event.rollup))) {
        state.alerts.set(event.rollup.alert.message_id, { cell: event.cell, rollup: event.rollup });
      }
      break;
    case "sent":
      // Yours, from this board or anywhere else (the command line through this daemon, an
      // escalation the daemon forwarded): listed, or its roll-up brought up to date.
      if (event.rollup) state.alerts.set(event.rollup.alert.message_id, { cell: event.cell, rollup: event.rollup });
      break;
    case "receipts_counted":
      // A sampled reporter's receipt moved one of your alerts' counts (not one line each).
      state.receipts.set(event.alert_id, event.counts);
      break;
    case "join_requested":
    case "membership_changed":
    case "role_changed":
      refresh(event.cell);
      return;
    case "relay_state_changed":
      state.relays.set(event.relay, { ...(state.relays.get(event.relay) || {}), ...event });
      break;
    case "security_warning":
    case "flood_detected":
      state.warnings.unshift(event);
      state.warnings.length = Math.min(state.warnings.length, 50);
      break;
    case "muted_alert_received":
      // A muted member's alert (a flood, or muted by you or an admin): listed, no sound.
      state.muted.unshift(event);
      state.muted.length = Math.min(state.muted.length, 50);
      break;
    case "mute_changed":
      refresh(event.cell);
      return;
    case "messages_missing":
    case "equivocation_detected":
    case "epoch_stale":
      state.warnings.unshift({ cell: event.cell, reason: event.type, detail: notice(event) });
      state.warnings.length = Math.min(state.warnings.length, 50);
      break;
    case "clock_warning": {
      // The device's clock and the relay's disagree (docs/protocol.md §C7).
      const minutes = Math.round(Math.abs(event.offset) / 60);
      const side = event.offset > 0 ? "ahead of" : "behind";
      state.warnings.unshift({ cell: event.cell, reason: "clock",
        detail: `the relay's clock is ${minutes} min ${side} this device's; some alerts may show late` });
      state.warnings.length = Math.min(state.warnings.length, 50);
      break;
    }
    case "cell_burned":
      // An admin burned the cell: it is gone from this device (docs/protocol.md §C1.6).
      state.warnings.unshift({ cell: event.cell, reason: "burned",
        detail: `burned by ${event.by.name}: deleted from this device` });
      state.warnings.length = Math.min(state.warnings.length, 50);
      loadAll().catch(report);
      return;
    case "cell_gone":
      state.warnings.unshift({ cell: event.cell, reason: "gone",
        detail: "its mailboxes are gone from the relay (burned while this device was away, or lost): nothing more can arrive" });
      state.warnings.length = Math.min(state.warnings.length, 50);
      break;
    case "events_missed":
      loadAll().catch(report);
      return;
    default:
      return; // an event this board does not show
  }
  render();
}

// The security notices of issue 9, as one line (text only: names are attacker-chosen).
function notice(event) {
  if (event.type === "messages_missing") {
    return `${event.count} message(s) from ${event.sender.name} are missing`;
  }
  if (event.type === "equivocation_detected") {
    return `${event.member.name} signed two different messages as one`;
  }
  if (event.newer) return `messages of a newer epoch (${event.newer}) arrive that this device cannot open`;
  return `no new epoch for ${Math.floor(event.age / 3600)} hours`;
}

async function refresh(cellName) {
  try {
    const cells = await call("GET", "/cells");
    state.cells = cells.cells.filter((c) => c.role !== "removed");
    await loadCell(cellName);
    render();
  } catch (error) {
    report(error);
  }
}

// -- emergency alerts: a notification and a sound ------------------------------------------------

function alarm(event) {
  if (state.audio) {
    const context = state.audio;
    const tone = context.createOscillator();
    const gain = context.createGain();
    tone.frequency.value = 880;
    gain.gain.value = 0.2;
    tone.connect(gain).connect(context.destination);
    tone.start();
    tone.stop(context.currentTime + 0.6);
  }
  if ("Notification" in window && Notification.permission === "granted") {
    // Notification titles and bodies are shown as text by the browser.
    new Notification(`EMERGENCY in ${event.cell}`, { body: event.alert.text, tag: event.alert.message_id });
  }
}

async function enableNotifications() {
  state.audio = state.audio || new AudioContext();
  if ("Notification" in window && Notification.permission === "default") {
    await Notification.requestPermission();
  }
  $("notify").textContent = "Notifications and sound on";
  $("notify").disabled = true;
}

// -- rendering -----------------------------------------------------------------------------------

function activeAlerts() {
  const now = Date.now() / 1000;
  for (const [id, entry] of state.alerts) {
    if (entry.rollup.alert.expires_at <= now) state.alerts.delete(id);
  }
  return [...state.alerts.values()].sort((a, b) => {
    const x = a.rollup;
    const y = b.rollup;
    return (
      Number(x.closed) - Number(y.closed) ||
      PRIORITY_RANK[x.alert.priority] - PRIORITY_RANK[y.alert.priority] ||
      y.alert.sent_at_ms - x.alert.sent_at_ms
    );
  });
}

// What a relay's connection state means to a dispatcher (as `cellrelay listen` says it).
function relayState(r) {
  const why = r.reason ? ` (${r.reason})` : "";
  switch (r.state) {
    case "lost":
      return `lost${why}: not listening`;
    case "retrying":
      return `unreachable${why}; trying again in ${Math.max(1, Math.round(r.retry_in || 0))} s`;
    case "connected":
      return r.connected ? "connected; catching up" : "disconnected";
    default:
      return r.connected ? "connected" : "disconnected";
  }
}

function cellOf(name) {
  return state.cells.find((c) => c.name === name);
}

function renderWarning(w) {
  if (w.type !== "flood_detected") {
    return el("li", {}, `${w.cell}: ${w.reason}${w.detail ? ` (${w.detail})` : ""}`);
  }
  const cell = cellOf(w.cell);
  const item = el(
    "li",
    { class: "flood", "data-member-id": w.member.member_id },
    `${w.cell}: `,
    el("span", { class: "name" }, w.member.name),
    ` (${shortId(w.member.member_id)}) sent ${w.alerts} alerts within a minute (the cell allows ${w.limit}): muted on this device. `,
  );
  if (cell && cell.role === "admin") {
    // Issue 15: an admin mutes the flooder for the whole cell in one click.
    const button = el("button", { type: "button", class: "mute-everyone" }, "Mute for everyone");
    button.addEventListener("click", () => mute(w.cell, w.member, true, button));
    item.append(button);
  }
  return item;
}

function renderMuted(event) {
  const alert = event.alert;
  return el(
    "li",
    { class: `muted-alert ${alert.priority}`, "data-alert-id": alert.message_id },
    el("span", { class: "when" }, clock(alert.sent_at_ms)), " ",
    el("span", { class: "cell" }, event.cell), " ",
    el("span", { class: "name" }, event.sender.name), ": ",
    el("span", { class: "alert-text" }, alert.text),
  );
}

// Where a report stands and who set it: "Confirmed by Dana, 21:04 (two vans)".
function verificationLine(rollup) {
  const by = rollup.verified_by;
  const words = [REPORT_WORDS[rollup.verification]];
  if (by) {
    words.push(` by ${by.member_id === state.me.member_id ? "you" : by.name}, ${clock(by.sent_at_ms)}`);
    if (by.note) words.push(` (${by.note})`);
  }
  return el("p", { class: "verification", "data-verification": rollup.verification }, ...words);
}

// How far one of your alerts got: "Delivered to 2 of 2 · read by 1", with "~" and what the
// sample said when the counts are estimates (docs/protocol.md §C1.7).
function receiptsLine(counts) {
  const about = counts.exact ? "" : "~";
  let text = `Delivered to ${about}${counts.estimated_delivered} of ${counts.members} \u00b7 read by ${about}${counts.estimated_read}`;
  if (!counts.exact) {
    text += ` (estimated: ${counts.delivered} delivered and ${counts.read} read of ${counts.sampled} sampled members)`;
  }
  return el("p", { class: "receipts", "data-delivered": String(counts.estimated_delivered),
    "data-read": String(counts.estimated_read) }, text);
}

// Where the alert went or came from (docs/workflow.md section 7): counts, never names.
function escalationLines(rollup) {
  const lines = [];
  if (rollup.escalated_from) {
    lines.push(el("p", { class: "escalated-from" }, "Escalated from ", rollup.escalated_from));
  }
  for (const e of rollup.escalations || []) {
    const via = e.member_id === state.me.member_id ? "you" : e.name;
    const answers = e.outcome ? STATUS_WORDS[e.outcome]
      : (e.responding || e.on_scene) ? `${e.on_scene} on scene, ${e.responding} responding` : "no answers yet";
    lines.push(el("p", { class: "escalation" }, `Escalated to ${e.label} (via ${via}): ${answers}`));
  }
  return lines;
}

function held(cellName, rollup) {
  const cell = cellOf(cellName);
  // Never confirmed (not only unverified): as the library decides (protocol §C2 rule 7).
  const confirmed = (rollup.steps || []).some((s) => s.state === "confirmed");
  return Boolean(cell && cell.verify_first && !confirmed && !isVerifier(cellName)
    && rollup.author_id !== state.me.member_id);
}

function isVerifier(cellName) {
  const cell = cellOf(cellName);
  return cell && (cell.cell_role === "admin" || cell.cell_role === "dispatcher");
}

function renderAlert({ cell, rollup }) {
  const alert = rollup.alert;
  const mine = rollup.author_id === state.me.member_id;
  const state_ = rollup.false_alarm ? "False alarm" : rollup.resolved ? "Resolved" : "Open";
  const unverified = rollup.unverified ? " unverified" : "";
  const item = el(
    "li",
    { class: `alert ${alert.priority}${rollup.closed ? " closed" : ""}${unverified}`, "data-alert-id": alert.message_id },
    el(
      "div",
      { class: "alert-head" },
      el("span", { class: `badge ${alert.priority}` }, alert.priority.toUpperCase()),
      el("span", { class: "cell" }, cell),
      el("span", { class: "when" }, `${clock(alert.sent_at_ms)}, until ${clock(alert.expires_at * 1000)}`),
      el("span", { class: "id" }, shortId(alert.message_id)),
    ),
    el("p", { class: "alert-text" }, alert.text),
    alert.place ? el("p", { class: "place" }, "At ", el("span", { class: "place-text" }, alert.place)) : null,
    el("p", { class: "author" }, "From ", mine ? "you" : rollup.author_name),
    verificationLine(rollup),
    mine && state.receipts.has(alert.message_id) ? receiptsLine(state.receipts.get(alert.message_id)) : null,
    ...escalationLines(rollup),
  );
  const groups = el("ul", { class: "rollup" });
  for (const status of ["on_scene", "responding", "resolved", "false_alarm"]) {
    const people = Object.values(rollup.responders).filter((s) => s.status === status);
    if (!people.length) continue;
    const names = people.map((s) => (s.member_id === state.me.member_id ? "you" : s.name) + (s.note ? ` ("${s.note}")` : ""));
    groups.append(el("li", { class: `status ${status}` }, `${STATUS_WORDS[status]}: `, names.join(", ")));
  }
  if (!groups.children.length) groups.append(el("li", { class: "muted" }, "No answers yet"));
  item.append(el("div", { class: "rollup-state", "data-state": state_.toLowerCase() }, state_), groups);
  const answers = el("div", { class: "answers" });
  for (const [status, word] of Object.entries(STATUS_WORDS)) {
    const button = el("button", { type: "button", "data-status": status }, word);
    button.addEventListener("click", () => answer(cell, alert.message_id, status, button));
    answers.append(button);
  }
  item.append(answers);
  if (isVerifier(cell)) {
    // A dispatcher's (or admin's) steps; every member's client checks the role again.
    const steps = el("div", { class: "steps" }, "Verify: ");
    for (const [step, word] of Object.entries(STEP_WORDS)) {
      const button = el("button", { type: "button", "data-step": step }, word);
      button.addEventListener("click", () => verify(cell, alert.message_id, step, button));
      steps.append(button);
    }
    item.append(steps);
  }
  return item;
}

function render() {
  $("identity").textContent = state.me ? `${state.me.name} (${shortId(state.me.member_id)})` : "";
  const relays = $("relays");
  relays.replaceChildren(
    ...[...state.relays.entries()].map(([relay, r]) =>
      el("li", { class: r.connected ? "up" : "down", title: (r.cells || []).join(", "), "data-relay": relay }, `${relay} ${relayState(r)}`),
    ),
  );
  const alerts = activeAlerts();
  $("alerts").replaceChildren(...alerts.map(renderAlert));
  $("no-alerts").hidden = alerts.length > 0;

  for (const select of [$("send-cell"), $("invite-cell")]) {
    const chosen = select.value;
    const names = select.id === "invite-cell" ? state.cells.filter((c) => c.role === "admin") : state.cells;
    select.replaceChildren(...names.map((c) => el("option", {}, c.name)));
    if (names.some((c) => c.name === chosen)) select.value = chosen;
  }

  const requests = [];
  for (const [cell, members] of state.requests) {
    for (const member of members) {
      const approve = el("button", { type: "button", class: "approve" }, "Approve");
      const deny = el("button", { type: "button", class: "deny" }, "Deny");
      approve.addEventListener("click", () => decide(cell, member, "approve", approve));
      deny.addEventListener("click", () => decide(cell, member, "deny", deny));
      requests.push(
        el("li", { class: "request", "data-member-id": member.member_id },
          el("span", { class: "name" }, member.name), " ",
          el("code", {}, shortId(member.member_id)), ` wants to join ${cell} `, approve, deny),
      );
    }
  }
  $("requests").replaceChildren(...requests);
  $("no-requests").hidden = requests.length > 0;

  const lists = [];
  for (const cell of state.cells) {
    const members = state.members.get(cell.name) || [];
    lists.push(el("h3", {}, cell.name));
    lists.push(
      el("ul", { class: "members", "data-cell": cell.name },
        ...members.map((m) => renderMember(cell, m)),
      ),
    );
  }
  $("members").replaceChildren(...lists);

  $("warnings").replaceChildren(...state.warnings.map(renderWarning));
  $("no-warnings").hidden = state.warnings.length > 0;
  $("muted-alerts").replaceChildren(...state.muted.map(renderMuted));
  $("muted-panel").hidden = state.muted.length === 0;
}

function renderMember(cell, m) {
  const item = el("li", { "data-member-id": m.member_id }, el("span", { class: "name" }, m.name), " ",
    el("code", {}, shortId(m.member_id)), " ", el("span", { class: "role", "data-role": m.role }, m.role));
  if (m.member_id === state.me.member_id) return item;
  const muted = cell.muted.includes(m.member_id);
  if (muted) item.append(" ", el("span", { class: "muted-tag" }, "muted"));
  // An admin mutes for everyone; a member, on this device (the daemon decides by role).
  const button = el("button", { type: "button", class: muted ? "unmute" : "mute" }, muted ? "Unmute" : "Mute");
  button.addEventListener("click", () => mute(cell.name, m, !muted, button));
  item.append(" ", button);
  return item;
}

function report(error) {
  say(error instanceof Error ? error.message : String(error));
}

// -- actions ---------------------------------------------------------------------------------------

async function sendAlert(event) {
  event.preventDefault();
  const button = $("send-button");
  button.disabled = true;
  try {
    const cell = $("send-cell").value;
    const sent = await call("POST", cellPath(cell, "alerts"), {
      text: $("send-text").value,
      priority: $("send-priority").value,
      place: $("send-place").value.trim() || null,
      ttl: Number($("send-ttl").value),
    });
    const rollup = await call("GET", cellPath(cell, "alerts", sent.alert.message_id));
    state.alerts.set(sent.alert.message_id, { cell: sent.cell, rollup });
    $("send-text").value = "";
    $("send-place").value = "";
    say(`Sent to ${sent.recipients} other member${sent.recipients === 1 ? "" : "s"} of ${sent.cell}.`);
    render();
  } catch (error) {
    report(error);
  } finally {
    button.disabled = false;
  }
}

async function answer(cell, alertId, status, button) {
  button.disabled = true;
  try {
    const sent = await call("POST", cellPath(cell, "alerts", alertId, "replies"), { status });
    if (sent.rollup) state.alerts.set(alertId, { cell, rollup: sent.rollup });
    say(`Answered ${shortId(alertId)}: ${STATUS_WORDS[status]}.`);
    render();
  } catch (error) {
    report(error);
    button.disabled = false;
  }
}

async function verify(cell, alertId, step, button) {
  button.disabled = true;
  try {
    const sent = await call("POST", cellPath(cell, "alerts", alertId, "steps"), { step });
    if (sent.rollup) state.alerts.set(alertId, { cell, rollup: sent.rollup });
    say(`Marked ${shortId(alertId)}: ${REPORT_WORDS[sent.rollup ? sent.rollup.verification : step]}.`);
    render();
  } catch (error) {
    report(error);
    button.disabled = false;
  }
}

async function decide(cell, member, decision, button) {
  button.disabled = true;
  try {
    await call("POST", cellPath(cell, "join-requests", member.member_id, decision));
    say(`${decision === "approve" ? "Approved" : "Turned down"} ${member.name} (${shortId(member.member_id)}).`);
    await refresh(cell);
  } catch (error) {
    report(error);
    button.disabled = false;
  }
}

async function mute(cell, member, muted, button) {
  button.disabled = true;
  try {
    const done = await call("POST", cellPath(cell, "members", member.member_id, muted ? "mute" : "unmute"), {});
    const where = done.everyone ? "for everyone" : "on this device";
    say(`${muted ? "Muted" : "Unmuted"} ${member.name} (${shortId(member.member_id)}) ${where} in ${done.cell}.`);
    await refresh(cell);
  } catch (error) {
    report(error);
    button.disabled = false;
  }
}

async function createInvite(event) {
  event.preventDefault();
  try {
    const invite = await call("POST", cellPath($("invite-cell").value, "invites"), {});
    $("invite-link").textContent = invite.link;
    $("invite-qr").src = invite.qr_png; // a data: URL of a PNG image
    $("invite").hidden = false;
  } catch (error) {
    report(error);
  }
}

async function main() {
  $("send-form").addEventListener("submit", sendAlert);
  $("invite-form").addEventListener("submit", createInvite);
  $("notify").addEventListener("click", () => enableNotifications().catch(report));
  if (!(await openSession())) return;
  $("login").hidden = true;
  $("board").hidden = false;
  try {
    await loadAll();
  } catch (error) {
    report(error);
    return;
  }
  await connectEvents();
  setInterval(render, 15000); // expiries and times move on
  document.body.dataset.ready = "true";
}

main().catch(report);
