"""cellrelay: an end-to-end-encrypted relay, client library and protocol for rapid-response cells.

Apps import the client library (`from cellrelay.client import BlockingClient`); operators run
the relay (`cellrelay relay serve`, or `python -m cellrelay.relay`). The three packages are:

- `cellrelay.protocol`: sans-IO; `.wire` is what the relay speaks, `.cell` what only members do;
- `cellrelay.relay`: the Trio relay, which never imports the cell protocol;
- `cellrelay.client`: the Trio client library, its blocking facade and the command line.

This module imports none of them, so `import cellrelay.relay` loads no client code.
"""

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    """`cellrelay.__version__`, read from the installed metadata when first asked for.

    Not at import: importlib.metadata pulls in the email and urllib packages, which made
    every `cellrelay` command a tenth of a second slower to start, and it starts by
    importing this package (cellrelay/_console.py).
    """
    if name != "__version__":
        raise AttributeError(f"module 'cellrelay' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cellrelay")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
