"""Keep secrets out of core dumps: the relay at start, a client once a keystore is unlocked.

A core dump is a copy of the process's memory on disk: the relay's static private key and
the envelopes it holds, or a member's keystore key and decrypted state (issue 10: a relay
started under `prlimit --core=unlimited` and sent SIGABRT wrote a 47 MB core holding its
key). `make_undumpable` does two things, because either alone has a gap:

* `RLIMIT_CORE` 0: the kernel writes no core *file*. But a `core_pattern` that pipes to a
  program (systemd-coredump, apport) ignores this limit, and a process may raise its soft
  limit again up to the hard one.
* On Linux, `prctl(PR_SET_DUMPABLE, 0)`: the kernel makes no core dump at all, whatever the
  limit and pattern, and processes of the same user can no longer ptrace it or read its
  memory through /proc (profilers such as py-spy then need root). It lasts until the
  process execs another program.

It is shared by the relay and the client (which must not import each other), so it lives
here, at the top of the package, and imports neither.
"""

from __future__ import annotations

import ctypes
import resource
import sys
from typing import Final

__all__ = ["is_dumpable", "make_undumpable"]

# Not `sys.platform == "linux"`, which type checkers evaluate for the platform they run on.
_LINUX: Final = sys.platform.startswith("linux")
PR_GET_DUMPABLE: Final = 3  # <linux/prctl.h>
PR_SET_DUMPABLE: Final = 4


def _prctl(option: int, value: int = 0) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    result: int = prctl(option, value, 0, 0, 0)
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl({option}) failed")
    return result


def make_undumpable(*, lock_limit: bool) -> None:
    """Stop this process from ever writing a core dump (see the module docstring).

    Args:
        lock_limit: set the hard `RLIMIT_CORE` to 0 as well, so nothing in the process can
            raise it again (the relay); otherwise only the soft one, leaving an app that
            embeds the client free to manage its own limits (the dumpable flag still holds).

    Raises:
        OSError: the kernel refused (not expected on Linux; the caller reports it).
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0 if lock_limit else hard))
    if _LINUX:
        _prctl(PR_SET_DUMPABLE, 0)


def is_dumpable() -> bool:
    """Whether the kernel would dump this process: its dumpable flag on Linux, else RLIMIT_CORE."""
    if _LINUX:
        return _prctl(PR_GET_DUMPABLE) != 0
    return resource.getrlimit(resource.RLIMIT_CORE)[0] != 0
