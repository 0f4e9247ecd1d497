// The daemon's API from JavaScript with fetch (Node 18 or later), over loopback TCP with
// the token (docs/daemon.md, "JavaScript"). Sends an alert and prints the first answer.
// Usage: node daemon_fetch.mjs http://127.0.0.1:8765 ~/.local/share/cellrelay/daemon.token
import { readFileSync } from "node:fs";

const [base, tokenFile] = process.argv.slice(2);
const headers = { Authorization: `Bearer ${readFileSync(tokenFile, "utf8").trim()}` };

async function api(method, path, body) {
  const response = await fetch(base + path, {
    method,
    headers: body ? { ...headers, "Content-Type": "application/json" } : headers,
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json();
  if (!response.ok) throw new Error(`${data.status} ${data.code}: ${data.detail ?? ""}`);
  return data;
}

// Server-Sent Events from a fetch body: one JSON object per `data:` line.
async function* events(body) {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim());
      if (data.length) yield JSON.parse(data.join("\n"));
    }
  }
}

const me = await api("GET", "/daemon");
console.log(`daemon of ${me.identity.name}`);
// Open the stream first, so that no answer can come before we listen.
const stream = await fetch(`${base}/events?cell=Eastside`, { headers });
const incoming = events(stream.body);
const sent = await api("POST", "/cells/Eastside/alerts", { text: "Agents at 14th & Main", priority: "urgent" });
console.log(`sent ${sent.alert.message_id.slice(0, 8)} to ${sent.recipients} other members`);
for await (const event of incoming) {
  if (event.type === "status_received" && event.reply.alert_id === sent.alert.message_id) {
    console.log(`${event.sender.name}: ${event.reply.status}`);
    break;
  }
}
await stream.body.cancel().catch(() => {});
