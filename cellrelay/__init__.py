"""cellrelay: an end-to-end-encrypted relay, client library and protocol for rapid-response cells.

Apps import the client library (`from cellrelay.client import BlockingClient`); operators run
the relay (`cellrelay relay serve`, or `python -m cellrelay.relay`). The three packages are:

- `cellrelay.protocol`: sans-IO; `.wire` is what the relay speaks, `.cell` what only members do;
- `cellrelay.relay`: the Trio relay, which never imports the cell protocol;
- `cellrelay.client`: the Trio client library, its blocking facade and the command line.

This module imports none of them, so `import cellrelay.relay` loads no client code.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cellrelay")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
