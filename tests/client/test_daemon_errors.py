"""Every error the library raises on purpose reaches an API client as a documented, stable code.

The library's public exception classes are enumerated from the packages' `__all__` (the
client's, and the protocol's it re-exports or raises through), so a class added later
without a code fails here: a foreseeable error must never be a bare 500 INTERNAL, whose
detail says only "the daemon failed". Each code must be documented: the daemon's own in
docs/daemon.md §6 (tests/client/docgen_daemon.py), the protocol's in docs/protocol.md §8.
"""

from __future__ import annotations

import errno
import inspect
import json
import secrets
from pathlib import Path

import pytest

import cellrelay.client
import cellrelay.protocol
import cellrelay.protocol.cell
import cellrelay.protocol.wire
from cellrelay.client._api_types import MuteMember
from cellrelay.client._app import problem_for
from cellrelay.client._link import RelayKeyMismatchError, RelayRefusedError
from cellrelay.client._openapi import api_registry
from cellrelay.client._schema import FieldError
from cellrelay.protocol import ErrorCode, LocalProtocolError
from cellrelay.protocol.cell import ContentError
from cellrelay.protocol.wire import HandshakeRefusedError, RelayAddress

from . import docgen_daemon

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = ROOT / "docs" / "openapi.json"
PROTOCOL = ROOT / "docs" / "protocol.md"
PACKAGES = (cellrelay.client, cellrelay.protocol, cellrelay.protocol.cell, cellrelay.protocol.wire)

# Classes an API request can never meet, with why: they are raised before the daemon
# serves anything (opening the keystore) or only by code the daemon does not run.
UNREACHABLE = {
    "CellrelayError": "the base class: the library raises its subclasses, never it",
    "ProtocolError": "a base class, never raised directly (docs/design.md)",
    "ClientClosedError": "the blocking facade's only; the daemon is async",
    "LocalProtocolError": "our own code asked for something the protocol forbids: a bug, so INTERNAL",
}


def public_errors() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        for name in package.__all__:
            value = getattr(package, name)
            if inspect.isclass(value) and issubclass(value, BaseException):
                found[name] = value
    return sorted(found.values(), key=lambda cls: cls.__name__)


def instance(cls: type[BaseException]) -> BaseException:
    """An instance of `cls` as the library raises it."""
    address = RelayAddress("127.0.0.1", 7000, secrets.token_bytes(32))
    if issubclass(cls, RelayKeyMismatchError):
        return cls(address)
    if issubclass(cls, RelayRefusedError):
        return cls("refused", int(ErrorCode.STORAGE_FULL))
    if issubclass(cls, HandshakeRefusedError):
        return cls("refused", ErrorCode.HANDSHAKE_FAILED)
    if issubclass(cls, ContentError):
        return cls("text: too large", ErrorCode.TOO_LARGE)
    if cls.__name__ == "ErrorCode":  # pragma: no cover - not an exception
        raise AssertionError
    return cls("what went wrong")


def documented() -> set[str]:
    """The codes docs/openapi.json lists (`x-problem-codes`), each of the daemon's own also
    in docs/daemon.md's table and each of the protocol's in docs/protocol.md."""
    listed = json.loads(OPENAPI.read_text(encoding="utf-8"))["x-problem-codes"]
    guide, spec = docgen_daemon.DOC.read_text(), PROTOCOL.read_text()
    for code, entry in listed.items():
        assert f"`{code}`" in (spec if "protocol" in entry else guide), code
    return set(listed)


def test_the_enumeration_finds_the_library_errors() -> None:
    names = {cls.__name__ for cls in public_errors()}
    assert {
        "CellError", "MailboxFullError", "RelayKeyMismatchError", "RelayRefusedError",
        "InviteError", "InviteChecksumError", "InviteExpiredError", "LinkClosedError",
        "GroupError", "NotAdminError", "KeystoreError", "AddressError", "ContentError",
    } <= names  # fmt: skip


@pytest.mark.parametrize("cls", public_errors(), ids=lambda cls: cls.__name__)
def test_each_library_error_has_a_documented_code(cls: type[BaseException]) -> None:
    problem = problem_for(instance(cls))
    assert problem.code in documented(), (cls.__name__, problem.code)
    if cls.__name__ in UNREACHABLE:
        return
    assert problem.code != "INTERNAL", f"{cls.__name__} is foreseeable: give it a code"
    assert problem.detail, cls.__name__
    if problem.code in docgen_daemon.API_CODES and problem.code not in ErrorCode.__members__:
        assert problem.status == docgen_daemon.API_CODES[problem.code][0], cls.__name__


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (RelayRefusedError("full", int(ErrorCode.STORAGE_FULL)), 507, "STORAGE_FULL"),
        (RelayRefusedError("full", int(ErrorCode.MAILBOX_FULL)), 507, "MAILBOX_FULL"),
        (RelayRefusedError("long", int(ErrorCode.TTL_TOO_LONG)), 422, "TTL_TOO_LONG"),
        (RelayRefusedError("new", 999), 502, "RELAY_REFUSED"),
        (cellrelay.client.MailboxFullError("the cell's mailbox is full"), 507, "MAILBOX_FULL"),
        (OSError(errno.ENOSPC, "No space left on device"), 507, "DISK_FULL"),
        (LocalProtocolError("a bug"), 500, "INTERNAL"),
    ],
)
def test_particular_errors_and_their_statuses(error: BaseException, status: int, code: str) -> None:
    problem = problem_for(error)
    assert (problem.status, problem.code) == (status, code)


def test_a_relay_key_mismatch_is_said_plainly() -> None:
    address = RelayAddress("127.0.0.1", 7000, secrets.token_bytes(32))
    problem = problem_for(RelayKeyMismatchError(address))
    assert (problem.status, problem.code) == (502, "RELAY_KEY_MISMATCH")
    assert problem.detail is not None
    assert problem.detail.startswith("the relay's key does not match the invite or address")
    assert "127.0.0.1:7000" in problem.detail


def test_an_unknown_member_with_control_characters_is_echoed_escaped() -> None:
    """Found by schemathesis: `field` echoed a C1 control character its own schema forbids."""
    registry = api_registry()
    with pytest.raises(FieldError) as caught:
        registry.decode({"\x98x\u2028": True}, MuteMember)
    assert caught.value.code == "EXTRA_FIELD"
    assert caught.value.path == "\\u0098x\\u2028"
