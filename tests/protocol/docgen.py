"""Render the generated sections of docs/protocol.md from the code, so they cannot drift.

`python -m tests.protocol.docgen` rewrites the sections in place; the test
`test_protocol_doc.py` fails when the document differs from what this renders.
A section sits between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cellrelay.protocol._errors import DESCRIPTIONS, ErrorCode
from cellrelay.protocol.wire._capability import (
    CapabilityKey,
    admin_signing_input,
    auth_signing_input,
    sign_admin,
)
from cellrelay.protocol.wire._codec import encode_message
from cellrelay.protocol.wire._connection import (
    CLIENT_MESSAGES,
    RELAY_MESSAGES,
    TRANSITIONS,
    Connection,
    Role,
    State,
)
from cellrelay.protocol.wire._messages import (
    MESSAGE_TYPES,
    Auth,
    FieldSpec,
    Hello,
    MailboxId,
    Ok,
    Page,
    PageItem,
    Publish,
    Published,
    SetLimits,
    Welcome,
    field_specs,
)
from cellrelay.protocol.wire._noise import KeyPair

if TYPE_CHECKING:
    from collections.abc import Callable

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
SECTION = re.compile(r"(<!-- generated:(\w+) -->\n)(.*?)(<!-- /generated:\2 -->)", re.S)


def _spec_text(spec: FieldSpec) -> tuple[str, str]:
    if spec.kind == "uint":
        named = {2**64 - 1: "2^64-1", 2**63 - 1: "2^63-1", 2**32 - 1: "2^32-1", 2**16 - 1: "65535"}
        return "uint", f"{spec.lo} .. {named.get(spec.hi, f'{spec.hi:,}')}"
    if spec.kind == "bytes":
        size = f"exactly {spec.lo}" if spec.lo == spec.hi else f"{spec.lo} .. {spec.hi} bytes"
        return "bin", size
    if spec.kind == "choice":
        return "str", " or ".join(f'`"{c}"`' for c in spec.choices)
    if spec.kind == "bool":
        return "bool", "true or false"
    return "array", f"0 .. {spec.hi} page items (§4.3)"


def _direction(cls: type) -> str:
    if cls is Hello:
        return "client → relay, handshake message 1 payload"
    if cls is Welcome:
        return "relay → client, handshake message 2 payload"
    if cls.__name__ == "Goodbye" or (cls in CLIENT_MESSAGES and cls in RELAY_MESSAGES):
        return "either direction"
    return "client → relay" if cls in CLIENT_MESSAGES else "relay → client"


def render_messages() -> str:
    """One subsection per message type with its field table."""
    out = []
    for type_name, cls in MESSAGE_TYPES.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        out.append(f"#### `{type_name}` ({_direction(cls)})\n\n{doc}\n")
        specs = field_specs(cls)
        if specs:
            out.append("| key | msgpack type | allowed values |\n|---|---|---|")
            for name, spec in specs:
                kind, bounds = _spec_text(spec)
                out.append(f"| `{name}` | {kind} | {bounds} |")
        else:
            out.append("No fields besides `t`.")
        out.append("")
    return "\n".join(out)


def render_states() -> str:
    """The transition table, one row per (state, sender) with the message types it allows."""
    rows: dict[tuple[State, Role, State], list[str]] = {}
    for (state, sender, cls), after in TRANSITIONS.items():
        rows.setdefault((state, sender, after), []).append(f"`{cls.TYPE}`")
    out = ["| state | sender | messages | next state |", "|---|---|---|---|"]
    order = list(State)
    for (state, sender, after), names in sorted(
        rows.items(), key=lambda r: (order.index(r[0][0]), r[0][1].value, order.index(r[0][2]))
    ):
        out.append(f"| {state.name} | {sender.value} | {', '.join(names)} | {after.name} |")
    return "\n".join(out) + "\n"


def render_errors() -> str:
    """The error code table."""
    out = ["| code | name | meaning |", "|---|---|---|"]
    out += [f"| {code.value} | `{code.name}` | {DESCRIPTIONS[code]} |" for code in ErrorCode]
    return "\n".join(out) + "\n"


def _hex_block(data: bytes, width: int = 32) -> str:
    return "\n".join(data[i : i + width].hex() for i in range(0, len(data), width)) or "(empty)"


# Pinned keys for the worked example: never use these anywhere else.
EXAMPLE_RELAY_STATIC = bytes(range(0x00, 0x20))
EXAMPLE_CLIENT_EPHEMERAL = bytes(range(0x20, 0x40))
EXAMPLE_RELAY_EPHEMERAL = bytes(range(0x40, 0x60))
EXAMPLE_WRITE_SEED = bytes(range(0x60, 0x80))
EXAMPLE_MAILBOX = MailboxId(bytes(range(0x80, 0x90)))
EXAMPLE_ADMIN_SEED = bytes(range(0xA0, 0xC0))
# The admin operation and page of the example (issue 10: §10 had no vector for either).
EXAMPLE_SET_LIMITS = SetLimits(
    id=3,
    mailbox=EXAMPLE_MAILBOX,
    max_ttl=3600,
    max_bytes=1_048_576,
    counter=1_767_225_600_123,
    sig=bytes(64),
)
EXAMPLE_PAGE = Page(
    id=4,
    mailbox=EXAMPLE_MAILBOX,
    items=(
        PageItem(seq=1, expires_at=1_767_229_200, envelope=b"sealed group message"),
        PageItem(seq=2, expires_at=1_767_232_800, envelope=b"another one"),
    ),
    more=True,
)


def render_example() -> str:
    """A handshake, an Auth + Publish and the relay's answers, an admin operation and a page."""
    relay_key = KeyPair.from_private(EXAMPLE_RELAY_STATIC)
    client = Connection(
        Role.CLIENT,
        relay_public_key=relay_key.public,
        ephemeral_key=KeyPair.from_private(EXAMPLE_CLIENT_EPHEMERAL),
    )
    relay = Connection(
        Role.RELAY,
        static_key=relay_key,
        ephemeral_key=KeyPair.from_private(EXAMPLE_RELAY_EPHEMERAL),
    )
    write_key = CapabilityKey.from_seed(EXAMPLE_WRITE_SEED)
    hello = Hello()
    welcome = Welcome(
        time_ms=1_767_225_600_000, max_envelope=16_384, max_ttl=604_800, ping_interval=30
    )
    frame1 = client.send(hello)
    assert relay.receive_data(frame1) == [hello]
    frame2 = relay.send(welcome)
    assert client.receive_data(frame2) == [welcome]
    hh = client.handshake_hash
    signing_input = auth_signing_input("write", hh, EXAMPLE_MAILBOX)
    auth = Auth(id=1, mailbox=EXAMPLE_MAILBOX, role="write", proof=write_key.sign(signing_input))
    publish = Publish(
        id=2, mailbox=EXAMPLE_MAILBOX, expires_at=1_767_229_200, envelope=b"sealed group message"
    )
    frame3 = client.send_many([auth, publish])
    assert relay.receive_data(frame3) == [auth, publish]
    answers = [Ok(id=1), Published(id=2, seq=1)]
    frame4 = relay.send_many(answers)
    assert client.receive_data(frame4) == answers

    admin_key = CapabilityKey.from_seed(EXAMPLE_ADMIN_SEED)
    admin_input = admin_signing_input(EXAMPLE_SET_LIMITS, hh)
    set_limits = sign_admin(admin_key, EXAMPLE_SET_LIMITS, hh)
    assert admin_key.sign(admin_input) == set_limits.sig

    def block(title: str, data: bytes) -> str:
        return f"{title} ({len(data)} bytes):\n\n```\n{_hex_block(data)}\n```\n"

    parts = [
        block("Relay static private key", EXAMPLE_RELAY_STATIC),
        block("Relay static public key", relay_key.public),
        f"Relay address: `cellrelay://{_b64(relay_key.public)}@127.0.0.1:7446`\n",
        block("Client ephemeral private key", EXAMPLE_CLIENT_EPHEMERAL),
        block("Relay ephemeral private key", EXAMPLE_RELAY_EPHEMERAL),
        block("Hello, msgpack", encode_message(hello)),
        block("Frame 1, client → relay (length prefix + handshake message 1)", frame1),
        block("Welcome, msgpack", encode_message(welcome)),
        block("Frame 2, relay → client (length prefix + handshake message 2)", frame2),
        block("Handshake hash", hh),
        block("Write capability key seed", EXAMPLE_WRITE_SEED),
        block("Write capability public key", write_key.public),
        block("Mailbox id", EXAMPLE_MAILBOX),
        block("Auth signing input (§6.1)", signing_input),
        block("Auth, msgpack", encode_message(auth)),
        block("Publish, msgpack", encode_message(publish)),
        block(
            "Frame 3, client → relay (first transport message, nonce 0: Auth then Publish)", frame3
        ),
        block(
            "Ok then Published, msgpack", encode_message(answers[0]) + encode_message(answers[1])
        ),
        block("Frame 4, relay → client (first transport message, nonce 0)", frame4),
        "An admin operation on the same connection: `set_limits` with `max_ttl` 3600, "
        f"`max_bytes` 1,048,576 and `counter` {EXAMPLE_SET_LIMITS.counter:,}, signed by the "
        "admin capability key (§6.2).\n",
        block("Admin capability key seed", EXAMPLE_ADMIN_SEED),
        block("Admin capability public key", admin_key.public),
        block("SetLimits signing input (§6.2)", admin_input),
        block("SetLimits, msgpack", encode_message(set_limits)),
        "A `page` answering a `fetch` with two items (§4.3) and more to come.\n",
        block("Page, msgpack", encode_message(EXAMPLE_PAGE)),
    ]
    return "\n".join(parts)


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


RENDERERS: dict[str, Callable[[], str]] = {
    "messages": render_messages,
    "states": render_states,
    "errors": render_errors,
    "example": render_example,
}


def render_document(text: str) -> str:
    """Return `text` with every generated section replaced by a fresh rendering."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(2)
        return f"{match.group(1)}{RENDERERS[name]()}{match.group(4)}"

    return SECTION.sub(replace, text)


def main() -> int:
    """Rewrite docs/protocol.md's generated sections."""
    text = DOC.read_text()
    new = render_document(text)
    if new != text:
        DOC.write_text(new)
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
