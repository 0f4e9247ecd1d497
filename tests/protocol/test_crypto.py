"""The libsodium doorway against Project Wycheproof: every valid case passes, every invalid fails.

Files and their license: tests/vectors/README.md. Each file's `numberOfTests` is checked against
the cases found, so a test cannot pass on an empty or truncated file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cellrelay.protocol._crypto import (
    AEAD_TAG_SIZE,
    MAX_COUNTER,
    MAX_COUNTING_PLAINTEXT,
    CountingCipher,
    chacha20poly1305_decrypt,
    chacha20poly1305_encrypt,
    ed25519_from_seed,
    ed25519_generate,
    ed25519_public_from_secret,
    ed25519_sign,
    ed25519_verify,
    random_bytes,
    random_secret,
    x25519,
    x25519_generate,
    x25519_public_from_private,
    xchacha20poly1305_decrypt,
    xchacha20poly1305_encrypt,
    zero,
)
from cellrelay.protocol._errors import CryptoError

if TYPE_CHECKING:
    from collections.abc import Callable

WYCHEPROOF = Path(__file__).resolve().parents[1] / "vectors" / "wycheproof"


@dataclass(frozen=True, slots=True)
class Case:
    """One Wycheproof test: its id, verdict, flags and hex fields (group fields merged in)."""

    file: str
    tc_id: int
    result: str  # "valid", "invalid" or "acceptable"
    flags: tuple[str, ...]
    fields: dict[str, str]

    def __getitem__(self, name: str) -> bytes:
        return bytes.fromhex(self.fields[name])


def load(file: str, expected: int) -> list[Case]:
    """Return every case in `file`, after checking there are `expected` of them."""
    document = json.loads((WYCHEPROOF / file).read_text())
    cases = []
    for group in document["testGroups"]:
        shared = {}
        if "publicKey" in group:  # Ed25519: the key is per group
            shared["pk"] = str(group["publicKey"]["pk"])
        for test in group["tests"]:
            fields = {k: str(v) for k, v in test.items() if isinstance(v, str)}
            cases.append(
                Case(
                    file=file,
                    tc_id=int(test["tcId"]),
                    result=str(test["result"]),
                    flags=tuple(str(f) for f in test["flags"]),
                    fields=shared | fields,
                )
            )
    assert int(document["numberOfTests"]) == expected == len(cases)
    return cases


def case_id(case: Case) -> str:
    """Return a readable pytest id: file stem, tcId, verdict and flags."""
    stem = case.file.removesuffix("_test.json")
    return f"{stem}-{case.tc_id}-{case.result}-{'+'.join(case.flags)}"


X25519_CASES = load("x25519_test.json", 518)
CHACHA_CASES = load("chacha20_poly1305_test.json", 325)
XCHACHA_CASES = load("xchacha20_poly1305_test.json", 315)
ED25519_CASES = load("ed25519_test.json", 151)


# -- X25519 ---------------------------------------------------------------------------------------


def test_x25519_file_has_the_expected_verdicts() -> None:
    results = [c.result for c in X25519_CASES]
    assert (results.count("valid"), results.count("acceptable")) == (264, 254)
    zero_shared = [c for c in X25519_CASES if c["shared"] == bytes(32)]
    flagged = [c for c in X25519_CASES if "ZeroSharedSecret" in c.flags]
    assert zero_shared == flagged
    assert len(flagged) == 31


@pytest.mark.parametrize("case", X25519_CASES, ids=case_id)
def test_x25519_wycheproof(case: Case) -> None:
    """Valid and acceptable cases give `shared`; an all-zero shared secret is refused instead."""
    if case["shared"] == bytes(32):
        # Low-order public keys: the result would be all zeros, which a Noise peer could force.
        with pytest.raises(CryptoError):
            x25519(case["private"], case["public"])
        with pytest.raises(CryptoError):
            x25519(bytearray(case["private"]), memoryview(case["public"]))
        return
    shared = x25519(case["private"], case["public"])
    assert isinstance(shared, bytearray)
    assert shared == case["shared"]
    assert x25519(bytearray(case["private"]), memoryview(case["public"])) == case["shared"]


def test_x25519_rfc7748_key_pairs_and_agreement() -> None:
    """RFC 7748 §6.1: Alice's and Bob's key pairs and their shared secret."""
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
    alice_public = x25519_public_from_private(alice)
    bob_public = x25519_public_from_private(bob)
    assert alice_public.hex() == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert bob_public.hex() == "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    assert x25519(alice, bob_public).hex() == shared
    assert x25519(bob, alice_public).hex() == shared


def test_x25519_generate_gives_a_matching_fresh_pair() -> None:
    public, private = x25519_generate()
    other_public, other_private = x25519_generate()
    assert isinstance(private, bytearray)
    assert x25519_public_from_private(private) == public
    assert public != other_public
    assert x25519(private, other_public) == x25519(other_private, public)


def test_x25519_sizes() -> None:
    """A wrong-size peer key is the peer's doing (CryptoError); a wrong-size private key ours."""
    _, private = x25519_generate()
    for size in (0, 31, 33):
        with pytest.raises(CryptoError):
            x25519(private, b"\x09" * size)
    with pytest.raises(ValueError, match="32 bytes"):
        x25519(bytes(31), x25519_public_from_private(private))
    with pytest.raises(ValueError, match="32 bytes"):
        x25519_public_from_private(bytes(33))


# -- ChaCha20-Poly1305 and XChaCha20-Poly1305 -----------------------------------------------------


AEADS: dict[str, tuple[Callable[..., bytes], Callable[..., bytes], int]] = {
    "chacha20_poly1305_test.json": (chacha20poly1305_encrypt, chacha20poly1305_decrypt, 12),
    "xchacha20_poly1305_test.json": (xchacha20poly1305_encrypt, xchacha20poly1305_decrypt, 24),
}


def test_aead_files_have_the_expected_verdicts() -> None:
    for cases, valid in ((CHACHA_CASES, 256), (XCHACHA_CASES, 246)):
        results = [c.result for c in cases]
        assert (results.count("valid"), results.count("invalid")) == (valid, 69)


@pytest.mark.parametrize("case", CHACHA_CASES + XCHACHA_CASES, ids=case_id)
def test_aead_wycheproof(case: Case) -> None:
    encrypt, decrypt, nonce_size = AEADS[case.file]
    key, nonce, ad, message = case["key"], case["iv"], case["aad"], case["msg"]
    sealed = case["ct"] + case["tag"]
    if case.result == "valid":
        assert encrypt(key, nonce, ad, message) == sealed
        assert decrypt(key, nonce, ad, sealed) == message
        # The same through bytearray / memoryview inputs, which take the ffi.from_buffer path.
        assert encrypt(bytearray(key), nonce, bytearray(ad), memoryview(message)) == sealed
        assert decrypt(bytearray(key), nonce, memoryview(ad), bytearray(sealed)) == message
        return
    assert case.result == "invalid"
    if len(nonce) != nonce_size:
        # A nonce is chosen by our code, never received: a wrong size is our bug.
        with pytest.raises(ValueError, match="nonce"):
            encrypt(key, nonce, ad, message)
        with pytest.raises(ValueError, match="nonce"):
            decrypt(key, nonce, ad, sealed)
    else:
        with pytest.raises(CryptoError):
            decrypt(key, nonce, ad, sealed)


@pytest.mark.parametrize("file", sorted(AEADS))
def test_aead_rejects_short_and_tampered_input(file: str) -> None:
    encrypt, decrypt, nonce_size = AEADS[file]
    key, nonce = random_secret(32), random_bytes(nonce_size)
    sealed = encrypt(key, nonce, b"ad", b"attack at dawn")
    for cut in range(AEAD_TAG_SIZE):
        with pytest.raises(CryptoError):
            decrypt(key, nonce, b"ad", sealed[:cut])
    for i in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[i] ^= 0x01
        with pytest.raises(CryptoError):
            decrypt(key, nonce, b"ad", bytes(tampered))
    with pytest.raises(CryptoError):
        decrypt(key, nonce, b"AD", sealed)
    with pytest.raises(ValueError, match="32 bytes"):
        encrypt(bytes(31), nonce, b"", b"")


@pytest.mark.parametrize("file", sorted(AEADS))
def test_aead_messages_larger_than_the_scratch_buffer(file: str) -> None:
    """Outputs past the per-thread 64 KiB buffer get a buffer of their own."""
    encrypt, decrypt, nonce_size = AEADS[file]
    key, nonce = random_secret(32), random_bytes(nonce_size)
    for size in (65_518, 65_519, 65_520, 70_000):
        message = random_bytes(size)
        sealed = encrypt(key, nonce, b"", message)
        assert len(sealed) == size + AEAD_TAG_SIZE
        assert decrypt(key, nonce, b"", sealed) == message


# -- Ed25519 --------------------------------------------------------------------------------------


def test_ed25519_file_has_the_expected_verdicts() -> None:
    results = [c.result for c in ED25519_CASES]
    assert (results.count("valid"), results.count("invalid")) == (88, 63)


@pytest.mark.parametrize("case", ED25519_CASES, ids=case_id)
def test_ed25519_wycheproof(case: Case) -> None:
    public_key, message, signature = case["pk"], case["msg"], case["sig"]
    if case.result == "valid":
        ed25519_verify(public_key, message, signature)
        ed25519_verify(bytearray(public_key), memoryview(message), bytearray(signature))
    else:
        assert case.result == "invalid"
        with pytest.raises(CryptoError):
            ed25519_verify(public_key, message, signature)


# RFC 8032 §7.1, tests 1 and 2: (secret seed, public key, message, signature).
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]


@pytest.mark.parametrize(
    ("seed", "public", "message", "signature"), RFC8032, ids=["test1", "test2"]
)
def test_ed25519_rfc8032_signatures(seed: str, public: str, message: str, signature: str) -> None:
    public_key, secret_key = ed25519_from_seed(bytes.fromhex(seed))
    assert public_key.hex() == public
    assert isinstance(secret_key, bytearray)
    assert ed25519_public_from_secret(secret_key) == public_key
    assert ed25519_sign(secret_key, bytes.fromhex(message)).hex() == signature
    ed25519_verify(public_key, bytes.fromhex(message), bytes.fromhex(signature))


def test_ed25519_generate_sign_verify_and_reject() -> None:
    public_key, secret_key = ed25519_generate()
    message = b"alert: 14th & Main"
    signature = ed25519_sign(secret_key, memoryview(message))
    ed25519_verify(public_key, message, signature)
    other_public, _ = ed25519_generate()
    with pytest.raises(CryptoError):
        ed25519_verify(other_public, message, signature)
    with pytest.raises(CryptoError):
        ed25519_verify(public_key, message + b"!", signature)
    for bad_size in (signature[:-1], signature + b"\x00"):
        with pytest.raises(CryptoError):
            ed25519_verify(public_key, message, bad_size)
    with pytest.raises(CryptoError):
        ed25519_verify(public_key[:31], message, signature)
    with pytest.raises(ValueError, match="64 bytes"):
        ed25519_sign(secret_key[:32], message)


# -- randomness and zeroing -------------------------------------------------------------------------


@pytest.mark.parametrize("make", [random_bytes, random_secret])
def test_random_sizes_and_uniqueness(make: Callable[[int], bytes | bytearray]) -> None:
    assert make(0) == b""
    samples = {bytes(make(32)) for _ in range(16)}
    assert len(samples) == 16
    assert all(len(s) == 32 for s in samples)


def test_zero_overwrites_in_place() -> None:
    secret = random_secret(64)
    assert any(secret)
    same = secret
    zero(secret)
    assert same is secret
    assert secret == bytearray(64)
    zero(bytearray())  # nothing to do, no error


# -- CountingCipher on its own (CipherState in test_noise.py adds the Noise rules) ----------------


def test_counting_cipher_uses_the_counter_nonce() -> None:
    key = random_secret(32)
    cipher = CountingCipher(key)
    assert cipher.has_key()
    for n in range(3):
        expected = chacha20poly1305_encrypt(key, bytes(4) + n.to_bytes(8, "little"), b"", b"m")
        assert cipher.encrypt(b"m") == expected
    cipher.n = 7
    nonce = bytes(4) + (7).to_bytes(8, "little")
    assert cipher.encrypt_ad(b"ad", bytearray(b"m")) == chacha20poly1305_encrypt(
        key, nonce, b"ad", b"m"
    )
    receiver = CountingCipher(bytes(key))
    receiver.n = 7
    assert receiver.decrypt_ad(b"ad", chacha20poly1305_encrypt(key, nonce, b"ad", b"m")) == b"m"
    assert receiver.n == 8


def test_counting_cipher_refusals() -> None:
    """Without a subclass: ValueError for our mistakes, CryptoError for anything received."""
    empty = CountingCipher()
    assert not empty.has_key()
    with pytest.raises(ValueError, match="no key"):
        empty.encrypt(b"")
    with pytest.raises(ValueError, match="no key"):
        empty.rekey()
    cipher = CountingCipher(bytes(32))
    with pytest.raises(ValueError, match="exceeds"):
        cipher.encrypt(bytes(MAX_COUNTING_PLAINTEXT + 1))
    with pytest.raises(CryptoError):
        cipher.decrypt(bytes(MAX_COUNTING_PLAINTEXT + AEAD_TAG_SIZE + 1))
    with pytest.raises(CryptoError):
        cipher.decrypt_ad(b"", bytes(MAX_COUNTING_PLAINTEXT + AEAD_TAG_SIZE + 1))
    with pytest.raises(ValueError, match="exceeds"):
        cipher.encrypt_ad(b"", bytes(MAX_COUNTING_PLAINTEXT + 1))
    cipher.n = MAX_COUNTER
    with pytest.raises(CryptoError, match="exhausted"):
        cipher.encrypt(b"")
    with pytest.raises(CryptoError, match="exhausted"):
        cipher.decrypt(bytes(16))
    with pytest.raises(ValueError, match="32 bytes"):
        CountingCipher(bytes(31))
