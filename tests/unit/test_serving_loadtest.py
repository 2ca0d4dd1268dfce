"""utils.serving.loadtest: bounded runs, status counts and answers in request order, against a
small HTTP server in this process (the chapters drive the real scoring server with it)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from utils.serving.loadtest import run_load

pytestmark = pytest.mark.unit


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the load clients use

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = 400 if body == b"bad" else 200
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/invocations"
    server.shutdown()
    server.server_close()


def test_counted_run_sends_exactly_that_many_and_keeps_answers_in_order(echo_url):
    bodies = [b"a", b"b", b"c"]
    result = run_load(echo_url, bodies, concurrency=3, requests=30, warmup=1, keep_answers=True)
    assert result.requests == 30 and result.ok
    assert result.answers == [bodies[i % 3] for i in range(30)]
    summary = result.summary()
    assert summary["requests"] == 30 and summary["non_2xx"] == 0 and summary["rps"] > 0
    assert summary["p50_ms"] <= summary["p99_ms"]


def test_statuses_are_counted_and_a_run_with_errors_is_not_ok(echo_url):
    result = run_load(echo_url, [b"ok", b"bad"], requests=10, warmup=0)
    assert result.statuses == {200: 5, 400: 5}
    assert not result.ok


def test_timed_run_stops_and_unbounded_run_is_refused(echo_url):
    result = run_load(echo_url, b"x", concurrency=2, seconds=0.3, warmup=0)
    assert result.requests > 0 and result.seconds < 5
    with pytest.raises(ValueError, match="Bound the run"):
        run_load(echo_url, b"x")


def test_a_closed_port_is_a_connection_error_not_a_hang():
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_load(f"http://127.0.0.1:{port}/invocations", b"x", requests=3, warmup=1, timeout=2)
    assert result.requests == 0 and len(result.errors) == 3 and not result.ok
    assert "ConnectionRefusedError" in result.errors[0]
