"""Model registry webhooks, locally: a tracking server that sends them, a receiver that acts.

MLflow sends registry webhooks from its tracking *server* (the REST handlers), not from a
client writing straight into SQLite. So the local set-up is: `tracking_server()` starts
`mlflow server` on 127.0.0.1 over the same SQLite database and artifact folder, allowing
http and loopback addresses for webhook URLs (MLflow refuses both by default, as protection
against requests to internal services: keep it that way anywhere but a laptop).
`WebhookReceiver` is a small HTTP server on 127.0.0.1 that checks each delivery's HMAC
signature and hands the event to a callback on a worker thread (webhook senders expect a fast
answer; validation takes seconds).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from utils.env import work_path
from utils.processes import LOOPBACK, free_port, start_process


def encryption_key() -> str:
    """The key the tracking server encrypts webhook secrets with, kept in the work dir.

    Without a fixed key MLflow makes a new one per server process, and webhooks created by an
    earlier server can no longer be read (every delivery then fails with InvalidSignature).
    """
    from cryptography.fernet import Fernet

    path = work_path("secrets") / "webhook-encryption.key"
    if not path.exists():
        path.write_bytes(Fernet.generate_key())
        path.chmod(0o600)
    return path.read_text().strip()


@contextlib.contextmanager
def tracking_server(timeout: float = 90.0) -> Iterator[str]:
    """`mlflow server` on a free loopback port over this project's SQLite store; yields its URL.

    Webhooks to http and loopback URLs are allowed for this server only. Stopped on exit.
    """
    from utils.tracking import apply_offline_defaults, artifacts_dir, tracking_uri

    apply_offline_defaults()
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    env = {
        **os.environ,
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": encryption_key(),
        "PATH": f"{Path(sys.prefix, 'bin')}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", LOOPBACK, "--port", str(port),
        "--backend-store-uri", tracking_uri(), "--workers", "1",
        "--default-artifact-root", artifacts_dir().as_uri(),
    ]  # fmt: skip
    with start_process(
        command,
        name="mlflow server (webhooks)",
        log_path=work_path("logs") / f"tracking-server-{port}.log",
        env=env,
        ready_url=f"{url}/health",
        timeout=timeout,
    ):
        yield url


def signature_is_valid(secret: str, headers: Any, body: bytes) -> bool:
    """Check MLflow's webhook signature: HMAC-SHA256 of `delivery_id.timestamp.body`."""
    delivery = headers.get("X-MLflow-Delivery-Id", "")
    timestamp = headers.get("X-MLflow-Timestamp", "")
    sent = headers.get("X-MLflow-Signature", "")
    signed = f"{delivery}.{timestamp}.{body.decode('utf-8')}".encode()
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    expected = f"v1,{base64.b64encode(digest).decode()}"
    return hmac.compare_digest(expected, sent)


@dataclass
class WebhookReceiver:
    """An HTTP receiver on 127.0.0.1 that passes signed events to `handler(event)`.

    Deliveries with a bad signature get 401 and are counted in `rejected`. Results of the
    handler (or its exception) are kept in `results`, in arrival order.
    """

    handler: Callable[[dict], Any]
    secret: str
    events: list[dict] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    rejected: int = 0

    def __post_init__(self) -> None:
        self._work: queue.Queue = queue.Queue()
        self._done = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not signature_is_valid(receiver.secret, self.headers, body):
                    receiver.rejected += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                event = json.loads(body)
                receiver.events.append(event)
                receiver._work.put(event)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):  # keep the notebook quiet
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self._server.server_address[1]}/mlflow-webhook"
        self._threads = [
            threading.Thread(target=self._server.serve_forever, daemon=True),
            threading.Thread(target=self._worker, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _worker(self) -> None:
        while (event := self._work.get()) is not None:
            try:
                result = self.handler(event)
            except Exception as exc:  # keep receiving; the failure is reported in results
                result = exc
            with self._done:
                self.results.append(result)
                self._done.notify_all()

    def wait_for_results(self, count: int = 1, timeout: float = 120.0) -> list[Any]:
        """Block until the handler has finished `count` events (or raise TimeoutError)."""
        with self._done:
            if not self._done.wait_for(lambda: len(self.results) >= count, timeout):
                raise TimeoutError(
                    f"{len(self.results)} of {count} webhook events handled in {timeout:.0f} s "
                    f"({len(self.events)} received, {self.rejected} rejected)."
                )
        return list(self.results)

    def stop(self) -> None:
        self._work.put(None)
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
