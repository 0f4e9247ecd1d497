"""docs/protocol.md agrees with the code, and an independent client built from it works."""

from __future__ import annotations

import re

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cellrelay.protocol.wire._connection import Connection, Role
from cellrelay.protocol.wire._messages import Auth, Ok, Publish, Published, Welcome
from cellrelay.protocol.wire._noise import KeyPair

from ..independent_client import IndependentClient
from . import docgen


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


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
    # §6.2 from the document: the admin signing input and the signed set_limits.
    admin_key = Ed25519PrivateKey.from_private_bytes(_doc_hex("Admin capability key seed"))
    assert _raw_public(admin_key) == _doc_hex("Admin capability public key")
    counter = 1_767_225_600_123
    fields = (3600).to_bytes(4, "big") + (1_048_576).to_bytes(8, "big")
    signing_input = (
        b"cellrelay/1 admin set_limits\x00" + client.handshake_hash + mailbox
        + counter.to_bytes(8, "big") + fields
    )  # fmt: skip
    assert signing_input == _doc_hex("SetLimits signing input")
    set_limits = {"t": "set_limits", "id": 3, "mailbox": mailbox, "max_ttl": 3600,
                  "max_bytes": 1_048_576, "counter": counter,
                  "sig": client.admin_sig(admin_key, "set_limits", mailbox, counter, fields)}  # fmt: skip
    assert msgpack.packb(set_limits) == _doc_hex("SetLimits, msgpack")
    # §4.3 from the document: page items are [seq, expires_at, envelope] arrays.
    page = {"t": "page", "id": 4, "mailbox": mailbox,
            "items": [[1, 1_767_229_200, b"sealed group message"], [2, 1_767_232_800, b"another one"]],
            "more": True}  # fmt: skip
    assert msgpack.packb(page) == _doc_hex("Page, msgpack")
    assert msgpack.unpackb(_doc_hex("Page, msgpack")) == page


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
