"""The package as an app installs it: a wheel in a fresh venv, beside the app's own modules.

An app that has its own `client.py`, `protocol.py` and `relay.py` (common names: a Flask
app's API client, say) must still import ours as `cellrelay.client`, run the client
guide's blocking example against a real relay, and pass `mypy --strict` with our types
(PEP 561: `cellrelay/py.typed` is in the wheel). Before the rename, `from client import
BlockingClient` found the app's own file, and mypy could not find ours at all after an
editable install.

The wheel is built from a copy of the source tree (so no build/ or egg-info lands in the
checkout) by pip's isolated build, which fetches setuptools from the package index; the
fresh venv installs the wheel with its dependencies from the same index (pip's cache makes
that quick after the first run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import trio

from .relay.process import open_relay_process

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "blocking.py"
# Building and installing take a few seconds each with a warm pip cache; a cold cache or a
# loaded machine many times that.
STEP_TIMEOUT = 600.0

# The app's own modules, with the names that used to collide with ours.
APP_MODULES = {
    "client.py": '"""The app\'s own HTTP client (not cellrelay\'s)."""\n\n\n'
    "def fetch(url: str) -> str:\n"
    '    """Pretend to fetch `url`."""\n'
    '    return f"fetched {url}"\n',
    "protocol.py": '"""The app\'s own protocol module."""\n\nVERSION = "app-protocol-1"\n',
    "relay.py": '"""The app\'s own relay module."""\n\n\n'
    "def forward(text: str) -> str:\n"
    '    """Pretend to forward `text`."""\n'
    "    return text.upper()\n",
    "app.py": '"""An app with its own client, protocol and relay modules that uses cellrelay."""\n\n'
    "import sys\n\n"
    "import blocking\n"
    "import client\n"
    "import protocol\n"
    "import relay\n\n"
    "from cellrelay.client import BlockingClient\n\n"
    'if __name__ == "__main__":\n'
    '    print(client.fetch("x"), protocol.VERSION, relay.forward("ok"), BlockingClient.__name__)\n'
    "    blocking.main(sys.argv[1])\n",
}


def _copy_source(destination: Path) -> None:
    """Copy what the wheel is built from: the packages, the metadata, the readme and licence."""
    for name in ("protocol", "relay", "client"):
        shutil.copytree(
            ROOT / name, destination / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copytree(
        ROOT / "cellrelay",
        destination / "cellrelay",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, destination / name)


def _run(command: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run `command` to completion; fail the test with its output unless it succeeds."""
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT, check=False
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
async def test_the_wheel_works_beside_an_apps_own_client_protocol_and_relay(
    tmp_path: Path,
) -> None:
    source, wheels, venv, app = (tmp_path / n for n in ("source", "wheels", "venv", "app"))
    _copy_source(source)
    pip_env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    await trio.to_thread.run_sync(
        lambda: _run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), "."],
            cwd=source,
            env=pip_env,
        )
    )
    (wheel,) = wheels.glob("cellrelay-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "cellrelay/py.typed" in names
    assert "cellrelay/client/__init__.py" in names
    assert "cellrelay/protocol/cell/__init__.py" in names
    assert not {n for n in names if n.split("/")[0] in {"client", "protocol", "relay", "tests"}}

    await trio.to_thread.run_sync(lambda: _run([sys.executable, "-m", "venv", str(venv)]))
    python = venv / "bin" / "python"
    await trio.to_thread.run_sync(
        lambda: _run([str(python), "-m", "pip", "install", "-q", str(wheel)], env=pip_env)
    )

    app.mkdir()
    for name, text in APP_MODULES.items():
        (app / name).write_text(text)
    shutil.copy2(EXAMPLE, app / "blocking.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELLRELAY_", "PYTHON"))}

    # The app's directory is first on sys.path (python app.py): its client.py must not hide ours.
    async with open_relay_process(tmp_path / "relay", durability="normal") as relay:
        with trio.fail_after(STEP_TIMEOUT):
            done = await trio.run_process(
                [str(python), "app.py", str(relay.address)],
                cwd=app,
                env=env,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    assert out.splitlines()[0] == "fetched x app-protocol-1 OK BlockingClient"
    assert "desk roll-up: responding: responder bot" in out

    # mypy --strict on the app, finding cellrelay's types in the fresh venv (PEP 561).
    mypy = Path(sys.executable).with_name("mypy")
    modules = ["app.py", "blocking.py", "client.py", "protocol.py", "relay.py"]
    command = [str(mypy), "--strict", "--no-incremental", "--python-executable", str(python)]
    await trio.to_thread.run_sync(lambda: _run([*command, *modules], cwd=app))
