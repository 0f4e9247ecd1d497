"""Group end-to-end encryption speed: seal (encrypt + sign) and open (decrypt + verify) per message.

Run: `python bench/bench_group.py` (about 10 seconds). Prints, for an alert-sized plaintext
(60 bytes, the 256-byte bucket) and a 2,000-byte one (the 4 KiB bucket):

* `CellCrypto.seal` and `CellCrypto.open` in µs per message (medians of several repeats);
* the same libsodium calls made bare through cffi, with preallocated output buffers and
  nothing else, in the same run: for seal, two BLAKE2b chain steps, 24 random bytes, two
  XChaCha20-Poly1305 encryptions and one Ed25519 signature; for open, two BLAKE2b steps,
  two XChaCha20-Poly1305 decryptions and one Ed25519 verification. That is the least any
  implementation of this envelope can pay; the ratio is our overhead over it;
* Ed25519 sign / verify alone, for reference.

Targets (issue 4): seal ≤ 60 µs, open ≤ 110 µs, and each ≤ 1.3x the calls beneath. The
measured and bare loops alternate so that machine noise hits both alike.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nacl
from nacl._sodium import ffi, lib

from cellrelay.protocol.cell._envelope import ENVELOPE_OVERHEAD, Kind
from cellrelay.protocol.cell._group import CellCrypto
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._invite import Invite
from cellrelay.protocol.cell._padding import bucket_for
from cellrelay.protocol.wire._address import RelayAddress
from cellrelay.protocol.wire._messages import MailboxId

if TYPE_CHECKING:
    from collections.abc import Callable

NOW: Final = 1_700_000_000.0
MESSAGES_PER_REPEAT: Final = 400
REPEATS: Final = 15
CASES: Final = (("alert, 60 B", 60), ("2,000 B", 2000))
TARGET_SEAL_US: Final = 60.0
TARGET_OPEN_US: Final = 110.0
TARGET_RATIO: Final = 1.3


def timed(run: Callable[[], None], count: int) -> float:
    """Return microseconds per operation for one call of `run`, which does `count` of them."""
    start = time.perf_counter_ns()
    run()
    return (time.perf_counter_ns() - start) / count / 1_000


def _invite(cell: CellCrypto, now: float) -> Invite:
    """An invite to `cell` for its welcome to answer (a welcome answers one, §G7)."""
    return Invite(
        relay=RelayAddress("127.0.0.1", 7446, bytes(range(32))),
        cell_id=cell.cell_id,
        cell_name=cell.name or "bench",
        join_mailbox=MailboxId(bytes(16)),
        admin_sign_key=cell.me.sign_pub,
        admin_box_key=cell.me.dh_pub,
        expires_at=int(now) + 3600,
    )


def pair() -> tuple[CellCrypto, CellCrypto]:
    """Return (sender, receiver): a two-member cell whose sender keys are exchanged."""
    alice, bob = Identity.generate("alice"), Identity.generate("bob")
    keys = (bytes(32), bytes(32))
    sender = CellCrypto.create(alice, now=NOW, group_keys=keys, control_read_key=bytes(32))
    update = sender.open_control(sender.add_member(bob.info, now=NOW), now=NOW)
    invite = _invite(sender, NOW)
    receiver, distribution = CellCrypto.from_welcome(
        bob, sender.welcome_for(bob.member_id, now=NOW, invite=invite), now=NOW, invite=invite
    )
    sender.open(distribution, now=NOW)
    assert update.distribution is not None
    receiver.open(update.distribution, now=NOW)
    return sender, receiver


def bare_calls(size: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """Return (seal, open) loops of MESSAGES_PER_REPEAT bare libsodium call sequences."""
    padded = bucket_for(size + 1 + ENVELOPE_OVERHEAD) - ENVELOPE_OVERHEAD
    body_len = padded + 16
    key = ffi.new("unsigned char[32]", b"\x01" * 32)
    nonce = b"\x02" * 24
    out = ffi.new("unsigned char[64]")
    plaintext = bytes(padded)
    header = bytes(49)
    inner = bytes(49 + 64)  # H || signature, the sealed header's plaintext
    body = ffi.new("unsigned char[]", body_len)
    sealed_header = ffi.new("unsigned char[]", 49 + 64 + 16)
    opened = ffi.new("unsigned char[]", max(padded, 49 + 64))
    public = ffi.new("unsigned char[32]")
    secret = ffi.new("unsigned char[64]")
    lib.crypto_sign_seed_keypair(public, secret, b"\x03" * 32)
    to_sign = b"cellrelay/1 group-envelope\x00" + header + bytes(body_len)
    signed = ffi.new("unsigned char[]", len(to_sign) + 64)
    lib.crypto_sign(signed, ffi.NULL, to_sign, len(to_sign), secret)
    signed_copy = bytes(ffi.buffer(signed))
    verified = ffi.new("unsigned char[]", len(signed_copy))
    random_out = ffi.new("unsigned char[24]")
    message_label, next_label = b"cellrelay/1 chain message\x00", b"cellrelay/1 chain next\x00"
    blake, null = lib.crypto_generichash_blake2b_salt_personal, ffi.NULL
    enc = lib.crypto_aead_xchacha20poly1305_ietf_encrypt
    dec = lib.crypto_aead_xchacha20poly1305_ietf_decrypt
    lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
        body, null, plaintext, padded, header, 49, null, nonce, key
    )
    lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
        sealed_header, null, inner, 113, b"\x01abcd", 5, null, nonce, key
    )

    def seal() -> None:
        for _ in range(MESSAGES_PER_REPEAT):
            blake(out, 56, message_label, len(message_label), key, 32, null, null)
            blake(out, 32, next_label, len(next_label), key, 32, null, null)
            lib.randombytes(random_out, 24)
            enc(body, null, plaintext, padded, header, 49, null, nonce, key)
            lib.crypto_sign(signed, null, to_sign, len(to_sign), secret)
            enc(sealed_header, null, inner, 113, header, 5, null, nonce, key)

    def open_() -> None:
        for _ in range(MESSAGES_PER_REPEAT):
            dec(opened, null, null, sealed_header, 129, b"\x01abcd", 5, nonce, key)
            if lib.crypto_sign_open(verified, null, signed_copy, len(signed_copy), public):
                raise AssertionError("bare verify failed")
            blake(out, 56, message_label, len(message_label), key, 32, null, null)
            blake(out, 32, next_label, len(next_label), key, 32, null, null)
            if dec(opened, null, null, body, body_len, header, 49, nonce, key):
                raise AssertionError("bare decrypt failed")

    return seal, open_


def bench_case(size: int) -> dict[str, float]:
    """Return median µs per message of ours and bare, for seal and open."""
    sender, receiver = pair()
    plaintext = b"x" * size
    expires = int(NOW) + 3600
    batches: list[list[bytes]] = []

    def ours_seal() -> None:
        batch = [
            sender.seal(Kind.ALERT, plaintext, expires_at=expires, now=NOW)
            for _ in range(MESSAGES_PER_REPEAT)
        ]
        batches.append(batch)

    def ours_open() -> None:
        for envelope in batches.pop(0):
            receiver.open(envelope, now=NOW)

    bare_seal, bare_open = bare_calls(size)
    ours_seal()
    ours_open()  # warm up
    bare_seal()
    bare_open()
    times: dict[str, list[float]] = {"seal": [], "bare seal": [], "open": [], "bare open": []}
    for _ in range(REPEATS):
        times["seal"].append(timed(ours_seal, MESSAGES_PER_REPEAT))
        times["bare seal"].append(timed(bare_seal, MESSAGES_PER_REPEAT))
        times["open"].append(timed(ours_open, MESSAGES_PER_REPEAT))
        times["bare open"].append(timed(bare_open, MESSAGES_PER_REPEAT))
    return {name: statistics.median(values) for name, values in times.items()}


def bench_ed25519() -> tuple[float, float]:
    """Return (µs per Ed25519 sign, µs per verify) of a 300-byte message, bare cffi."""
    public = ffi.new("unsigned char[32]")
    secret = ffi.new("unsigned char[64]")
    lib.crypto_sign_seed_keypair(public, secret, b"\x03" * 32)
    message = bytes(300)
    signed = ffi.new("unsigned char[]", 364)
    out = ffi.new("unsigned char[]", 364)
    lib.crypto_sign(signed, ffi.NULL, message, 300, secret)
    signed_bytes = bytes(ffi.buffer(signed))

    def sign() -> None:
        for _ in range(MESSAGES_PER_REPEAT):
            lib.crypto_sign(signed, ffi.NULL, message, 300, secret)

    def verify() -> None:
        for _ in range(MESSAGES_PER_REPEAT):
            lib.crypto_sign_open(out, ffi.NULL, signed_bytes, 364, public)

    signs = [timed(sign, MESSAGES_PER_REPEAT) for _ in range(REPEATS)]
    verifies = [timed(verify, MESSAGES_PER_REPEAT) for _ in range(REPEATS)]
    return statistics.median(signs), statistics.median(verifies)


def main() -> None:
    """Run the benchmark and print the table."""
    started = time.perf_counter()
    print(f"cellrelay group E2E benchmark: Python {platform.python_version()}, ", end="")
    print(f"PyNaCl {nacl.__version__}, one core, medians of {REPEATS} x {MESSAGES_PER_REPEAT}")
    sign_us, verify_us = bench_ed25519()
    print(f"bare Ed25519 (300 B): sign {sign_us:.1f} µs, verify {verify_us:.1f} µs")
    print()
    print(f"  {'plaintext':14}{'op':6}{'ours µs':>9}{'bare µs':>9}{'ratio':>8}  target")
    for label, size in CASES:
        result = bench_case(size)
        for op, target in (("seal", TARGET_SEAL_US), ("open", TARGET_OPEN_US)):
            ours, bare = result[op], result[f"bare {op}"]
            ratio = ours / bare
            verdict = "ok" if ours <= target and ratio <= TARGET_RATIO else "MISSED"
            print(
                f"  {label:14}{op:6}{ours:9.1f}{bare:9.1f}{ratio:7.2f}x"
                f"  ≤{target:.0f} µs, ≤{TARGET_RATIO}x: {verdict}"
            )
    print()
    print(f"total run time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
