"""A thin guard in front of MLflow's own scoring app: body-size limit, JSON nesting limit, and
an optional bearer token. Everything else is MLflow's scoring server, unchanged.

Why: measured on MLflow 3.17, `mlflow models serve` answers a deeply nested JSON body with a 500
(Python's parser overflows its recursion limit, which the app does not catch) and reads a body of
any size, so a 20 MB request ties up a worker and the client sees a dropped connection. Here a
body over the limit gets 413 (it is read and discarded, so the client always gets the answer),
nesting over the limit gets 400, and a missing or wrong token gets 401; all with MLflow's JSON
error shape (`error_code`, `message`).

uvicorn starts it with `--factory utils.scoring_guard:create_app`; settings come from
environment variables set by `utils.serving.serve_model`.
"""

from __future__ import annotations

import hmac
import json
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_JSON_DEPTH = 32
UNAUTHENTICATED_PATHS = frozenset({"/ping", "/health"})  # health checks carry no token
_DRAIN_FACTOR = 4  # read at most this many times the limit before giving up on a client
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSE = np.frombuffer(b"]}", dtype=np.uint8)


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in a JSON body, without parsing it.

    Strings are removed first (brackets inside them do not count); the rest is a running sum
    of opening minus closing brackets, done by numpy so a 16 MB body takes milliseconds.
    """
    if body.count(b"[") + body.count(b"{") <= 1:
        return int(bool(body.count(b"[") + body.count(b"{")))
    bare = np.frombuffer(_JSON_STRING.sub(b'""', body), dtype=np.uint8)
    steps = np.isin(bare, _OPEN).astype(np.int32) - np.isin(bare, _CLOSE).astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def _error(status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] = ()):
    body = json.dumps({"error_code": code, "message": message}).encode()
    return status, body, [(b"content-type", b"application/json"), *headers]


class ScoringGuard:
    """ASGI middleware: check size, nesting and token, then hand the buffered body to `app`."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
        token: str | None = None,
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if (
            self.token
            and scope["path"] not in UNAUTHENTICATED_PATHS
            and not self._authorized(headers)
        ):
            await self._drain(receive, limit=self.max_body_bytes * _DRAIN_FACTOR)
            await self._respond(
                send,
                *_error(
                    401,
                    "UNAUTHENTICATED",
                    "Missing or wrong bearer token: send the header "
                    "'Authorization: Bearer <token>'.",
                    [(b"www-authenticate", b"Bearer")],
                ),
            )
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            size = int(declared)
            await self._drain(receive, limit=self.max_body_bytes * _DRAIN_FACTOR)
            await self._respond(send, *self._too_large(size))
            return
        body, size = await self._read_body(receive)
        if body is None:
            await self._respond(send, *self._too_large(size))
            return
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type == b"application/json" and self.max_json_depth:
            depth = json_depth(body)
            if depth > self.max_json_depth:
                await self._respond(
                    send,
                    *_error(
                        400,
                        "MALFORMED_REQUEST",
                        f"The JSON body nests {depth} levels deep; at most "
                        f"{self.max_json_depth} are accepted. Send a flat payload such as "
                        '{"dataframe_split": {"columns": [...], "data": [[...], ...]}}.',
                    ),
                )
                return
        await self.app(scope, _replay(body, receive), send)

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, supplied = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            supplied.strip(), self.token or ""
        )

    def _too_large(self, size: int):
        return _error(
            413,
            "PAYLOAD_TOO_LARGE",
            f"The request body is {size / 2**20:.1f} MB; this endpoint accepts at most "
            f"{self.max_body_bytes / 2**20:.0f} MB. Send fewer rows per request.",
        )

    async def _read_body(self, receive: Receive) -> tuple[bytes | None, int]:
        """The whole body, or None (after draining it) when it passes the limit."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                size += (
                    await self._drain(receive, self.max_body_bytes * _DRAIN_FACTOR) if more else 0
                )
                return None, size
            chunks.append(chunk)
        return b"".join(chunks), size

    @staticmethod
    async def _drain(receive: Receive, limit: int) -> int:
        """Read and discard the rest of a body so the client is not cut off mid-send."""
        size, more = 0, True
        while more and size <= limit:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        return size

    @staticmethod
    async def _respond(send: Send, status: int, body: bytes, headers) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive_next: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then passes through to the
    server's own `receive` (which reports a disconnect only when the client really leaves)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive_next()

    return receive


def create_app() -> ASGIApp:
    """MLflow's scoring app for the model in `__pyfunc_model_path__`, behind the guard."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(
        os.environ[scoring_server._SERVER_MODEL_PATH]
    )
    return ScoringGuard(
        scoring_server.init(model),
        max_body_bytes=int(
            os.environ.get("MLDEPLOY_SERVING_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)
        ),
        max_json_depth=int(
            os.environ.get("MLDEPLOY_SERVING_MAX_JSON_DEPTH", DEFAULT_MAX_JSON_DEPTH)
        ),
        token=os.environ.get("MLDEPLOY_SERVING_TOKEN") or None,
    )
