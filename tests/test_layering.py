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

# The group end-to-end encryption modules (docs/protocol.md, Part 2): the relay forwards
# sealed bytes and must not have the code that opens them.
GROUP_MODULES = {
    "protocol._binary",
    "protocol._control",
    "protocol._envelope",
    "protocol._epochs",
    "protocol._group",
    "protocol._group_errors",
    "protocol._group_keys",
    "protocol._group_state",
    "protocol._identity",
    "protocol._join",
    "protocol._membership",
    "protocol._outcomes",
    "protocol._padding",
    "protocol._receiver",
}

# Package -> modules it may not import: a top-level name forbids the whole package, a
# dotted name that module (and its submodules).
FORBIDDEN = {
    "protocol": {"relay", "client", "trio", "structlog", "socket", "asyncio", "time"},
    "relay": {"client", *GROUP_MODULES},
    "client": {"relay"},
}


def imported_modules(path: Path) -> set[str]:
    """Return every absolute module name `path` imports, with all its parent packages.

    `from protocol import _group` counts as importing `protocol._group` as well.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {
        ".".join(parts[:i])
        for m in modules
        for parts in [m.split(".")]
        for i in range(1, len(parts) + 1)
    }


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_layers(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules found in {package}"
    for path in files:
        bad = imported_modules(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_import_linter_contracts_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


def test_importing_the_relay_loads_no_group_encryption() -> None:
    """At run time too: protocol/__init__.py loads the group modules only on first use."""
    submodules = (ROOT / "relay").glob("_*.py")
    relay_modules = ["relay", *sorted(f"relay.{p.stem}" for p in submodules if p.stem[1] != "_")]
    code = (
        "import importlib, sys\n"
        f"for name in {relay_modules!r}: importlib.import_module(name)\n"
        f"print(sorted(set(sys.modules) & set({sorted(GROUP_MODULES)!r})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
