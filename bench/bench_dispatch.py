"""A channel's sealed answers (docs/protocol.md §C11) next to the group layer's own cost.

Run: `python bench/bench_dispatch.py` (a few seconds; `--readers 1 13 255` to choose).
For a status reply of the usual size it prints, per number of readers (the channel's admins
and dispatchers): the sender's CPU to seal it, a reader's CPU to open it (its box last, the
worst case), a non-reader's CPU to find that it is not for it, and the bytes it adds; and,
side by side, the group layer's seal and open of one message (a sender-key chain step, the
header and body AEAD, an Ed25519 signature and its check), which every answer pays anyway.
Figures are medians of `--repeats` runs on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellrelay.protocol._crypto import (
    ed25519_generate,
    ed25519_sign,
    ed25519_verify,
    random_bytes,
    xchacha20poly1305_decrypt,
    xchacha20poly1305_encrypt,
)
from cellrelay.protocol.cell._content import MessageId, Status, StatusReply
from cellrelay.protocol.cell._dispatch import (
    NotForMeError,
    open_for_dispatch,
    seal_for_dispatch,
)
from cellrelay.protocol.cell._identity import Identity
from cellrelay.protocol.cell._keys import CHAIN_MESSAGE, CHAIN_NEXT, kdf

CELL = bytes(16)


def median_ms(work: object, repeats: int) -> float:
    """The median wall time of `work()` in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def group_message_ms(plaintext: bytes, repeats: int) -> tuple[float, float]:
    """Seal and open of one group message, the calls `_envelope` makes (no padding)."""
    chain = random_bytes(32)
    header_key = random_bytes(32)
    public, secret = ed25519_generate()
    nonce = random_bytes(24)

    def seal() -> bytes:
        material = kdf(chain, CHAIN_MESSAGE, b"", 56)
        kdf(chain, CHAIN_NEXT)
        body = xchacha20poly1305_encrypt(
            bytes(material[:32]), bytes(material[32:]), b"h", plaintext
        )
        signature = ed25519_sign(secret, b"h" + body)
        return xchacha20poly1305_encrypt(header_key, nonce, b"v", b"h" * 49 + signature) + body

    sealed = seal()
    body = sealed[129:]
    material = kdf(chain, CHAIN_MESSAGE, b"", 56)

    def open_() -> None:
        header = xchacha20poly1305_decrypt(header_key, nonce, b"v", sealed[:129])
        ed25519_verify(public, b"h" + body, header[49:])
        kdf(chain, CHAIN_MESSAGE, b"", 56)
        kdf(chain, CHAIN_NEXT)
        xchacha20poly1305_decrypt(bytes(material[:32]), bytes(material[32:]), b"h", body)

    return median_ms(seal, repeats), median_ms(open_, repeats)


def main() -> None:
    """Parse arguments, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readers", type=int, nargs="+", default=[1, 13, 64, 255])
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    reply = StatusReply(
        sent_at_ms=1_796_704_225_875, alert_id=MessageId(bytes(16)),
        status=Status.RESPONDING, note="5 min")  # fmt: skip
    plaintext = reply.encode()
    sender = Identity.generate("rory")
    outsider = Identity.generate("rita")
    group_seal, group_open = group_message_ms(plaintext, args.repeats)
    print(f"status reply: {len(plaintext)} bytes; medians of {args.repeats} runs")
    print(f"group layer, one message: seal {group_seal:.3f} ms, open {group_open:.3f} ms")
    print("readers  seal ms  open ms (reader, last box)  open ms (not a reader)  bytes added")
    for n in args.readers:
        readers = [Identity.generate(f"d{i}") for i in range(n)]
        infos = [r.info for r in readers]

        def seal(infos: list = infos) -> bytes:  # type: ignore[type-arg]
            return seal_for_dispatch(cell_id=CELL, sender_id=sender.member_id,
                                     recipients=infos, kind=2, plaintext=plaintext)  # fmt: skip

        sealed = seal()
        last = readers[-1]

        def open_reader(sealed: bytes = sealed, last: Identity = last) -> None:
            open_for_dispatch(sealed, cell_id=CELL, sender_id=sender.member_id, me=last)

        def open_outsider(sealed: bytes = sealed) -> None:
            try:
                open_for_dispatch(sealed, cell_id=CELL, sender_id=sender.member_id, me=outsider)
            except NotForMeError:
                return
            raise AssertionError("an outsider opened a seal")

        print(
            f"{n:7}  {median_ms(seal, args.repeats):7.3f}  {median_ms(open_reader, args.repeats):25.3f}"
            f"  {median_ms(open_outsider, args.repeats):22.3f}  {len(sealed) - len(plaintext):11}"
        )


if __name__ == "__main__":
    main()
