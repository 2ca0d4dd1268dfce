"""utils.cluster: reading the master's status (the cluster itself starts in the slow test
tests/notebooks/test_02_on_standalone_cluster.py, which runs chapter 02 on it)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from utils.cluster import StandaloneCluster

pytestmark = pytest.mark.unit

STATUS = {"workers": [{"state": "ALIVE"}, {"state": "DEAD"}, {"state": "ALIVE"}]}


class _Master(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = json.dumps(STATUS).encode() if self.path == "/json/" else b"{}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_alive_workers_counts_only_alive_ones(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Master)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ui = f"http://127.0.0.1:{server.server_address[1]}"
        assert StandaloneCluster("spark://127.0.0.1:1", ui, tmp_path).alive_workers() == 2
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_master_has_no_workers_and_stop_is_safe(tmp_path):
    cluster = StandaloneCluster("spark://127.0.0.1:1", "http://127.0.0.1:1", tmp_path)
    assert cluster.alive_workers() == 0
    cluster.stop()  # nothing started: nothing to stop, no error
