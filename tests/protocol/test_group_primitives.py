"""The group layer's building blocks: BLAKE2b, key derivation, padding, fields, identities.

BLAKE2b is checked against the BLAKE2 reference test vector and against hashlib (an
independent implementation); the chain and key objects against the plain functions.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.protocol._crypto import (
    HashChain,
    XChaChaKey,
    blake2b,
    blake2b_secret,
    random_bytes,
    xchacha20poly1305_decrypt,
    xchacha20poly1305_encrypt,
)
from cellrelay.protocol._errors import CryptoError
from cellrelay.protocol.cell._binary import Reader, Writer
from cellrelay.protocol.cell._envelope import CONTENT_KINDS, GROUP_KINDS, Kind
from cellrelay.protocol.cell._errors import MalformedError
from cellrelay.protocol.cell._identity import (
    MAX_NAME_BYTES,
    Identity,
    MemberInfo,
    check_name,
    member_id_of,
)
from cellrelay.protocol.cell._keys import PURPOSES, EpochKeys, kdf, message_material, step_chain
from cellrelay.protocol.cell._padding import BUCKETS, bucket_for, pad, unpad

# The last keyed BLAKE2b-512 vector of the BLAKE2 reference suite (blake2b-kat.txt):
# in = 00 01 .. fe (255 bytes), key = 00 01 .. 3f (64 bytes).
KAT_OUT = bytes.fromhex(
    "142709d62e28fcccd0af97fad0f8465b971e82201dc51070faa0372aa43e92484be1c1e73ba10906"
    "d5d1853db6a4106e0a7bf9800d373d6dee2d46d62ef2a461"
)


def test_blake2b_matches_the_reference_vector() -> None:
    assert blake2b(bytes(range(255)), size=64, key=bytes(range(64))) == KAT_OUT
    assert bytes(blake2b_secret(bytes(range(255)), size=64, key=bytes(range(64)))) == KAT_OUT


@given(
    data=st.binary(max_size=300),
    key=st.binary(min_size=1, max_size=64),
    size=st.integers(1, 64),
    person=st.binary(min_size=16, max_size=16),
)
def test_blake2b_agrees_with_hashlib(data: bytes, key: bytes, size: int, person: bytes) -> None:
    assert (
        blake2b(data, size=size, key=key)
        == hashlib.blake2b(data, key=key, digest_size=size).digest()
    )
    assert (
        blake2b(data, size=size, person=person)
        == hashlib.blake2b(data, digest_size=size, person=person).digest()
    )
    assert (
        bytes(blake2b_secret(data, key=key, size=size))
        == hashlib.blake2b(data, key=key, digest_size=size).digest()
    )


@pytest.mark.parametrize(
    "kwargs",
    [{"size": 0}, {"size": 65}, {"key": b""}, {"key": bytes(65)}, {"person": b"short"}],
)
def test_blake2b_refuses_bad_parameters(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="BLAKE2b"):
        blake2b(b"x", **kwargs)  # type: ignore[arg-type]


def test_blake2b_secret_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError, match="BLAKE2b"):
        blake2b_secret(b"x", key=b"")
    with pytest.raises(ValueError, match="BLAKE2b"):
        blake2b_secret(b"x", key=b"k", size=65)


def test_kdf_is_keyed_blake2b_of_purpose_zero_context() -> None:
    key = bytes(range(32))
    out = kdf(key, b"cellrelay/1 epoch header", b"ctx", size=40)
    assert (
        bytes(out)
        == hashlib.blake2b(b"cellrelay/1 epoch header\x00ctx", key=key, digest_size=40).digest()
    )


def test_purposes_are_distinct_and_none_is_a_prefix_of_another() -> None:
    assert len(set(PURPOSES)) == len(PURPOSES)
    for a in PURPOSES:
        assert a.startswith(b"cellrelay/1 ")
        for b in PURPOSES:
            assert a == b or not b.startswith(a)


def test_hash_chain_steps_like_the_functions_say() -> None:
    key = random_bytes(32)
    chain = HashChain(key)
    assert (
        message_material(chain)
        == hashlib.blake2b(b"cellrelay/1 chain message\x00", key=key, digest_size=56).digest()
    )
    copy = chain.copy()
    step_chain(chain)
    expected = hashlib.blake2b(b"cellrelay/1 chain next\x00", key=key, digest_size=32).digest()
    assert chain.export() == expected
    assert copy.export() == key  # the copy did not move
    chain.clear()
    assert chain.export() == bytes(32)
    with pytest.raises(ValueError, match="chain key"):
        HashChain(b"short")
    with pytest.raises(ValueError, match="BLAKE2b"):
        chain.derive(b"x", 65)


def test_xchacha_key_agrees_with_the_function() -> None:
    key, nonce = random_bytes(32), random_bytes(24)
    held = XChaChaKey(key)
    sealed = held.encrypt(nonce, b"ad", b"plaintext")
    assert sealed == xchacha20poly1305_encrypt(key, nonce, b"ad", b"plaintext")
    assert held.decrypt(nonce, b"ad", sealed) == b"plaintext"
    assert xchacha20poly1305_decrypt(key, nonce, b"ad", sealed) == b"plaintext"
    with pytest.raises(CryptoError):
        held.decrypt(nonce, b"other ad", sealed)
    with pytest.raises(ValueError, match="nonce"):
        held.encrypt(nonce[:12], b"", b"")
    with pytest.raises(ValueError, match="nonce"):
        held.decrypt(nonce[:12], b"", sealed)
    assert held.export() == key
    held.clear()
    assert held.export() == bytes(32)


def test_epoch_keys_are_distinct_and_bound_to_cell_and_epoch() -> None:
    secret = random_bytes(32)
    keys = EpochKeys.derive(secret, bytes(16), 7)
    exported = {
        k.export() for k in (keys.header, keys.distribution, keys.control_header, keys.control_body)
    }
    assert len(exported) == 4
    assert EpochKeys.derive(secret, bytes(16), 8).header.export() not in exported
    assert EpochKeys.derive(secret, b"\x01" * 16, 7).header.export() not in exported


# -- padding ---------------------------------------------------------------------------


def test_buckets_are_the_documented_powers_of_two() -> None:
    assert BUCKETS == (256, 512, 1024, 2048, 4096, 8192, 16384)
    for size in range(BUCKETS[-1] + 1):
        assert bucket_for(size) == next(b for b in BUCKETS if size <= b)
    with pytest.raises(ValueError, match="bucket"):
        bucket_for(BUCKETS[-1] + 1)


@given(data=st.binary(max_size=600), extra=st.integers(1, 300))
def test_padding_round_trips(data: bytes, extra: int) -> None:
    padded = pad(data, len(data) + extra)
    assert len(padded) == len(data) + extra
    assert padded[len(data)] == 0x80
    assert unpad(padded) == data


def test_bad_padding_is_malformed() -> None:
    for bad in (b"", bytes(10), b"abc", b"abc\x80\x00\x01", b"\x81\x00"):
        with pytest.raises(MalformedError):
            unpad(bad)
    with pytest.raises(ValueError, match="fit"):
        pad(b"abc", 3)


# -- fields ----------------------------------------------------------------------------


def test_writer_and_reader_agree_and_the_reader_is_strict() -> None:
    data = Writer().u8(1).u16(2).u32(3).u64(4).short(b"ab").long(b"cde").raw(b"z").bytes()
    reader = Reader(data)
    assert (reader.u8(), reader.u16(), reader.u32(), reader.u64()) == (1, 2, 3, 4)
    assert (reader.short(), reader.long(), reader.remaining()) == (b"ab", b"cde", 1)
    with pytest.raises(MalformedError):
        reader.end()
    assert reader.rest() == b"z"
    reader.end()
    with pytest.raises(MalformedError):
        Reader(b"\x05ab").short()
    with pytest.raises(MalformedError):
        Reader(b"\x03abc").short(limit=2)
    with pytest.raises(MalformedError):
        Reader(b"\x00\x03abc").long(limit=2)
    with pytest.raises(MalformedError):
        Reader(b"\x02").flag()
    with pytest.raises(ValueError, match="255"):
        Writer().short(bytes(256))
    with pytest.raises(ValueError, match="65,535"):
        Writer().long(bytes(65536))


# -- identities ------------------------------------------------------------------------


def test_member_id_is_personalised_blake2b_of_both_keys() -> None:
    identity = Identity.generate("ada")
    expected = hashlib.blake2b(
        identity.sign_pub + identity.dh_pub, digest_size=16, person=b"cellrelay-member"
    ).digest()
    assert identity.member_id == expected == member_id_of(identity.sign_pub, identity.dh_pub)
    info = MemberInfo.create(identity.sign_pub, identity.dh_pub, "ada")
    assert info == identity.info


def test_pairwise_keys_agree_and_differ_by_purpose() -> None:
    a, b, c = (Identity.generate(n) for n in "abc")
    for purpose in PURPOSES:
        assert a.pairwise_key(b.dh_pub, purpose) == b.pairwise_key(a.dh_pub, purpose)
    assert a.pairwise_key(b.dh_pub, PURPOSES[0]) != a.pairwise_key(b.dh_pub, PURPOSES[1])
    assert a.pairwise_key(b.dh_pub, PURPOSES[0]) != a.pairwise_key(c.dh_pub, PURPOSES[0])
    with pytest.raises(CryptoError):
        a.pairwise_key(bytes(32), PURPOSES[0])  # a low-order point: all-zero shared secret


@pytest.mark.parametrize("name", ["", "Ada", "Zoë (eastside)", "東京の仲間", "a" * MAX_NAME_BYTES])
def test_valid_names(name: str) -> None:
    assert check_name(name) == name.encode()


@pytest.mark.parametrize(
    "name", ["a" * (MAX_NAME_BYTES + 1), "\x1b[31mred", "tab\there", "rtl\u202eevil", "line\u2028"]
)
def test_names_that_could_mislead_or_overflow_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        check_name(name)
    with pytest.raises(ValueError, match="name"):
        Identity.generate(name)


def test_identity_seeds_are_checked() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Identity.from_seeds(b"short", bytes(32))
    with pytest.raises(ValueError, match="32 bytes"):
        MemberInfo.create(b"short", bytes(32))


def test_reprs_carry_no_keys() -> None:
    identity = Identity.generate("ada")
    for text in (repr(identity), repr(identity.info)):
        assert identity.sign_pub.hex() not in text
        assert identity.member_id.hex() not in text
        assert "ada" in text


def test_kinds_agree_with_the_content_layer() -> None:
    """protocol/cell/_content.py numbers the same kinds; the two layers must not drift."""
    content = pytest.importorskip("cellrelay.protocol.cell._content")
    kind = content.ContentKind
    assert (kind.ALERT, kind.STATUS, kind.RECEIPT, kind.PLAIN) == (
        Kind.ALERT,
        Kind.REPLY,
        Kind.RECEIPT,
        Kind.MESSAGE,
    )
    assert (kind.SENDER_KEY, kind.EPOCH_CHANGE, kind.ANNOUNCEMENT) == (
        Kind.SENDER_KEY,
        Kind.EPOCH_CHANGE,
        Kind.ANNOUNCEMENT,
    )
    assert content.GROUP_KINDS == GROUP_KINDS
    assert not set(GROUP_KINDS) & CONTENT_KINDS
    assert 0 not in CONTENT_KINDS
