"""docs/protocol.md agrees with the code, and an independent client built from it works."""

from __future__ import annotations

import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cellrelay.protocol.wire._connection import Connection, Role
from cellrelay.protocol.wire._messages import Auth, Ok, Publish, Published, Welcome
from cellrelay.protocol.wire._noise import KeyPair

from ..independent_client import IndependentClient
from . import docgen


def test_generated_sections_match_the_code() -> None:
    text = docgen.DOC.read_text()
    assert len(docgen.SECTION.findall(text)) == len(docgen.RENDERERS)
    assert docgen.render_document(text) == text, "run: python -m tests.protocol.docgen"


def _doc_hex(title_start: str) -> bytes:
    text = docgen.DOC.read_text()
    match = re.search(re.escape(title_start) + r"[^\n]*\n\n```\n(.*?)\n```", text, re.S)
    assert match, title_start
    return bytes.fromhex(match.group(1).replace("\n", ""))


@pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set:UserWarning")
def test_independent_client_reproduces_the_worked_example() -> None:
    """noiseprotocol + msgpack + cryptography, following the document, give its bytes."""
    relay_public = _doc_hex("Relay static public key")
    client = IndependentClient(
        relay_public, ephemeral_private=_doc_hex("Client ephemeral private key")
    )
    assert client.hello() == _doc_hex("Frame 1")
    messages = client.receive(_doc_hex("Frame 2"))
    assert messages[0]["t"] == "welcome"
    assert client.handshake_hash == _doc_hex("Handshake hash")
    write_key = Ed25519PrivateKey.from_private_bytes(_doc_hex("Write capability key seed"))
    mailbox = _doc_hex("Mailbox id")
    auth = {"t": "auth", "id": 1, "mailbox": mailbox, "role": "write",
            "proof": client.auth_proof(write_key, "write", mailbox)}  # fmt: skip
    publish = {"t": "publish", "id": 2, "mailbox": mailbox, "expires_at": 1_767_229_200,
               "envelope": b"sealed group message"}  # fmt: skip
    assert client.send(auth, publish) == _doc_hex("Frame 3")
    assert client.receive(_doc_hex("Frame 4")) == [
        {"t": "ok", "id": 1},
        {"t": "published", "id": 2, "seq": 1},
    ]


def test_independent_client_talks_to_our_relay_role() -> None:
    relay_key = KeyPair.generate()
    relay = Connection(Role.RELAY, static_key=relay_key)
    client = IndependentClient(relay_key.public)
    relay.receive_data(client.hello())
    welcome = Welcome(time_ms=1, max_envelope=16384, max_ttl=3600, ping_interval=30)
    assert client.receive(relay.send(welcome))[0]["max_envelope"] == 16384
    assert client.handshake_hash == relay.handshake_hash
    key = Ed25519PrivateKey.generate()
    mailbox = bytes(range(16))
    wire = client.send(
        {"t": "auth", "id": 1, "mailbox": mailbox, "role": "read",
         "proof": client.auth_proof(key, "read", mailbox)},
        {"t": "publish", "id": 2, "mailbox": mailbox, "expires_at": 99, "envelope": b"x"},
    )  # fmt: skip
    auth, publish = relay.receive_data(wire)
    assert isinstance(auth, Auth)
    assert isinstance(publish, Publish)
    from cellrelay.protocol.wire._capability import verify_auth

    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert verify_auth(public, auth.proof, "read", relay.handshake_hash, mailbox)
    assert client.receive(relay.send_many([Ok(id=1), Published(id=2, seq=9)])) == [
        {"t": "ok", "id": 1},
        {"t": "published", "id": 2, "seq": 9},
    ]
