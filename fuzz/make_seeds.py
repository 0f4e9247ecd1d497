"""Write the seed corpora in fuzz/seeds/ from the protocol's own encoders (run after changes).

`python fuzz/make_seeds.py` regenerates every seed file; they are committed so a fuzz run
starts from valid messages of every type rather than from nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol._codec import encode_message
from protocol._framing import encode_frame
from protocol._messages import MESSAGE_TYPES, Message, PageItem

SEEDS = Path(__file__).resolve().parent / "seeds"


def examples() -> list[Message]:
    """One valid message of every type, built from the smallest valid field values."""
    out: list[Message] = []
    from protocol._messages import field_specs

    for cls in MESSAGE_TYPES.values():
        kwargs: dict[str, object] = {}
        for name, spec in field_specs(cls):
            if spec.kind == "uint":
                kwargs[name] = max(spec.lo, 1)
            elif spec.kind == "bytes":
                kwargs[name] = b"\x07" * max(spec.lo, 1)
            elif spec.kind == "choice":
                kwargs[name] = spec.choices[0]
            elif spec.kind == "bool":
                kwargs[name] = True
            else:
                kwargs[name] = (PageItem(seq=1, expires_at=2, envelope=b"e"),)
        out.append(cls(**kwargs))
    return out


def main() -> None:
    """Write the corpora."""
    messages = examples()
    for name in ("codec", "handshake", "frames"):
        (SEEDS / name).mkdir(parents=True, exist_ok=True)
    for message in messages:
        encoded = encode_message(message)
        (SEEDS / "codec" / f"{message.TYPE}.bin").write_bytes(encoded)
        (SEEDS / "handshake" / f"payload-{message.TYPE}.bin").write_bytes(b"\x01" + encoded)
        (SEEDS / "handshake" / f"transport-{message.TYPE}.bin").write_bytes(b"\x02" + encoded)
        (SEEDS / "frames" / f"{message.TYPE}.bin").write_bytes(
            b"\x02\x10\x80" + encode_frame(encoded) * 2
        )
    (SEEDS / "codec" / "several.bin").write_bytes(b"".join(encode_message(m) for m in messages[:6]))


if __name__ == "__main__":
    main()
