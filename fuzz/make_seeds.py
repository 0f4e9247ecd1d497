"""Write the seed corpora in fuzz/seeds/ from the protocol's own encoders (run after changes).

`python fuzz/make_seeds.py` regenerates every seed file; they are committed so a fuzz run
starts from valid messages of every type rather than from nothing.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cellrelay.protocol.wire._codec import encode_message
from cellrelay.protocol.wire._framing import encode_frame
from cellrelay.protocol.wire._messages import MESSAGE_TYPES, Message, PageItem

SEEDS = Path(__file__).resolve().parent / "seeds"


def examples() -> list[Message]:
    """One valid message of every type, built from the smallest valid field values."""
    out: list[Message] = []
    from cellrelay.protocol.wire._messages import field_specs

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


def write_content_and_invite_seeds() -> None:
    """Write seeds for fuzz_content (kind byte + encoding) and fuzz_invite (mode byte + input)."""
    from cellrelay.protocol.cell._content import (
        Alert,
        Burn,
        Change,
        EscalationNote,
        Leave,
        MemberId,
        MembershipChange,
        MessageId,
        PlainMessage,
        Priority,
        Receipt,
        ReceiptState,
        Status,
        StatusReply,
        Step,
        VerificationStep,
        escalation_ref,
    )
    from cellrelay.protocol.cell._invite import Invite, InviteRelay
    from cellrelay.protocol.wire._address import RelayAddress
    from cellrelay.protocol.wire._messages import MailboxId

    ids = [MessageId(bytes([n]) * 16) for n in range(4)]
    contents = {
        "alert": Alert(
            message_id=ids[0], sent_at_ms=1_767_225_600_000, text="agents at 14th & Main",
            priority=Priority.URGENT, place="14th & Main", expires_at=1_767_229_200,
        ),
        "alert-bare": Alert(
            message_id=ids[1], sent_at_ms=1, text="x", priority=Priority.INFO, expires_at=1
        ),
        "status": StatusReply(
            message_id=ids[2], sent_at_ms=1_767_225_660_000, alert_id=ids[0],
            status=Status.ON_SCENE, note="two of us here",
        ),
        "verification": VerificationStep(
            message_id=ids[3], sent_at_ms=1_767_225_700_000, alert_id=ids[0],
            step=Step.CONFIRMED, note="two vans, confirmed by phone",
        ),
        "escalated-alert": Alert(
            message_id=ids[2], sent_at_ms=1_767_225_600_000, text="agents at 14th & Main",
            priority=Priority.URGENT, place=None, expires_at=1_767_229_200, escalate_below=2,
            escalate_after=60, from_label="Eastside", from_ref=escalation_ref(ids[0]),
        ),
        "escalation": EscalationNote(
            message_id=ids[1], sent_at_ms=1_767_225_800_000, alert_id=ids[0], label="Westside",
            responding=2, on_scene=1, outcome=Status.RESOLVED,
        ),
        "receipt": Receipt(
            message_id=ids[3], sent_at_ms=1, message_ids=tuple(ids[:3]), state=ReceiptState.READ
        ),
        "plain": PlainMessage(message_id=ids[1], sent_at_ms=1, text="line one\nline two"),
        "leave": Leave(message_id=ids[3], sent_at_ms=1_767_225_600_000),
        "burn": Burn(message_id=ids[2], sent_at_ms=1_767_225_600_000),
        "membership": MembershipChange(
            message_id=ids[2], sent_at_ms=1, change=Change.ADDED, member_id=MemberId(b"a" * 16),
            member_name="Alice", by_id=MemberId(b"b" * 16), by_name="Bob",
        ),
    }  # fmt: skip
    folder = SEEDS / "content"
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in contents.items():
        (folder / f"{name}.bin").write_bytes(bytes([content.KIND]) + content.encode())

    invites = [
        Invite(
            relay=RelayAddress(host, port, bytes(range(32))),
            cell_id=bytes(range(16)),
            cell_name=name,
            join_mailbox=MailboxId(bytes(range(16, 32))),
            admin_sign_key=bytes(32),
            admin_box_key=bytes([9]) * 32,
            expires_at=1_767_830_400,
            secret=bytes(range(32, 64)),
        )
        for host, port, name in [
            ("relay.example.org", 7446, "Eastside Rapid Response"),
            ("2001:db8::1", 443, "\u0645\u0631\u062d\u0628\u0627"),
            ("10.0.0.1", 1, "c"),
        ]
    ]
    # Cells on two and three relays: format 2 (§C3.1a).
    more = [
        InviteRelay(RelayAddress(host, 7446, bytes([n]) * 32), MailboxId(bytes([n]) * 16))
        for n, host in ((1, "relay.example.net"), (2, "192.0.2.7"))
    ]
    invites += [replace(invites[0], more_relays=tuple(more[:n])) for n in (1, 2)]
    folder = SEEDS / "invite"
    folder.mkdir(parents=True, exist_ok=True)
    for n, invite in enumerate(invites):
        (folder / f"bytes-{n}.bin").write_bytes(b"\x00" + invite.to_bytes())
        (folder / f"link-{n}.bin").write_bytes(b"\x01" + invite.to_link().encode())


def write_group_seeds() -> None:
    """Write seeds for fuzz_group_open (mode byte + input; see that harness's docstring)."""
    from group_fixture import build

    fixture = build()
    folder = SEEDS / "group_open"
    folder.mkdir(parents=True, exist_ok=True)
    env = fixture.envelopes
    seeds = {
        "open-alert": b"\x00" + env["alert"],
        "open-reply": b"\x00" + env["reply"],
        "open-own": b"\x00" + env["own"],
        "open-next-epoch": b"\x00" + env["next-alert"],
        "open-distribution": b"\x00" + env["next-distribution"],
        "control-rotation": b"\x01" + env["rotation"],
        "header-alert": b"\x02" + env["alert-inner"],
        "welcome": b"\x03" + env["welcome"],
        "state": b"\x04" + fixture.alice_state,
        "key-update": b"\x05" + env["key-update"],
        # Mode 6: the index, then an announcement's plaintext (4 MACs; fixed bytes).
        "announcement": b"\x06\x02" + bytes(4) + bytes(range(32)) + b"\x00\x04" + bytes(64),
    }
    for name, seed in seeds.items():
        (folder / f"{name}.bin").write_bytes(seed)


def write_change_extra_seeds() -> None:
    """Write seeds for fuzz_change_extra (mode byte + input; see that harness's docstring)."""
    from cellrelay.client._cell_member import CellInfo, RelayInfo
    from cellrelay.client._cell_moves import ChangeExtra
    from cellrelay.protocol.cell._control import ChangeBody
    from cellrelay.protocol.wire import MailboxId

    mailbox = MailboxId(bytes(range(16)))
    move = ChangeExtra(group=mailbox, drain_read=bytes(32))
    settings = ChangeExtra(alert_limit=10, muted=(bytes(16), bytes([1]) * 16), verify_first=True)
    relays = ChangeExtra(
        relay_add=(f"cellrelay://{'A' * 43}@relay2.example:7446", mailbox, mailbox),
        relay_drop=f"cellrelay://{'A' * 43}@relay3.example:7446",
    )
    info = CellInfo(relay="cellrelay://key@relay.example:7446", group=mailbox, control=mailbox,
                    group_from=3, control_from=4, alert_limit=5, muted=(bytes(16),),
                    verify_first=True)  # fmt: skip
    further = tuple(
        RelayInfo(
            relay=f"cellrelay://{'A' * 43}@relay{n}.example:7446",
            group=mailbox,
            control=mailbox,
            group_from=n,
            control_from=n + 1,
        )
        for n in (2, 3)
    )
    three = CellInfo(relay=f"cellrelay://{'A' * 43}@relay.example:7446", group=mailbox,
                     control=mailbox, more_relays=further)  # fmt: skip
    rotation = ChangeBody(entry=None, group_keys=(bytes(32), bytes(32)), admin_grant=None)
    moving = ChangeBody(
        entry=None, group_keys=(bytes(32), bytes(32)), admin_grant=None, extra=move.encode()
    )
    # A signed set_role entry (issue 14): a dispatcher, by the cell's creator.
    from cellrelay.protocol.cell._identity import Identity
    from cellrelay.protocol.cell._membership import Op, Role, sign_entry

    admin, dana = Identity.generate("admin"), Identity.generate("dana")
    entry = sign_entry(admin, op=Op.SET_ROLE, index=2, prev_hash=bytes(32), epoch=3,
                       timestamp_ms=1, cell_id=bytes(16), subject=dana.info, role=Role.DISPATCHER)  # fmt: skip
    role_body = ChangeBody(entry=entry, group_keys=None, admin_grant=None)
    seeds = {
        "body-set-role": b"\x00" + role_body.to_bytes(),
        "body-rotation": b"\x00" + rotation.to_bytes(),
        "body-move": b"\x00" + moving.to_bytes(),
        "extra-move": b"\x01" + move.encode(),
        "extra-settings": b"\x01" + settings.encode(),
        "extra-relays": b"\x01" + relays.encode(),
        "extra-escalate": b"\x01" + ChangeExtra(escalate=(2, 60)).encode(),
        "cell-info": b"\x02" + info.encode(),
        "cell-info-three-relays": b"\x02" + three.encode(),
    }
    folder = SEEDS / "change_extra"
    folder.mkdir(parents=True, exist_ok=True)
    for name, seed in seeds.items():
        (folder / f"{name}.bin").write_bytes(seed)


def write_schedule_seeds() -> None:
    """Write seeds for fuzz_schedule: real key updates and key sections sealed to its member."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fuzz_schedule as target

    from cellrelay.protocol._crypto import x25519_public_from_private
    from cellrelay.protocol.cell._schedule import bucket_of, seal_keys, sign_key_update

    me = target.IDENTITY.member_id
    bucket = bucket_of(target.CELL, me)
    members = {bucket: [(me, x25519_public_from_private(target.MEMBER_RECEIVE))]}
    publics = {bucket: x25519_public_from_private(target.MEMBER_BUCKET)}
    update = sign_key_update(target.IDENTITY, target.CELL, 1, bytearray(target.MEMBER_RECEIVE))
    seeds = {"update": b"\x00" + update.to_bytes()}
    for name, refresh in (("rotation", set()), ("refresh", {bucket})):
        section, _ = seal_keys(
            cell_id=target.CELL,
            ad=target.AD,
            nonce=target.NONCE,
            change_secret=bytes(32),
            buckets=members,
            bucket_publics=publics,
            refresh=refresh,
        )
        seeds[f"section-{name}"] = b"\x01" + section
        seeds[f"change-{name}"] = b"\x02" + section + bytes(2048) + bytes(100)
        committed = b"\x01" + update.to_bytes()
        seeds[f"committing-{name}"] = b"\x05" + section + bytes(2048) + committed + bytes(50)
    from cellrelay.protocol.cell._group import CellCrypto

    admin = CellCrypto.create(
        target.IDENTITY, target.CELL, now=0.0, group_keys=(bytes(32), bytes(32)),
        control_read_key=bytes(32), name="fuzz",
    )  # fmt: skip
    admin._s.join_boxes[target.IDENTITY.member_id] = bytes(124)
    admin._s.bucket_publics = {0: bytes(range(32))}
    from cellrelay.protocol.cell._epochs import welcome_content

    content = welcome_content(
        admin._s, target.IDENTITY.member_id, now=0.0, extra=b"x", invite_binding=bytes(32)
    )
    seeds["welcome-v3"] = b"\x03" + content.to_bytes()
    from cellrelay.protocol.cell._control import seal_welcome_pages
    from cellrelay.protocol.cell._membership import Role

    (page,) = seal_welcome_pages(
        target.PAGE_KEY,
        target.IDENTITY.member_id,
        [(target.IDENTITY.info, Role.MEMBER)],
        os.urandom,
    )
    seeds["welcome-page"] = b"\x04" + page
    folder = SEEDS / "schedule"
    folder.mkdir(parents=True, exist_ok=True)
    for name, seed in seeds.items():
        (folder / f"{name}.bin").write_bytes(seed)


if __name__ == "__main__":
    main()
    write_content_and_invite_seeds()
    write_group_seeds()
    write_change_extra_seeds()
    write_schedule_seeds()
