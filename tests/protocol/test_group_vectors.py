"""Known-answer vectors for the group layer: the file is exactly what the code generates, and
every byte string in it decodes with an implementation written from docs/protocol.md Part 2.

That second implementation uses no code from protocol/ and not libsodium for the AEAD or
the curves: hashlib for BLAKE2b, the `cryptography` package (OpenSSL) for X25519, Ed25519
and ChaCha20-Poly1305, and HChaCha20 written out below, so it checks the spec against the
bytes rather than the code against itself.

Regenerate after a deliberate change with
`CELLRELAY_REGENERATE_VECTORS=1 python -m pytest tests/protocol/test_group_vectors.py`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import struct
from pathlib import Path
from typing import Any, Final

import pytest

from .group_vectors import render

cryptography = pytest.importorskip("cryptography")
from cryptography.exceptions import InvalidSignature  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: E402
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (  # noqa: E402
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305  # noqa: E402

VECTORS: Final = Path(__file__).resolve().parents[1] / "vectors" / "group-v1.json"
BUCKETS: Final = (256, 512, 1024, 2048, 4096, 8192, 16384)


def test_the_vectors_file_is_what_the_code_generates() -> None:
    rendered = render()
    if os.environ.get("CELLRELAY_REGENERATE_VECTORS"):
        VECTORS.write_text(rendered)
    assert VECTORS.read_text() == rendered, (
        "tests/vectors/group-v1.json differs from the code: a wire-format change? "
        "Regenerate with CELLRELAY_REGENERATE_VECTORS=1 only if it was deliberate."
    )


# -- an independent implementation, from the spec --------------------------------------


def _rotl(v: int, n: int) -> int:
    return ((v << n) | (v >> (32 - n))) & 0xFFFFFFFF


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20 (draft-irtf-cfrg-xchacha-03 §2.2)."""
    state = [0x61707865, 0x3320646E, 0x79622D32, 0x6B206574]
    state += list(struct.unpack("<8I", key)) + list(struct.unpack("<4I", nonce16))

    def quarter(a: int, b: int, c: int, d: int) -> None:
        state[a] = (state[a] + state[b]) & 0xFFFFFFFF
        state[d] = _rotl(state[d] ^ state[a], 16)
        state[c] = (state[c] + state[d]) & 0xFFFFFFFF
        state[b] = _rotl(state[b] ^ state[c], 12)
        state[a] = (state[a] + state[b]) & 0xFFFFFFFF
        state[d] = _rotl(state[d] ^ state[a], 8)
        state[c] = (state[c] + state[d]) & 0xFFFFFFFF
        state[b] = _rotl(state[b] ^ state[c], 7)

    for _ in range(10):
        quarter(0, 4, 8, 12)
        quarter(1, 5, 9, 13)
        quarter(2, 6, 10, 14)
        quarter(3, 7, 11, 15)
        quarter(0, 5, 10, 15)
        quarter(1, 6, 11, 12)
        quarter(2, 7, 8, 13)
        quarter(3, 4, 9, 14)
    return struct.pack("<8I", *(state[0:4] + state[12:16]))


def xopen(key: bytes, nonce: bytes, ad: bytes, sealed: bytes) -> bytes:
    """XChaCha20-Poly1305 decryption: HChaCha20 subkey, then ChaCha20-Poly1305-IETF."""
    subkey = hchacha20(key, nonce[:16])
    return ChaCha20Poly1305(subkey).decrypt(bytes(4) + nonce[16:], sealed, ad)


def kdf(key: bytes, purpose: str, context: bytes = b"", size: int = 32) -> bytes:
    return hashlib.blake2b(purpose.encode() + b"\x00" + context, key=key, digest_size=size).digest()


def dh(private: bytes, public: bytes) -> bytes:
    shared = X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(public)
    )
    assert shared != bytes(32)
    return shared


def verify(public: bytes, message: bytes, signature: bytes) -> None:
    Ed25519PublicKey.from_public_bytes(public).verify(signature, message)


def unpad(padded: bytes) -> bytes:
    end = len(padded.rstrip(b"\x00"))
    assert padded[end - 1] == 0x80
    return padded[: end - 1]


def h(value: object) -> bytes:
    return bytes.fromhex(str(value))


@pytest.fixture(scope="module")
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text())
    return data


@pytest.fixture(scope="module")
def people(vectors: dict[str, Any]) -> dict[str, dict[str, bytes]]:
    out = {}
    for record in vectors["identities"]:
        out[record["name"]] = {k: h(v) for k, v in record.items() if k != "name"}
    return out


def test_identities(people: dict[str, dict[str, bytes]]) -> None:
    for person in people.values():
        private = Ed25519PrivateKey.from_private_bytes(person["sign_seed"])
        assert private.public_key().public_bytes_raw() == person["sign_pub"]
        x = X25519PrivateKey.from_private_bytes(person["dh_private"])
        assert x.public_key().public_bytes_raw() == person["dh_pub"]
        member_id = hashlib.blake2b(
            person["sign_pub"] + person["dh_pub"], digest_size=16, person=b"cellrelay-member"
        ).digest()
        assert member_id == person["member_id"]


def pairwise(people: dict[str, dict[str, bytes]], a: str, b: str, purpose: str) -> bytes:
    low, high = sorted((people[a]["dh_pub"], people[b]["dh_pub"]))
    return kdf(dh(people[a]["dh_private"], people[b]["dh_pub"]), purpose, low + high)


def test_pairwise_keys(vectors: dict[str, Any], people: dict[str, dict[str, bytes]]) -> None:
    assert len(vectors["pairwise"]) == 12
    for record in vectors["pairwise"]:
        key = pairwise(people, record["a"], record["b"], record["purpose"])
        assert key == h(record["key"])
        assert key == pairwise(people, record["b"], record["a"], record["purpose"])


def test_chain_steps(vectors: dict[str, Any]) -> None:
    steps = vectors["chain"]
    for step, following in itertools.pairwise(steps):
        material = kdf(h(step["chain_key"]), "cellrelay/1 chain message", size=56)
        assert material == h(step["message_key"]) + h(step["message_nonce"])
        assert kdf(h(step["chain_key"]), "cellrelay/1 chain next") == h(following["chain_key"])


def test_epoch_keys(vectors: dict[str, Any]) -> None:
    cell_id = h(vectors["cell"]["cell_id"])
    for epoch in vectors["epochs"]:
        context = cell_id + epoch["epoch"].to_bytes(4, "big")
        assert h(epoch["kdf_context"]) == context
        init = kdf(h(epoch["epoch_secret"]), "cellrelay/2 init secret", context)
        assert init == h(epoch["init_secret"])
        for purpose, key in epoch["keys"].items():
            assert kdf(h(epoch["epoch_secret"]), purpose, context) == h(key)


def _epoch(vectors: dict[str, Any], number: int) -> dict[str, Any]:
    found: dict[str, Any] = next(e for e in vectors["epochs"] if e["epoch"] == number)
    return found


def _key(vectors: dict[str, Any], number: int, purpose: str) -> bytes:
    return h(_epoch(vectors, number)["keys"]["cellrelay/1 epoch " + purpose])


def _x25519_public(private: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def test_epoch_changes(vectors: dict[str, Any], people: dict[str, dict[str, bytes]]) -> None:
    cell_id = h(vectors["cell"]["cell_id"])
    by_id = {p["member_id"]: name for name, p in people.items()}
    bucket_keys: dict[int, bytes] = {}  # what the members hold, change after change
    for change, log in zip(vectors["epoch_changes"], vectors["log"], strict=True):
        envelope, nonce = h(change["envelope"]), h(change["nonce"])
        number = change["epoch"]
        assert len(envelope) in BUCKETS
        assert envelope[:5] == b"\x03" + number.to_bytes(4, "big")
        assert envelope[5:29] == nonce
        inner = xopen(
            _key(vectors, change["from_epoch"], "control-header"),
            nonce,
            envelope[:5],
            envelope[29:163],
        )
        ch, op, subject_id, signature = inner[:37], inner[37], inner[38:54], inner[54:]
        signer = people[change["signer"]]
        subject_person = people[change["subject"]]
        assert ch == cell_id + number.to_bytes(4, "big") + signer["member_id"] + b"\x06"
        assert (op, subject_id) == (change["op"], subject_person["member_id"])
        verify(
            signer["sign_pub"],
            b"cellrelay/3 epoch-change\x00" + ch + bytes([op]) + subject_id + envelope[163:],
            signature,
        )
        # The change secret; the epoch secret is derived from it and the previous epoch's
        # init secret (§G6.2).
        secret = h(change["change_secret"])
        init = h(_epoch(vectors, change["from_epoch"])["init_secret"])
        epoch_secret = kdf(
            init, "cellrelay/2 epoch secret", cell_id + number.to_bytes(4, "big") + secret
        )
        assert epoch_secret == h(_epoch(vectors, number)["epoch_secret"])
        # The key section: refreshed buckets with a receive box per member, 64 bucket boxes.
        section = envelope[1203:]
        e_pub = section[:32]
        assert e_pub == h(change["ephemeral_public"])
        assert section[32] == len(change["refreshed"])
        at = 33
        for refresh in change["refreshed"]:
            b, public = section[at], section[at + 1 : at + 33]
            count = int.from_bytes(section[at + 33 : at + 35], "big")
            assert (b, public, count) == (
                refresh["bucket"],
                h(refresh["public"]),
                len(refresh["members"]),
            )
            at += 35
            ids = sorted(people[name]["member_id"] for name in refresh["members"])
            for member_id in ids:
                person = people[by_id[member_id]]
                assert _bucket(cell_id, member_id) == b
                shared = dh(person["dh_private"], e_pub)
                key = kdf(shared, "cellrelay/2 receive box", e_pub + person["dh_pub"] + member_id)
                ad = b"cellrelay/2 receive-box\x00" + ch + member_id
                private = xopen(key, nonce, ad, section[at : at + 48])
                assert _x25519_public(private) == public
                bucket_keys[b] = private
                at += 48
        boxes, table = section[at : at + 64 * 48], section[at + 64 * 48 : at + 64 * 48 + 2048]
        assert at + 64 * 48 == change["section_size"]
        assert envelope[1203 + at + 64 * 48 + 2048 :] == h(change["filler"])
        members = [h(m) for m in _epoch(vectors, number)["members"]]
        for member_id in members:
            b = _bucket(cell_id, member_id)
            private = bucket_keys[b]
            public = _x25519_public(private)
            assert table[32 * b : 32 * (b + 1)] == public
            key = kdf(dh(private, e_pub), "cellrelay/2 bucket box", e_pub + public + bytes([b]))
            ad = b"cellrelay/2 bucket-box\x00" + ch + bytes([b])
            assert xopen(key, nonce, ad, boxes[48 * b : 48 * (b + 1)]) == secret
        used = {_bucket(cell_id, m) for m in members}
        for b in set(range(64)) - used:
            assert table[32 * b : 32 * (b + 1)] == bytes(32)
        # The body: one log entry, added to the chain.
        body = unpad(xopen(_key(vectors, number, "control-body"), nonce, ch, envelope[163:1203]))
        assert body[0] == 1
        entry_length = 1 + 1 + 4 + 32 + 4 + 8 + 16 + 16 + 32 + 32 + 1 + body[1 + 146] + 1 + 64
        entry = body[1 : 1 + entry_length]
        assert body[1 + entry_length :] == b"\x00\x00"  # no group keys, no admin grant
        version, op, index = entry[0], entry[1], int.from_bytes(entry[2:6], "big")
        assert (version, op, index) == (1, 1, log["index"])  # ADD
        assert int.from_bytes(entry[38:42], "big") == number
        assert entry[50:66] == cell_id
        assert entry[66:82] == signer["member_id"]
        subject = people[change["subject"]]
        assert entry[82:146] == subject["sign_pub"] + subject["dh_pub"]
        verify(signer["sign_pub"], b"cellrelay/1 log-entry\x00" + entry[:-64], entry[-64:])
        entry_hash = hashlib.blake2b(b"cellrelay/1 log-entry-hash\x00" + entry, digest_size=32)
        assert entry_hash.digest() == h(log["hash"])


def test_key_update_and_the_change_that_commits_it(
    vectors: dict[str, Any], people: dict[str, dict[str, bytes]]
) -> None:
    """§G6.5: the update's bytes and signature, and a version 4 change whose refreshed
    bucket boxes alice's new bucket key to her new receive key."""
    cell_id = h(vectors["cell"]["cell_id"])
    record = vectors["key_update"]
    alice = people[record["member"]]
    update, receive_private = h(record["update"]), h(record["receive_private"])
    receive_public = _x25519_public(receive_private)
    assert receive_public == h(record["receive_public"])
    assert len(update) == 133
    assert (
        update[:69]
        == (b"\x02" + cell_id + alice["member_id"] + record["generation"].to_bytes(4, "big"))
        + receive_public
    )
    verify(alice["sign_pub"], b"cellrelay/2 key-update\x00" + update[:69], update[69:])
    change = record["change"]
    envelope, nonce, number = h(change["envelope"]), h(change["nonce"]), change["epoch"]
    assert len(envelope) in BUCKETS
    assert envelope[:5] == b"\x04" + number.to_bytes(4, "big")
    header_key = _key(vectors, change["from_epoch"], "control-header")
    inner = xopen(header_key, nonce, envelope[:5], envelope[29:163])
    ch, op, subject, signature = inner[:37], inner[37], inner[38:54], inner[54:]
    signer = people[change["signer"]]
    assert ch == cell_id + number.to_bytes(4, "big") + signer["member_id"] + b"\x06"
    assert (op, subject) == (0xFF, bytes(16))
    verify(
        signer["sign_pub"],
        b"cellrelay/4 epoch-change\x00" + ch + bytes([op]) + subject + envelope[163:],
        signature,
    )
    section = envelope[1203:]
    e_pub = section[:32]
    assert e_pub == h(change["ephemeral_public"])
    mine = _bucket(cell_id, alice["member_id"])
    assert [r["bucket"] for r in change["refreshed"]] == [mine]
    (refresh,) = change["refreshed"]
    assert section[32] == 1  # one refreshed bucket
    assert section[33] == mine
    public = section[34:66]
    assert public == h(refresh["public"])
    at = 68
    by_id = {p["member_id"]: name for name, p in people.items()}
    bucket_private = b""
    for member_id in sorted(people[name]["member_id"] for name in refresh["members"]):
        person = people[by_id[member_id]]
        # alice's box is sealed to her new receive key; the others' to their identity keys.
        private, pub = (
            (receive_private, receive_public)
            if member_id == alice["member_id"]
            else (person["dh_private"], person["dh_pub"])
        )
        key = kdf(dh(private, e_pub), "cellrelay/2 receive box", e_pub + pub + member_id)
        opened = xopen(
            key, nonce, b"cellrelay/2 receive-box\x00" + ch + member_id, section[at : at + 48]
        )
        assert _x25519_public(opened) == public
        if member_id == alice["member_id"]:
            bucket_private = opened
        at += 48
    assert at + 64 * 48 == change["section_size"]
    box = section[at + 48 * mine : at + 48 * (mine + 1)]
    key = kdf(dh(bucket_private, e_pub), "cellrelay/2 bucket box", e_pub + public + bytes([mine]))
    secret = xopen(key, nonce, b"cellrelay/2 bucket-box\x00" + ch + bytes([mine]), box)
    assert secret == h(change["change_secret"])
    init = h(_epoch(vectors, change["from_epoch"])["init_secret"])
    epoch_secret = kdf(
        init, "cellrelay/2 epoch secret", cell_id + number.to_bytes(4, "big") + secret
    )
    assert epoch_secret == h(record["epoch"]["epoch_secret"])
    # After the 64 bucket boxes and the 2,048-byte table: the committed updates, then filler.
    committed = section[at + 64 * 48 + 2048 :]
    assert committed[0] == 1
    assert committed[1:134] == update
    assert committed[134:] == h(change["filler"])


def test_welcomes(vectors: dict[str, Any], people: dict[str, dict[str, bytes]]) -> None:
    cell_id = h(vectors["cell"]["cell_id"])
    for welcome in vectors["welcomes"]:
        envelope = h(welcome["envelope"])
        joiner, signer = people[welcome["joiner"]], people[welcome["signer"]]
        ephemeral = X25519PrivateKey.from_private_bytes(h(welcome["ephemeral_private"]))
        ephemeral_pub = ephemeral.public_key().public_bytes_raw()
        assert envelope[:57] == b"\x03" + ephemeral_pub + h(welcome["nonce"])
        assert len(envelope) + 1 in BUCKETS  # with the join mailbox's kind byte (§C4)
        key = kdf(
            dh(h(welcome["ephemeral_private"]), joiner["dh_pub"]),
            "cellrelay/1 welcome",
            ephemeral_pub + joiner["dh_pub"],
        )
        ad = b"cellrelay/1 welcome\x00" + envelope[:57] + joiner["dh_pub"]
        inner = unpad(xopen(key, h(welcome["nonce"]), ad, envelope[57:]))
        assert inner[:16] == signer["member_id"]
        wb = inner[80:]
        assert wb == h(welcome["wb"])
        verify(signer["sign_pub"], b"cellrelay/1 welcome/3\x00" + wb, inner[16:80])
        binding = hashlib.blake2b(
            b"cellrelay/1 invite welcome\x00" + cell_id,
            key=h(welcome["invite_secret"]),
            digest_size=32,
        ).digest()
        # Version 3 ends with the member count (3: no pages) and the join box (the joiner
        # is not an admin: no table).
        assert wb[-126] == 1
        assert wb[-1] == 0
        join_box, wb_v2 = wb[-125:-1], wb[:-128]
        assert wb_v2[-32:] == binding == h(welcome["invite_binding"])
        number, change_signer = int.from_bytes(join_box[:4], "big"), join_box[4:20]
        box_nonce, e_pub, box = join_box[20:44], join_box[44:76], join_box[76:]
        ch = cell_id + number.to_bytes(4, "big") + change_signer + b"\x06"
        key = kdf(
            dh(joiner["dh_private"], e_pub),
            "cellrelay/2 receive box",
            e_pub + joiner["dh_pub"] + joiner["member_id"],
        )
        private = xopen(
            key, box_nonce, b"cellrelay/2 receive-box\x00" + ch + joiner["member_id"], box
        )
        change = next(c for c in vectors["epoch_changes"] if c["epoch"] == number)
        bucket = _bucket(cell_id, joiner["member_id"])
        refresh = next(r for r in change["refreshed"] if r["bucket"] == bucket)
        assert _x25519_public(private) == h(refresh["public"])
        assert wb[:32] == joiner["member_id"] + cell_id
        name_length = wb[32]
        epoch = int.from_bytes(wb[33 + name_length : 37 + name_length], "big")
        secret = wb[37 + name_length : 69 + name_length]
        assert int.from_bytes(wb[-128:-126], "big") == len(_epoch(vectors, epoch)["members"])
        assert secret == h(_epoch(vectors, epoch)["epoch_secret"])


def _open_group_envelope(
    vectors: dict[str, Any], envelope: bytes
) -> tuple[bytes, bytes, tuple[Any, ...]]:
    """Return (H, signature, H's fields) of a group envelope, checking the clear part."""
    assert len(envelope) in BUCKETS
    epoch = int.from_bytes(envelope[1:5], "big")
    inner = xopen(_key(vectors, epoch, "header"), envelope[5:29], envelope[:5], envelope[29:158])
    header, signature = inner[:49], inner[49:]
    fields = struct.unpack(">16sI16sIBQ", header)
    assert fields[0] == h(vectors["cell"]["cell_id"])
    assert fields[1] == epoch
    return header, signature, fields


def _bucket(cell_id: bytes, member_id: bytes) -> int:
    digest = hashlib.blake2b(b"cellrelay/2 bucket-of\x00" + cell_id + member_id, digest_size=1)
    return digest.digest()[0] % 64


def _root(vectors: dict[str, Any], epoch: int, member_id: bytes) -> bytes:
    """A member's first chain key in `epoch`, from the epoch secret (§G8.1)."""
    cell_id = h(vectors["cell"]["cell_id"])
    context = cell_id + epoch.to_bytes(4, "big")
    sender = kdf(h(_epoch(vectors, epoch)["epoch_secret"]), "cellrelay/2 sender secret", context)
    bucket = _bucket(cell_id, member_id)
    node = kdf(sender, "cellrelay/2 sender node", context + bytes([bucket]))
    return kdf(node, "cellrelay/2 sender root", member_id)


def _chain_at(root: bytes, counter: int) -> bytes:
    for _ in range(counter):
        root = kdf(root, "cellrelay/1 chain next")
    return root


def test_sender_trees(vectors: dict[str, Any]) -> None:
    cell_id = h(vectors["cell"]["cell_id"])
    for epoch in vectors["epochs"]:
        assert [h(t["member"]) for t in epoch["sender_tree"]] == [h(m) for m in epoch["members"]]
        for entry in epoch["sender_tree"]:
            member = h(entry["member"])
            assert entry["bucket"] == _bucket(cell_id, member)
            assert _root(vectors, epoch["epoch"], member) == h(entry["root"])


def test_announcements(vectors: dict[str, Any], people: dict[str, dict[str, bytes]]) -> None:
    assert len(vectors["announcements"]) == 3
    for record in vectors["announcements"]:
        envelope = h(record["envelope"])
        header, signature, fields = _open_group_envelope(vectors, envelope)
        sender = people[record["sender"]]
        epoch = record["epoch"]
        assert fields[2:] == (sender["member_id"], 0, 7, record["expires_at"])
        payload = unpad(
            xopen(
                _key(vectors, epoch, "distribution"),
                h(record["header_nonce"]),
                header,
                envelope[158:],
            )
        )
        start, signing_pub = int.from_bytes(payload[:4], "big"), payload[4:36]
        count = int.from_bytes(payload[36:38], "big")
        assert (start, signing_pub) == (record["start"], h(record["signing_pub"]))
        # No chain key travels: the sender's chain is derived from the epoch secret.
        assert _chain_at(_root(vectors, epoch, sender["member_id"]), start) == h(
            record["chain_key"]
        )
        signing = Ed25519PrivateKey.from_private_bytes(h(record["signing_seed"]))
        assert signing.public_key().public_bytes_raw() == signing_pub
        verify(signing_pub, b"cellrelay/1 group-envelope\x00" + header + envelope[158:], signature)
        recipients = sorted(
            h(m) for m in _epoch(vectors, epoch)["members"] if h(m) != sender["member_id"]
        )
        assert count == len(recipients)
        assert len(payload) == 38 + 16 * count
        by_id = {p["member_id"]: name for name, p in people.items()}
        for i, recipient in enumerate(recipients):
            key = pairwise(
                people, record["sender"], by_id[recipient], "cellrelay/1 pairwise distribution-mac"
            )
            data = (
                b"cellrelay/1 announcement-mac\x00"
                + h(vectors["cell"]["cell_id"])
                + epoch.to_bytes(4, "big")
                + sender["member_id"]
                + recipient
                + start.to_bytes(4, "big")
                + signing_pub
            )
            mac = hashlib.blake2b(data, key=key, digest_size=16).digest()
            assert payload[38 + 16 * i : 54 + 16 * i] == mac


def test_messages(vectors: dict[str, Any], people: dict[str, dict[str, bytes]]) -> None:
    assert {m["kind"] for m in vectors["messages"]} == {1, 2, 3, 4, 200}
    for record in vectors["messages"]:
        envelope = h(record["envelope"])
        header, signature, fields = _open_group_envelope(vectors, envelope)
        sender = people[record["sender"]]
        assert fields[2:] == (
            sender["member_id"],
            record["counter"],
            record["kind"],
            record["expires_at"],
        )
        verify(
            h(record["signing_pub"]),
            b"cellrelay/1 group-envelope\x00" + header + envelope[158:],
            signature,
        )
        root = _root(vectors, record["epoch"], sender["member_id"])
        assert _chain_at(root, record["counter"]) == h(record["chain_key"])
        material = kdf(h(record["chain_key"]), "cellrelay/1 chain message", size=56)
        plaintext = unpad(xopen(material[:32], material[32:], header, envelope[158:]))
        assert plaintext == h(record["plaintext"])
        smallest = next(b for b in BUCKETS if len(plaintext) + 1 + 174 <= b)
        assert len(envelope) == smallest
        with pytest.raises(InvalidSignature):
            verify(h(record["signing_pub"]), b"cellrelay/1 group-envelope\x00" + header, signature)
