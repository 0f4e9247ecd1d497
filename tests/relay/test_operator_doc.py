"""docs/operator-guide.md agrees with the code: settings, metrics, log events, examples, commands."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

from cellrelay.relay._cli import EXIT_DISK_FULL, EXIT_FIX, build_parser, main
from cellrelay.relay._config import RelayConfig, load_config
from cellrelay.relay._server import CLOSE_GRACE

from ..protocol.docgen import SECTION
from . import docgen_operator

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"
TOML_EXAMPLE = EXAMPLES / "relay.toml"
UNIT_EXAMPLE = EXAMPLES / "cellrelay-relay.service"

# structlog's methods, by the level they log at: `exception` logs at error, with a traceback.
LEVELS = {
    "debug": "debug",
    "info": "info",
    "warning": "warning",
    "error": "error",
    "exception": "error",
    "critical": "critical",
}
_ROW = re.compile(r"^\| `(?P<event>\w+)` \| (?P<level>\w+) \| (?P<fields>.*?) \| .+ \|$")


def _guide() -> str:
    return docgen_operator.DOC.read_text()


def test_generated_sections_match_the_code() -> None:
    text = _guide()
    assert len(SECTION.findall(text)) == len(docgen_operator.RENDERERS)
    assert docgen_operator.render_document(text) == text, (
        "run: python -m tests.relay.docgen_operator"
    )


def _is_get_logger(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get_logger"
    )


def emitted_events() -> dict[str, tuple[set[str], set[str]]]:
    """Every event logged in relay/: its name -> (levels, fields), read from the source."""
    events: dict[str, tuple[set[str], set[str]]] = {}
    for path in sorted((REPO / "relay").glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        loggers = {
            target.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and _is_get_logger(node.value)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and (
                    (isinstance(node.func.value, ast.Name) and node.func.value.id in loggers)
                    or _is_get_logger(node.func.value)
                )
            ):
                continue
            where = f"{path.name}:{node.lineno}"
            assert node.args, f"{where}: a log call without an event name"
            name = node.args[0]
            assert isinstance(name, ast.Constant), f"{where}: event names are constants"
            assert isinstance(name.value, str), f"{where}: event names are strings"
            assert all(kw.arg is not None for kw in node.keywords), (
                f"{where}: fields are spelled out, so the guide can list them"
            )
            fields = {kw.arg for kw in node.keywords if kw.arg is not None}
            if node.func.attr == "exception":
                fields.add("exception")
            levels, known = events.setdefault(name.value, (set(), set()))
            levels.add(LEVELS[node.func.attr])
            known |= fields
    return events


def documented_events() -> dict[str, tuple[str, set[str]]]:
    """The guide's table of log events: name -> (level, fields)."""
    text = _guide()
    start = text.index("### 9.1 Every log event")
    section = text[start : text.index("\n## ", start)]
    table: dict[str, tuple[str, set[str]]] = {}
    for line in section.splitlines():
        match = _ROW.match(line)
        if match:
            assert match["event"] not in table, f"{match['event']} is listed twice"
            fields = set(re.findall(r"`(\w+)`", match["fields"]))
            table[match["event"]] = (match["level"], fields)
    return table


def test_every_log_event_is_documented_with_its_level_and_fields() -> None:
    emitted = emitted_events()
    documented = documented_events()
    assert len(emitted) >= 15, "the scan of relay/ found too few log calls: is it broken?"
    assert sorted(set(emitted) - set(documented)) == [], "events missing from the guide"
    assert sorted(set(documented) - set(emitted)) == [], "the guide lists events nobody emits"
    for event, (levels, fields) in emitted.items():
        level, listed = documented[event]
        assert levels == {level}, f"{event}: logged at {levels}, documented as {level}"
        assert listed == fields, f"{event}: fields {sorted(fields)}, documented {sorted(listed)}"


def _fenced(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _guide(), re.S)


def test_example_files_are_the_ones_in_the_guide() -> None:
    assert TOML_EXAMPLE.read_text() in _fenced("toml")
    assert UNIT_EXAMPLE.read_text() in _fenced("ini")


def _unit() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT_EXAMPLE.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_example_config_loads_and_fits_the_unit() -> None:
    config = load_config(file=TOML_EXAMPLE, environ={})
    unit = _unit()
    assert config.listen == ("0.0.0.0:7446", "[::]:7446")
    assert config.public_host
    assert config.store == "sqlite"
    # The unit's StateDirectory is the only writable place: the data must live there.
    assert [f"/var/lib/{name}" for name in unit["StateDirectory"]] == [config.data_dir]
    assert config.key_path.parent == config.database_path.parent == Path(config.data_dir)
    (exec_start,) = unit["ExecStart"]
    assert exec_start.endswith(" relay serve --config /etc/cellrelay/relay.toml")
    assert TOML_EXAMPLE.read_text().startswith("# /etc/cellrelay/relay.toml:")


def test_unit_stops_the_way_the_relay_drains() -> None:
    unit = _unit()
    defaults = RelayConfig()
    assert unit["KillSignal"] == ["SIGTERM"]
    (timeout,) = unit["TimeoutStopSec"]
    assert float(timeout) > defaults.shutdown_grace + CLOSE_GRACE + 10, (
        "leave time for the final checkpoint"
    )
    (nofile,) = unit["LimitNOFILE"]
    assert int(nofile) > defaults.max_connections
    assert unit["LimitCORE"] == ["0"]  # a core dump would hold the relay key
    for setting in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices"):
        assert unit[setting] == ["yes"], setting
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert unit["User"] == ["cellrelay"]
    assert unit["UMask"] == ["0077"]


def test_exit_status_2_means_a_setting_to_fix(tmp_path: Path) -> None:
    """The unit's RestartPreventExitStatus=2 relies on this; 75 (a full disk) is restarted."""
    assert _unit()["RestartPreventExitStatus"] == ["2"]
    assert _unit()["Restart"] == ["on-failure"]
    assert (EXIT_FIX, EXIT_DISK_FULL) == (2, 75)
    missing = tmp_path / "no.key"
    assert main(["address", "--key-file", str(missing)]) == 2
    assert main(["serve", "--key-file", str(missing), "--store", "memory"]) == 2


def test_every_command_is_documented() -> None:
    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) >= {"init", "serve", "address", "backup"}
    text = _guide()
    for name in commands.choices:
        assert f"`cellrelay relay {name}" in text, name
