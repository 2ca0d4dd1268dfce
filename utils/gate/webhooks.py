"""Model registry webhooks, locally: a tracking server that sends them, a receiver that acts.

MLflow sends registry webhooks from its tracking *server* (the REST handlers), not from a
client writing straight into SQLite. So the local set-up is: `tracking_server()` starts
`mlflow server` on 127.0.0.1 over the same SQLite database and artifact folder, allowing
http and loopback addresses for webhook URLs (MLflow refuses both by default, as protection
against requests to internal services: keep it that way anywhere but a laptop).
`WebhookReceiver` is a small HTTP server on 127.0.0.1 that checks each delivery's HMAC
signature and hands the event to a callback on a worker thread (webhook senders expect a fast
answer; validation takes seconds).

A valid signature alone does not make a delivery safe to act on: a captured delivery stays
validly signed forever. So, as the Standard Webhooks conventions MLflow follows ask, the
receiver refuses a delivery whose signed timestamp is more than 5 minutes old (or in the
future beyond a small clock skew) and one whose delivery id it has already seen; it refuses an
oversized body from its `Content-Length` before reading it, and checks the signature before
parsing any JSON. The event handler then trusts only the name and version of the payload and
reads the rest from the registry (`registry_version_for_event`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import queue
import secrets
import sys
import threading
import time
from collections import OrderedDict, deque
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
    Two processes asking at once get the same key: the first file written wins.
    """
    from cryptography.fernet import Fernet

    path = work_path("secrets") / "webhook-encryption.key"
    if not path.exists():
        write_private(path, Fernet.generate_key().decode(), replace=False)
    return path.read_text().strip()


def write_private(path: Path, text: str, replace: bool = True) -> bool:
    """Write `text` to `path`, readable and writable by its owner only (0600 from the start:
    no moment when another user could read it), in a folder only the owner can list.

    The text goes to a new temporary file first and is then renamed (or, with
    `replace=False`, linked) into place, so a reader never sees a half-written file. With
    `replace=False` an existing `path` is kept and False is returned."""
    path.parent.chmod(0o700)
    staged = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    try:
        if not replace:
            try:
                os.link(staged, path)  # atomic create-if-absent
                return True
            except FileExistsError:
                return False
        os.replace(staged, path)
        return True
    finally:
        staged.unlink(missing_ok=True)


def new_webhook_secret(name: str = "webhook") -> tuple[str, Path]:
    """A new random secret for this run's webhook, kept in `secrets/NAME.secret` under the work
    dir with owner-only permissions; returns (secret, path). A secret written in a notebook
    is public the moment the notebook is shared."""
    secret = secrets.token_urlsafe(32)
    path = work_path("secrets") / f"{name}.secret"
    write_private(path, secret)
    return secret, path


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


# The headers MLflow 3 sends with each delivery (mlflow/webhooks/constants.py).
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
SIGNATURE_HEADER = "X-MLflow-Signature"

MAX_DELIVERY_AGE_S = 300.0  # Standard Webhooks' usual replay window
MAX_CLOCK_SKEW_S = 30.0  # a sender's clock may run a little ahead
MAX_BODY_BYTES = 256 * 1024  # a registry event is a few KB
MAX_CONNECTIONS = 16  # open at once; a registry sends one delivery at a time


class _CappedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, at most `max_connections` at once: a connection over the cap
    gets 503 and is closed, so clients that open connections and send nothing (or one byte
    now and then) cannot make the receiver start threads without bound."""

    def __init__(self, address, handler, max_connections: int):
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                    b"Connection: close\r\n\r\n"
                )
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
MAX_VERSION_AGE_S = 900.0  # a model_version.created event is acted on only while it is news


def _header_bytes(headers: Any, name: str) -> bytes:
    # http.server decodes headers as latin-1; anything else is compared as bytes, never raises
    return str(headers.get(name, "")).encode("utf-8", "surrogateescape")


def _signature(secret: str, delivery_id: bytes, timestamp: bytes, body: bytes) -> bytes:
    signed = delivery_id + b"." + timestamp + b"." + body
    return b"v1," + base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest())


def signature_is_valid(secret: str, headers: Any, body: bytes) -> bool:
    """Check MLflow's webhook signature: HMAC-SHA256 of `delivery_id.timestamp.body`."""
    expected = _signature(
        secret,
        _header_bytes(headers, DELIVERY_ID_HEADER),
        _header_bytes(headers, TIMESTAMP_HEADER),
        body,
    )
    return hmac.compare_digest(expected, _header_bytes(headers, SIGNATURE_HEADER))


def replay_last_delivery(receiver: WebhookReceiver, secret: str) -> dict[str, str]:
    """What replay protection does, shown on `receiver`'s last accepted delivery: send it again
    exactly as captured, and as it would look captured 10 minutes ago (signed then, new id).
    Returns {attempt: "status reason"}; both are refused and nothing reaches the handler."""
    import uuid

    import requests

    if receiver.last_delivery is None:
        raise ValueError("The receiver has accepted no delivery yet: nothing to replay.")
    captured, body = receiver.last_delivery
    headers = {k: v for k, v in captured.items() if k.lower().startswith("x-mlflow-")}
    headers["Content-Type"] = "application/json"
    delivery_id, signed_at = str(uuid.uuid4()), str(int(time.time()) - 600)
    old = headers | {
        DELIVERY_ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: signed_at,
        SIGNATURE_HEADER: _signature(
            secret, delivery_id.encode(), signed_at.encode(), body
        ).decode(),
    }
    attempts = {"the same delivery again": headers, "a delivery signed 10 minutes ago": old}
    answers = {}
    for attempt, attempt_headers in attempts.items():
        response = requests.post(receiver.url, data=body, headers=attempt_headers, timeout=10)
        answers[attempt] = f"{response.status_code} {response.text}"
    return answers


def delivery_refusal(
    secret: str,
    headers: Any,
    body: bytes,
    now: float | None = None,
    max_age_s: float = MAX_DELIVERY_AGE_S,
    max_skew_s: float = MAX_CLOCK_SKEW_S,
) -> str | None:
    """Why a delivery must be refused (bad signature, stale or future timestamp), or None.

    The timestamp is part of the signed text, so it cannot be changed without the secret; a
    replay of a captured delivery is refused once it is older than `max_age_s`.
    """
    if not signature_is_valid(secret, headers, body):
        return "the signature does not match (wrong secret, or the delivery was altered)"
    try:
        sent_at = int(headers.get(TIMESTAMP_HEADER, ""))
    except ValueError:
        return f"{TIMESTAMP_HEADER} is not a Unix timestamp"
    age = (time.time() if now is None else now) - sent_at
    if age > max_age_s:
        return f"the delivery was signed {age:.0f} s ago, older than {max_age_s:.0f} s: a replay"
    if age < -max_skew_s:
        return f"the delivery is timestamped {-age:.0f} s in the future (clocks out of sync?)"
    return None


class SeenDeliveries:
    """Delivery ids already accepted, the newest `limit` of them (thread-safe). Older ids than
    the replay window need not be kept: their timestamps are refused anyway."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, delivery_id: str) -> bool:
        """Remember `delivery_id`; False when it was seen before."""
        with self._lock:
            if delivery_id in self._ids:
                return False
            self._ids[delivery_id] = None
            if len(self._ids) > self.limit:
                self._ids.popitem(last=False)
            return True


def registry_version_for_event(
    event: dict, name: str, max_age_s: float = MAX_VERSION_AGE_S
) -> tuple[int | None, str]:
    """The version a `model_version.created` event asks to validate, read back from the
    registry: (version, "") or (None, why the event is ignored).

    Only the payload's name and version are used; everything else comes from the registry.
    A version that was rolled back, or created more than `max_age_s` ago, is not validated
    again from an event: re-promoting it is a decision for a person (`promote` by hand).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from utils.tracking import model_name

    data = event.get("data") or {}
    kind = f"{event.get('entity')}.{event.get('action')}"
    if kind != "model_version.created":
        return None, f"ignored {kind}"
    name = model_name(name)
    if data.get("name") != name:
        return None, f"ignored a version of {data.get('name')}"
    try:
        version = mlflow.MlflowClient().get_model_version(name, str(int(data.get("version"))))
    except (MlflowException, TypeError, ValueError):
        return None, f"ignored: {name} has no version {data.get('version')!r}"
    if "rolled_back_at" in version.tags:
        return None, (
            f"ignored: version {version.version} was rolled back at "
            f"{version.tags['rolled_back_at']}; promote it by hand if that is intended"
        )
    age = time.time() - version.creation_timestamp / 1000
    if age > max_age_s:
        return None, f"ignored: version {version.version} was created {age:.0f} s ago"
    return int(version.version), ""


@dataclass
class WebhookReceiver:
    """An HTTP receiver on 127.0.0.1 that passes signed, fresh, first-seen events to
    `handler(event)`.

    Refused deliveries get a 4xx with the reason as text (411/400/413 for a missing, invalid
    or too large Content-Length, 401 for a bad signature or stale timestamp, 409 for a delivery
    id already received, 400 for a body that is not a JSON object); they are counted in
    `rejected` and the latest reasons kept in `refusals`. A connection beyond
    `max_connections` open at once gets 503 and is closed unread. Results of the handler (or its
    exception) are kept in `results`, in arrival order; `last_delivery` keeps the headers and
    body of the latest accepted delivery (chapter 08 replays it).
    """

    handler: Callable[[dict], Any]
    secret: str
    max_body_bytes: int = MAX_BODY_BYTES
    max_age_s: float = MAX_DELIVERY_AGE_S
    max_skew_s: float = MAX_CLOCK_SKEW_S
    socket_timeout_s: float = 10.0  # a client that stops sending loses its connection
    max_connections: int = MAX_CONNECTIONS
    events: list[dict] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)
    rejected: int = 0
    refusals: deque[str] = field(default_factory=lambda: deque(maxlen=50))
    last_delivery: tuple[dict[str, str], bytes] | None = None

    def __post_init__(self) -> None:
        self._work: queue.Queue = queue.Queue()
        self._done = threading.Condition()
        self._seen = SeenDeliveries()
        self._count_lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            timeout = self.socket_timeout_s

            def do_POST(self):  # noqa: N802 (http.server's naming)
                status, reason = receiver._accept(self)
                if status != 200:
                    with receiver._count_lock:
                        receiver.rejected += 1
                        receiver.refusals.append(f"{status}: {reason}")
                text = (reason or "accepted").encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(text)))
                if status != 200:
                    self.send_header("Connection", "close")  # the unread body stays unread
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args):  # keep the notebook quiet
                pass

        self._server = _CappedHTTPServer((LOOPBACK, 0), Handler, self.max_connections)
        self.url = f"http://{LOOPBACK}:{self._server.server_address[1]}/mlflow-webhook"
        self._threads = [
            threading.Thread(target=self._server.serve_forever, daemon=True),
            threading.Thread(target=self._worker, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _accept(self, request: BaseHTTPRequestHandler) -> tuple[int, str]:
        """(status, reason) for one delivery; queues the event when it is accepted."""
        length = request.headers.get("Content-Length")
        if length is None:
            return 411, "Content-Length is required"
        if not length.strip().isdigit():
            return 400, f"Content-Length must be a non-negative integer, got {length[:20]!r}"
        if int(length) > self.max_body_bytes:
            return 413, f"the body is {int(length)} bytes; the limit is {self.max_body_bytes}"
        body = request.rfile.read(int(length))
        refusal = delivery_refusal(
            self.secret, request.headers, body, max_age_s=self.max_age_s, max_skew_s=self.max_skew_s
        )
        if refusal:
            return 401, refusal
        delivery_id = request.headers.get(DELIVERY_ID_HEADER, "")
        if not self._seen.add(delivery_id):
            return 409, f"delivery {delivery_id[:64]} already received: a replay"
        try:
            event = json.loads(body)
        except ValueError as exc:
            return 400, f"the body is not JSON: {str(exc)[:80]}"
        if not isinstance(event, dict):
            return 400, f"the body must be a JSON object, got {type(event).__name__}"
        self.events.append(event)
        self.last_delivery = (dict(request.headers.items()), body)
        self._work.put(event)
        return 200, ""

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

    def stop(self, timeout: float = 60.0) -> None:
        """Stop receiving, close the socket and wait (up to `timeout` s) for the handler to
        finish the events already accepted, so its results are complete when this returns."""
        self._work.put(None)
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout)

    def __enter__(self) -> WebhookReceiver:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
