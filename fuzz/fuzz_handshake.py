"""Fuzz the relay-role connection: raw bytes, handshake payloads and transport plaintexts.

The first input byte picks what the rest is:

* 0: raw bytes straight off the wire into a fresh relay connection;
* 1: the payload of a genuine handshake message 1 (so it survives the AEAD and reaches
  the codec and the state machine);
* 2: the plaintext of a genuine transport frame after a completed handshake.

Keys are fixed so runs are reproducible. The only acceptable outcomes are messages or
`RemoteProtocolError`; anything else is a bug.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from cellrelay.protocol._errors import RemoteProtocolError
    from cellrelay.protocol.wire._connection import Connection, Role
    from cellrelay.protocol.wire._messages import Hello, Welcome
    from cellrelay.protocol.wire._noise import KeyPair

RELAY_KEY = KeyPair.from_private(bytes(range(32)))
CLIENT_EPHEMERAL = bytes(range(32, 64))
RELAY_EPHEMERAL = bytes(range(64, 96))
WELCOME = Welcome(time_ms=0, max_envelope=16384, max_ttl=3600, ping_interval=30)


def _pair() -> tuple[Connection, Connection]:
    client = Connection(
        Role.CLIENT,
        relay_public_key=RELAY_KEY.public,
        ephemeral_key=KeyPair.from_private(CLIENT_EPHEMERAL),
    )
    relay = Connection(
        Role.RELAY, static_key=RELAY_KEY, ephemeral_key=KeyPair.from_private(RELAY_EPHEMERAL)
    )
    return client, relay


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(2, "big") + body


def test_one_input(data: bytes) -> None:
    """Check one input (atheris entry point)."""
    if not data:
        return
    mode, rest = data[0] % 3, data[1:]
    client, relay = _pair()
    try:
        if mode == 0:
            relay.receive_data(rest)
        elif mode == 1:
            handshake = client._handshake
            assert handshake is not None
            relay.receive_data(_frame(handshake.write_message(rest[:60000])))
        else:
            relay.receive_data(client.send(Hello()))
            client.receive_data(relay.send(WELCOME))
            cipher = client._send_cipher
            assert cipher is not None
            relay.receive_data(_frame(cipher.encrypt(rest[:65000])))
    except RemoteProtocolError:
        return


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
