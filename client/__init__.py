"""cellrelay's client library (being built; see the open issues)."""

__all__: list[str] = []
