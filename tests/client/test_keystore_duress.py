"""The keystore's duress passphrase, its destruction, and the upgrade from version 1.

What these pin down (docs/threat-model.md §3.9): a keystore looks the same whether a duress
passphrase is set or not; the duress passphrase opens a replacement as any unlock would,
and afterwards nothing of the real keystore is in any file; the real passphrase no longer
opens anything; `destroy` and `destroy_keystore` leave no file behind.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellrelay.client._client import create_identity, open_client
from cellrelay.client._keystore import (
    KEY_FILE_SIZE,
    MAX_DECOY_PAYLOAD,
    TEST_COST,
    Keystore,
    KeystoreBusyError,
    KeystoreError,
    WrongPassphraseError,
    destroy_keystore,
    read_payload,
)
from cellrelay.client._panic import set_duress_passphrase
from cellrelay.protocol._crypto import ARGON2ID_SALT_SIZE, argon2id_key, secretbox_seal

PASSPHRASE = "correct horse battery staple"
DURESS = "a duress passphrase, told under pressure"


def _everything(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())


def _shape(path: Path) -> tuple[int, bytes, int]:
    data = path.read_bytes()
    return len(data), data[:18], path.with_name("keystore.state").stat().st_size


def test_a_duress_slot_changes_nothing_visible(tmp_path: Path) -> None:
    """Same size, same header, same state file size with or without a duress passphrase."""
    path = tmp_path / "keystore"
    with Keystore.create(path, PASSPHRASE, b"state", cost=TEST_COST) as store:
        before = _shape(path)
        store.set_duress(DURESS, b"decoy")
        during = _shape(path)
        store.clear_duress()
        after = _shape(path)
    assert before == during == after
    assert before[0] == KEY_FILE_SIZE
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "keystore",
        "keystore.lock",
        "keystore.state",
    ]


def test_duress_passphrase_destroys_and_replaces(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = home / "keystore"
    canary = f"CANARY-{secrets.token_hex(8)}".encode()
    companion = home / "daemon.token"
    with Keystore.create(path, PASSPHRASE, b"real " + canary, cost=TEST_COST) as store:
        store.set_duress(DURESS, b"an empty identity")
        store.save(b"real, later " + canary)  # saves after set_duress keep the slot
    companion.write_text("token " + canary.decode())
    real_key_file = path.read_bytes()

    store, payload = Keystore.open(path, DURESS, companions=[companion])
    assert payload == b"an empty identity"
    store.save(b"an empty identity, used")
    store.close()

    assert canary not in _everything(tmp_path)
    assert not companion.exists()
    assert path.read_bytes() != real_key_file
    assert len(path.read_bytes()) == KEY_FILE_SIZE
    assert path.read_bytes()[18 : 18 + ARGON2ID_SALT_SIZE] != real_key_file[18:34]  # fresh salt
    with pytest.raises(WrongPassphraseError):
        Keystore.open(path, PASSPHRASE)
    # The replacement opens with the duress passphrase, as a normal keystore with no
    # duress slot of its own: a second unlock is an ordinary one.
    store, payload = Keystore.open(path, DURESS)
    assert payload == b"an empty identity, used"
    store.close()


def test_duress_passphrase_must_differ(tmp_path: Path) -> None:
    with Keystore.create(tmp_path / "keystore", PASSPHRASE, b"x", cost=TEST_COST) as store:
        with pytest.raises(KeystoreError, match="differ"):
            store.set_duress(PASSPHRASE, b"decoy")
        with pytest.raises(KeystoreError, match="at least 8"):
            store.set_duress("short", b"decoy")
        with pytest.raises(KeystoreError, match="at most"):
            store.set_duress(DURESS, b"x" * (MAX_DECOY_PAYLOAD + 1))
        store.set_duress(DURESS, b"x" * MAX_DECOY_PAYLOAD)


def test_cleared_duress_passphrase_is_just_wrong(tmp_path: Path) -> None:
    path = tmp_path / "keystore"
    with Keystore.create(path, PASSPHRASE, b"x", cost=TEST_COST) as store:
        store.set_duress(DURESS, b"decoy")
        store.clear_duress()
    with pytest.raises(WrongPassphraseError):
        Keystore.open(path, DURESS)
    store, payload = Keystore.open(path, PASSPHRASE)
    assert payload == b"x"
    store.close()


def test_read_payload_never_acts_on_duress(tmp_path: Path) -> None:
    path = tmp_path / "keystore"
    with Keystore.create(path, PASSPHRASE, b"x", cost=TEST_COST) as store:
        store.set_duress(DURESS, b"decoy")
    with pytest.raises(WrongPassphraseError):
        read_payload(path, DURESS)
    assert read_payload(path, PASSPHRASE) == b"x"


def test_destroy_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "keystore"
    store = Keystore.create(path, PASSPHRASE, b"CANARY", cost=TEST_COST)
    store.save(b"CANARY two", durable=False)
    store.destroy()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeystoreError, match="closed"):
        store.save(b"again")


def test_destroy_keystore_needs_no_passphrase_nor_lock(tmp_path: Path) -> None:
    path = tmp_path / "keystore"
    holder = Keystore.create(path, PASSPHRASE, b"CANARY", cost=TEST_COST)
    try:
        with pytest.raises(KeystoreBusyError):
            Keystore.open(path, PASSPHRASE)
        assert destroy_keystore(path)
        assert list(tmp_path.iterdir()) == []
    finally:
        holder.close()
    assert not destroy_keystore(path)


def test_version_1_keystore_is_upgraded(tmp_path: Path) -> None:
    """A keystore written by an earlier cellrelay opens, and is rewritten as version 2."""
    path = tmp_path / "keystore"
    salt, nonce = b"s" * ARGON2ID_SALT_SIZE, b"n" * 24
    key = argon2id_key(PASSPHRASE.encode(), salt, opslimit=TEST_COST[0], memlimit=TEST_COST[1])
    header = b"CRKS1\n" + TEST_COST[0].to_bytes(4, "big") + TEST_COST[1].to_bytes(8, "big")
    path.write_bytes(header + salt + nonce + secretbox_seal(key, nonce, b"old state"))
    with pytest.raises(WrongPassphraseError):
        Keystore.open(path, "not the passphrase")
    store, payload = Keystore.open(path, PASSPHRASE)
    assert payload == b"old state"
    store.set_duress(DURESS, b"decoy")  # version 2 from here on
    store.close()
    assert path.read_bytes().startswith(b"CRKS2\n")
    assert read_payload(path, PASSPHRASE) == b"old state"


def test_destroying_closes_a_keystore_open_in_this_process(tmp_path: Path) -> None:
    """An app's own client must not write the state back after its panic button."""
    path = tmp_path / "keystore"
    store = Keystore.create(path, PASSPHRASE, b"CANARY", cost=TEST_COST)
    assert destroy_keystore(path)
    with pytest.raises(KeystoreError, match="closed"):
        store.save(b"CANARY again")
    assert list(tmp_path.iterdir()) == []


@given(data=st.binary(max_size=2 * KEY_FILE_SIZE), cut=st.integers(0, KEY_FILE_SIZE))
@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_arbitrary_key_files_are_refused_cleanly(tmp_path: Path, data: bytes, cut: int) -> None:
    """Any bytes, or a real key file with its head kept and garbage after: a KeystoreError."""
    path = tmp_path / "keystore"
    path.unlink(missing_ok=True)
    path.with_name("keystore.state").unlink(missing_ok=True)
    real = b"CRKS2\n" + TEST_COST[0].to_bytes(4, "big") + TEST_COST[1].to_bytes(8, "big")
    for content in (data, (real + b"\0" * KEY_FILE_SIZE)[:cut] + data):
        path.write_bytes(content[:KEY_FILE_SIZE] if content.startswith(b"CRKS2\n") else content)
        with pytest.raises(KeystoreError):
            Keystore.open(path, PASSPHRASE)


async def test_open_client_under_duress_is_a_new_identity(tmp_path: Path) -> None:
    """Through the library (as the daemon and the blocking facade unlock): no cells, no token."""
    home = tmp_path / "ana"
    identity = create_identity(PASSPHRASE, "ana", home=home, cost=TEST_COST)
    set_duress_passphrase(PASSPHRASE, DURESS, home=home)
    (home / "daemon.token").write_text("an old token\n")
    async with open_client(DURESS, home=home) as client:
        assert client.identity.info.name == "ana"
        assert client.identity.member_id != identity.member_id
        assert client.cells == []
    assert not (home / "daemon.token").exists()
    async with open_client(DURESS, home=home) as again:
        assert again.identity.member_id == client.identity.member_id
