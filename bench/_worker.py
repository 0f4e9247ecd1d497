"""Load-client subprocesses for the benchmarks: `python bench/_worker.py KIND [options]`.

Each worker sets up its connections, prints `ready`, then works until its standard input
ends (the controller closes it to stop the worker). Kinds:

* `fanout-relay`, `fanout-mqtt`: N subscribers of one mailbox or topic. For every
  message, identified by the big-endian index in the first 8 bytes of its payload, the
  worker prints `INDEX T` once all its N connections have received it, T being the
  CLOCK_MONOTONIC time in nanoseconds at which the last of them read it (system-wide on
  Linux, so comparable with the publisher's clock in another process).
* `hold-relay`, `hold-mqtt`, `hold-tcp`: hold idle connections (authorised and subscribed,
  for the first two) for the memory benchmark; relay pings are answered.
* `publish-relay`, `publish-redis`: pipelined durable publishes; on `go START M0 M1` (ns)
  they publish from START until M1 and print, as JSON, how many acknowledgements arrived
  in [M0, M1] and their latencies.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import selectors
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _benchlib import raise_open_files_limit
from _relay_client import MailboxKeys, RelayLoadClient

from cellrelay.protocol.wire._capability import CapabilityKey
from cellrelay.protocol.wire._messages import Deliver, Error, MailboxId, Published

if TYPE_CHECKING:
    from collections.abc import Callable

ENVELOPE_SIZE: Final = 600
STDIN: Final = sys.stdin.fileno()


def say(line: str) -> None:
    """Print one line to the controller at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Completions:
    """Counts, per message index, how many of this worker's connections have it."""

    def __init__(self, connections: int) -> None:
        """Track messages that must reach `connections` connections."""
        self.connections = connections
        self.counts: collections.Counter[int] = collections.Counter()
        self.lines: list[str] = []

    def received(self, payload: bytes, now: int) -> None:
        """Note one connection's receipt of the message whose payload is `payload`."""
        index = int.from_bytes(payload[:8], "big")
        counts = self.counts
        counts[index] += 1
        if counts[index] == self.connections:
            del counts[index]
            self.lines.append(f"{index} {now}")

    def flush(self) -> None:
        """Send the completed messages' lines to the controller."""
        if self.lines:
            sys.stdout.write("\n".join(self.lines) + "\n")
            sys.stdout.flush()
            self.lines.clear()


def run_loop(
    selector: selectors.BaseSelector,
    on_ready: Callable[[object], None],
    after: Callable[[], None] | None = None,
) -> None:
    """Dispatch readable sockets to `on_ready(key.data)` until stdin ends.

    `after` runs once per pass, after every ready socket has been handled.
    """
    while True:
        for key, _ in selector.select(1.0):
            if key.data is None:  # stdin: the controller closes it to stop us
                if not os.read(STDIN, 4096):
                    return
                continue
            on_ready(key.data)
        if after is not None:
            after()


def new_selector() -> selectors.BaseSelector:
    """A selector watching stdin (data None) for the controller's end-of-input."""
    selector = selectors.DefaultSelector()
    selector.register(STDIN, selectors.EVENT_READ, None)
    return selector


# -- fan-out subscribers ----------------------------------------------------------------------

# A subscriber process holds hundreds of connections; decrypting and parsing one message
# costs tens of microseconds in Python, so if each were parsed as it arrived, the last
# connection's timestamp would measure this process's parsing of the other 249, not the
# broker. So the loop reads every ready socket and stamps the bytes with the time first,
# and parses the stamped chunks only when no socket is ready (or after MAX_DEFER), for the
# relay and Mosquitto alike. Correctness is still checked: a message counts only once it
# has been decrypted (relay) or parsed (MQTT) and its index read.
MAX_DEFER: Final = 20_000_000  # ns a chunk may wait to be parsed while sockets stay busy
RECEIVE_SIZE: Final = 1 << 18


def stamp_then_parse(
    selector: selectors.BaseSelector,
    parse: Callable[[object, bytes, int], None],
    after: Callable[[], None],
) -> None:
    """Read ready sockets, stamping each chunk; parse when quiet; stop when stdin ends."""
    chunks: list[tuple[object, bytes, int]] = []
    while True:
        events = selector.select(0 if chunks else 1.0)
        for key, _ in events:
            if key.data is None:  # stdin: the controller closes it to stop us
                if not os.read(STDIN, 4096):
                    return
                continue
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                continue
            if not data:
                raise EOFError("the broker closed a subscriber connection")
            chunks.append((key.data, data, time.monotonic_ns()))
        if chunks and (not events or time.monotonic_ns() - chunks[0][2] > MAX_DEFER):
            for owner, data, when in chunks:
                parse(owner, data, when)
            chunks.clear()
            after()


def fanout_relay(args: argparse.Namespace) -> None:
    """Subscribe `--connections` connections to one mailbox and report completions."""
    key = bytes.fromhex(args.key)
    mailbox = MailboxId(bytes.fromhex(args.mailbox))
    read_key = CapabilityKey.from_seed(bytes.fromhex(args.read_seed))
    clients = []
    for _ in range(args.connections):
        client = RelayLoadClient.connect(args.port, key)
        client.authorise_and_subscribe(read_key, mailbox)
        client.go_non_blocking()
        clients.append(client)
    completions = Completions(len(clients))
    selector = new_selector()
    for client in clients:
        selector.register(client.sock, selectors.EVENT_READ, client)
    say("ready")

    def parse(owner: object, data: bytes, when: int) -> None:
        assert isinstance(owner, RelayLoadClient)
        for message in owner.feed(data):
            if isinstance(message, Deliver):
                completions.received(message.envelope, when)

    stamp_then_parse(selector, parse, completions.flush)


class MqttSubscriber:
    """A hand-written MQTT 3.1.1 subscriber's receive side: PUBLISH in, PUBACK out."""

    def __init__(self, sock: socket.socket) -> None:
        """Wrap a connected, subscribed, non-blocking socket."""
        self.sock = sock
        self.buffer = b""
        self.out = b""

    def parse(self, data: bytes, when: int, completions: Completions) -> None:
        """Parse whole packets; count each PUBLISH; queue a PUBACK for QoS 1 ones."""
        buf = self.buffer + data if self.buffer else data
        pos, end = 0, len(buf)
        acks: list[bytes] = []
        while end - pos >= 2:
            first = buf[pos]
            length, shift, i, whole = 0, 0, pos + 1, False
            while i < end and i <= pos + 4:  # the remaining-length varint, 1 to 4 bytes
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    whole = True
                    break
            if not whole or i + length > end:
                break
            body = buf[i : i + length]
            pos = i + length
            if first & 0xF0 != 0x30:  # not PUBLISH (PINGRESP and such): nothing to do
                continue
            topic_end = 2 + int.from_bytes(body[:2], "big")
            qos = (first >> 1) & 3
            if qos:
                packet_id = body[topic_end : topic_end + 2]
                acks.append(b"\x40\x02" + packet_id)
                topic_end += 2
            completions.received(body[topic_end:], when)
        self.buffer = buf[pos:]
        if acks:
            self.out += b"".join(acks)
            self.flush()

    def flush(self) -> None:
        """Write queued PUBACKs as far as the socket takes them."""
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            return
        self.out = self.out[sent:]


def fanout_mqtt(args: argparse.Namespace) -> None:
    """Subscribe hand-written MQTT clients to one topic at QoS 1 and report completions."""
    from _mqtt import RAW_ACKS, raw_connect_subscribe

    completions = Completions(args.connections)
    selector = new_selector()
    subscribers = []
    for i in range(args.connections):
        sock = open_mqtt(
            args.port, raw_connect_subscribe(f"sub-{os.getpid()}-{i}", args.topic), RAW_ACKS
        )
        subscriber = MqttSubscriber(sock)
        subscribers.append(subscriber)
        selector.register(sock, selectors.EVENT_READ, subscriber)
    say("ready")

    def parse(owner: object, data: bytes, when: int) -> None:
        assert isinstance(owner, MqttSubscriber)
        owner.parse(data, when, completions)

    def after() -> None:
        completions.flush()
        for subscriber in subscribers:
            if subscriber.out:
                subscriber.flush()

    stamp_then_parse(selector, parse, after)


def fanout_paho(args: argparse.Namespace) -> None:
    """Subscribe `--connections` paho clients to one topic at QoS 1 and report completions.

    Here each message is stamped when paho hands it over, after paho's own parsing, so
    the figures include paho's cost per message; `fanout-mqtt` is the lean twin.
    """
    from _mqtt import connect_all, paho_client, pump

    completions = Completions(args.connections)
    clients = [
        paho_client(
            f"sub-{os.getpid()}-{i}",
            lambda payload: completions.received(payload, time.monotonic_ns()),
        )
        for i in range(args.connections)
    ]
    connect_all(clients, args.port, args.topic)
    selector = new_selector()
    for client in clients:
        selector.register(client.socket(), selectors.EVENT_READ, client)  # type: ignore[arg-type]
    say("ready")
    run_loop(selector, lambda client: pump(client, readable=True), completions.flush)  # type: ignore[arg-type]


def open_mqtt(port: int, hello: bytes, acks: bytes) -> socket.socket:
    """Connect, send `hello` (CONNECT and SUBSCRIBE), check the `acks`; return the socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(hello)
    received = b""
    while len(received) < len(acks):
        chunk = sock.recv(64)
        if not chunk:
            raise EOFError("mosquitto closed a connection during setup")
        received += chunk
    if received != acks:
        raise RuntimeError(f"unexpected mqtt acks {received.hex()}")
    sock.setblocking(False)
    return sock


# -- idle connections for the memory benchmark ----------------------------------------------


def hold_relay(args: argparse.Namespace) -> None:
    """Hold connections, each authorised to read one mailbox and subscribed to it."""
    key = bytes.fromhex(args.key)
    mailboxes = json.loads(Path(args.mailboxes).read_text())
    clients = []
    for i in range(args.first, args.first + args.connections):
        mailbox_hex, seed_hex = mailboxes[i // args.per_mailbox]
        client = RelayLoadClient.connect(args.port, key)
        client.authorise_and_subscribe(
            CapabilityKey.from_seed(bytes.fromhex(seed_hex)), MailboxId(bytes.fromhex(mailbox_hex))
        )
        client.go_non_blocking()
        clients.append(client)
    selector = new_selector()
    for client in clients:
        selector.register(client.sock, selectors.EVENT_READ, client)
    say("ready")

    def on_ready(data: object) -> None:
        assert isinstance(data, RelayLoadClient)
        data.read()  # answers pings; nothing else arrives on an idle mailbox

    run_loop(selector, on_ready)


def hold_mqtt(args: argparse.Namespace) -> None:
    """Hold MQTT connections, each subscribed at QoS 1 to its cell's topic."""
    from _mqtt import RAW_ACKS, raw_connect_subscribe

    socks = [
        open_mqtt(
            args.port,
            raw_connect_subscribe(f"hold-{i}", f"bench/cell{i // args.per_mailbox}"),
            RAW_ACKS,
        )
        for i in range(args.first, args.first + args.connections)
    ]
    hold_sockets(socks)


def hold_tcp(args: argparse.Namespace) -> None:
    """Hold plain TCP connections to the bare echo server, each proven served by one echo."""
    socks = []
    for _ in range(args.connections):
        sock = socket.create_connection(("127.0.0.1", args.port), timeout=30.0)
        sock.sendall(b"x")
        if sock.recv(1) != b"x":
            raise EOFError("the bare server did not echo")
        sock.setblocking(False)
        socks.append(sock)
    hold_sockets(socks)


def hold_sockets(socks: list[socket.socket]) -> None:
    """Say ready and keep `socks` open until stdin ends; a closed socket is an error."""
    selector = new_selector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ, sock)
    say("ready")

    def on_ready(data: object) -> None:
        assert isinstance(data, socket.socket)
        if not data.recv(4096):
            raise EOFError("the server closed an idle connection")

    run_loop(selector, on_ready)


# -- pipelined durable publishes -------------------------------------------------------------


def wait_for_go() -> tuple[int, int, int]:
    """Block until the controller says `go START M0 M1`; return the three times (ns)."""
    line = sys.stdin.readline().split()
    if not line or line[0] != "go":
        raise SystemExit(0)
    return int(line[1]), int(line[2]), int(line[3])


def sleep_until(when_ns: int) -> None:
    """Sleep until CLOCK_MONOTONIC reaches `when_ns`."""
    delay = (when_ns - time.monotonic_ns()) / 1e9
    if delay > 0:
        time.sleep(delay)


class AckStats:
    """Acknowledgements counted and timed inside the measured interval [m0, m1]."""

    def __init__(self, m0: int, m1: int) -> None:
        """Measure acknowledgements that arrive between `m0` and `m1` (ns)."""
        self.m0 = m0
        self.m1 = m1
        self.acked = 0
        self.errors = 0
        self.latencies_us: list[int] = []

    def ack(self, sent: int, now: int) -> None:
        """Record one acknowledgement of a publish sent at `sent`, read at `now`."""
        if self.m0 <= now <= self.m1:
            self.acked += 1
            self.latencies_us.append((now - sent) // 1000)

    def report(self) -> None:
        """Print the result line."""
        say(
            json.dumps(
                {"acked": self.acked, "errors": self.errors, "latencies_us": self.latencies_us}
            )
        )


def publish_relay(args: argparse.Namespace) -> None:
    """Publish from `--connections` connections, `--window` in flight on each."""
    key = bytes.fromhex(args.key)
    envelope = os.urandom(ENVELOPE_SIZE)
    clients: list[tuple[RelayLoadClient, MailboxId]] = []
    for _ in range(args.connections):
        client = RelayLoadClient.connect(args.port, key)
        keys = MailboxKeys()
        mailbox = client.create_mailbox(keys)
        client.authorise(keys.write, "write", mailbox)
        client.go_non_blocking()
        clients.append((client, mailbox))
    say("ready")
    start, m0, m1 = wait_for_go()
    stats = AckStats(m0, m1)
    sent_at: dict[RelayLoadClient, dict[int, int]] = {c: {} for c, _ in clients}
    selector = selectors.DefaultSelector()
    for client, _ in clients:
        selector.register(client.sock, selectors.EVENT_READ, client)
    mailbox_of = dict(clients)

    def top_up(client: RelayLoadClient, now: int) -> None:
        inflight = sent_at[client]
        room = args.window - len(inflight)
        if room > 0 and now < m1:
            for request_id in client.publish_messages(mailbox_of[client], [envelope] * room):
                inflight[request_id] = now
            client.flush()

    sleep_until(start)
    for client, _ in clients:
        top_up(client, time.monotonic_ns())
    while any(sent_at.values()):
        for key_, _ in selector.select(1.0):
            client = key_.data
            messages = client.read()
            now = time.monotonic_ns()
            inflight = sent_at[client]
            for message in messages:
                if isinstance(message, Published | Error):
                    stats.ack(inflight.pop(message.id), now)
                    if isinstance(message, Error):
                        stats.errors += 1
            top_up(client, now)
        for client, _ in clients:
            if client.out:
                client.flush()
    stats.report()
    sys.stdin.read()


def publish_redis(args: argparse.Namespace) -> None:
    """Pipeline XADDs of 600-byte entries, `--window` in flight per connection."""
    envelope = os.urandom(ENVELOPE_SIZE)
    socks: list[socket.socket] = []
    commands: dict[socket.socket, bytes] = {}
    for i in range(args.connections):
        sock = socket.create_connection(("127.0.0.1", args.port), timeout=30.0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        socks.append(sock)
        stream = f"bench:{os.getpid()}:{i}".encode()
        parts = [b"XADD", stream, b"*", b"e", envelope]
        commands[sock] = b"*%d\r\n" % len(parts) + b"".join(
            b"$%d\r\n%s\r\n" % (len(p), p) for p in parts
        )
    say("ready")
    start, m0, m1 = wait_for_go()
    stats = AckStats(m0, m1)
    sent_at: dict[socket.socket, collections.deque[int]] = {s: collections.deque() for s in socks}
    buffers: dict[socket.socket, bytes] = dict.fromkeys(socks, b"")
    pending_out: dict[socket.socket, bytes] = dict.fromkeys(socks, b"")
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ, sock)

    def top_up(sock: socket.socket, now: int) -> None:
        inflight = sent_at[sock]
        room = args.window - len(inflight)
        if room > 0 and now < m1:
            inflight.extend([now] * room)
            pending_out[sock] += commands[sock] * room
        if pending_out[sock]:
            try:
                sent = sock.send(pending_out[sock])
            except BlockingIOError:
                sent = 0
            pending_out[sock] = pending_out[sock][sent:]

    sleep_until(start)
    for sock in socks:
        top_up(sock, time.monotonic_ns())
    while any(sent_at.values()):
        for key_, _ in selector.select(1.0):
            sock = key_.data
            data = sock.recv(1 << 18)
            if not data:
                raise EOFError("redis closed the connection")
            now = time.monotonic_ns()
            buf = buffers[sock] + data
            inflight = sent_at[sock]
            # Each reply is a bulk string with the new entry's id: $N\r\nID\r\n, or -ERR.
            pos = 0
            while True:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    break
                if buf[pos : pos + 1] == b"-":
                    stats.errors += 1
                    stop = line_end + 2
                else:
                    stop = line_end + 2 + int(buf[pos + 1 : line_end]) + 2
                    if stop > len(buf):
                        break
                stats.ack(inflight.popleft(), now)
                pos = stop
            buffers[sock] = buf[pos:]
            top_up(sock, now)
        for sock in socks:
            if pending_out[sock]:
                top_up(sock, time.monotonic_ns())
    stats.report()
    sys.stdin.read()


def main() -> None:
    """Parse the command line and run the worker."""
    raise_open_files_limit()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--key", help="the relay's static public key, hex")
    parser.add_argument("--mailbox", help="mailbox id, hex")
    parser.add_argument("--read-seed", help="the mailbox's read key seed, hex")
    parser.add_argument("--topic", help="MQTT topic")
    parser.add_argument("--mailboxes", help="JSON file of [mailbox hex, read seed hex] pairs")
    parser.add_argument("--first", type=int, default=0, help="global index of our first connection")
    parser.add_argument("--per-mailbox", type=int, default=50, help="connections per mailbox")
    parser.add_argument("--window", type=int, default=1, help="publishes in flight per connection")
    args = parser.parse_args()
    KINDS[args.kind](args)


KINDS: Final[dict[str, Callable[[argparse.Namespace], None]]] = {
    "fanout-relay": fanout_relay,
    "fanout-mqtt": fanout_mqtt,
    "fanout-paho": fanout_paho,
    "hold-relay": hold_relay,
    "hold-mqtt": hold_mqtt,
    "hold-tcp": hold_tcp,
    "publish-relay": publish_relay,
    "publish-redis": publish_redis,
}

if __name__ == "__main__":
    main()
