// Follow a daemon's alerts with EventSource, resuming after a lost connection
// (docs/daemon.md, "JavaScript"). For JavaScript on the daemon's own origin (the board, an
// extension on its page); other origins are refused by design (no CORS). EventSource
// cannot send headers, so each connection uses a one-time ticket asked for with fetch.
function followAlerts(token, onAlert) {
  const headers = { Authorization: `Bearer ${token}` };
  let lastEventId = null;
  async function connect() {
    const response = await fetch("/events/tickets", { method: "POST", headers });
    const { ticket } = await response.json();
    const query = new URLSearchParams({ ticket });
    if (lastEventId) query.set("last_event_id", lastEventId);
    const source = new EventSource(`/events?${query}`);
    source.onmessage = (message) => {
      lastEventId = message.lastEventId || lastEventId;
      const event = JSON.parse(message.data);
      if (event.type === "alert_received") onAlert(event);
    };
    source.onerror = () => {
      source.close(); // a ticket works once: reconnect with a new one, from lastEventId
      setTimeout(connect, 2000);
    };
  }
  return connect();
}
