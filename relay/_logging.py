"""The relay's structlog configuration, the `redact` processor and mailbox tags.

Only the relay's entry point calls `configure_logging` (STYLE.md section 7); importing this
module configures nothing. `redact` is the last line of defence, not the first: code must
not pass secrets to a logger at all, and the canary tests check that. Whatever slips
through is blanked here by field name, and raw bytes never reach a renderer.

Field names are split into words (at `_`, `-`, `.` and camelCase humps) and a name is
secret if a word contains one of `SECRET_WORDS`, or a word ends in one of the short stems
`key`/`sig` (`write_key`, `pubkey`, `sigs`; but not `signal` or `design`). The only
exception is `mailbox_tag`, a keyed hash made by `MailboxTagger`. Counts under such names
are blanked too (`mailboxes=3`): name counts after what they count in neutral words.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import secrets
import sys
from typing import TYPE_CHECKING, Final

import structlog

if TYPE_CHECKING:
    from collections.abc import MutableMapping
    from typing import TextIO

    from structlog.typing import Processor, WrappedLogger

__all__ = [
    "REDACTED",
    "SECRET_WORDS",
    "MailboxTagger",
    "configure_logging",
    "is_secret_name",
    "redact",
    "tag_mailbox",
]

REDACTED: Final = "<redacted>"
# A word containing any of these marks the field as secret. "sealed" and "passphrase" are
# ours (sealed envelopes, keystore passphrases); the rest are from the brief.
SECRET_WORDS: Final = frozenset(
    {
        "secret", "token", "password", "passwd", "passphrase", "proof", "signature", "nonce",
        "envelope", "payload", "plaintext", "ciphertext", "mailbox", "sealed", "credential",
    }
)  # fmt: skip
# Too short to match inside a word ("signal", "monkey"); they match as a word's ending.
_SHORT_STEMS: Final = ("key", "keys", "sig", "sigs")
_ALLOWED_NAMES: Final = frozenset({"mailbox_tag", "event"})
_WORD_SPLIT: Final = re.compile(r"[_\-.\s]+|(?<=[a-z0-9])(?=[A-Z])")
# A self-referential list would recurse forever; log records are never this deep.
_MAX_DEPTH: Final = 8
# Field names are code constants, a few hundred at most; nested dict keys could be anything,
# so the cache is bounded.
_NAME_CACHE_SIZE: Final = 1024
_PLAIN_TYPES: Final = frozenset({str, int, float, bool, type(None)})
_LEVELS: Final = ("debug", "info", "warning", "error", "critical")
_TAG_PERSON: Final = b"cellrelay/mbtag"  # BLAKE2b personalisation: domain-separates the hash
_TAG_SALT_BYTES: Final = 32
_MIN_SALT_BYTES: Final = 16  # 128 bits; BLAKE2b takes keys up to 64 bytes
# 48 bits, as the brief asks: short enough to read, and the odds of two of 100,000
# mailboxes sharing a tag are about 1 in 56,000 (birthday bound n^2 / 2^49).
_TAG_DIGEST_BYTES: Final = 6
# structlog's own fields that later processors read as they are: never rewritten.
_PASSTHROUGH: Final = frozenset({"exc_info", "stack_info"})


@functools.lru_cache(maxsize=_NAME_CACHE_SIZE)
def is_secret_name(name: str) -> bool:
    """Tell whether a field called `name` may hold a secret (see the module docstring)."""
    if name in _ALLOWED_NAMES:
        return False
    for word in _WORD_SPLIT.split(name):
        lowered = word.lower()
        if lowered.endswith(_SHORT_STEMS) or any(w in lowered for w in SECRET_WORDS):
            return True
    return False


def _scrub(value: object, depth: int) -> object:
    """Replace bytes-like values by their size and blank secret keys, recursively."""
    if type(value) in _PLAIN_TYPES:  # the common case, checked first: one set lookup
        return value
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, memoryview):
        return f"<{value.nbytes} bytes>"
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if depth >= _MAX_DEPTH and isinstance(value, dict | list | tuple | set | frozenset):
        return "<nested too deep>"
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and is_secret_name(k) else _scrub(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v, depth + 1) for v in value]
    return value


def redact(
    logger: WrappedLogger, method_name: str, event_dict: MutableMapping[str, object]
) -> MutableMapping[str, object]:
    """Blank secret-looking fields and turn any bytes, however nested, into "<N bytes>"."""
    for name, value in event_dict.items():
        if name in _PASSTHROUGH:
            continue
        if is_secret_name(name):
            event_dict[name] = REDACTED
        else:
            event_dict[name] = _scrub(value, 0)
    return event_dict


def configure_logging(*, json: bool, level: str, stream: TextIO | None = None) -> None:
    """Configure structlog for the relay: JSON lines, or the console renderer on a terminal.

    Args:
        json: True in production (one JSON object per line); False for people at a terminal.
        level: the lowest level logged: debug, info, warning, error or critical.
        stream: where to write; standard error by default.

    Raises:
        ValueError: `level` is not one of the names above.
    """
    if level.lower() not in _LEVELS:
        raise ValueError(f"log level must be one of {', '.join(_LEVELS)}")
    out = sys.stderr if stream is None else stream
    # Tracebacks without local variables, unlike structlog's defaults for both renderers
    # (rich's and dict_tracebacks' show_locals=True): locals are where keys and plaintext
    # live, and they are rendered after `redact` has run.
    tail: list[Processor]
    if json:
        tail = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            structlog.processors.JSONRenderer(),
        ]
    else:
        tail = [
            structlog.dev.ConsoleRenderer(
                colors=out.isatty(), exception_formatter=structlog.dev.plain_traceback
            )
        ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            redact,  # before anything copies or formats a value
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        # Not cached: a cached logger keeps this chain even after tests reconfigure
        # structlog (capture_logs), and the relay logs per connection, not per message.
        cache_logger_on_first_use=False,
    )


class MailboxTagger:
    """Turn mailbox ids into short keyed hashes that correlate log lines in one process.

    The key is random per tagger (so per process, for the relay's one tagger): tags match
    within a run but not across restarts, and reveal nothing about the id itself.
    """

    __slots__ = ("_salt",)

    def __init__(self, salt: bytes | None = None) -> None:
        if salt is not None and not _MIN_SALT_BYTES <= len(salt) <= hashlib.blake2b.MAX_KEY_SIZE:
            raise ValueError("a tagger's salt must be 16 to 64 bytes")
        self._salt = secrets.token_bytes(_TAG_SALT_BYTES) if salt is None else salt

    def __repr__(self) -> str:
        return "MailboxTagger(<salt hidden>)"

    def tag(self, mailbox: bytes) -> str:
        """Return a 12-hex-digit tag for `mailbox`, stable for this tagger's lifetime."""
        return hashlib.blake2b(
            mailbox, key=self._salt, digest_size=_TAG_DIGEST_BYTES, person=_TAG_PERSON
        ).hexdigest()


_PROCESS_TAGGER: Final = MailboxTagger()


def tag_mailbox(mailbox: bytes) -> str:
    """Tag `mailbox` with the process-wide tagger: log it as `mailbox_tag=tag_mailbox(m)`."""
    return _PROCESS_TAGGER.tag(mailbox)
