"""Noise behaviour beyond the known answers: limits, refusals, zeroing, failure, properties.

Some tests read private attributes (`_symmetric`, `_key`, `_e`): zeroing can only be seen
from inside, and these tests check the bytes themselves, not a flag.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Final

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.protocol._crypto import (
    chacha20poly1305_encrypt,
    random_bytes,
    x25519,
)
from cellrelay.protocol._errors import (
    CellrelayError,
    CryptoError,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
)
from cellrelay.protocol.wire._noise import (
    MAX_MESSAGE,
    MAX_NONCE,
    MAX_PLAINTEXT,
    PATTERNS,
    CipherState,
    HandshakeState,
    HashName,
    KeyPair,
    NonceExhaustedError,
    SymmetricState,
)

PROLOGUE: Final = b"cellrelay test prologue"
HASHES: Final[tuple[HashName, HashName]] = ("BLAKE2b", "SHA256")
X25519_VECTORS: Final = (
    Path(__file__).resolve().parents[1] / "vectors" / "wycheproof" / "x25519_test.json"
)


# -- helpers ---------------------------------------------------------------------------------------


def key_needs(pattern: str) -> tuple[bool, bool, bool, bool]:
    """Return (initiator has s, initiator knows rs, responder has s, responder knows rs).

    From the pattern's name (spec §7.4, §7.5): the first letter says what the initiator's static
    key does (N none, K known in advance, X sent, I sent at once), the second the responder's.
    One-way patterns name only the initiator; their responder's key is always known (K).
    """
    first, second = (pattern, "K") if len(pattern) == 1 else (pattern[0], pattern[1])
    return first in "KXI", second == "K", second in "KX", first == "K"


def pair(
    pattern: str, hash_name: HashName = "BLAKE2b", prologue: bytes = PROLOGUE
) -> tuple[HandshakeState, HandshakeState]:
    """Return a fresh (initiator, responder) for `pattern`, with the static keys it needs."""
    init_s, init_rs, resp_s, resp_rs = key_needs(pattern)
    initiator_key = KeyPair.generate() if init_s else None
    responder_key = KeyPair.generate() if resp_s else None
    initiator = HandshakeState(
        pattern,
        initiator=True,
        prologue=prologue,
        s=initiator_key,
        rs=responder_key.public if init_rs and responder_key else None,
        hash_name=hash_name,
    )
    responder = HandshakeState(
        pattern,
        initiator=False,
        prologue=prologue,
        s=responder_key,
        rs=initiator_key.public if resp_rs and initiator_key else None,
        hash_name=hash_name,
    )
    return initiator, responder


def handshake(
    initiator: HandshakeState, responder: HandshakeState, payloads: list[bytes] | None = None
) -> list[bytes]:
    """Run the handshake to the end, checking each payload arrives; return the messages."""
    messages = []
    index = 0
    while not initiator.finished:
        writer, reader = (initiator, responder) if index % 2 == 0 else (responder, initiator)
        payload = payloads[index] if payloads and index < len(payloads) else b""
        message = writer.write_message(payload)
        assert reader.read_message(message) == payload
        messages.append(message)
        index += 1
    assert responder.finished
    assert initiator.handshake_hash == responder.handshake_hash
    return messages


def transport_pair(
    pattern: str = "NK",
) -> tuple[CipherState, CipherState, CipherState, CipherState]:
    """Return (initiator send, initiator receive, responder send, responder receive)."""
    initiator, responder = pair(pattern)
    handshake(initiator, responder)
    return (*initiator.split(), *responder.split())


def low_order_points() -> list[tuple[int, bytes]]:
    """Return (tcId, public key) for each distinct Wycheproof point with a zero shared secret."""
    document = json.loads(X25519_VECTORS.read_text())
    seen: dict[bytes, int] = {}
    for group in document["testGroups"]:
        for test in group["tests"]:
            flags = set(test["flags"])
            if flags & {"LowOrderPublic", "ZeroSharedSecret"}:
                seen.setdefault(bytes.fromhex(test["public"]), int(test["tcId"]))
    return sorted((tc_id, public) for public, tc_id in seen.items())


LOW_ORDER = low_order_points()


def test_wycheproof_low_order_points_were_found() -> None:
    assert len(LOW_ORDER) == 14  # distinct encodings among the 31 flagged cases


def craft_nk_first_message(relay: bytes, ephemeral: bytes, dh: bytes, payload: bytes) -> bytes:
    """Build NK message 1 from its parts, as an attacker who knows the DH result would."""
    symmetric = SymmetricState(b"Noise_NK_25519_ChaChaPoly_BLAKE2b")
    symmetric.mix_hash(PROLOGUE)
    symmetric.mix_hash(relay)
    symmetric.mix_hash(ephemeral)
    symmetric.mix_key(dh)
    return ephemeral + symmetric.encrypt_and_hash(payload)


def assert_failed_closed(state: HandshakeState) -> None:
    """A handshake that raised refuses every later call and holds no secrets."""
    with pytest.raises(LocalProtocolError):
        state.write_message(b"")
    with pytest.raises(LocalProtocolError):
        state.read_message(bytes(96))
    with pytest.raises(LocalProtocolError):
        state.split()
    assert state._symmetric._ck == bytearray(len(state._symmetric._ck))
    assert not state._symmetric.cipher.has_key()
    assert state.remote_static is None


# -- nonces and rekeying -----------------------------------------------------------------------------


def test_nonce_exhaustion_is_refused_on_both_sides() -> None:
    send, _, _, receive = transport_pair()
    send.n = receive.n = MAX_NONCE - 1  # 2^64-2: the last nonce a message may use
    last = send.encrypt(b"last message")
    assert send.n == MAX_NONCE
    assert receive.decrypt(last) == b"last message"
    assert receive.n == MAX_NONCE
    with pytest.raises(NonceExhaustedError):
        send.encrypt(b"one too many")
    with pytest.raises(NonceExhaustedError):
        send.encrypt_with_ad(b"ad", b"one too many")
    with pytest.raises(NonceExhaustedError):
        receive.decrypt(last)
    with pytest.raises(NonceExhaustedError):
        receive.decrypt_with_ad(b"", last)
    assert send.n == receive.n == MAX_NONCE  # refusing does not move (or wrap) the counter
    assert issubclass(NonceExhaustedError, CryptoError)


def test_the_reserved_nonce_is_never_used_for_a_message() -> None:
    """A message at n = 2^64-2 differs from one at 2^64-1, which only rekey uses."""
    key = random_bytes(32)
    cipher = CipherState(key)
    cipher.n = MAX_NONCE - 1
    sealed = cipher.encrypt(bytes(32))
    reserved = bytes(4) + MAX_NONCE.to_bytes(8, "little")
    assert sealed != chacha20poly1305_encrypt(key, reserved, b"", bytes(32))


def test_rekey_in_step_keeps_the_session_and_retires_the_old_key() -> None:
    send, _, _, receive = transport_pair()
    assert receive.decrypt(send.encrypt(b"before")) == b"before"
    old_key = bytes(send._key)
    # A message under the old key for the next nonce, as a replaying attacker might hold one.
    stale = CipherState(old_key)
    stale.n = send.n
    sealed_under_old_key = stale.encrypt(b"stale")

    send.rekey()
    receive.rekey()
    # REKEY(k) = first 32 bytes of ENCRYPT(k, 2^64-1, b"", 32 zero bytes) (spec §4.2).
    reserved = bytes(4) + MAX_NONCE.to_bytes(8, "little")
    assert bytes(send._key) == chacha20poly1305_encrypt(old_key, reserved, b"", bytes(32))[:32]
    assert send.n == receive.n == 1  # rekey leaves n alone

    with pytest.raises(CryptoError):
        receive.decrypt(sealed_under_old_key)
    assert receive.n == 1
    assert receive.decrypt(send.encrypt(b"after")) == b"after"
    send.rekey()
    receive.rekey()
    assert receive.decrypt(send.encrypt(b"after twice")) == b"after twice"


def test_rekey_on_one_side_only_breaks_the_channel() -> None:
    send, _, _, receive = transport_pair()
    send.rekey()
    with pytest.raises(CryptoError):
        receive.decrypt(send.encrypt(b"x"))


# -- low-order points ----------------------------------------------------------------------------------


def test_crafted_first_message_is_accepted_with_a_real_key() -> None:
    """The attack helper below is right: with an honest DH its message is accepted."""
    relay = KeyPair.generate()
    ephemeral = KeyPair.generate()
    dh = bytes(x25519(ephemeral.private, relay.public))
    message = craft_nk_first_message(relay.public, ephemeral.public, dh, b"hello")
    responder = HandshakeState("NK", initiator=False, prologue=PROLOGUE, s=relay)
    assert responder.read_message(message) == b"hello"


@pytest.mark.parametrize(("tc_id", "point"), LOW_ORDER, ids=[f"tc{t}" for t, _ in LOW_ORDER])
def test_low_order_ephemeral_is_refused_by_the_responder(tc_id: int, point: bytes) -> None:
    """A low-order e makes es all zeros, a key the attacker knows: the message must fail.

    The attacker's message is built with that all-zero DH result, so an implementation that
    skipped the check would accept it and return the payload.
    """
    relay = KeyPair.generate()
    message = craft_nk_first_message(relay.public, point, bytes(32), b"forged")
    responder = HandshakeState("NK", initiator=False, prologue=PROLOGUE, s=relay)
    with pytest.raises(CryptoError):
        responder.read_message(message)
    assert_failed_closed(responder)


@pytest.mark.parametrize(("tc_id", "point"), LOW_ORDER, ids=[f"tc{t}" for t, _ in LOW_ORDER])
def test_low_order_remote_static_is_refused_by_the_initiator(tc_id: int, point: bytes) -> None:
    initiator = HandshakeState("NK", initiator=True, prologue=PROLOGUE, rs=point)
    with pytest.raises(CryptoError):
        initiator.write_message(b"")
    assert_failed_closed(initiator)


@pytest.mark.parametrize(("tc_id", "point"), LOW_ORDER, ids=[f"tc{t}" for t, _ in LOW_ORDER])
def test_low_order_responder_ephemeral_is_refused_in_xx(tc_id: int, point: bytes) -> None:
    initiator, responder = pair("XX")
    responder.read_message(initiator.write_message(b""))
    honest = responder.write_message(b"")
    with pytest.raises(CryptoError):
        initiator.read_message(point + honest[32:])
    assert_failed_closed(initiator)


# -- zeroing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["NK", "XX", "XK"])
def test_split_zeroes_the_handshake_secrets_in_place(pattern: str) -> None:
    initiator, responder = pair(pattern)
    handshake(initiator, responder)
    for state in (initiator, responder):
        symmetric = state._symmetric
        ck, k = symmetric._ck, symmetric.cipher._key
        e = state._e
        assert e is not None
        ephemeral_private = e.private
        static = state._s
        static_before = bytes(static.private) if static else None
        assert any(ck)
        assert any(k)
        assert any(ephemeral_private)

        state.split()

        assert ck is symmetric._ck
        assert ck == bytearray(len(ck))
        assert k == bytearray(32)
        assert ephemeral_private == bytearray(32)
        assert not symmetric.cipher.has_key()
        if static is not None:  # the caller's long-term key is not ours to wipe
            assert bytes(static.private) == static_before
        assert state.handshake_hash  # still readable: capability proofs sign it
        with pytest.raises(LocalProtocolError):
            state.split()


def test_cipher_state_clear_zeroes_and_refuses() -> None:
    send, _, _, _ = transport_pair()
    key = send._key
    assert any(key)
    send.clear()
    assert key == bytearray(32)
    assert not send.has_key()
    for call in (
        lambda: send.encrypt(b"x"),
        lambda: send.decrypt(bytes(32)),
        lambda: send.encrypt_with_ad(b"", b"x"),
        lambda: send.decrypt_with_ad(b"", bytes(32)),
        send.rekey,
        lambda: send.initialize_key(bytes(32)),
    ):
        with pytest.raises(LocalProtocolError, match="cleared"):
            call()
    assert "cleared" in repr(send)


def test_key_pair_clear_and_repr() -> None:
    key = KeyPair.generate()
    assert KeyPair.from_private(key.private).public == key.public
    assert key.private.hex() not in repr(key)
    assert "private" not in repr(key)
    assert key != KeyPair.from_private(key.private)  # no comparison of private keys
    key.clear()
    assert key.private == bytearray(32)
    with pytest.raises(LocalProtocolError):
        KeyPair.from_private(bytes(31))
    with pytest.raises(LocalProtocolError):
        KeyPair(public=bytes(32), private=bytearray(33))


def test_abandoned_handshake_is_zeroed() -> None:
    initiator, responder = pair("XX")
    responder.read_message(initiator.write_message(b""))
    responder.write_message(b"")
    e = responder._e
    assert e is not None
    assert any(e.private)
    responder.clear()
    assert e.private == bytearray(32)
    assert_failed_closed(responder)


# -- tampering -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["NK", "XX", "XK"])
def test_every_flipped_bit_of_every_handshake_message_is_rejected(pattern: str) -> None:
    """Flip each bit position (cycling through the 8) of each message in turn.

    A message with no key yet (XX's first: a bare ephemeral key) cannot be checked when it
    arrives; the change then shows in `h`, so the next message the other side reads fails.
    Either way the handshake must fail with CryptoError before it finishes.
    """
    payloads = [b"x", b"y", b"z"]
    honest = handshake(*pair(pattern), payloads)
    for index, message in enumerate(honest):
        for position in range(len(message)):
            failed = run_tampered(pattern, payloads, index, position)
            assert not failed.finished, f"message {index} bit {position} went unnoticed"
            assert_failed_closed(failed)


def run_tampered(pattern: str, payloads: list[bytes], index: int, position: int) -> HandshakeState:
    """Run a fresh handshake, flipping one bit of message `index`; return the side that failed."""
    initiator, responder = pair(pattern)
    for step, payload in enumerate(payloads[: len(PATTERNS[pattern].messages)]):
        writer, reader = (initiator, responder) if step % 2 == 0 else (responder, initiator)
        sent = bytearray(writer.write_message(payload))
        if step == index:
            sent[position] ^= 1 << (position % 8)
        try:
            reader.read_message(sent)
        except CryptoError:
            return reader
    return reader


def test_tampered_and_truncated_transport_messages_are_rejected() -> None:
    send, _, _, receive = transport_pair()
    sealed = send.encrypt(b"responders needed at 14th & Main")
    for position in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[position] ^= 0x80
        with pytest.raises(CryptoError):
            receive.decrypt(tampered)
    for cut in range(len(sealed)):
        with pytest.raises(CryptoError):
            receive.decrypt(sealed[:cut])
    with pytest.raises(CryptoError):
        receive.decrypt(sealed + b"\x00")
    assert receive.n == 0  # failures did not advance the nonce
    assert receive.decrypt(memoryview(sealed)) == b"responders needed at 14th & Main"


def test_messages_cannot_be_replayed_or_reordered() -> None:
    send, _, _, receive = transport_pair()
    first, second = send.encrypt(b"1"), send.encrypt(b"2")
    with pytest.raises(CryptoError):
        receive.decrypt(second)
    assert receive.decrypt(first) == b"1"
    with pytest.raises(CryptoError):
        receive.decrypt(first)
    assert receive.decrypt(second) == b"2"


def test_directions_are_independent() -> None:
    """A message reflected back at its sender does not decrypt."""
    initiator_send, initiator_receive, _, _ = transport_pair()
    with pytest.raises(CryptoError):
        initiator_receive.decrypt(initiator_send.encrypt(b"echo"))


# -- turns and construction ----------------------------------------------------------------------------


def test_out_of_turn_calls_raise_local_errors() -> None:
    initiator, responder = pair("XX")
    with pytest.raises(LocalProtocolError, match="other side's turn"):
        initiator.read_message(bytes(32))
    initiator, responder = pair("XX")
    with pytest.raises(LocalProtocolError, match="other side's turn"):
        responder.write_message(b"")
    initiator, responder = pair("XX")
    with pytest.raises(LocalProtocolError, match="cannot be split"):
        initiator.split()
    handshake(initiator, responder)
    with pytest.raises(LocalProtocolError, match="finished"):
        initiator.write_message(b"")
    with pytest.raises(LocalProtocolError, match="finished"):
        responder.read_message(bytes(64))


def test_an_out_of_turn_call_fails_the_handshake_closed() -> None:
    """STYLE.md §2: any exception ends the object; callers discard it, never repair it."""
    initiator, _ = pair("NK")
    with pytest.raises(LocalProtocolError):
        initiator.read_message(bytes(48))
    assert_failed_closed(initiator)
    assert "failed" in repr(initiator)


def test_a_cipher_without_a_key_refuses_transport_but_passes_handshake_data() -> None:
    empty = CipherState()
    assert not empty.has_key()
    # Spec §5.1: EncryptWithAd / DecryptWithAd return the input while there is no key...
    assert empty.encrypt_with_ad(b"ad", b"clear") == b"clear"
    assert empty.decrypt_with_ad(b"ad", bytearray(b"clear")) == b"clear"
    assert empty.n == 0
    # ...but a transport message in the clear would be a bug: encrypt/decrypt refuse.
    with pytest.raises(LocalProtocolError, match="no key"):
        empty.encrypt(b"secret")
    with pytest.raises(LocalProtocolError, match="no key"):
        empty.decrypt(bytes(20))
    with pytest.raises(LocalProtocolError):
        CipherState(bytes(31))
    assert "empty" in repr(empty)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pattern": "NQ", "initiator": True}, "unsupported handshake pattern"),
        ({"pattern": "NK1", "initiator": True, "rs": bytes(32)}, "unsupported handshake pattern"),
        ({"pattern": "NN", "initiator": True, "hash_name": "SHA512"}, "unsupported hash"),
        ({"pattern": "NK", "initiator": True}, "needs the remote static key"),
        (
            {"pattern": "XX", "initiator": True, "s": KeyPair.generate(), "rs": bytes(32)},
            "does not take the remote",
        ),
        ({"pattern": "NN", "initiator": True, "re": bytes(32)}, "ephemeral"),
        ({"pattern": "NK", "initiator": False}, "needs a local static key"),
        ({"pattern": "NK", "initiator": True, "rs": bytes(31)}, "32 bytes"),
    ],
)
def test_construction_checks_keys_against_the_pattern(
    kwargs: dict[str, object], match: str
) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        HandshakeState(**kwargs)  # type: ignore[arg-type]


def test_a_static_key_the_pattern_never_uses_is_refused() -> None:
    """NK's initiator is anonymous: a static key passed to it would be silently unused."""
    with pytest.raises(LocalProtocolError, match="does not use a local static key"):
        HandshakeState("NK", initiator=True, s=KeyPair.generate(), rs=KeyPair.generate().public)


def test_protocol_name_and_role() -> None:
    initiator, responder = pair("XK", "SHA256")
    assert initiator.protocol_name == "Noise_XK_25519_ChaChaPoly_SHA256"
    assert initiator.is_initiator
    assert not responder.is_initiator
    assert "Noise_XK_25519_ChaChaPoly_SHA256 initiator" in repr(initiator)


def test_remote_static_is_learned_in_xx() -> None:
    initiator, responder = pair("XX")
    assert initiator.remote_static is None
    assert responder.remote_static is None
    handshake(initiator, responder)
    assert initiator.remote_static == responder._s.public  # type: ignore[union-attr]
    assert responder.remote_static == initiator._s.public  # type: ignore[union-attr]


def test_handshake_hash_moves_with_every_message_and_binds_the_prologue() -> None:
    initiator, responder = pair("NK")
    hashes = {initiator.handshake_hash}
    responder.read_message(initiator.write_message(b""))
    hashes.add(initiator.handshake_hash)
    initiator.read_message(responder.write_message(b""))
    hashes.add(initiator.handshake_hash)
    assert len(hashes) == 3
    other_initiator, other_responder = pair("NK", prologue=b"another prologue")
    handshake(other_initiator, other_responder)
    assert other_initiator.handshake_hash not in hashes


# -- lengths -------------------------------------------------------------------------------------------


def reader_of_message(pattern: str, index: int) -> tuple[HandshakeState, HandshakeState]:
    """Return (writer, reader) of message `index` of a fresh handshake, run up to it."""
    initiator, responder = pair(pattern)
    for step in range(index):
        writer, reader = (initiator, responder) if step % 2 == 0 else (responder, initiator)
        reader.read_message(writer.write_message(b""))
    return (initiator, responder) if index % 2 == 0 else (responder, initiator)


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_minimum_lengths_are_exact(pattern: str) -> None:
    """An empty payload gives exactly the minimum; one byte less is refused (before any DH)."""
    for index, minimum in enumerate(PATTERNS[pattern].min_lengths):
        writer, reader = reader_of_message(pattern, index)
        message = writer.write_message(b"")
        assert len(message) == minimum
        with pytest.raises(RemoteProtocolError) as raised:
            reader.read_message(message[:-1])
        assert raised.value.code is ErrorCode.HANDSHAKE_FAILED
        assert_failed_closed(reader)


@pytest.mark.parametrize("pattern", ["NK", "XX", "XK"])
def test_every_short_message_raises_handshake_failed(pattern: str) -> None:
    messages = handshake(*pair(pattern))
    for index, message in enumerate(messages):
        for size in range(len(message)):
            _, reader = reader_of_message(pattern, index)
            with pytest.raises(RemoteProtocolError) as raised:
                reader.read_message(message[:size])
            assert raised.value.code is ErrorCode.HANDSHAKE_FAILED
            assert f"cannot be {size} bytes" in str(raised.value)
            assert_failed_closed(reader)


def test_oversized_messages() -> None:
    _, responder = pair("NK")
    with pytest.raises(RemoteProtocolError) as raised:
        responder.read_message(bytes(MAX_MESSAGE + 1))
    assert raised.value.code is ErrorCode.HANDSHAKE_FAILED

    initiator, responder = pair("NK")
    overhead = PATTERNS["NK"].min_lengths[0]
    largest = random_bytes(MAX_MESSAGE - overhead)
    message = initiator.write_message(largest)
    assert len(message) == MAX_MESSAGE
    assert responder.read_message(message) == largest
    initiator, _ = pair("NK")
    with pytest.raises(LocalProtocolError, match="exceeds"):
        initiator.write_message(largest + b"!")

    send, _, _, receive = transport_pair()
    biggest = random_bytes(MAX_PLAINTEXT)
    sealed = send.encrypt(biggest)
    assert len(sealed) == MAX_MESSAGE
    assert receive.decrypt(sealed) == biggest
    with pytest.raises(LocalProtocolError, match="exceeds"):
        send.encrypt(biggest + b"!")
    with pytest.raises(LocalProtocolError, match="exceeds"):
        send.encrypt_with_ad(b"", biggest + b"!")
    with pytest.raises(RemoteProtocolError) as too_big:
        receive.decrypt(sealed + b"!")
    assert too_big.value.code is ErrorCode.BAD_FRAME
    with pytest.raises(RemoteProtocolError):
        receive.decrypt_with_ad(b"", sealed + b"!")
    with pytest.raises(RemoteProtocolError):
        CipherState().decrypt_with_ad(b"", bytes(MAX_MESSAGE + 1))
    with pytest.raises(LocalProtocolError):
        CipherState().encrypt_with_ad(b"", bytes(MAX_MESSAGE + 1))


def test_coalesced_frame_from_memoryview() -> None:
    """32 x 600-byte messages in one AEAD, handed over as memoryview and bytearray."""
    send, _, _, receive = transport_pair()
    frames = [random_bytes(600) for _ in range(32)]
    sealed = send.encrypt(memoryview(b"".join(frames)))
    assert receive.decrypt(bytearray(sealed)) == b"".join(frames)


# -- properties ----------------------------------------------------------------------------------------

transport_messages = st.lists(st.tuples(st.booleans(), st.binary(max_size=2_000)), max_size=8)


@given(
    pattern=st.sampled_from(sorted(PATTERNS)),
    hash_name=st.sampled_from(HASHES),
    prologue=st.binary(max_size=64),
    payloads=st.lists(st.binary(max_size=300), min_size=3, max_size=3),
    messages=transport_messages,
)
def test_any_payloads_round_trip(
    pattern: str,
    hash_name: HashName,
    prologue: bytes,
    payloads: list[bytes],
    messages: list[tuple[bool, bytes]],
) -> None:
    initiator, responder = pair(pattern, hash_name, prologue)
    handshake(initiator, responder, payloads)
    initiator_send, initiator_receive = initiator.split()
    responder_send, responder_receive = responder.split()
    for from_initiator, plaintext in messages:
        if from_initiator or PATTERNS[pattern].one_way:
            sender, receiver = initiator_send, responder_receive
        else:
            sender, receiver = responder_send, initiator_receive
        assert receiver.decrypt(sender.encrypt(plaintext)) == plaintext


RELAY: Final = KeyPair.generate()
HONEST_EPHEMERAL: Final = KeyPair.generate().public


@given(
    st.one_of(
        st.binary(max_size=200),
        st.binary(min_size=16, max_size=200).map(lambda tail: HONEST_EPHEMERAL + tail),
        st.sampled_from([p for _, p in LOW_ORDER]).map(lambda point: point + bytes(16)),
    )
)
def test_arbitrary_bytes_to_a_fresh_responder(data: bytes) -> None:
    """Whatever arrives as message 1: a payload or one of our exceptions, nothing else."""
    responder = HandshakeState("NK", initiator=False, prologue=PROLOGUE, s=RELAY)
    outcome: bytes | CellrelayError
    try:
        outcome = responder.read_message(data)
    except (RemoteProtocolError, CryptoError) as exc:
        outcome = exc
    if isinstance(outcome, bytes):
        return
    assert_failed_closed(responder)
    if isinstance(outcome, RemoteProtocolError):
        assert outcome.code is ErrorCode.HANDSHAKE_FAILED


@given(st.binary(max_size=200))
def test_arbitrary_bytes_as_message_2(data: bytes) -> None:
    initiator = HandshakeState("NK", initiator=True, prologue=PROLOGUE, rs=RELAY.public)
    initiator.write_message(b"")
    try:
        initiator.read_message(data)
    except (RemoteProtocolError, CryptoError):
        assert_failed_closed(initiator)


# -- copies --------------------------------------------------------------------------------------------


def test_deep_copies_are_independent() -> None:
    """STYLE.md's stateful tests probe `copy.deepcopy(connection)`: copies must not share keys."""
    initiator, responder = pair("XX")
    responder.read_message(initiator.write_message(b""))
    twin = copy.deepcopy(responder)
    message = responder.write_message(b"from the original")
    assert twin.write_message(b"from the original") != message  # the twin's own ephemeral
    twin.clear()
    assert initiator.read_message(message) == b"from the original"
    responder.read_message(initiator.write_message(b""))

    send, receive = initiator.split()
    copy_of_send = copy.deepcopy(send)
    shallow = copy.copy(receive)
    assert copy_of_send._key is not send._key
    assert shallow._key is not receive._key
    copy_of_send.clear()
    shallow.clear()
    peer_send, peer_receive = responder.split()
    assert peer_receive.decrypt(send.encrypt(b"still works")) == b"still works"
    assert receive.decrypt(peer_send.encrypt(b"both ways")) == b"both ways"
    with pytest.raises(LocalProtocolError, match="cleared"):
        copy_of_send.encrypt(b"x")
    assert copy.deepcopy(CipherState()).has_key() is False


# -- smaller pieces --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "hash_name", "expected"),
    [
        # Spec §5.2 InitializeSymmetric: a name of at most HASHLEN bytes is zero-padded...
        (b"Noise_NK_25519_ChaChaPoly_SHA256", "SHA256", b"Noise_NK_25519_ChaChaPoly_SHA256"),
        (
            b"Noise_NK_25519_ChaChaPoly_BLAKE2b",
            "BLAKE2b",
            b"Noise_NK_25519_ChaChaPoly_BLAKE2b" + bytes(31),
        ),
        # ...and a longer one is hashed.
        (
            b"Noise_XXfallback_25519_ChaChaPoly_SHA256",
            "SHA256",
            hashlib.sha256(b"Noise_XXfallback_25519_ChaChaPoly_SHA256").digest(),
        ),
    ],
)
def test_initialize_symmetric(name: bytes, hash_name: HashName, expected: bytes) -> None:
    symmetric = SymmetricState(name, hash_name)
    assert symmetric.handshake_hash == expected
    assert symmetric._ck == expected
    assert not symmetric.has_key()


def test_symmetric_state_refuses_an_unknown_hash() -> None:
    with pytest.raises(LocalProtocolError, match="unsupported hash"):
        SymmetricState(b"Noise_NN_25519_ChaChaPoly_BLAKE2s", "BLAKE2s")  # type: ignore[arg-type]


def test_initialize_key_checks_and_resets() -> None:
    cipher = CipherState(bytes(32))
    cipher.encrypt(b"")
    assert cipher.n == 1
    cipher.initialize_key(bytearray(range(32)))
    assert cipher.n == 0
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        cipher.initialize_key(bytes(16))


def test_handshake_data_with_associated_data_from_buffers() -> None:
    sender, receiver = CipherState(bytes(range(32))), CipherState(bytes(range(32)))
    sealed = sender.encrypt_with_ad(bytearray(b"h"), memoryview(b"payload"))
    assert receiver.decrypt_with_ad(memoryview(b"h"), bytearray(sealed)) == b"payload"
    for cut in range(16):
        with pytest.raises(CryptoError):
            receiver.decrypt_with_ad(b"h", bytearray(sealed[:cut]))
    assert receiver.n == 1
