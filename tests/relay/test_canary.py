"""Canaries: plaintext, ciphertext and mailbox ids never reach the relay's database, logs or metrics.

A relay subprocess (SQLite, JSON logs at debug level on standard error) carries envelopes
that are the XChaCha20-Poly1305 encryption of alerts holding a unique marker, as the
group layer would make them: the relay only ever sees ciphertext. The test publishes,
delivers, fetches, gets refusals and sends malformed messages carrying the ciphertext,
then stops the relay and searches its data directory, everything it logged and its
/metrics output for the marker, for each envelope's ciphertext and for the mailbox ids,
in raw, hex, base64 and Python-repr spellings.

Each search has a positive control, so a search that sees nothing cannot pass by
accident: the ciphertext is found in the database (the files are read), the logs hold
the connections' lines, and the metrics count the publishes.
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

import trio

from cellrelay.protocol._crypto import random_bytes, xchacha20poly1305_encrypt
from cellrelay.protocol._errors import ErrorCode
from cellrelay.protocol.wire._messages import (
    Error,
    Fetch,
    MailboxId,
    Ok,
    Page,
    Published,
    Subscribed,
)

from ..wire_client import MailboxKeys, WireClient
from .conftest import PATIENCE, IndependentWire, receive_deliveries
from .process import http_get, open_relay_process

MAX_ENVELOPE = 2000
ALERTS = 12


def spellings(value: bytes) -> list[bytes]:
    """Ways `value`, or any sizeable piece of it, could be written into a text log or a file.

    Raw, hex and repr spellings of every 12-byte window; base64 windows at each of the
    three byte alignments, so base64 of any suffix of `value` is found too.
    """
    out: list[bytes] = []
    windows = (
        [value] if len(value) <= 16 else [value[i : i + 12] for i in range(0, len(value) - 12, 12)]
    )
    for window in windows:
        out += [window, window.hex().encode(), window.hex().upper().encode()]
        shown = repr(window)[2:-1]
        out += [shown.encode()[:40], json.dumps(shown)[1:-1].encode()[:40]]
    for shift in range(3):  # base64 of any suffix: one of three alignments matches
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(value[shift:]).rstrip(b"=")
            out += [text[i : i + 24] for i in range(0, max(1, len(text) - 24), 32)]
    return [s for s in out if len(s) >= 8]


def found_in(haystack: bytes, value: bytes) -> list[bytes]:
    """Return the spellings of `value` that occur in `haystack` (empty: none)."""
    return [s for s in spellings(value) if s in haystack]


def directory_bytes(directory: Path) -> bytes:
    """Return every file under `directory`, concatenated."""
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


async def test_no_plaintext_ciphertext_or_mailbox_id_in_database_logs_or_metrics(
    tmp_path: Path,
) -> None:
    """The marker never appears; the ciphertext and mailbox ids appear only in the database.

    Catches a relay that logs envelopes (even in debug lines or on refusal paths), puts a
    mailbox id into a log line or a metric label, or reflects attacker-chosen bytes from
    malformed messages into its logs.
    """
    marker = b"PLAINTEXT-CANARY-" + secrets.token_hex(16).encode()
    reflected = "REFLECTED-CANARY-" + secrets.token_hex(16)  # sent in the clear, inside messages
    group_key = random_bytes(32)

    def seal(text: bytes) -> bytes:
        nonce = random_bytes(24)
        return nonce + xchacha20poly1305_encrypt(group_key, nonce, b"cell/epoch/1", text)

    envelopes = [seal(b"ALERT %d: agents at 14th & Main " % i + marker) for i in range(ALERTS)]
    data_dir = tmp_path / "relay"
    with trio.fail_after(3 * PATIENCE):
        async with open_relay_process(
            data_dir, log_level="debug", max_envelope=MAX_ENVELOPE
        ) as relay:
            writer = await WireClient.connect(relay.port, relay.public_key)
            keys = MailboxKeys()
            mailbox = await writer.create(keys)
            other = await writer.create(MailboxKeys())
            assert isinstance(await writer.auth(keys.write, "write", mailbox), Ok)
            reader = await WireClient.connect(relay.port, relay.public_key)
            assert isinstance(await reader.auth(keys.read, "read", mailbox), Ok)
            assert isinstance(await reader.subscribe(mailbox), Subscribed)
            for envelope in envelopes:
                assert isinstance(await writer.publish(mailbox, envelope), Published)
            got = await receive_deliveries(reader, ALERTS)
            assert [d.envelope for d in got] == envelopes
            page = await reader.request(
                Fetch(id=reader.next_id(), mailbox=MailboxId(mailbox), after=0, limit=50)
            )
            assert isinstance(page, Page)
            assert len(page.items) == ALERTS

            # Refusals that carry ciphertext: too large, expired, unauthorised.
            big = seal(b"x" * MAX_ENVELOPE + marker)
            for reply, code in (
                (await writer.publish(mailbox, big), ErrorCode.ENVELOPE_TOO_LARGE),
                (await writer.publish(mailbox, envelopes[0], expires_at=1), ErrorCode.EXPIRED),
                (await writer.publish(other, envelopes[1]), ErrorCode.UNAUTHORIZED),
            ):
                assert isinstance(reply, Error)
                assert reply.code == code
            # Malformed messages carrying ciphertext and attacker-chosen text: each ends its
            # connection.
            for bad in (
                {"t": "publish", "id": 1, "mailbox": mailbox, "expires_at": 2**40,
                 "envelope": envelopes[2], reflected: envelopes[3]},
                {"t": reflected, "id": 1, "envelope": envelopes[4]},
                {"t": "auth", "id": 1, "mailbox": mailbox, "role": reflected, "proof": bytes(64)},
                {"t": "publish", "id": 1, "mailbox": mailbox, "expires_at": reflected,
                 "envelope": envelopes[5]},
            ):  # fmt: skip
                attacker = await IndependentWire.connect(relay.port, relay.public_key)
                await attacker.send(bad)
                assert (await attacker.read_until_closed())[-1]["t"] == "goodbye"
                await attacker.aclose()

            status, metrics = await http_get(relay.ops_port, "/metrics")
            assert status == 200
            await writer.aclose()
            await reader.aclose()
            assert await relay.terminate() == 0
            logs = bytes(relay.stderr)

    database = directory_bytes(data_dir)
    # Positive controls: the searches look at real content.
    assert found_in(database, envelopes[0]), "stored ciphertext should be in the database"
    assert b"cellrelay_publishes_total 12.0" in metrics
    assert logs.count(b'"connection_closed"') >= 6
    assert logs.count(b'"mailbox_created"') == 2

    for where, haystack in (("database", database), ("logs", logs), ("metrics", metrics)):
        assert marker not in haystack, f"plaintext marker in the {where}"
        assert not found_in(haystack, marker), f"plaintext marker in the {where}"
    for where, haystack in (("logs", logs), ("metrics", metrics)):
        assert reflected.encode() not in haystack, f"attacker-chosen text echoed in the {where}"
        for envelope in [*envelopes, big]:
            assert not found_in(haystack, envelope), f"ciphertext in the {where}"
        for box in (mailbox, other):
            assert not found_in(haystack, box), f"a mailbox id in the {where}"
