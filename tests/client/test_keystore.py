"""The encrypted keystore: round trip, wrong passphrase, atomic saves, locking, file modes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cellrelay.client._keystore import (
    KEY_FILE_SIZE,
    SLOT_SIZE,
    TEST_COST,
    Keystore,
    KeystoreBusyError,
    KeystoreError,
    KeystoreExistsError,
    WrongPassphraseError,
)

PASSPHRASE = "correct horse battery staple"


def test_round_trip_and_modes(tmp_path: Path) -> None:
    path = tmp_path / "home" / "keystore"
    with Keystore.create(path, PASSPHRASE, b"state one", cost=TEST_COST) as store:
        store.save(b"state two")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.with_name("keystore.state").stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    store, payload = Keystore.open(path, PASSPHRASE)
    assert payload == b"state two"
    store.close()


def test_payload_is_not_on_disk_in_the_clear(tmp_path: Path) -> None:
    path = tmp_path / "keystore"
    Keystore.create(path, PASSPHRASE, b"CANARY-SECRET-KEY-MATERIAL", cost=TEST_COST).close()
    for file in tmp_path.iterdir():
        assert b"CANARY" not in file.read_bytes()


def test_wrong_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "keystore"
    Keystore.create(path, PASSPHRASE, b"x", cost=TEST_COST).close()
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        Keystore.open(path, "not the passphrase")


def test_altered_file_does_not_open(tmp_path: Path) -> None:
    path = tmp_path / "keystore"
    Keystore.create(path, PASSPHRASE, b"x" * 100, cost=TEST_COST).close()
    state = path.with_name("keystore.state")
    data = bytearray(state.read_bytes())
    data[-5] ^= 1
    state.write_bytes(bytes(data))
    with pytest.raises(KeystoreError, match="altered"):
        Keystore.open(path, PASSPHRASE)


def test_altered_key_file_does_not_open(tmp_path: Path) -> None:
    """Flipping a bit in each slot in turn: one of the two changes makes it not open."""
    path = tmp_path / "keystore"
    Keystore.create(path, PASSPHRASE, b"x", cost=TEST_COST).close()
    original = path.read_bytes()
    outcomes = []
    for slot in (0, 1):
        data = bytearray(original)
        data[KEY_FILE_SIZE - 5 - slot * SLOT_SIZE] ^= 1
        path.write_bytes(bytes(data))
        try:
            Keystore.open(path, PASSPHRASE)[0].close()
            outcomes.append("opened")
        except WrongPassphraseError:
            outcomes.append("refused")
    # The empty slot is random bytes: changing it changes nothing anyone can see.
    assert sorted(outcomes) == ["opened", "refused"]


@pytest.mark.parametrize("content", [b"", b"not a keystore at all, just some bytes here ok"])
def test_foreign_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "keystore"
    path.write_bytes(content)
    with pytest.raises(KeystoreError, match="not a cellrelay keystore"):
        Keystore.open(path, PASSPHRASE)


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="id new"):
        Keystore.open(tmp_path / "nothing", PASSPHRASE)


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "keystore"
    Keystore.create(path, PASSPHRASE, b"x", cost=TEST_COST).close()
    with pytest.raises(KeystoreExistsError):
        Keystore.create(path, PASSPHRASE, b"y", cost=TEST_COST)


def test_one_process_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "keystore"
    first = Keystore.create(path, PASSPHRASE, b"x", cost=TEST_COST)
    with pytest.raises(KeystoreBusyError):
        Keystore.open(path, PASSPHRASE)
    first.close()
    second, _ = Keystore.open(path, PASSPHRASE)
    second.close()


def test_short_passphrase_refused(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="at least 8"):
        Keystore.create(tmp_path / "keystore", "short", b"x", cost=TEST_COST)
