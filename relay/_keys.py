"""The relay's static key file: created once with mode 0600, never overwritten.

Format (text, so an operator can see what it is): the line `cellrelay-relay-key-v1`, then
the 32-byte X25519 private key in unpadded base64url. The public key is derived from it.
Losing this file means every invite that names this relay stops working; leaking it lets
someone impersonate the relay (though not read end-to-end-encrypted messages).
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from typing import TYPE_CHECKING, Final

from cellrelay.protocol.wire._noise import KeyPair

from ._config import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["KEY_FILE_HEADER", "create_key_file", "load_key_file"]

KEY_FILE_HEADER: Final = "cellrelay-relay-key-v1"


def create_key_file(path: Path) -> KeyPair:
    """Create a new static key at `path` (mode 0600, parent 0700) and return it.

    Raises:
        ConfigError: the file already exists (it is never overwritten), or cannot be written.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = KeyPair.generate()
    text = (
        f"{KEY_FILE_HEADER}\n{base64.urlsafe_b64encode(bytes(key.private)).rstrip(b'=').decode()}\n"
    )
    try:
        # O_EXCL: refuse to replace an existing key, atomically; 0600 from the start, so the
        # key is never readable by others, not even for a moment.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(
            f"key_file: {path} already exists; refusing to overwrite a relay key (delete it by hand only if no invite uses it)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"key_file: cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return key


def load_key_file(path: Path) -> KeyPair:
    """Read the static key at `path`.

    Raises:
        ConfigError: missing, readable by group or others, or not a relay key file.
    """
    try:
        info = path.stat()
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"key_file: {path} does not exist; run `cellrelay relay init` first"
        ) from None
    except OSError as exc:
        raise ConfigError(f"key_file: cannot read {path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"key_file: {path} is accessible by group or others; run chmod 600 {path}"
        )
    lines = text.split()
    if len(lines) != 2 or lines[0] != KEY_FILE_HEADER:
        raise ConfigError(f"key_file: {path} is not a cellrelay relay key file")
    try:
        private = base64.urlsafe_b64decode(lines[1] + "=")
    except (binascii.Error, ValueError):
        raise ConfigError(f"key_file: {path} is damaged") from None
    if len(private) != 32:
        raise ConfigError(f"key_file: {path} is damaged")
    return KeyPair.from_private(private)
