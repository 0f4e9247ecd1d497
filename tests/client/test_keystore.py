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
    read_payload,
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


def _opens_with_current_key(path: Path, old_state: bytes) -> bool:
    """Whether an old copy of the state file opens with the keystore's data key now."""
    state = path.with_name("keystore.state")
    current = state.read_bytes()
    state.write_bytes(old_state)
    try:
        read_payload(path, PASSPHRASE)  # takes no lock: the keystore is open meanwhile
    except KeystoreError:
        return False
    finally:
        state.write_bytes(current)
    return True


def test_rekey_makes_old_copies_of_the_state_unreadable(tmp_path: Path) -> None:
    """After a burn, a copy of the state the disk kept no longer opens, even with the passphrase."""
    path = tmp_path / "keystore"
    with Keystore.create(path, PASSPHRASE, b"with the burned cell", cost=TEST_COST) as store:
        old_state = path.with_name("keystore.state").read_bytes()
        store.save(b"still with it")
        assert _opens_with_current_key(path, old_state)  # the control: saves keep the key
        key_file = path.read_bytes()
        store.rekey(b"without it")
        assert path.read_bytes() != key_file
        assert len(path.read_bytes()) == KEY_FILE_SIZE
        store.save(b"a later save")
    assert not _opens_with_current_key(path, old_state)
    store, payload = Keystore.open(path, PASSPHRASE)
    assert payload == b"a later save"
    store.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "keystore",
        "keystore.lock",
        "keystore.state",
    ]


def test_rekey_interrupted_after_the_key_file_finishes_on_open(tmp_path: Path) -> None:
    """A crash between the key file and the state: the staged state is the one that opens."""
    path = tmp_path / "keystore"
    with Keystore.create(path, PASSPHRASE, b"old", cost=TEST_COST) as store:
        store.rekey(b"new")
        state = path.with_name("keystore.state")
        # Put back a state the new key cannot open, and the new one where rekey stages it.
        staged = path.with_name("keystore.state.next")
        staged.write_bytes(state.read_bytes())
        state.write_bytes(b"CRST1\n" + bytes(60))
    store, payload = Keystore.open(path, PASSPHRASE)
    store.close()
    assert payload == b"new"
    assert not path.with_name("keystore.state.next").exists()


def test_rekey_interrupted_before_the_key_file_keeps_the_old_state(tmp_path: Path) -> None:
    """A crash after staging only: the staged state does not open and is deleted."""
    path = tmp_path / "keystore"
    with Keystore.create(path, PASSPHRASE, b"old", cost=TEST_COST):
        pass
    other = tmp_path / "other" / "keystore"
    with Keystore.create(other, PASSPHRASE, b"sealed under another key", cost=TEST_COST):
        pass
    path.with_name("keystore.state.next").write_bytes(
        other.with_name("keystore.state").read_bytes()
    )
    store, payload = Keystore.open(path, PASSPHRASE)
    store.close()
    assert payload == b"old"
    assert not path.with_name("keystore.state.next").exists()
