"""Join-mailbox messages: a request opens only for its admin and proves the invite."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellrelay.protocol._crypto import random_bytes
from cellrelay.protocol.cell._errors import (
    BadSignatureError,
    GroupError,
    MalformedError,
    TamperedError,
)
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._join import (
    JOIN_REQUEST,
    JOIN_TAKEN,
    JOIN_WELCOME,
    JOIN_WELCOME_PAGE,
    open_join_request,
    seal_join_request,
    split_join_envelope,
)

ADMIN = Identity.generate("lead")
JOINER = Identity.generate("ana")
MAILBOX = bytes(range(16))
PROOF_KEY = bytes(range(32))


def request(proof_key: bytes = PROOF_KEY, identity: Identity = JOINER) -> bytes:
    return seal_join_request(
        identity, admin_box_key=ADMIN.dh_pub, join_mailbox=MAILBOX, proof_key=proof_key
    )


def test_request_round_trip() -> None:
    envelope = request()
    assert split_join_envelope(envelope)[0] == JOIN_REQUEST
    opened = open_join_request(ADMIN, envelope, join_mailbox=MAILBOX, proof_key=PROOF_KEY)
    assert opened.member == JOINER.info


def test_request_hides_the_joiner() -> None:
    envelope = request()
    for public in (JOINER.sign_pub, JOINER.dh_pub, JOINER.member_id, b"ana"):
        assert public not in envelope
    assert request() != envelope  # fresh ephemeral key and nonce each time


def test_only_the_admin_opens_it() -> None:
    with pytest.raises(TamperedError):
        open_join_request(
            Identity.generate("eve"), request(), join_mailbox=MAILBOX, proof_key=PROOF_KEY
        )


def test_without_the_invite_secret_it_is_refused() -> None:
    with pytest.raises(TamperedError):
        open_join_request(
            ADMIN, request(proof_key=random_bytes(32)), join_mailbox=MAILBOX, proof_key=PROOF_KEY
        )


def test_for_another_join_mailbox_the_signature_fails() -> None:
    with pytest.raises(BadSignatureError):
        open_join_request(ADMIN, request(), join_mailbox=bytes(16), proof_key=PROOF_KEY)


@pytest.mark.parametrize("position", [0, 1, 40, 60, -1])
def test_tampering_is_detected(position: int) -> None:
    envelope = bytearray(request())
    envelope[position] ^= 0x40
    with pytest.raises((TamperedError, MalformedError)):
        open_join_request(ADMIN, bytes(envelope), join_mailbox=MAILBOX, proof_key=PROOF_KEY)


def test_envelope_types() -> None:
    assert split_join_envelope(bytes([JOIN_WELCOME]) + b"x") == (JOIN_WELCOME, b"x")
    assert split_join_envelope(b"\x03page") == (JOIN_WELCOME_PAGE, b"page")  # §G7 pages
    assert split_join_envelope(b"\x04") == (JOIN_TAKEN, b"")  # the joiner has its welcome
    for bad in (b"", b"\x05rest"):
        with pytest.raises(MalformedError):
            split_join_envelope(bad)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_a_request_or_a_group_error(data: bytes) -> None:
    with contextlib.suppress(GroupError):
        open_join_request(ADMIN, data, join_mailbox=MAILBOX, proof_key=PROOF_KEY)
