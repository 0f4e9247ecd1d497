"""The second key schedule's building blocks (protocol/cell/_schedule.py, docs/design.md).

What each test holds: every member of a change recovers the same change secret and the
bucket keys the admin drew; a removed member and a stale state open nothing; a state copied
before a key update opens nothing after the change that commits it (post-compromise
security); a seized sender tree re-derives no chain key a member has stepped past (forward
secrecy inside an epoch); a key update is bound to its cell, member, generation and key.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellrelay.protocol._crypto import X25519_KEY_SIZE, HashChain, x25519_public_from_private
from cellrelay.protocol.cell._errors import (
    BadSignatureError,
    MalformedError,
    MembershipError,
    TamperedError,
)
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._keys import PURPOSES as V1_PURPOSES
from cellrelay.protocol.cell._keys import advance_chain
from cellrelay.protocol.cell._schedule import (
    BOX_SIZE,
    BUCKETS,
    KEY_UPDATE_SIZE,
    MAX_BUCKET,
    PURPOSES,
    KeyUpdate,
    SenderTree,
    bucket_of,
    init_secret,
    next_epoch_secret,
    open_keys,
    receive_dh,
    seal_keys,
    section_size,
    sign_key_update,
)

CELL = bytes(range(16))
AD = b"change header"
NONCE = bytes(24)


@dataclass
class Member:
    """A member's side of the tree: its receive key and its bucket's private key."""

    member_id: bytes
    receive: bytearray = field(repr=False)
    bucket: bytearray | None = field(default=None, repr=False)

    @property
    def receive_pub(self) -> bytes:
        return x25519_public_from_private(self.receive)


@dataclass
class Cell:
    """An admin's view (bucket public keys) and every member's state, to drive changes."""

    members: dict[bytes, Member]
    publics: dict[int, bytes] = field(default_factory=dict)

    @classmethod
    def of(cls, count: int) -> Cell:
        ids = sorted(os.urandom(16) for _ in range(count))
        return cls({mid: Member(mid, bytearray(os.urandom(32))) for mid in ids})

    def buckets(self) -> dict[int, list[tuple[bytes, bytes]]]:
        out: dict[int, list[tuple[bytes, bytes]]] = {}
        for mid in sorted(self.members):
            out.setdefault(bucket_of(CELL, mid), []).append((mid, self.members[mid].receive_pub))
        return out

    def bucket_ids(self, mid: bytes) -> list[bytes]:
        b = bucket_of(CELL, mid)
        return [other for other in sorted(self.members) if bucket_of(CELL, other) == b]

    def change(self, refresh: set[int]) -> tuple[bytes, bytes]:
        """Seal a change; return (section, change secret). Members apply it with `apply`."""
        secret = os.urandom(32)
        section, self.publics = seal_keys(
            cell_id=CELL,
            ad=AD,
            nonce=NONCE,
            change_secret=secret,
            buckets=self.buckets(),
            bucket_publics=self.publics,
            refresh=refresh,
        )
        return section, secret

    def open(self, member: Member, section: bytes) -> bytes:
        opened = open_keys(
            section,
            cell_id=CELL,
            ad=AD,
            nonce=NONCE,
            me=member.member_id,
            bucket_members=self.bucket_ids(member.member_id),
            dh=receive_dh(member.receive),
            receive_pub=x25519_public_from_private(member.receive),
            bucket_private=member.bucket,
        )
        if opened.bucket_private is not None:
            member.bucket = opened.bucket_private
        return bytes(opened.change_secret)

    def apply(self, section: bytes, secret: bytes) -> None:
        for member in self.members.values():
            assert self.open(member, section) == secret


def test_purposes_are_distinct_and_prefix_free_with_version_one() -> None:
    every = (*V1_PURPOSES, *PURPOSES)
    assert len(set(every)) == len(every)
    for a in every:
        for b in every:
            assert a == b or not b.startswith(a)


def test_bucket_of_is_a_function_of_cell_and_member() -> None:
    mid = os.urandom(16)
    assert bucket_of(CELL, mid) == bucket_of(CELL, mid)
    seen = {bucket_of(CELL, os.urandom(16)) for _ in range(2000)}
    assert seen == set(range(BUCKETS))  # 2,000 draws miss one of 64 with p ~ 1e-12


def test_every_member_opens_the_first_change_and_later_ones() -> None:
    cell = Cell.of(300)
    section, secret = cell.change(set())  # first change: every non-empty bucket is keyed
    cell.apply(section, secret)
    assert all(m.bucket is not None for m in cell.members.values())
    section, secret = cell.change(set())  # a rotation: bucket boxes only
    assert len(section) == section_size({})
    cell.apply(section, secret)


def test_a_one_member_change_refreshes_one_bucket_and_sizes_as_stated() -> None:
    cell = Cell.of(1000)
    cell.apply(*cell.change(set()))
    joiner = Member(os.urandom(16), bytearray(os.urandom(32)))
    cell.members[joiner.member_id] = joiner
    b = bucket_of(CELL, joiner.member_id)
    section, secret = cell.change({b})
    assert len(section) == section_size({b: len(cell.bucket_ids(joiner.member_id))})
    assert len(section) < 64 * BOX_SIZE + MAX_BUCKET * BOX_SIZE + 100
    cell.apply(section, secret)


def test_a_removed_member_opens_nothing_of_the_change_that_removes_it() -> None:
    cell = Cell.of(200)
    cell.apply(*cell.change(set()))
    gone = cell.members.pop(sorted(cell.members)[7])
    section, secret = cell.change({bucket_of(CELL, gone.member_id)})
    cell.apply(section, secret)
    # Its old bucket key and receive key, with either bucket's member list, open nothing.
    for listed in (
        cell.bucket_ids(gone.member_id),
        [*cell.bucket_ids(gone.member_id), gone.member_id],
    ):
        with pytest.raises((TamperedError, MalformedError)):
            open_keys(
                section,
                cell_id=CELL,
                ad=AD,
                nonce=NONCE,
                me=gone.member_id,
                bucket_members=sorted(listed),
                dh=receive_dh(gone.receive),
                receive_pub=x25519_public_from_private(gone.receive),
                bucket_private=gone.bucket,
            )


def test_a_state_copied_before_a_key_update_opens_nothing_after_it() -> None:
    """Post-compromise security: copy a member's whole tree state, then let it update."""
    cell = Cell.of(120)
    section, secret = cell.change(set())
    cell.apply(section, secret)
    epoch_secret = next_epoch_secret(bytes(32), secret, CELL, 2)
    victim = cell.members[sorted(cell.members)[3]]
    stolen = Member(victim.member_id, bytearray(victim.receive), bytearray(victim.bucket or b""))
    stolen_init = bytes(init_secret(epoch_secret, CELL, 2))
    # The victim updates its receive key; the next change commits it (refreshes its bucket).
    victim.receive = bytearray(os.urandom(32))
    section, secret = cell.change({bucket_of(CELL, victim.member_id)})
    cell.apply(section, secret)
    epoch3 = next_epoch_secret(init_secret(epoch_secret, CELL, 2), secret, CELL, 3)
    with pytest.raises(TamperedError):
        cell.open(stolen, section)
    # And every later change: the bucket key the attacker holds is no longer used.
    for epoch in (4, 5):
        section, secret = cell.change(set())
        cell.apply(section, secret)
        epoch3 = next_epoch_secret(init_secret(epoch3, CELL, epoch - 1), secret, CELL, epoch)
        with pytest.raises(TamperedError):
            cell.open(stolen, section)
    # Without the change secret, the init secret it stole derives nothing that is epoch 3's.
    assert stolen_init != bytes(epoch3)


def test_a_copied_state_that_is_not_updated_still_reads_on() -> None:
    """The limit the guarantee states: no update committed, no healing."""
    cell = Cell.of(50)
    cell.apply(*cell.change(set()))
    victim = cell.members[sorted(cell.members)[0]]
    stolen = Member(victim.member_id, bytearray(victim.receive), bytearray(victim.bucket or b""))
    section, secret = cell.change(set())
    cell.apply(section, secret)
    assert cell.open(stolen, section) == secret


def test_a_refreshed_bucket_key_must_match_its_public_key() -> None:
    cell = Cell.of(40)
    cell.apply(*cell.change(set()))
    victim = cell.members[sorted(cell.members)[0]]
    b = bucket_of(CELL, victim.member_id)
    section, _ = cell.change({b})
    # Swap the announced public key of the refreshed bucket for another one.
    forged = bytearray(section)
    forged[33 + 1 : 33 + 33] = x25519_public_from_private(bytearray(os.urandom(32)))
    with pytest.raises(TamperedError):
        cell.open(victim, bytes(forged))


def test_a_full_bucket_is_refused() -> None:
    members = [(bytes([i]) * 16, os.urandom(32)) for i in range(MAX_BUCKET + 1)]
    with pytest.raises(MembershipError):
        seal_keys(
            cell_id=CELL,
            ad=AD,
            nonce=NONCE,
            change_secret=bytes(32),
            buckets={0: members},
            bucket_publics={},
            refresh={0},
        )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(min_value=1, max_value=150),
    refresh=st.sets(st.integers(min_value=0, max_value=BUCKETS - 1), max_size=6),
    rounds=st.integers(min_value=1, max_value=3),
)
def test_all_members_agree_whatever_the_sizes_and_refreshes(
    count: int, refresh: set[int], rounds: int
) -> None:
    cell = Cell.of(count)
    for _ in range(rounds):
        section, secret = cell.change(refresh)
        cell.apply(section, secret)
        non_empty = {b for b, members in cell.buckets().items() if members}
        assert set(cell.publics) == non_empty


def _open_alone(data: bytes) -> None:
    """Open `data` as a section for a member alone in its bucket, with random keys."""
    member = Member(os.urandom(16), bytearray(os.urandom(32)), bytearray(os.urandom(32)))
    open_keys(
        data,
        cell_id=CELL,
        ad=AD,
        nonce=NONCE,
        me=member.member_id,
        bucket_members=[member.member_id],
        dh=receive_dh(member.receive),
        receive_pub=x25519_public_from_private(member.receive),
        bucket_private=member.bucket,
    )


@given(data=st.binary(max_size=4 * BUCKETS * BOX_SIZE))
@settings(max_examples=200, deadline=None)
def test_any_bytes_as_a_section_give_a_group_error(data: bytes) -> None:
    with pytest.raises((MalformedError, TamperedError)):
        _open_alone(data)


# -- key updates -----------------------------------------------------------------------------


def test_a_key_update_round_trips_and_verifies() -> None:
    identity = Identity.generate("ana")
    update = sign_key_update(identity, CELL, 1, bytearray(os.urandom(32)))
    data = update.to_bytes()
    assert len(data) == KEY_UPDATE_SIZE == 133
    parsed = KeyUpdate.from_bytes(data)
    assert parsed == update
    parsed.verify(CELL, identity.info, after=0)


def test_a_key_update_is_bound_to_cell_member_generation_and_key() -> None:
    identity, other = Identity.generate("ana"), Identity.generate("bo")
    update = sign_key_update(identity, CELL, 5, bytearray(os.urandom(32)))
    with pytest.raises(MembershipError):
        update.verify(bytes(16), identity.info, after=0)
    with pytest.raises(MembershipError):
        update.verify(CELL, other.info, after=0)
    with pytest.raises(MembershipError):
        update.verify(CELL, identity.info, after=5)  # a replay of the committed generation
    data = bytearray(update.to_bytes())
    for at in (20, 40, 60, 100):  # member id, generation, key, signature
        tampered = bytearray(data)
        tampered[at] ^= 1
        with pytest.raises((BadSignatureError, MembershipError)):
            KeyUpdate.from_bytes(bytes(tampered)).verify(CELL, identity.info, after=0)


def test_a_key_update_with_a_low_order_key_is_refused() -> None:
    identity = Identity.generate("ana")
    good = sign_key_update(identity, CELL, 1, bytearray(os.urandom(32)))
    # An update carrying the all-zero point (low order), validly signed by the member.
    unsigned = dataclasses.replace(good, receive_pub=bytes(32))
    bad = dataclasses.replace(
        unsigned, signature=identity.sign(b"cellrelay/2 key-update\x00" + unsigned.signed_part())
    )
    good.verify(CELL, identity.info, after=0)
    with pytest.raises(MalformedError):
        bad.verify(CELL, identity.info, after=0)


@given(data=st.binary(max_size=2 * KEY_UPDATE_SIZE))
def test_any_bytes_as_a_key_update_parse_or_are_malformed(data: bytes) -> None:
    try:
        update = KeyUpdate.from_bytes(data)
    except MalformedError:
        return
    assert update.to_bytes() == data


# -- the epoch chain and the sender tree -------------------------------------------------------


def test_the_epoch_chain_needs_the_previous_init_secret() -> None:
    change = os.urandom(32)
    e1, e1b = os.urandom(32), os.urandom(32)
    a = next_epoch_secret(init_secret(e1, CELL, 1), change, CELL, 2)
    b = next_epoch_secret(init_secret(e1b, CELL, 1), change, CELL, 2)
    assert a != b  # the same change secret gives another epoch under another history
    assert a == next_epoch_secret(init_secret(e1, CELL, 1), change, CELL, 2)
    assert a != next_epoch_secret(init_secret(e1, CELL, 1), change, CELL, 3)


def test_every_member_derives_the_same_chains_and_no_two_alike() -> None:
    secret = os.urandom(32)
    ids = sorted(os.urandom(16) for _ in range(400))
    by_bucket: dict[int, list[bytes]] = {}
    for mid in ids:
        by_bucket.setdefault(bucket_of(CELL, mid), []).append(mid)
    alice, bob = SenderTree.enter(secret, CELL, 9), SenderTree.enter(secret, CELL, 9)
    keys = set()
    for mid in reversed(ids):  # another order than bob's
        keys.add(alice.take(mid, by_bucket[bucket_of(CELL, mid)]).export())
    for mid in ids:
        assert bob.take(mid, by_bucket[bucket_of(CELL, mid)]).export() in keys
    assert len(keys) == len(ids)
    empty = set(range(BUCKETS)) - set(by_bucket)  # 400 members leave one empty 12 % of runs
    for tree in (alice, bob):
        assert tree.roots == {}
        assert set(tree.nodes) == empty
    with pytest.raises(KeyError):
        alice.take(ids[0], by_bucket[bucket_of(CELL, ids[0])])


def test_a_seized_sender_tree_rederives_nothing_already_read() -> None:
    """Forward secrecy inside an epoch, at the tree: read some messages, seize, search.

    The seized state is the tree (nodes and roots not yet taken) and the chains as stepped.
    From every secret in it, stepping forward up to 1,000 times, no message key that was
    read comes out (and the epoch secret, which the member deleted, is not in it).
    """
    secret = os.urandom(32)
    ids = sorted(os.urandom(16) for _ in range(200))
    by_bucket: dict[int, list[bytes]] = {}
    for mid in ids:
        by_bucket.setdefault(bucket_of(CELL, mid), []).append(mid)
    tree = SenderTree.enter(secret, CELL, 3)
    read: set[bytes] = set()
    chains = {}
    for mid in ids[::5]:  # read three messages from every fifth member
        chain = tree.take(mid, by_bucket[bucket_of(CELL, mid)])
        for _ in range(3):
            read.add(advance_chain(chain))
        chains[mid] = chain
    seized = tree.secrets() + [chain.export() for chain in chains.values()]
    assert secret not in seized
    for key in seized:
        chain = HashChain(key)
        for _ in range(1000 // len(seized) + 5):
            assert advance_chain(chain) not in read


def test_a_low_order_ephemeral_key_is_tampered_not_a_crash() -> None:
    """Found by fuzz/fuzz_schedule.py: an all-zero e_pub made X25519 raise CryptoError."""
    with pytest.raises(TamperedError):
        _open_alone(bytes(X25519_KEY_SIZE + 1 + BUCKETS * BOX_SIZE))
