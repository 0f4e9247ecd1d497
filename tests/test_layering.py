"""The architecture's import rules hold: import-linter's contracts plus a direct AST check.

The contracts live in pyproject.toml ([tool.importlinter]). The AST check is independent
of import-linter and also covers imports that linter may not see (inside functions).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Folder -> modules its code may not import: a name forbids that module and its submodules.
# The relay forwards sealed bytes and must not have the code that opens them (the cell
# protocol); the wire protocol must not need it either.
FORBIDDEN = {
    "protocol": {
        "cellrelay.relay",
        "cellrelay.client",
        "trio",
        "structlog",
        "socket",
        "asyncio",
        "time",
    },
    "protocol/wire": {"cellrelay.protocol.cell"},
    "relay": {"cellrelay.client", "cellrelay.protocol.cell"},
    "client": {"cellrelay.relay"},
}

# The old top-level import names: nothing may import them, or an app's own client.py,
# protocol.py or relay.py would be imported in their place (or ours in place of theirs).
BARE_NAMES = {"client", "protocol", "relay"}


def imported_modules(path: Path) -> set[str]:
    """Return every absolute module name `path` imports, with all its parent packages.

    `from cellrelay.protocol import cell` counts as importing `cellrelay.protocol.cell`.
    Relative imports are resolved against the module's place under `cellrelay`.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    relative = path.relative_to(ROOT).with_suffix("").parts
    package = ["cellrelay", *relative[:-1]] if relative[0] in BARE_NAMES else list(relative[:-1])
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            modules.add(module)
            modules.update(f"{module}.{alias.name}" for alias in node.names)
    return {
        ".".join(parts[:i])
        for m in modules
        for parts in [m.split(".")]
        for i in range(1, len(parts) + 1)
    }


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_package_imports_respect_layers(folder: str) -> None:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no modules found in {folder}"
    for path in files:
        bad = imported_modules(path) & FORBIDDEN[folder]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize(
    "folder", ["protocol", "relay", "client", "tests", "fuzz", "bench", "docs"]
)
def test_nothing_imports_the_bare_names(folder: str) -> None:
    for path in sorted((ROOT / folder).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            bare = {n.split(".")[0] for n in names} & BARE_NAMES
            assert not bare, f"{path.relative_to(ROOT)} imports {sorted(bare)}"


def test_import_linter_contracts_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


def test_importing_the_relay_loads_no_cell_protocol() -> None:
    """At run time too: loading every relay module loads nothing of the cell protocol."""
    submodules = (ROOT / "relay").glob("_*.py")
    relay_modules = [
        "cellrelay.relay",
        *sorted(f"cellrelay.relay.{p.stem}" for p in submodules if p.stem[1] != "_"),
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {relay_modules!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('cellrelay.protocol.cell',"
        " 'cellrelay.client'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-P", "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
