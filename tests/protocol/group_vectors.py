"""Generate tests/vectors/group-v1.json: a whole cell's life with pinned keys and randomness.

`python -m tests.protocol.group_vectors` prints the JSON; `test_group_vectors.py` checks
that the file is exactly what this generates (set CELLRELAY_REGENERATE_VECTORS=1 to
rewrite it after a deliberate change) and decodes every envelope in it from the spec alone.

Every randomised input (seeds, epoch secrets, chain keys, nonces, the welcome's ephemeral
key) comes from `PinnedRng`, and every value an implementation needs to reproduce a
byte string is written next to it, so a third party can check each construction on its
own: see tests/vectors/group-v1.md for the field meanings.
"""

from __future__ import annotations

import hashlib
import json
from typing import Final, TypeAlias

from cellrelay.protocol._crypto import HashChain, x25519_public_from_private
from cellrelay.protocol.cell._control import (
    KEYS_OFFSET_V3,
    TABLE_SIZE,
    bucketed_keys,
    change_header,
    seal_welcome,
    split_change,
)
from cellrelay.protocol.cell._envelope import CLEAR_SIZE, Kind
from cellrelay.protocol.cell._epochs import welcome_content
from cellrelay.protocol.cell._group import CellCrypto
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._keys import (
    EPOCH_CONTROL_BODY,
    EPOCH_CONTROL_HEADER,
    EPOCH_DISTRIBUTION,
    EPOCH_HEADER,
    PAIRWISE_ADMIN_GRANT,
    PAIRWISE_DISTRIBUTION_MAC,
    PAIRWISE_EPOCH_BOX,
    message_material,
    step_chain,
)
from cellrelay.protocol.cell._outcomes import Opened
from cellrelay.protocol.cell._padding import BUCKETS
from cellrelay.protocol.cell._schedule import (
    SenderTree,
    bucket_of,
    open_keys,
    parse_section,
    receive_dh,
)

from .group_harness import invite_of

NOW: Final = 1_767_225_600.0  # 2026-01-01T00:00:00Z
TTL: Final = 3600
KEY_TTL: Final = 7 * 24 * 3600
SEED: Final = b"cellrelay group-v1 test vectors"
Records: TypeAlias = list[dict[str, object]]


class PinnedRng:
    """Deterministic "random" bytes: SHAKE-256(SEED || label || draw number), for vectors only."""

    def __init__(self, label: bytes) -> None:
        """Start a stream named `label`."""
        self._label = label
        self._draws = 0

    def __call__(self, size: int) -> bytes:
        """Return the next `size` bytes."""
        self._draws += 1
        data = SEED + b"/" + self._label + b"/" + self._draws.to_bytes(4, "big")
        return hashlib.shake_256(data).digest(size)


def _hex(data: bytes | bytearray) -> str:
    return bytes(data).hex()


def _identity(name: str) -> tuple[Identity, dict[str, str]]:
    rng = PinnedRng(b"identity " + name.encode())
    sign_seed, dh_private = rng(32), rng(32)
    identity = Identity.from_seeds(sign_seed, dh_private, name)
    return identity, {
        "name": name,
        "sign_seed": _hex(sign_seed),
        "dh_private": _hex(dh_private),
        "sign_pub": _hex(identity.sign_pub),
        "dh_pub": _hex(identity.dh_pub),
        "member_id": _hex(identity.member_id),
    }


def _epoch_record(cell: CellCrypto) -> dict[str, object]:
    state = cell._s
    epoch = state.epochs[state.current]
    assert epoch.secret is not None
    context = state.cell_id + state.current.to_bytes(4, "big")
    return {
        "epoch": state.current,
        "epoch_secret": _hex(epoch.secret),
        "init_secret": _hex(epoch.init or b""),
        "kdf_context": _hex(context),
        "keys": {
            purpose.decode(): _hex(key.export())
            for purpose, key in (
                (EPOCH_HEADER, epoch.keys.header),
                (EPOCH_DISTRIBUTION, epoch.keys.distribution),
                (EPOCH_CONTROL_HEADER, epoch.keys.control_header),
                (EPOCH_CONTROL_BODY, epoch.keys.control_body),
            )
        },
        "members": [_hex(m) for m in epoch.members],
        # The sender tree (§G8.1), from the epoch secret: each member's bucket and first
        # chain key, derived afresh here (the members' own trees have used their nodes).
        "sender_tree": [
            {
                "member": _hex(m),
                "bucket": bucket_of(state.cell_id, m),
                "root": _hex(
                    SenderTree.enter(epoch.secret, state.cell_id, state.current)
                    .take(m, epoch.bucket_members(state.cell_id, m))
                    .export()
                ),
            }
            for m in epoch.members
        ],
    }


def _own_chain(cell: CellCrypto) -> dict[str, object]:
    state = cell._s
    own = state.epochs[state.current].own
    assert own is not None
    return {
        "chain_key": _hex(own.chain_key.export()),
        "counter": own.counter,
        "signing_seed": _hex(own.signing_key.seed()),
        "signing_pub": _hex(own.signing_public),
    }


def generate() -> dict[str, object]:
    """Run the pinned scenario and return the vectors."""
    admin, admin_record = _identity("admin")
    alice, alice_record = _identity("alice")
    bob, bob_record = _identity("bob")
    names = {admin.member_id: "admin", alice.member_id: "alice", bob.member_id: "bob"}
    states: dict[str, CellCrypto] = {}
    pairwise: Records = []
    epochs: Records = []
    log: Records = []
    changes: Records = []
    welcomes: Records = []
    announcements: Records = []
    messages: Records = []
    for a, b in ((admin, alice), (admin, bob), (alice, bob), (admin, admin)):
        for purpose in (PAIRWISE_EPOCH_BOX, PAIRWISE_DISTRIBUTION_MAC, PAIRWISE_ADMIN_GRANT):
            pairwise.append(
                {
                    "a": names[a.member_id],
                    "b": names[b.member_id],
                    "purpose": purpose.decode(),
                    "key": _hex(a.pairwise_key(b.dh_pub, purpose)),
                }
            )

    states["admin"] = CellCrypto.create(
        admin,
        bytes.fromhex("c0ffee00" * 4),
        now=NOW,
        group_keys=(b"R" * 32, b"W" * 32),
        control_read_key=b"C" * 32,
        admin_secrets=b"admin secrets",
        name="Eastside",
        rng=PinnedRng(b"admin state"),
    )
    epochs.append(_epoch_record(states["admin"]))
    group: list[tuple[str, bytes]] = []  # (sender, envelope) in group mailbox order

    def apply_change(envelope: bytes, signer: str, subject: str) -> None:
        before = states["admin"]._s
        previous = before.current
        # What the boxes carry: the change secret (§G6.2), from the admin's own boxes.
        number, nonce = split_change(envelope)
        section, _ = bucketed_keys(envelope)
        e_pub, refreshed, _, end = parse_section(section)
        after_ids = sorted(
            [*before.membership.members, {"alice": alice, "bob": bob}[subject].member_id]
        )
        change_secret = open_keys(
            section,
            cell_id=before.cell_id,
            ad=change_header(before.cell_id, number, admin.member_id),
            nonce=nonce,
            me=admin.member_id,
            bucket_members=[
                m
                for m in after_ids
                if bucket_of(before.cell_id, m) == bucket_of(before.cell_id, admin.member_id)
            ],
            dh=admin.dh,
            receive_pub=admin.dh_pub,
            bucket_private=before.bucket_private,
        ).change_secret
        for name, state in states.items():
            update = state.open_control(envelope, now=NOW, key_ttl=KEY_TTL)
            assert update.distribution is not None
            group.append((name, update.distribution))
        after = states["admin"]
        epochs.append(_epoch_record(after))
        table_at = KEYS_OFFSET_V3 + end
        changes.append(
            {
                "from_epoch": previous,
                "epoch": after.epoch,
                "signer": signer,
                "op": 1,  # ADD
                "subject": subject,
                "nonce": _hex(envelope[5:CLEAR_SIZE]),
                "change_secret": _hex(change_secret),
                "ephemeral_public": _hex(e_pub),
                "refreshed": [
                    {
                        "bucket": b,
                        "public": _hex(public),
                        "members": [
                            names[m] for m in after_ids if bucket_of(after.cell_id, m) == b
                        ],
                    }
                    for b, (public, _count, _offset) in refreshed.items()
                ],
                "section_size": end,
                "filler": _hex(envelope[table_at + TABLE_SIZE :]),
                "envelope": _hex(envelope),
            }
        )
        log.append({"hash": _hex(after.membership.head_hash), "index": after.membership.head_index})

    def welcome(joiner: Identity, name: str) -> None:
        wrng = PinnedRng(b"welcome " + name.encode())
        ephemeral, nonce = bytearray(wrng(32)), wrng(24)
        invite = invite_of(states["admin"], now=NOW, secret=wrng(32))
        content = welcome_content(
            states["admin"]._s,
            joiner.member_id,
            now=NOW,
            extra=b"mailbox ids etc.",
            invite_binding=invite.welcome_binding,
        )
        sealed = seal_welcome(
            signer=admin,
            content=content,
            joiner_dh_pub=joiner.dh_pub,
            ephemeral_private=bytearray(ephemeral),
            nonce=nonce,
        )
        welcomes.append(
            {
                "joiner": name,
                "signer": "admin",
                "ephemeral_private": _hex(ephemeral),
                "nonce": _hex(nonce),
                "invite_secret": _hex(invite.secret),
                "invite_binding": _hex(invite.welcome_binding),
                "wb": _hex(content.to_bytes()),
                "envelope": _hex(sealed),
            }
        )
        state, distribution = CellCrypto.from_welcome(
            joiner,
            sealed,
            now=NOW,
            invite=invite,
            inviter=admin.member_id,
            key_ttl=KEY_TTL,
            rng=PinnedRng(name.encode() + b" state"),
        )
        states[name] = state
        group.append((name, distribution))

    for joiner, name in ((alice, "alice"), (bob, "bob")):
        apply_change(states["admin"].add_member(joiner.info, now=NOW), "admin", name)
        welcome(joiner, name)

    # Signing key announcements of the last epoch, with their inputs.
    for sender in ("admin", "alice", "bob"):
        record = _own_chain(states[sender])
        envelope = next(e for n, e in reversed(group) if n == sender)
        announcements.append(
            {
                "sender": sender,
                "epoch": states[sender].epoch,
                **record,
                "start": record["counter"],
                "expires_at": int(NOW) + KEY_TTL,
                "header_nonce": _hex(envelope[5:CLEAR_SIZE]),
                "envelope": _hex(envelope),
            }
        )
    for name, envelope in group:
        for reader, state in states.items():
            if reader != name and int.from_bytes(envelope[1:5], "big") >= state._s.joined_epoch:
                assert isinstance(state.open(envelope, now=NOW), Opened)

    sent = [
        ("alice", Kind.ALERT, b"agents at 14th & Main, responders needed"),
        ("bob", Kind.REPLY, b"\x01on my way"),
        ("admin", Kind.RECEIPT, b"\x02"),
        ("alice", Kind.MESSAGE, ("thanks all " * 30).encode()),
        ("bob", 200, bytes(range(256)) * 3),
    ]
    for sender, kind, plaintext in sent:
        chain = _own_chain(states[sender])
        envelope = states[sender].seal(kind, plaintext, expires_at=int(NOW) + TTL, now=NOW)
        for reader, state in states.items():
            if reader != sender:
                opened = state.open(envelope, now=NOW)
                assert isinstance(opened, Opened)
                assert opened.plaintext == plaintext
        messages.append(
            {
                "sender": sender,
                "epoch": states[sender].epoch,
                "chain_key": chain["chain_key"],
                "counter": chain["counter"],
                "signing_pub": chain["signing_pub"],
                "kind": int(kind),
                "expires_at": int(NOW) + TTL,
                "plaintext": _hex(plaintext),
                "header_nonce": _hex(envelope[5:CLEAR_SIZE]),
                "envelope": _hex(envelope),
            }
        )

    # The first steps of one chain, spelled out.
    ratchet = HashChain(bytes(range(32)))
    steps: Records = []
    for counter in range(3):
        material = message_material(ratchet)
        steps.append(
            {
                "counter": counter,
                "chain_key": _hex(ratchet.export()),
                "message_key": _hex(material[:32]),
                "message_nonce": _hex(material[32:]),
            }
        )
        step_chain(ratchet)
    assert all(len(bytes.fromhex(str(c["envelope"]))) in BUCKETS for c in changes)
    key_update = _key_update(states, names, alice)
    return {
        "version": 1,
        "note": "cellrelay group end-to-end encryption, docs/protocol.md Part 2; "
        "tests/vectors/group-v1.md explains every field. The keys are public: never use them.",
        "now": NOW,
        "cell": {"cell_id": "c0ffee00" * 4, "name": "Eastside"},
        "identities": [admin_record, alice_record, bob_record],
        "pairwise": pairwise,
        "chain": steps,
        "epochs": epochs,
        "log": log,
        "epoch_changes": changes,
        "welcomes": welcomes,
        "announcements": announcements,
        "messages": messages,
        "key_update": key_update,
    }


def _key_update(
    states: dict[str, CellCrypto], names: dict[bytes, str], alice: Identity
) -> dict[str, object]:
    """Alice's key update and the rotation that commits it (version 4, §G6.5), last."""
    update = states["alice"].key_update(now=NOW)
    receive_private = bytes(states["alice"]._s.pending_receive[1])
    assert states["admin"].accept_key_update(update)
    before = states["admin"]._s
    previous = before.current
    envelope = states["admin"].rotate(now=NOW)
    number, nonce = split_change(envelope)
    section, _ = bucketed_keys(envelope)
    e_pub, refreshed, _, end = parse_section(section)
    ids = sorted(before.membership.members)
    mine = bucket_of(before.cell_id, alice.member_id)
    change_secret = open_keys(
        section,
        cell_id=before.cell_id,
        ad=change_header(before.cell_id, number, before.member_id),
        nonce=nonce,
        me=alice.member_id,
        bucket_members=[m for m in ids if bucket_of(before.cell_id, m) == mine],
        dh=receive_dh(bytearray(receive_private)),
        receive_pub=x25519_public_from_private(bytearray(receive_private)),
        bucket_private=None,
    ).change_secret
    for state in states.values():
        state.open_control(envelope, now=NOW, key_ttl=KEY_TTL)
    assert states["alice"].receive_generation == 1
    after = states["admin"]
    committed_at = KEYS_OFFSET_V3 + end + TABLE_SIZE
    return {
        "member": "alice",
        "generation": 1,
        "receive_private": _hex(receive_private),
        "receive_public": _hex(x25519_public_from_private(bytearray(receive_private))),
        "update": _hex(update),
        "change": {
            "from_epoch": previous,
            "epoch": after.epoch,
            "signer": "admin",
            "op": 0xFF,
            "nonce": _hex(nonce),
            "change_secret": _hex(change_secret),
            "ephemeral_public": _hex(e_pub),
            "refreshed": [
                {
                    "bucket": b,
                    "public": _hex(public),
                    "members": [names[m] for m in ids if bucket_of(after.cell_id, m) == b],
                }
                for b, (public, _count, _offset) in refreshed.items()
            ],
            "section_size": end,
            "filler": _hex(envelope[committed_at + 1 + len(update) :]),
            "envelope": _hex(envelope),
        },
        "epoch": _epoch_record(after),
    }


def render() -> str:
    """Return the vectors as the file holds them."""
    return json.dumps(generate(), indent=1) + "\n"


if __name__ == "__main__":
    print(render(), end="")
