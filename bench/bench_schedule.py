"""The key schedule's two versions side by side: one membership change, and one epoch's keys.

Run: `python bench/bench_schedule.py` (about a minute; `--members 128 1000` to choose sizes;
`--key-update-members 128 1000` for what members' key updates cost, kind 8 and their commits).
For each cell size it prints, for adding one member (the change a removal makes costs the
same), the admin's CPU, each member's CPU and the bytes of the epoch change; and, for the
epoch that follows, the bytes of sender keys on the wire and each member's CPU to take them.

* **Version 1** (docs/protocol.md §G6, §G8; what cells run today). At 128 members the epoch
  change is built and opened by the real functions (`seal_epoch_change`, `find_box`,
  `verify_change`); above 128 (which version 1 refuses: `MAX_MEMBERS`) the same calls are
  made with the slots widened to one per member, which is what version 1 would have to do.
  The admin's pairwise keys are cached in memory (`CellCrypto._pair`); "cold" adds the one
  X25519 per member that a restarted admin pays. A member finds its box by trying slots:
  the figure is the median member's, half the slots. Sender keys: every member publishes a
  distribution with one 16-byte MAC per other member; a member takes n - 1 of them, each
  the libsodium calls `Receiver` makes (header and body AEAD, one MAC, one Ed25519 verify).
* **Version 2/3** (docs/design.md, "The key schedule, second version"; epoch change version
  3 on the wire, docs/protocol.md §G6.2). The change's key section is sealed and opened by
  the real `seal_keys` / `open_keys`, plus the other parts of version 3's layout (1,203
  bytes of clear part, sealed header and body, the 2,048-byte bucket table, padding to the
  size class; the admin's signature and its check), the epoch-secret chain and the sender
  tree's 64 nodes. Above 128 members (`MAX_MEMBERS`: welcomes and announcements are not
  paged yet) the same calls are made on a membership this file builds. Members of the refreshed bucket pay
  one X25519 more than the others: both are shown. Sender keys: only members who speak
  announce (a distribution without the chain key); shown for 3 speakers (an alerting cell)
  and for all n (a reply storm).

Then, with `--admin-state` (1,000 by default; about 40 s more), an admin's saved state right
after admitting that many members one by one: as state version 5 saved it (every old epoch's
member list in full) and as version 6 does (differences), size and load time.

Targets (issue 12), at 1,000 members: admin ≤ 100 ms, member ≤ 5 ms, ≤ 64 KiB on the wire.
Figures are medians of `--repeats` runs on this machine; docs/benchmarks.md quotes a run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellrelay.protocol._crypto import (
    XChaChaKey,
    blake2b,
    ed25519_generate,
    ed25519_sign,
    ed25519_verify,
    x25519_public_from_private,
    xchacha20poly1305_decrypt,
    xchacha20poly1305_encrypt,
)
from cellrelay.protocol._errors import CryptoError
from cellrelay.protocol.cell._content import Alert, Priority, decode_content
from cellrelay.protocol.cell._control import (
    BOX_SIZE as V1_BOX_SIZE,
)
from cellrelay.protocol.cell._control import (
    KEYS_OFFSET_V3,
    MAX_COMMITTED,
    SLOTS_OFFSET,
    TABLE_SIZE,
    ChangeBody,
    change_header,
    committed_updates,
    find_box,
    open_change_header,
    seal_epoch_change,
    verify_change,
)
from cellrelay.protocol.cell._envelope import ENVELOPE_OVERHEAD
from cellrelay.protocol.cell._group import CellCrypto
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._invite import Invite
from cellrelay.protocol.cell._keys import PAIRWISE_EPOCH_BOX
from cellrelay.protocol.cell._membership import MAX_MEMBERS
from cellrelay.protocol.cell._outcomes import Opened
from cellrelay.protocol.cell._padding import bucket_for
from cellrelay.protocol.cell._schedule import (
    SenderTree,
    bucket_of,
    init_secret,
    next_epoch_secret,
    open_keys,
    receive_dh,
    seal_keys,
    sign_key_update,
)
from cellrelay.protocol.cell._state import write_state
from cellrelay.protocol.wire._address import RelayAddress
from cellrelay.protocol.wire._messages import MailboxId

if TYPE_CHECKING:
    from collections.abc import Callable

CELL: Final = bytes(range(16))
NOW: Final = 1_700_000_000.0
NONCE: Final = bytes(24)
TARGET_ADMIN_MS: Final = 100.0
TARGET_MEMBER_MS: Final = 5.0
TARGET_BYTES: Final = 64 * 1024
# Version 2's change without its key section: the same clear part, sealed header and
# sealed body as version 1 (docs/protocol.md §G6.2: 1 + 4 + 24 + 117 + 1,040).
# A distribution's plaintext without its MACs: chain key, start, signing key, MAC count.
DISTRIBUTION_FIXED: Final = 32 + 4 + 32 + 2
ANNOUNCEMENT_FIXED: Final = DISTRIBUTION_FIXED - 32
MAC_SIZE: Final = 16
LARGEST_ENVELOPE: Final = 16_384


def ms(run: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of `repeats` calls of `run`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        run()
        times.append((time.perf_counter_ns() - start) / 1e6)
    return statistics.median(times)


def envelope_bytes(plaintext: int) -> int:
    """Bytes of the group envelope carrying `plaintext` bytes (0 if no bucket holds it)."""
    total = plaintext + 1 + ENVELOPE_OVERHEAD
    return bucket_for(total) if total <= LARGEST_ENVELOPE else 0


def paged(plaintext_fixed: int, macs: int) -> int:
    """Bytes of a distribution or announcement with `macs` MACs, in pages of what fits."""
    per_page = (LARGEST_ENVELOPE - ENVELOPE_OVERHEAD - 1 - plaintext_fixed) // MAC_SIZE
    total, left = 0, macs
    while True:
        take = min(left, per_page)
        total += envelope_bytes(plaintext_fixed + take * MAC_SIZE)
        left -= take
        if left <= 0:
            return total


def sender_key_receive_ms(count: int, macs: int, repeats: int) -> float:
    """A member's CPU to take `count` distributions of `macs` MACs: the calls per one, x count."""
    body_plain = bytes(min(DISTRIBUTION_FIXED + macs * MAC_SIZE, LARGEST_ENVELOPE - 200))
    key = bytes(32)
    header_inner = bytes(49 + 64)
    sealed_header = xchacha20poly1305_encrypt(key, NONCE, b"\x01abcd", header_inner)
    body = xchacha20poly1305_encrypt(key, NONCE, bytes(49), body_plain)
    public, secret = ed25519_generate()
    signed = b"cellrelay/1 group-envelope\x00" + bytes(49) + body
    signature = ed25519_sign(secret, signed)

    def one() -> None:
        xchacha20poly1305_decrypt(key, NONCE, b"\x01abcd", sealed_header)
        ed25519_verify(public, signed, signature)
        xchacha20poly1305_decrypt(key, NONCE, bytes(49), body)
        blake2b(b"cellrelay/1 distribution-mac\x00" + bytes(180), size=16, key=key)

    sample = 200

    def batch() -> None:
        for _ in range(sample):
            one()

    return ms(batch, repeats) * count / sample


# -- version 1 ---------------------------------------------------------------------------------


def v1(members: int, repeats: int) -> dict[str, float]:
    """Measure version 1 at `members` (real functions at <= 128, widened slots above)."""
    admin = Identity.generate("admin")
    ids = sorted(os.urandom(16) for _ in range(members))
    peers = [x25519_public_from_private(bytearray(os.urandom(32))) for _ in range(8)]
    keys = [(mid, os.urandom(32)) for mid in ids]  # cached pairwise epoch-box keys
    ch = change_header(CELL, 2, admin.member_id)
    header_key, body_key = XChaChaKey(bytes(32)), XChaChaKey(bytes([1]) * 32)
    body = ChangeBody(entry=None, group_keys=None, admin_grant=None)
    secret = os.urandom(32)
    real = members <= MAX_MEMBERS

    def build() -> bytes:
        if real:
            filler = os.urandom((MAX_MEMBERS - members) * V1_BOX_SIZE)
            return seal_epoch_change(
                signer=admin,
                ch=ch,
                nonce=NONCE,
                header_key=header_key,
                body_key=body_key,
                body=body,
                secret=secret,
                boxes=keys,
                filler=filler,
            )
        ad = b"cellrelay/1 epoch-box\x00" + ch
        slots = b"".join(xchacha20poly1305_encrypt(k, NONCE, ad + m, secret) for m, k in keys)
        tail = body_key.encrypt(NONCE, ch, bytes(1024)) + slots
        signature = admin.sign(b"cellrelay/1 epoch-change\x00" + ch + tail)
        return bytes(5) + NONCE + header_key.encrypt(NONCE, bytes(5), ch + signature) + tail

    def cold_pairs() -> None:
        for i in range(members):
            admin.pairwise_key(peers[i % len(peers)], PAIRWISE_EPOCH_BOX)

    envelope = build()
    middle, middle_key = keys[members // 2]

    def member() -> None:
        _, signature = open_change_header(envelope, header_key, NONCE)
        verify_change(admin.info, ch, signature, envelope)
        if real:
            if find_box(envelope, middle_key, NONCE, ch, middle) is None:
                raise AssertionError("no box")
            return
        ad = b"cellrelay/1 epoch-box\x00" + ch + middle
        view = memoryview(envelope)
        end = SLOTS_OFFSET + (members // 2 + 1) * V1_BOX_SIZE
        for start in range(SLOTS_OFFSET, end, V1_BOX_SIZE):  # as find_box tries them
            try:
                xchacha20poly1305_decrypt(middle_key, NONCE, ad, view[start : start + V1_BOX_SIZE])
            except CryptoError:
                continue
            return
        raise AssertionError("no box")

    warm = ms(build, repeats)
    return {
        "admin_ms": warm,
        "admin_cold_ms": warm + ms(cold_pairs, max(3, repeats // 3)),
        "member_ms": ms(member, repeats),
        "change_bytes": float(len(envelope)),
        "keys_bytes_epoch": float(members * paged(DISTRIBUTION_FIXED, members - 1)),
        "keys_member_ms": sender_key_receive_ms(members - 1, members - 1, repeats),
    }


# -- version 2 ---------------------------------------------------------------------------------


def v2(members: int, repeats: int) -> dict[str, float]:
    """Measure version 2's building blocks adding one member to a cell of `members`."""
    admin = Identity.generate("admin")
    receive = {os.urandom(16): bytearray(os.urandom(32)) for _ in range(members + 1)}
    ids = sorted(receive)
    joiner = ids.pop(members // 3)  # not yet a member
    publics = {mid: x25519_public_from_private(key) for mid, key in receive.items()}

    def buckets_of(listed: list[bytes]) -> dict[int, list[tuple[bytes, bytes]]]:
        out: dict[int, list[tuple[bytes, bytes]]] = {}
        for mid in listed:
            out.setdefault(bucket_of(CELL, mid), []).append((mid, publics[mid]))
        return out

    # The cell before the change: every bucket keyed by a first change.
    before = buckets_of(ids)
    first, bucket_publics = seal_keys(
        cell_id=CELL, ad=b"", nonce=NONCE, change_secret=bytes(32), buckets=before,
        bucket_publics={}, refresh=(),
    )  # fmt: skip
    bucket_keys: dict[int, bytearray] = {}
    for b, listed in before.items():
        mid = listed[0][0]
        opened = open_keys(
            first, cell_id=CELL, ad=b"", nonce=NONCE, me=mid, bucket_members=[m for m, _ in listed],
            dh=receive_dh(receive[mid]), receive_pub=x25519_public_from_private(receive[mid]), bucket_private=None,
        )  # fmt: skip
        assert opened.bucket_private is not None
        bucket_keys[b] = opened.bucket_private
    after_ids = sorted([*ids, joiner])
    after = buckets_of(after_ids)
    target = bucket_of(CELL, joiner)
    ch = change_header(CELL, 3, admin.member_id)
    change_secret = os.urandom(32)
    section_box: list[bytes] = []

    hint = b"\x01" + joiner  # op ADD, subject

    def layout(section: bytes) -> bytes:
        """The signed tail: sealed body, key section, bucket table, filler (§G6.2)."""
        used = KEYS_OFFSET_V3 + len(section) + TABLE_SIZE
        return bytes(1040) + section + bytes(TABLE_SIZE) + bytes(bucket_for(used) - used)

    def build() -> None:
        section, publics = seal_keys(
            cell_id=CELL, ad=ch, nonce=NONCE, change_secret=change_secret, buckets=after,
            bucket_publics=bucket_publics, refresh={target},
        )  # fmt: skip
        b"".join(publics.get(b, bytes(32)) for b in range(64))  # the table
        admin.sign(b"cellrelay/3 epoch-change\x00" + ch + hint + layout(section))
        section_box[:] = [section]

    admin_ms = ms(build, repeats)
    section = section_box[0]
    tail = layout(section)
    signature = admin.sign(b"cellrelay/3 epoch-change\x00" + ch + hint + tail)
    init = init_secret(bytes(32), CELL, 2)
    untouched = next(mid for mid in after_ids if bucket_of(CELL, mid) != target)
    # A member of the refreshed bucket (the joiner itself if it is alone there: it opens
    # its receive box the same way).
    refreshed = next(
        (mid for mid in after_ids if bucket_of(CELL, mid) == target and mid != joiner), joiner
    )

    def member(mid: bytes) -> Callable[[], None]:
        b = bucket_of(CELL, mid)
        listed = [m for m, _ in after[b]]

        def run() -> None:
            ed25519_verify(
                admin.sign_pub, b"cellrelay/3 epoch-change\x00" + ch + hint + tail, signature
            )
            opened = open_keys(
                section, cell_id=CELL, ad=ch, nonce=NONCE, me=mid, bucket_members=listed,
                dh=receive_dh(receive[mid]), receive_pub=x25519_public_from_private(receive[mid]), bucket_private=bucket_keys.get(b),
            )  # fmt: skip
            secret = next_epoch_secret(init, opened.change_secret, CELL, 3)
            SenderTree.enter(secret, CELL, 3).clear()
            init_secret(secret, CELL, 3)
            opened.clear()

        return run

    announcement = paged(ANNOUNCEMENT_FIXED, members)
    return {
        "admin_ms": admin_ms,
        "member_ms": ms(member(untouched), repeats),
        "member_refreshed_ms": ms(member(refreshed), repeats),
        "change_bytes": float(bucket_for(KEYS_OFFSET_V3 + len(section) + TABLE_SIZE)),
        "keys_bytes_3": float(3 * announcement),
        "keys_bytes_all": float((members + 1) * announcement),
        "keys_member_ms_3": sender_key_receive_ms(3, members, repeats),
        "keys_member_ms_all": sender_key_receive_ms(members, members, repeats),
    }


def on_the_wire(members: int, repeats: int) -> dict[str, float]:
    """What this code does today at `members` (at most 128): `CellCrypto` end to end.

    A cell of `members` built by the admin alone (its own changes applied, then a welcome
    for each member into the last epoch); then a rotation: one member's `open_control`,
    and that member taking every other member's announcement (kind 7) of the new epoch.
    Each run starts from the member's saved state; "just after a restart" is without the
    pairwise keys a running client keeps in memory (one X25519 per other member).
    """
    admin = Identity.generate("admin")
    cell = CellCrypto.create(
        admin, now=NOW, group_keys=(bytes(32), bytes(32)), control_read_key=bytes(32)
    )
    people = [Identity.generate(f"m{i}") for i in range(members - 1)]
    for person in people:
        cell.open_control(cell.add_member(person.info, now=NOW), now=NOW)
    invite = Invite(
        relay=RelayAddress("127.0.0.1", 7446, bytes(range(32))),
        cell_id=cell.cell_id,
        cell_name=cell.name or "bench",
        join_mailbox=MailboxId(bytes(16)),
        admin_sign_key=cell.me.sign_pub,
        admin_box_key=cell.me.dh_pub,
        expires_at=int(NOW) + 3600,
        secret=bytes(32),
    )
    joined = []
    for person in people:  # welcomes with pages above about 150 members (§G7)
        welcome, pages = cell.welcome_with_pages(person.member_id, now=NOW, invite=invite)
        joined.append(
            CellCrypto.from_welcome(person, welcome, now=NOW, invite=invite, pages=pages)[0]
        )
    add_times = []  # a removal: the same work as an add, and possible in a full cell
    for _ in range(repeats):
        start = time.perf_counter_ns()
        cell.remove_member(people[-1].member_id, now=NOW, new_group_keys=(bytes(32), bytes(32)))
        add_times.append((time.perf_counter_ns() - start) / 1e6)
    cell._s.proposals.clear()
    rotation = cell.rotate(now=NOW)
    reader = joined[0]
    saved = reader.to_bytes()
    announcements = [
        update.distribution
        for update in (c.open_control(rotation, now=NOW) for c in [cell, *joined[1:]])
        if update.distribution is not None
    ]
    member = people[0]
    warm = CellCrypto.from_bytes(saved, member)
    warm.open_control(rotation, now=NOW)
    for announcement in announcements:
        warm.open(announcement, now=NOW)
    cache = warm._pairwise  # the pairwise keys a running client has cached

    def timed(run: Callable[[CellCrypto], object], *, cached: bool, before: bool) -> float:
        times = []
        for _ in range(repeats):
            state = CellCrypto.from_bytes(saved, member)
            if cached:
                state._pairwise = dict(cache)
            if before:
                state.open_control(rotation, now=NOW)
            start = time.perf_counter_ns()
            run(state)
            times.append((time.perf_counter_ns() - start) / 1e6)
        return statistics.median(times)

    def apply(state: CellCrypto) -> None:
        state.open_control(rotation, now=NOW)

    def take_all(state: CellCrypto) -> None:
        for announcement in announcements:
            state.open(announcement, now=NOW)

    # Key updates (docs/protocol.md §G6.5): 16 held, one per bucket where it can; a rotation
    # commits the oldest that fit one envelope.
    for person in people[:MAX_COMMITTED]:
        update = sign_key_update(person, cell.cell_id, 1, bytearray(32 * b"\x07"))
        cell.accept_key_update(update.to_bytes())
    commit_times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        committing = cell.rotate(now=NOW)
        commit_times.append((time.perf_counter_ns() - start) / 1e6)
        cell._s.proposals.clear()
    return {
        "commit_ms": statistics.median(commit_times),
        "commit_bytes": float(len(committing)),
        "committed": float(len(committed_updates(committing))),
        "add_ms": statistics.median(add_times),
        "change_ms": timed(apply, cached=True, before=False),
        "change_cold_ms": timed(apply, cached=False, before=False),
        "announcements_ms": timed(take_all, cached=True, before=True),
        "announcements_cold_ms": timed(take_all, cached=False, before=True),
        "announcement_bytes": float(len(announcements[0])),
        "change_bytes": float(len(rotation)),
    }


def key_update_costs(members: int, repeats: int) -> dict[str, float]:
    """What members' key updates cost in a cell of `members` (docs/protocol.md §G6.5).

    A member makes its update and seals it as a kind 8 envelope (`key_update`,
    `seal_key_update`); the admin opens it and takes it (`open`, `take_key_update`); the
    admin's rotations commit 0, 1, 4 and 16 held updates (`rotate`; 16 held commit as many
    as fit). The other members' updates are handed to the admin directly: the same state.
    """
    admin_identity, admin, people, member, announcement, _ = _cell_of(members)
    admin.open(announcement, now=NOW)
    saved_admin = admin.to_bytes()
    make, take, envelope = [], [], b""
    for generation in range(1, repeats + 1):
        start = time.perf_counter_ns()
        update = member.key_update(now=NOW)
        envelope = member.seal_key_update(update, expires_at=int(NOW) + 3600, now=NOW)
        make.append((time.perf_counter_ns() - start) / 1e6)
        state = CellCrypto.from_bytes(saved_admin, admin_identity)
        start = time.perf_counter_ns()
        opened = state.open(envelope, now=NOW)
        if not isinstance(opened, Opened) or not state.take_key_update(opened):
            raise AssertionError(f"update {generation} was not taken")
        take.append((time.perf_counter_ns() - start) / 1e6)
    costs = {
        "update_bytes": float(len(envelope)),
        "make_ms": statistics.median(make),
        "take_ms": statistics.median(take),
    }
    for held in (0, 1, 4, MAX_COMMITTED):
        state = CellCrypto.from_bytes(saved_admin, admin_identity)
        for person in people[1 : held + 1]:
            private = bytearray(os.urandom(32))
            state.accept_key_update(sign_key_update(person, admin.cell_id, 1, private).to_bytes())
        times = []
        for _ in range(repeats):
            start = time.perf_counter_ns()
            change = state.rotate(now=NOW)
            times.append((time.perf_counter_ns() - start) / 1e6)
            state._s.proposals.clear()
        costs[f"commit{held}_ms"] = statistics.median(times)
        costs[f"commit{held}_bytes"] = float(len(change))
        costs[f"commit{held}_n"] = float(len(committed_updates(change)))
    return costs


class _Cell(NamedTuple):
    admin_identity: Identity
    admin: CellCrypto
    people: list[Identity]  # the others, in the order added
    member: CellCrypto  # people[0], joined by a paged welcome
    announcement: bytes  # its announcement
    pages: int  # how many pages its welcome took


def _cell_of(members: int) -> _Cell:
    """A cell of `members` built through real version 3 changes (adds, `announce=False`),
    and its first other member joined by a paged welcome."""
    admin_identity = Identity.generate("admin")
    admin = CellCrypto.create(
        admin_identity, now=NOW, group_keys=(bytes(32), bytes(32)), control_read_key=bytes(32),
        name="bench",
    )  # fmt: skip
    people = [Identity.generate(f"m{i}") for i in range(members - 1)]
    for person in people:
        admin.open_control(admin.add_member(person.info, now=NOW), now=NOW, announce=False)
    invite = Invite(
        relay=RelayAddress("127.0.0.1", 7446, bytes(range(32))),
        cell_id=admin.cell_id,
        cell_name="bench",
        join_mailbox=MailboxId(bytes(16)),
        admin_sign_key=admin.me.sign_pub,
        admin_box_key=admin.me.dh_pub,
        expires_at=int(NOW) + 3600,
        secret=bytes(32),
    )
    welcome, pages = admin.welcome_with_pages(people[0].member_id, now=NOW, invite=invite)
    member, announcement = CellCrypto.from_welcome(
        people[0], welcome, now=NOW, invite=invite, pages=pages
    )
    return _Cell(admin_identity, admin, people, member, announcement, len(pages))


def alert_processing(members: int, alerts: int) -> dict[str, float]:
    """A member's own work for one alert in a cell of `members`, at the protocol layer.

    The cell is built through real version 3 changes (adds, `announce=False`) and a paged
    welcome; then the admin seals `alerts` alerts (kind 1, the content layer's encoding)
    and the member opens and decodes each: the part of "frame received to the app's
    callback" that grows with the cell. The client adds its transport decryption, the
    roll-up and the keystore save on top (bench_cells.py measures those at 100 members).
    """
    cell = _cell_of(members)
    admin, member = cell.admin, cell.member
    member.open(admin.announcement(now=NOW), now=NOW)
    sealed = [
        admin.seal(
            1,
            Alert(sent_at_ms=int(NOW * 1000), text=f"alert {i}: 14th and Main",
                  priority=Priority.URGENT, expires_at=int(NOW) + 3600).encode(),
            expires_at=int(NOW) + 3600,
            now=NOW,
        )
        for i in range(alerts)
    ]  # fmt: skip
    wall, cpu = [], []
    for envelope in sealed:
        start, start_cpu = time.perf_counter_ns(), time.process_time_ns()
        opened = member.open(envelope, now=NOW)
        assert isinstance(opened, Opened)
        decode_content(opened.kind, opened.plaintext)
        wall.append((time.perf_counter_ns() - start) / 1e6)
        cpu.append((time.process_time_ns() - start_cpu) / 1e6)
    wall.sort()
    return {
        "p50_ms": statistics.median(wall),
        "p99_ms": wall[min(len(wall) - 1, int(len(wall) * 0.99))],
        "cpu_ms": statistics.mean(cpu),
        "pages": float(cell.pages),
        "alert_bytes": float(len(sealed[0])),
    }


def admin_state(members: int, repeats: int) -> dict[str, float]:
    """An admin's saved state right after admitting `members - 1` members one by one.

    Each change applied as the client applies it (`open_control` of its own change), so
    the state holds 64 old epochs in their grace windows, as the lead's does after
    bench_cells.py's set-up. Saved as version 5 did (every old epoch's member list in full,
    `write_state(version=5)`) and as version 6 does (each as its difference from the
    current list); the load is `CellCrypto.from_bytes` of each, median of `repeats`.
    """
    identity = Identity.generate("admin")
    admin = CellCrypto.create(
        identity, now=NOW, group_keys=(bytes(32), bytes(32)), control_read_key=bytes(32),
        name="bench",
    )  # fmt: skip
    for i in range(members - 1):
        person = Identity.generate(f"m{i}")
        admin.open_control(admin.add_member(person.info, now=NOW), now=NOW, announce=False)
    old = write_state(admin._s, version=5, cached=False)
    new = write_state(admin._s, cached=False)
    return {
        "epochs": len(admin._s.epochs),
        "v5_bytes": len(old),
        "v6_bytes": len(new),
        "v5_load_ms": ms(lambda: CellCrypto.from_bytes(old, identity), repeats),
        "v6_load_ms": ms(lambda: CellCrypto.from_bytes(new, identity), repeats),
        "v6_save_ms": ms(lambda: write_state(admin._s), repeats),
    }


def kib(value: float) -> str:
    """Bytes as KiB (or MiB from 10 MiB) with one decimal."""
    if value >= 10 * 1024 * 1024:
        return f"{value / 1024 / 1024:,.1f} MiB"
    return f"{value / 1024:,.1f} KiB"


def main() -> None:
    """Measure and print both versions at each size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, nargs="+", default=[128, 1000, 5000])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument(
        "--alert-members", type=int, nargs="*", default=[100, 1000],
        help="cell sizes for a member's processing of one alert (none: skip)",
    )  # fmt: skip
    parser.add_argument(
        "--admin-state", type=int, nargs="*", default=[1000],
        help="cell sizes for an admin's saved state after admitting one by one (none: skip)",
    )  # fmt: skip
    parser.add_argument(
        "--key-update-members", type=int, nargs="*", default=[128, 1000],
        help="cell sizes for the cost of members' key updates (none: skip)",
    )  # fmt: skip
    args = parser.parse_args()
    print("one membership change (add one member), and the sender keys of the epoch after it")
    print("(v1: the first epoch change and distributions; v2: epoch change version 3 and")
    print(" announcements, the bucket construction on the wire)")
    for n in args.members:
        one, two = v1(n, args.repeats), v2(n, args.repeats)
        print(f"\n{n:,} members")
        print(f"  admin CPU       v1 {one['admin_ms']:7.2f} ms (cold {one['admin_cold_ms']:.1f})"
              f"   v2 {two['admin_ms']:7.2f} ms   target <= {TARGET_ADMIN_MS:.0f}")  # fmt: skip
        print(f"  member CPU      v1 {one['member_ms']:7.2f} ms"
              f"                v2 {two['member_ms']:7.2f} ms"
              f" (its bucket refreshed {two['member_refreshed_ms']:.2f})"
              f"   target <= {TARGET_MEMBER_MS:.0f}")  # fmt: skip
        print(f"  change bytes    v1 {kib(one['change_bytes']):>12}"
              f"           v2 {kib(two['change_bytes']):>12}"
              f"   target <= {kib(TARGET_BYTES)}")  # fmt: skip
        print(f"  sender keys, bytes published per epoch (each member downloads as much):  v1 {kib(one['keys_bytes_epoch'])}   v2 {kib(two['keys_bytes_3'])}"
              f" with 3 speakers, {kib(two['keys_bytes_all'])} if all speak")  # fmt: skip
        print(f"  sender keys, each member's CPU per epoch:  v1 {one['keys_member_ms']:.1f} ms"
              f"   v2 {two['keys_member_ms_3']:.2f} ms with 3 speakers,"
              f" {two['keys_member_ms_all']:.1f} ms if all speak")  # fmt: skip
    wire = on_the_wire(min(MAX_MEMBERS, max(args.members)), args.repeats)
    print(
        f"\non the wire now (version 3 changes, sender tree and announcements),"
        f" {min(MAX_MEMBERS, max(args.members))} members, CellCrypto end to end:"
    )
    print(f"  a member applies a rotation (open_control, its own announcement made):"
          f" {wire['change_ms']:.2f} ms, {wire['change_cold_ms']:.2f} ms just after a restart;"
          f" the change is {kib(wire['change_bytes'])};"
          f" the admin builds a removal in {wire['add_ms']:.2f} ms")  # fmt: skip
    print(f"  the admin builds a rotation committing key updates (16 held):"
          f" {wire['committed']:.0f} committed, {kib(wire['commit_bytes'])},"
          f" {wire['commit_ms']:.2f} ms")  # fmt: skip
    print(f"  it takes every other member's announcement: {wire['announcements_ms']:.1f} ms,"
          f" {wire['announcements_cold_ms']:.1f} ms just after a restart;"
          f" each announcement is {kib(wire['announcement_bytes'])}")  # fmt: skip

    for n in args.key_update_members:
        c = key_update_costs(n, args.repeats)
        per_change = c[f"commit{MAX_COMMITTED}_n"]
        changes = (n - 1) / per_change  # committing rotations a week: one update per member
        print(f"\nmembers' key updates in a cell of {n:,} (one per member per week, §G6.5):")
        print(f"  a member makes and seals one: {c['make_ms']:.2f} ms, a kind 8 envelope of"
              f" {kib(c['update_bytes'])}; the admin opens and takes one: {c['take_ms']:.2f} ms")  # fmt: skip
        for held in (0, 1, 4, MAX_COMMITTED):
            print(f"  the admin's rotation with {held:2} held: commits"
                  f" {c[f'commit{held}_n']:.0f}, {c[f'commit{held}_ms']:6.2f} ms of CPU,"
                  f" {kib(c[f'commit{held}_bytes'])}")  # fmt: skip
        week_up = c["update_bytes"]
        week_down = (n - 1) * c["update_bytes"] + changes * c[f"commit{MAX_COMMITTED}_bytes"]
        print(f"  per member per week: uploads {kib(week_up)} (its update); downloads"
              f" {kib((n - 1) * c['update_bytes'])} of the others' updates (the group mailbox"
              f" goes to everyone) and {changes:.0f} committing changes"
              f" ({kib(changes * c[f'commit{MAX_COMMITTED}_bytes'])}; each replaces a daily"
              f" rotation only when it falls on one): {kib(week_down)} in all")  # fmt: skip

    for n in args.alert_members:
        alert = alert_processing(n, 200)
        print(f"\none alert in a cell of {n:,} (protocol layer: open + decode, 200 alerts):"
              f" p50 {alert['p50_ms']:.3f} ms, p99 {alert['p99_ms']:.3f} ms,"
              f" CPU {alert['cpu_ms']:.3f} ms per alert; the welcome had"
              f" {alert['pages']:.0f} pages")  # fmt: skip

    for n in args.admin_state:
        state = admin_state(n, args.repeats)
        print(f"\nan admin's saved state after admitting {n - 1:,} members one by one"
              f" ({state['epochs']:.0f} epochs kept): version 5 (old epochs' member lists in"
              f" full) {kib(state['v5_bytes'])}, loads in {state['v5_load_ms']:.1f} ms;"
              f" version 6 (as differences) {kib(state['v6_bytes'])}, loads in"
              f" {state['v6_load_ms']:.1f} ms, saves in {state['v6_save_ms']:.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
