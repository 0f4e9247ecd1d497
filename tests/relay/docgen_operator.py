"""Render the generated sections of docs/operator-guide.md from the code, so they cannot drift.

`python -m tests.relay.docgen_operator` rewrites the sections in place; the test
`test_operator_doc.py` fails when the guide differs from what this renders. A section sits
between `<!-- generated:NAME -->` and `<!-- /generated:NAME -->`, as in docs/protocol.md.

Sections: `config` (every `RelayConfig` field: TOML key, environment variable, flag,
default, meaning) and `metrics` (every metric `RelayMetrics` registers, read back from the
Prometheus exposition itself, so the table shows exactly what a scraper sees).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cellrelay.relay._config import ENV_PREFIX, FIELD_KINDS, RelayConfig
from cellrelay.relay._metrics import Registry, RelayMetrics

from ..protocol.docgen import SECTION

if TYPE_CHECKING:
    from collections.abc import Callable

DOC = Path(__file__).resolve().parents[2] / "docs" / "operator-guide.md"

_TOML_TYPES = {"int": "integer", "float": "float", "str": "string", "list": "array of strings"}
# Label values listed in full up to this many; beyond it the table names the set instead.
_MAX_LISTED_VALUES = 6
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? ")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _cell(text: str) -> str:
    """Make `text` safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _toml_value(value: object) -> str:
    """Render a default as it would be written in the TOML file."""
    if isinstance(value, tuple):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def render_config() -> str:
    """One row per `RelayConfig` field, in declaration order."""
    out = [
        "| name | TOML key (type) | environment variable | flag | default | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for f in dataclasses.fields(RelayConfig):
        kind = FIELD_KINDS[f.name]
        flag = "--" + f.name.replace("_", "-")
        metavar = "A,B" if kind == "list" else kind.upper()
        out.append(
            f"| {f.name} | `{f.name}` ({_TOML_TYPES[kind]}) | `{ENV_PREFIX}{f.name.upper()}` "
            f"| `{flag} {metavar}` | `{_cell(_toml_value(f.default))}` "
            f"| {_cell(f.metadata['help'])} |"
        )
    return "\n".join(out) + "\n"


@dataclasses.dataclass
class _Family:
    name: str
    kind: str = ""
    help: str = ""
    labels: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    buckets: list[str] = dataclasses.field(default_factory=list)


def _families() -> list[_Family]:
    """Parse the relay's own exposition text into families, in registration order."""
    registry = Registry()
    metrics = RelayMetrics.create(registry)
    metrics.mailboxes.set_function(lambda: 0)
    families: dict[str, _Family] = {}
    current: _Family | None = None
    for line in registry.render().decode().splitlines():
        if line.startswith("# HELP "):
            name, _, text = line[len("# HELP ") :].partition(" ")
            current = families.setdefault(name, _Family(name))
            current.help = text
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE ") :].partition(" ")
            families[name].kind = kind
        elif current is not None and (match := _SAMPLE.match(line)):
            for label, value in _LABEL.findall(match.group("labels") or ""):
                if label == "le":
                    if value != "+Inf" and value not in current.buckets:
                        current.buckets.append(value)
                    continue
                values = current.labels.setdefault(label, [])
                if value not in values:
                    values.append(value)
    return list(families.values())


def _number(text: str) -> str:
    value = float(text)
    return str(int(value)) if value.is_integer() and value >= 1 else repr(value)


def render_metrics() -> str:
    """One row per metric family: name, type, labels (or buckets) and its help text."""
    out = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for family in _families():
        parts = []
        for label, values in family.labels.items():
            if len(values) <= _MAX_LISTED_VALUES:
                parts.append(f"`{label}`: " + ", ".join(f"`{v}`" for v in values))
            else:
                parts.append(f"`{label}`: {len(values)} values (below)")
        if family.buckets:
            low, high = _number(family.buckets[0]), _number(family.buckets[-1])
            parts.append(f"buckets `le` {low} … {high} ({len(family.buckets)} + `+Inf`)")
        labels = "; ".join(parts) or "none"
        out.append(f"| `{family.name}` | {family.kind} | {labels} | {_cell(family.help)} |")
    # Long label sets go under the table; one that extends a set already listed says so.
    listed: list[tuple[str, list[str]]] = []
    for family in _families():
        for label, values in family.labels.items():
            if len(values) <= _MAX_LISTED_VALUES:
                continue
            where = f"`{label}` of `{family.name}`"
            base = next((name for name, seen in listed if set(seen) <= set(values)), None)
            if base is None:
                text = ", ".join(f"`{v}`" for v in values)
                out += [
                    "",
                    f"Values of {where} ({len(values)}), each an error code name (docs/protocol.md §8) in lower case: {text}.",
                ]
            else:
                seen = next(seen for name, seen in listed if name == base)
                extra = ", ".join(f"`{v}`" for v in values if v not in seen)
                out += ["", f"Values of {where} ({len(values)}): those of {base}, and {extra}."]
            listed.append((where, values))
    return "\n".join(out) + "\n"


RENDERERS: dict[str, Callable[[], str]] = {
    "config": render_config,
    "metrics": render_metrics,
}


def render_document(text: str) -> str:
    """Return `text` with every generated section replaced by a fresh rendering."""

    def replace(match: re.Match[str]) -> str:
        return f"{match.group(1)}{RENDERERS[match.group(2)]()}{match.group(4)}"

    return SECTION.sub(replace, text)


def main() -> int:
    """Rewrite docs/operator-guide.md's generated sections."""
    text = DOC.read_text()
    new = render_document(text)
    if new != text:
        DOC.write_text(new)
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
