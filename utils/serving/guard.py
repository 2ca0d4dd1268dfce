"""MLflow's own scoring app behind a thin guard (body-size limit, JSON nesting limit, optional
bearer token), with optional micro-batching of concurrent requests. Everything else - parsing
every payload format, signature enforcement, error answers - is MLflow's scoring server.

Why: measured on MLflow 3.17, `mlflow models serve` answers a deeply nested JSON body with a 500
(Python's parser overflows its recursion limit, which the app does not catch) and reads a body of
any size, so a 20 MB request ties up a worker and the client sees a dropped connection. Here a
body over the limit gets 413 (it is read and discarded, so the client always gets the answer),
nesting over the limit gets 400, and a missing or wrong token gets 401; all with MLflow's JSON
error shape (`error_code`, `message`).

Micro-batching (opt-in): MLflow's app scores each request in its own thread; with a model whose
cost is mostly per call, not per row (a scikit-learn pipeline spends ~5 ms on one row and about
the same on 30), requests that arrive while the model is busy are scored together in one
`predict` call and their answers split again. Nothing waits for a batch to fill, so a lone
request is not delayed. Only for models whose predictions do not depend on which other rows are
in the batch.

`python -m utils.serving.guard --port N --workers W` serves it under uvicorn, as `mlflow models
serve` does, with one difference: with several workers the listening socket is created here,
as a TCP socket. uvicorn 0.54 creates it with protocol 0, and asyncio then leaves Nagle's
algorithm on for every connection (Kludex/uvicorn#3149), so on Linux each keep-alive request
after the first waits ~40 ms for a delayed ACK: measured here on asyncio, `mlflow models serve
-w 2` took 48 ms for a one-row request that takes 4 ms with one worker. uvloop (installed with
`uvicorn[standard]`) sets TCP_NODELAY itself; this socket keeps the server fast without it.
Settings come from environment variables set by `utils.serving.serve_model`; `UVICORN_LOOP`
and `UVICORN_HTTP` choose the event loop and HTTP parser, as for uvicorn's own command.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.util
import json
import os
import queue
import socket
import threading
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
ERROR_ECHO_CHARS = 500  # an error message quotes at most this much of the request
DEFAULT_BODY_TIMEOUT_S = 30.0  # the whole body must arrive within this (else 408)
DEFAULT_MAX_CONNECTIONS = 64  # more concurrent connections get 503 from uvicorn
# Headers MLflow reads once: two different values would let the guard and MLflow disagree.
SINGLE_VALUED = (b"content-type", b"content-length", b"authorization", b"transfer-encoding")
_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_SCAN_BLOCK = 1 << 18  # bytes per block of the depth scan (fits in a CPU cache)


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in a JSON body, without parsing it.

    One linear pass in numpy, no regular expression (a backtracking one took 32 s on a 120 KB
    body of escapes): a quote opens or closes a string unless an odd run of backslashes precedes
    it; brackets inside strings do not count; the depth is the running sum of opening minus
    closing brackets. Done in blocks that stay in the CPU cache, carrying the backslash run,
    the string parity and the depth from one block to the next.
    """
    data = np.frombuffer(body, dtype=np.uint8)
    run, quotes, depth, deepest = 0, 0, 0, 0
    index = np.arange(min(_SCAN_BLOCK, data.size), dtype=np.int32)
    for start in range(0, data.size, _SCAN_BLOCK):
        raw = data[start : start + _SCAN_BLOCK]
        at = index[: raw.size]
        # Length of the backslash run ending at each byte (0 on other bytes).
        last_other = np.where(raw == _BACKSLASH, np.int32(-1) - run, at)
        np.maximum.accumulate(last_other, out=last_other)
        run_end = at - last_other
        escaped = np.empty(raw.size, dtype=bool)
        escaped[0] = run & 1
        escaped[1:] = run_end[:-1] & 1
        quote = (raw == _QUOTE) & ~escaped
        in_string = ((np.cumsum(quote, dtype=np.uint8) + quotes) & 1).astype(bool)
        steps = (raw == ord("[")).astype(np.int32)
        steps += raw == ord("{")
        steps -= raw == ord("]")
        steps -= raw == ord("}")
        steps[in_string] = 0
        levels = np.cumsum(steps)
        levels += depth
        deepest = max(deepest, int(levels.max()))
        depth, run = int(levels[-1]), int(run_end[-1])
        quotes = (quotes + int(np.count_nonzero(quote))) & 1
    return deepest


def _trim_error(body: bytes) -> bytes:
    """An error body that quotes at most ERROR_ECHO_CHARS of the request: MLflow puts the whole
    malformed body into its message (x4 for bytes) and a stack trace with local paths beside it.
    The trace's last line (the cause) is kept in the message."""
    try:
        answer = json.loads(body)
    except ValueError:
        return body[:ERROR_ECHO_CHARS]
    if not isinstance(answer, dict):
        return body[:ERROR_ECHO_CHARS]
    message = str(answer.get("message", ""))
    trace = [line for line in str(answer.pop("stack_trace", "") or "").splitlines() if line.strip()]
    if len(message) > ERROR_ECHO_CHARS:
        # Keep both ends: MLflow echoes the input in the middle and names the cause at the end
        # ("missing inputs: ['Age']").
        half = ERROR_ECHO_CHARS // 2
        cut = len(message) - 2 * half
        message = f"{message[:half]} ... ({cut} characters not shown) ... {message[-half:]}"
    if trace and trace[-1].strip() not in message:
        message = f"{message} Cause: {trace[-1].strip()[:ERROR_ECHO_CHARS]}"
    answer["message"] = message
    return json.dumps(answer).encode()


def _error(status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] = ()):
    body = json.dumps({"error_code": code, "message": message}).encode()
    return status, body, [(b"content-type", b"application/json"), *headers]


class _ClientGone(Exception):
    """The client disconnected before sending its whole body: there is no one to answer."""


class ScoringGuard:
    """ASGI middleware: check headers, size, nesting and token, then hand the buffered body to
    `app`. Every check is linear in the body and the scan runs in a thread, so `/ping` keeps
    answering while a large or hostile body is judged; error answers quote little of it."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
        token: str | None = None,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.token = token
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers, repeated = _first_values(scope.get("headers") or [])
        refusal = None
        if repeated:
            refusal = _error(
                400,
                "MALFORMED_REQUEST",
                f"The request sends the header '{repeated}' more than once with different "
                "values; send it once.",
            )
        elif (
            self.token
            and scope["path"] not in UNAUTHENTICATED_PATHS
            and not self._authorized(headers)
        ):
            refusal = _error(
                401,
                "UNAUTHENTICATED",
                "Missing or wrong bearer token: send the header 'Authorization: Bearer <token>'.",
                [(b"www-authenticate", b"Bearer")],
            )
        elif scope.get("method") in ("POST", "PUT", "PATCH") and b"content-type" not in headers:
            refusal = _error(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                "The request has no Content-Type header: send 'Content-Type: application/json' "
                "(or text/csv, application/vnd.apache.parquet).",
            )
        declared = headers.get(b"content-length")
        if (
            refusal is None
            and declared
            and declared.isdigit()
            and int(declared) > self.max_body_bytes
        ):
            refusal = self._too_large(int(declared))
        if refusal is not None:
            await self._drain(receive, limit=self.max_body_bytes * _DRAIN_FACTOR)
            await self._respond(send, *refusal)
            return
        try:
            body, size = await asyncio.wait_for(self._read_body(receive), self.body_timeout_s)
        except _ClientGone:
            return
        except TimeoutError:
            await self._respond(
                send,
                *_error(
                    408,
                    "REQUEST_TIMEOUT",
                    f"The request body did not arrive within {self.body_timeout_s:.0f} s; "
                    "send it in one go.",
                    [(b"connection", b"close")],
                ),
            )
            return
        if body is None:
            await self._respond(send, *self._too_large(size))
            return
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type == b"application/json" and self._may_nest_too_deep(body):
            depth = await asyncio.to_thread(json_depth, body)
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
        await self.app(scope, _replay(body, receive), _trimming_errors(send))

    def _may_nest_too_deep(self, body: bytes) -> bool:
        """Depth cannot exceed the number of opening brackets: counting them (in C) spares a
        small request the full scan, which costs ~0.2 ms even for a one-row body."""
        return bool(self.max_json_depth) and (
            body.count(b"[") + body.count(b"{") > self.max_json_depth
        )

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        # Bytes on both sides: a non-ASCII header must be a 401, not a TypeError (500).
        scheme, _, supplied = headers.get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(
            supplied.strip(), (self.token or "").encode()
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
        chunks, size, more = bytearray(), 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                size += (
                    await self._drain(receive, self.max_body_bytes * _DRAIN_FACTOR) if more else 0
                )
                return None, size
            chunks += chunk
        return bytes(chunks), size

    async def _drain(self, receive: Receive, limit: int) -> int:
        """Read and discard the rest of a body so the client is not cut off mid-send (within
        the body deadline: a client that stops sending is not waited for)."""
        size, more = 0, True

        async def drain() -> None:
            nonlocal size, more
            while more and size <= limit:
                message = await receive()
                if message["type"] == "http.disconnect":
                    break
                size += len(message.get("body", b""))
                more = message.get("more_body", False)

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drain(), self.body_timeout_s)
        return size

    @staticmethod
    async def _respond(send: Send, status: int, body: bytes, headers) -> None:
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _first_values(raw: list[tuple[bytes, bytes]]) -> tuple[dict[bytes, bytes], str | None]:
    """Headers by lower-case name, first value (as Starlette, hence MLflow, reads them), and
    the name of a single-valued header sent twice with different values, if any."""
    headers: dict[bytes, bytes] = {}
    repeated = None
    for name, value in raw:
        name = name.lower()
        if name not in headers:
            headers[name] = value
        elif name in SINGLE_VALUED and headers[name].strip() != value.strip():
            repeated = name.decode("latin-1")
    return headers, repeated


def _trimming_errors(send: Send) -> Send:
    """A `send` that shortens the app's error bodies (see `_trim_error`)."""
    held: Message | None = None
    parts = bytearray()

    async def wrapped(message: Message) -> None:
        nonlocal held
        if message["type"] == "http.response.start" and message["status"] >= 400:
            held = message
            return
        if held is None or message["type"] != "http.response.body":
            await send(message)
            return
        parts.extend(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = await asyncio.to_thread(_trim_error, bytes(parts))
        headers = [(k, v) for k, v in held.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**held, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped


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


class _Pending:
    __slots__ = ("data", "done", "error", "result")

    def __init__(self, data):
        self.data, self.result, self.error = data, None, None
        self.done = threading.Event()


class MicroBatcher:
    """Stands in for a PyFuncModel in MLflow's app: `predict` calls from concurrent request
    threads are queued and scored by one thread, all queued frames in one call."""

    def __init__(self, model, max_rows: int = 1024):
        self.model = model
        self.metadata = model.metadata
        self.max_rows = max_rows
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="micro-batcher", daemon=True).start()

    def predict(self, data, params=None):
        import pandas as pd

        if params or not isinstance(data, pd.DataFrame):
            return self.model.predict(data, params=params)
        pending = _Pending(data)
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            rows = len(batch[0].data)
            while rows < self.max_rows:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
                rows += len(batch[-1].data)
            self._score(batch)

    def _score(self, batch: list[_Pending]) -> None:
        if len(batch) > 1:
            try:
                self._score_together(batch)
                return
            except Exception:  # one bad request must not fail the others: score one by one
                pass
        for pending in batch:
            try:
                pending.result = self.model.predict(pending.data)
            except Exception as error:  # handed to the request's thread, which MLflow answers
                pending.error = error
            pending.done.set()

    def _score_together(self, batch: list[_Pending]) -> None:
        import pandas as pd

        combined = pd.concat([p.data for p in batch], ignore_index=True)
        result = self.model.predict(combined)
        if not hasattr(result, "__len__") or len(result) != len(combined):
            raise ValueError("the model's output does not have one entry per row")
        start = 0
        parts = []
        for pending in batch:
            end = start + len(pending.data)
            part = result.iloc[start:end] if hasattr(result, "iloc") else result[start:end]
            parts.append(part.reset_index(drop=True) if hasattr(part, "reset_index") else part)
            start = end
        for pending, part in zip(batch, parts, strict=True):
            pending.result = part
            pending.done.set()


def create_app() -> ASGIApp:
    """MLflow's scoring app for the model in `__pyfunc_model_path__`, behind the guard."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(
        os.environ[scoring_server._SERVER_MODEL_PATH]
    )
    if os.environ.get("MLDEPLOY_SERVING_MICRO_BATCH", "").lower() in {"1", "true"}:
        model = MicroBatcher(model)
    app = scoring_server.init(model)
    metrics = None
    if os.environ.get("MLDEPLOY_SERVING_METRICS", "").lower() in {"1", "true"}:
        from utils.operations.metrics import ServingMetrics  # chapter 12: /metrics

        metrics = ServingMetrics(
            rejected_log_dir=os.environ.get("MLDEPLOY_SERVING_REJECTED_LOG_DIR") or None
        )
        app = metrics.endpoint(app)  # behind the guard: a token protects /metrics too
    guarded = ScoringGuard(
        app,
        max_body_bytes=int(
            os.environ.get("MLDEPLOY_SERVING_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)
        ),
        max_json_depth=int(
            os.environ.get("MLDEPLOY_SERVING_MAX_JSON_DEPTH", DEFAULT_MAX_JSON_DEPTH)
        ),
        token=os.environ.get("MLDEPLOY_SERVING_TOKEN") or None,
        body_timeout_s=float(
            os.environ.get("MLDEPLOY_SERVING_BODY_TIMEOUT_S", DEFAULT_BODY_TIMEOUT_S)
        ),
    )
    return metrics.recorder(guarded) if metrics else guarded  # outermost: sees rejections


def tcp_listener(host: str, port: int) -> socket.socket:
    """A listening socket that says it is TCP, so accepted connections get TCP_NODELAY."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _resolved(choice: str, fast: str, fallback: str) -> str:
    """What uvicorn's "auto" picks: the fast implementation when its package is installed."""
    if choice != "auto":
        return choice
    return fast if importlib.util.find_spec(fast) else fallback


def main(argv: list[str] | None = None) -> None:
    import argparse

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    parser = argparse.ArgumentParser(description="Serve MLflow's scoring app behind the guard.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout-keep-alive", type=int, default=30)
    parser.add_argument(
        "--limit-concurrency",
        type=int,
        default=int(os.environ.get("MLDEPLOY_SERVING_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS)),
    )
    # The variables uvicorn's own command reads, so one setting switches both this server and
    # `mlflow models serve`; "auto" takes uvloop and httptools when installed (the default).
    parser.add_argument("--loop", default=os.environ.get("UVICORN_LOOP", "auto"))
    parser.add_argument("--http", default=os.environ.get("UVICORN_HTTP", "auto"))
    args = parser.parse_args(argv)
    http = _resolved(args.http, "httptools", "h11")
    if http == "httptools":  # h11 has no hook for a header deadline; httptools is the default
        # By import path, not a class object: with several workers uvicorn pickles its config.
        http = "utils.serving.header_deadline:HeaderDeadlineProtocol"
    config = uvicorn.Config(
        "utils.serving.guard:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        timeout_keep_alive=args.timeout_keep_alive,
        limit_concurrency=args.limit_concurrency,  # past it uvicorn answers 503
        access_log=False,
        loop=args.loop,
        http=http,
    )
    print(
        f"event loop: {_resolved(args.loop, 'uvloop', 'asyncio')}, "
        f"HTTP parser: {_resolved(args.http, 'httptools', 'h11')}, workers: {args.workers}",
        flush=True,
    )
    if args.workers > 1:
        Multiprocess(config, sockets=[tcp_listener(args.host, args.port)]).run()
    else:  # uvicorn binds host and port itself here, as a TCP socket
        uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
