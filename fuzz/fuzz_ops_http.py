"""Fuzz the ops listener's sans-IO core: arbitrary bytes in, well-framed HTTP responses out.

Run from the repository root (libFuzzer flags go before the corpus directories):

    .venv/bin/python fuzz/fuzz_ops_http.py -max_total_time=20 fuzz/seeds/ops_http

The seed directory is only read: when the first corpus directory lies inside this repository,
a scratch directory in the system temp dir is put in front of it, so new inputs (and crash
artifacts, via -artifact_prefix) land there and the tree stays clean. Pass your own writable
corpus directory first to keep the corpus between runs.

What is checked for every input, fed whole and again in small chunks, then end of stream:
nothing raises; the output is a sequence of complete HTTP/1.1 responses whose statuses are
ones we produce (200, 404, 405, 503 from the handler; 400, 431 or 501 for bad input), framed by
Content-Length (no body after HEAD); an error response is the last thing ever sent, and
nothing is sent after the connection asked to close.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Imported before instrumentation so only h11 and our code are instrumented: trio and
# structlog are large, and not what this harness explores.
import structlog  # noqa: E402, F401
import trio  # noqa: E402, F401

with atheris.instrument_imports():
    import h11  # noqa: TC002 -- imported here so that it is instrumented

    from cellrelay.relay._metrics import Registry
    from cellrelay.relay._ops import OpsHttpConnection, OpsResponse, handle_ops_request

HANDLER_STATUSES = frozenset({200, 404, 405, 503})
# h11's hints: 400 malformed, 431 head too large, 501 a transfer coding other than chunked.
ERROR_STATUSES = frozenset({400, 431, 501})
_STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) [A-Za-z ]+\Z")


def _registry() -> Registry:
    registry = Registry()
    registry.counter_family("cellrelay_fuzz_total", 'A "fuzz" counter\\.', ("reason",)).labels(
        reason="a\nb"
    ).inc(3)
    registry.histogram("cellrelay_fuzz_seconds", "Fuzz latency.", (0.001, 0.1)).observe(0.01)
    return registry


REGISTRY = _registry()


class Recorder:
    """Run the real handler and remember each request's method and response, in order."""

    def __init__(self, ready: bool) -> None:
        self.ready = ready
        self.calls: list[tuple[bytes, OpsResponse]] = []

    def __call__(self, request: h11.Request) -> OpsResponse:
        response = handle_ops_request(request, registry=REGISTRY, ready=lambda: self.ready)
        assert response.status in HANDLER_STATUSES, response.status
        self.calls.append((request.method, response))
        return response


def _check_output(wire: bytes, calls: list[tuple[bytes, OpsResponse]], closed: bool) -> int:
    """Walk one call's output, matching each response to a handler call or a final error.

    Returns how many responses `wire` holds. `calls` are the handler calls made during
    that same `receive_data`: its output holds exactly their responses, whole.
    """
    pending = list(calls)
    pos = count = 0
    while pos < len(wire):
        end = wire.index(b"\r\n\r\n", pos)
        status_line, *header_lines = wire[pos:end].split(b"\r\n")
        match = _STATUS_LINE.match(status_line)
        assert match, status_line
        status = int(match.group(1))
        headers = dict(line.split(b": ", 1) for line in header_lines)
        length = int(headers[b"content-length"])
        if status in ERROR_STATUSES and not pending:
            body_length = length
            assert closed, "an error response must close the connection"
            assert end + 4 + body_length == len(wire), "nothing may follow an error response"
        else:
            method, response = pending.pop(0)
            assert status == response.status, (status, response.status)
            assert length == response.content_length
            body_length = 0 if method == b"HEAD" else length
        pos = end + 4 + body_length
        count += 1
        assert pos <= len(wire), "body shorter than its Content-Length"
    assert not pending, "a handled request got no response"
    return count


def _run(data: bytes, chunk: int, ready: bool) -> None:
    recorder = Recorder(ready)
    conn = OpsHttpConnection(recorder)
    responses = 0
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in [*pieces, b""]:  # b"": end of stream
        was_closed = conn.must_close
        before = len(recorder.calls)
        out = conn.receive_data(piece)
        if was_closed:
            assert out == b"", "nothing may be sent after asking to close"
        responses += _check_output(out, recorder.calls[before:], conn.must_close)
    assert conn.must_close, "end of stream must end the connection"
    assert conn.responses == responses


def test_one_input(data: bytes) -> None:
    """Feed `data` whole, then in chunks whose size the input itself decides."""
    _run(data, max(len(data), 1), ready=True)
    _run(data, len(data) % 13 + 1, ready=bool(len(data) % 2))


def _argv_with_scratch_dir(argv: list[str]) -> list[str]:
    """Keep libFuzzer from writing into the repository (see the module docstring)."""
    flags = [a for a in argv[1:] if a.startswith("-")]
    paths = [a for a in argv[1:] if not a.startswith("-")]
    first_dir = next((Path(p).resolve() for p in paths if Path(p).is_dir()), None)
    if first_dir is None or not first_dir.is_relative_to(REPO):
        return argv
    scratch = Path(tempfile.mkdtemp(prefix="cellrelay-fuzz-ops-http-"))
    (scratch / "corpus").mkdir()
    if not any(f.startswith("-artifact_prefix=") for f in flags):
        flags.append(f"-artifact_prefix={scratch}/")
    print(f"fuzz_ops_http: new corpus entries and artifacts go to {scratch}", file=sys.stderr)
    return [argv[0], *flags, str(scratch / "corpus"), *paths]


def main() -> None:
    """Run the fuzzer with libFuzzer's command line."""
    atheris.Setup(_argv_with_scratch_dir(sys.argv), test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
