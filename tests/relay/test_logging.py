"""Tests for relay/_logging.py: redaction canaries through the real chain, and mailbox tags."""

from __future__ import annotations

import io
import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import structlog
from structlog.testing import capture_logs

from cellrelay.relay._logging import (
    REDACTED,
    MailboxTagger,
    configure_logging,
    is_secret_name,
    redact,
    tag_mailbox,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """Put back whatever structlog configuration the test found."""
    saved = structlog.get_config()
    yield
    structlog.reset_defaults()
    structlog.configure(**saved)


def _canaries() -> tuple[bytes, str]:
    """A fresh bytes canary and its text twin, unique per test so no match is an accident."""
    token = secrets.token_hex(16)
    return f"BYTES-CANARY-{token}".encode(), f"TEXT-CANARY-{token}"


def _log_everything_risky(canary_bytes: bytes, canary_text: str) -> None:
    """Log the canaries every way a careless caller might."""
    log = structlog.get_logger("test")
    with structlog.contextvars.bound_contextvars(session_token=canary_text, conn_id="c1"):
        log.info(
            "risky",
            payload=canary_bytes,
            token=canary_text,
            write_key=canary_text,
            signature=canary_bytes,
            sealedEnvelope=canary_text,  # camelCase still splits into words
            mailbox=canary_bytes,
            mailbox_id=canary_text.encode().hex(),
            nonce=canary_bytes,
            proof=canary_text,
            password=canary_text,
            ciphertext=canary_bytes,
            plaintext=canary_text,
            # Neutral names: only the bytes rule protects these.
            frames=[canary_bytes, (bytearray(canary_bytes), memoryview(canary_bytes))],
            detail={"inner": {"deeper": [canary_bytes]}, "secret": canary_text},
            mailbox_tag="abc123",
            size=len(canary_bytes),
        )
        try:
            _fail(canary_text)
        except ValueError:
            log.exception("failed", attempt=1)


def _fail(local_secret: str) -> None:
    """Raise with a secret in a local variable, as crypto code would have one."""
    raise ValueError("boom")


def _assert_no_canary(output: str, canary_bytes: bytes, canary_text: str) -> None:
    token = canary_text.removeprefix("TEXT-CANARY-")
    assert token not in output
    assert canary_bytes.hex() not in output
    assert token.encode().hex() not in output


def test_capture_logs_with_redact_hides_canaries() -> None:
    canary_bytes, canary_text = _canaries()
    with capture_logs(processors=[structlog.contextvars.merge_contextvars, redact]) as logs:
        _log_everything_risky(canary_bytes, canary_text)
    _assert_no_canary(repr(logs), canary_bytes, canary_text)
    risky = logs[0]
    assert risky["payload"] == REDACTED
    assert risky["session_token"] == REDACTED
    size = f"<{len(canary_bytes)} bytes>"
    assert risky["frames"] == [size, [size, size]]
    assert risky["detail"] == {"inner": {"deeper": [size]}, "secret": REDACTED}
    assert risky["mailbox_tag"] == "abc123"
    assert risky["size"] == len(canary_bytes)
    assert risky["conn_id"] == "c1"


def test_capture_logs_without_redact_would_leak() -> None:
    """The canary check can fail: raw capture shows what redact has to catch."""
    canary_bytes, canary_text = _canaries()
    with capture_logs() as logs:
        _log_everything_risky(canary_bytes, canary_text)
    with pytest.raises(AssertionError):
        _assert_no_canary(repr(logs), canary_bytes, canary_text)


def test_json_chain_hides_canaries() -> None:
    canary_bytes, canary_text = _canaries()
    stream = io.StringIO()
    configure_logging(json=True, level="info", stream=stream)
    _log_everything_risky(canary_bytes, canary_text)
    output = stream.getvalue()
    _assert_no_canary(output, canary_bytes, canary_text)
    lines = [json.loads(line) for line in output.splitlines()]
    assert [line["event"] for line in lines] == ["risky", "failed"]
    risky, failed = lines
    assert risky["level"] == "info"
    assert risky["token"] == REDACTED
    assert risky["mailbox_tag"] == "abc123"
    assert risky["conn_id"] == "c1"
    assert "timestamp" in risky
    # The traceback is there (the operator needs it), just without local variables.
    assert failed["exception"][0]["exc_type"] == "ValueError"
    assert failed["exception"][0]["frames"]


def test_console_chain_hides_canaries() -> None:
    canary_bytes, canary_text = _canaries()
    stream = io.StringIO()
    configure_logging(json=False, level="debug", stream=stream)
    _log_everything_risky(canary_bytes, canary_text)
    output = stream.getvalue()
    _assert_no_canary(output, canary_bytes, canary_text)
    assert "risky" in output
    assert "ValueError: boom" in output
    assert "\x1b[" not in output  # no colour codes when the stream is not a terminal


def test_level_filters() -> None:
    stream = io.StringIO()
    configure_logging(json=True, level="WARNING", stream=stream)
    log = structlog.get_logger()
    log.info("quiet")
    log.warning("loud")
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["loud"]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log level must be one of"):
        configure_logging(json=True, level="verbose")


def test_import_configures_nothing() -> None:
    """Only the entry point configures structlog; importing the module must not."""
    code = "import structlog, cellrelay.relay._logging; print(structlog.is_configured())"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    "name",
    [
        "key",
        "write_key",
        "writeKey",
        "pubkey",
        "api-keys",
        "sig",
        "sigs",
        "signature",
        "secret",
        "client_secret",
        "token",
        "auth.token",
        "password",
        "passphrase",
        "proof",
        "nonce",
        "envelope",
        "payload",
        "plaintext",
        "ciphertext",
        "mailbox",
        "mailbox_id",
        "mailboxes",
        "Sealed",
    ],
)
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    ["mailbox_tag", "event", "signal", "design", "size", "reason", "conn_id", "count", "keyring"],
)
def test_neutral_names(name: str) -> None:
    assert not is_secret_name(name)


def test_redact_handles_cycles_and_depth() -> None:
    looped: list[object] = [b"xx"]
    looped.append(looped)
    event = redact(None, "info", {"event": "e", "items": looped})
    rendered = repr(event)
    assert "<2 bytes>" in rendered
    assert "<nested too deep>" in rendered
    assert "b'xx'" not in rendered


def test_exc_info_tuple_still_renders() -> None:
    """redact leaves structlog's exc_info alone, so a tuple still becomes a traceback."""
    stream = io.StringIO()
    configure_logging(json=True, level="info", stream=stream)
    try:
        _fail("x")
    except ValueError as exc:
        caught = exc
    # Logged outside the except block, so only the tuple itself can supply the traceback.
    structlog.get_logger().error("failed", exc_info=(type(caught), caught, caught.__traceback__))
    line = json.loads(stream.getvalue())
    assert line["exception"][0]["exc_type"] == "ValueError"


def test_redact_leaves_plain_values_alone() -> None:
    event = {"event": "e", "count": 3, "ratio": 0.5, "ok": True, "none": None, "word": "hi"}
    assert redact(None, "info", dict(event)) == event


def test_tagger_is_stable_and_keyed() -> None:
    mailbox = secrets.token_bytes(16)
    tagger = MailboxTagger()
    tag = tagger.tag(mailbox)
    assert tagger.tag(mailbox) == tag
    assert len(tag) == 12
    int(tag, 16)  # hex
    assert tagger.tag(secrets.token_bytes(16)) != tag
    assert MailboxTagger().tag(mailbox) != tag  # another process's salt
    salt = secrets.token_bytes(32)
    assert MailboxTagger(salt).tag(mailbox) == MailboxTagger(salt).tag(mailbox)
    assert MailboxTagger(salt).tag(mailbox) != MailboxTagger(secrets.token_bytes(32)).tag(mailbox)


def test_tag_does_not_contain_the_id() -> None:
    mailbox = secrets.token_bytes(16)
    tag = MailboxTagger().tag(mailbox)
    hex_id = mailbox.hex()
    # No 6-byte (12 hex digit) window of the id shows up in the tag, in either direction.
    assert all(hex_id[i : i + 12] != tag for i in range(0, len(hex_id) - 11, 2))
    assert tag not in hex_id
    assert tag_mailbox(mailbox) == tag_mailbox(mailbox)
    assert tag_mailbox(mailbox) != tag


def test_tagger_hides_its_salt() -> None:
    salt = secrets.token_bytes(32)
    tagger = MailboxTagger(salt)
    assert salt.hex() not in repr(tagger)
    assert repr(salt) not in repr(tagger)


@pytest.mark.parametrize("length", [0, 8, 65])
def test_tagger_refuses_bad_salt(length: int) -> None:
    with pytest.raises(ValueError, match="16 to 64 bytes"):
        MailboxTagger(b"s" * length)
