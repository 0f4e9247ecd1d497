"""MQTT clients for the Mosquitto side of the benchmarks.

Fan-out uses paho-mqtt (MQTT 3.1.1, QoS 1) without its network thread: the caller's
`selectors` loop calls `loop_read` when a client's socket is readable and `loop_write`
when paho has bytes queued, the same shape as the relay's load client. The memory
benchmark, which only holds connections, writes CONNECT and SUBSCRIBE by hand
(`raw_connect_subscribe`): it measures the broker's memory, and 10,000 paho clients
would cost the client processes three file descriptors each for nothing.
"""

from __future__ import annotations

import selectors
import socket
import time
from typing import TYPE_CHECKING, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

if TYPE_CHECKING:
    from collections.abc import Callable

SETUP_TIMEOUT: Final = 60.0  # seconds to connect and subscribe a worker's clients
KEEPALIVE: Final = 600  # seconds; longer than any run, so no PINGREQ is needed


def paho_client(name: str, on_message: Callable[[bytes], None] | None = None) -> mqtt.Client:
    """Return a paho client (MQTT 3.1.1, clean session) that calls `on_message(payload)`."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=name,
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    # paho keeps at most 20 QoS 1 messages in flight by default and queues the rest in
    # the client; the publisher's window is the benchmark's to choose, so lift it.
    client.max_inflight_messages_set(65_535)
    client.max_queued_messages_set(0)
    if on_message is not None:

        def deliver(_client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
            on_message(bytes(message.payload))

        client.on_message = deliver
    return client


def pump(client: mqtt.Client, readable: bool) -> None:
    """Let paho read (if the socket is readable) and write whatever it has queued."""
    if readable:
        rc = client.loop_read()
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"mqtt read failed: {mqtt.error_string(rc)}")
    if client.want_write():
        client.loop_write()


def connect_all(
    clients: list[mqtt.Client], port: int, topic: str | None, host: str = "127.0.0.1"
) -> None:
    """Connect every client (and subscribe it to `topic` at QoS 1), waiting for the acks."""
    pending: set[mqtt.Client] = set()

    def connected(client: mqtt.Client, _u: object, _f: object, reason: object, _p: object) -> None:
        if getattr(reason, "is_failure", False):
            raise ConnectionError(f"mqtt connect refused: {reason}")
        if topic is None:
            pending.discard(client)
        else:
            client.subscribe(topic, qos=1)

    def subscribed(client: mqtt.Client, _u: object, _m: object, _r: object, _p: object) -> None:
        pending.discard(client)

    with selectors.DefaultSelector() as selector:
        for client in clients:
            client.on_connect = connected
            client.on_subscribe = subscribed
            client.connect(host, port, keepalive=KEEPALIVE)
            sock = client.socket()
            assert isinstance(sock, socket.socket)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            selector.register(sock, selectors.EVENT_READ, client)
            pending.add(client)
        deadline = time.monotonic() + SETUP_TIMEOUT
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} mqtt clients did not connect in time")
            for key, _ in selector.select(1.0):
                pump(key.data, readable=True)
            for client in clients:
                if client.want_write():
                    client.loop_write()


# -- hand-written packets for holding idle connections ------------------------------------------


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def raw_connect_subscribe(client_id: str, topic: str) -> bytes:
    """Return CONNECT (3.1.1, clean session, keepalive off) then SUBSCRIBE `topic` at QoS 1."""
    variable = _utf8("MQTT") + bytes([4, 0x02]) + (0).to_bytes(2, "big")
    body = variable + _utf8(client_id)
    connect = bytes([0x10]) + _remaining_length(len(body)) + body
    sub_body = (1).to_bytes(2, "big") + _utf8(topic) + bytes([1])
    subscribe = bytes([0x82]) + _remaining_length(len(sub_body)) + sub_body
    return connect + subscribe


# CONNACK (4 bytes, return code 0) and SUBACK for packet id 1 granting QoS 1 (5 bytes).
RAW_ACKS: Final = bytes([0x20, 0x02, 0x00, 0x00, 0x90, 0x03, 0x00, 0x01, 0x01])
