"""Real-time serving: a local MLflow scoring server, a client for every payload format, and the
Databricks Model Serving endpoint config that serves the same model at scale.

Locally `serve_model` runs MLflow's own scoring app (the one `mlflow models serve --env-manager
local` runs) under uvicorn on 127.0.0.1, behind the thin guard of `utils.scoring_app` (body
size, JSON nesting, optional bearer token); `guard=False` runs the `mlflow models serve` command
itself. The server lives exactly as long as its `ModelServer`: a context manager, `stop()`, and
an exit hook make sure no server outlives the notebook or test that started it.

The client (`utils.scoring_client`) and the Databricks endpoint helpers (`utils.endpoints`)
live in modules of their own and are re-exported here, so a chapter imports from one place.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.endpoints import deploy_endpoint, endpoint_config, served_entity, traffic_routes
from utils.env import REPO_ROOT, work_path
from utils.scoring_client import (
    DATABRICKS_MAX_PAYLOAD_BYTES,
    PAYLOAD_FORMATS,
    PayloadTooLargeError,
    ScoringError,
    build_payload,
    check_payload_size,
    error_from_response,
    predictions_frame,
    score_in_chunks,
    score_model,
)

__all__ = [  # the client and the Databricks helpers are re-exported: one import for chapters
    "DATABRICKS_MAX_PAYLOAD_BYTES",
    "PAYLOAD_FORMATS",
    "LOOPBACK",
    "ModelServer",
    "PayloadTooLargeError",
    "ScoringError",
    "ServingError",
    "build_payload",
    "check_payload_size",
    "deploy_endpoint",
    "endpoint_config",
    "error_from_response",
    "free_port",
    "port_is_free",
    "predictions_frame",
    "score_in_chunks",
    "score_model",
    "serve_model",
    "served_entity",
    "serving_command",
    "stop_all_servers",
    "traffic_routes",
]

LOOPBACK = "127.0.0.1"


class ServingError(RuntimeError):
    """A scoring server could not start (busy port, missing model, crash at start)."""


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when a server could listen on `port` (as uvicorn does, with SO_REUSEADDR, so
    connections of a stopped server lingering in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


_LIVE_SERVERS: set[ModelServer] = set()
_LIVE_LOCK = threading.Lock()


@dataclass(eq=False)
class ModelServer:
    """A running scoring server; `stop()` or leaving the `with` block ends it and its workers."""

    model_uri: str
    url: str
    port: int
    workers: int
    log_path: Path
    process: subprocess.Popen = field(repr=False)
    token: str | None = field(default=None, repr=False)

    @property
    def invocations_url(self) -> str:
        return f"{self.url}/invocations"

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server's whole process group (uvicorn and its workers), then reap it."""
        with _LIVE_LOCK:
            _LIVE_SERVERS.discard(self)
        if self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@atexit.register
def stop_all_servers() -> None:
    """Stop every server this process started and has not stopped yet."""
    with _LIVE_LOCK:
        servers = list(_LIVE_SERVERS)
    for server in servers:
        server.stop(timeout=3.0)


def _die_with_parent() -> None:
    """In the child: start a new process group, and get SIGTERM if the parent dies (Linux),
    so a crashed kernel does not leave a server holding the port."""
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _check_model_uri(model_uri: str) -> None:
    """A registry URI that names no model, version or alias gets a clear error up front."""
    from utils.tracking import ModelNotFoundError, resolve_model_uri

    # models:/NAME@ALIAS and models:/NAME/VERSION; models:/m-<id> (a logged model) is not one
    if re.match(r"^models:/[^/@]+(@[^/]+|/\d+)$", model_uri):
        try:
            resolve_model_uri(model_uri)
        except ModelNotFoundError as error:
            raise ServingError(f"Cannot serve {model_uri}: {error}") from None


def _local_model_path(model_uri: str) -> str:
    """Check the URI and download the model (a local path is returned as it is)."""
    import mlflow

    _check_model_uri(model_uri)
    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=model_uri)
    except Exception as error:  # MLflow raises several types for a missing path or run
        raise ServingError(
            f"Cannot serve {model_uri}: the model could not be loaded ({error})."
        ) from None


def serving_command(
    model: str, port: int, host: str, workers: int, timeout: int, guard: bool
) -> tuple[list[str], dict[str, str]]:
    """The command and environment that serve `model` (a URI unguarded, a local path guarded).

    Unguarded: `mlflow models serve --env-manager local`, exactly as a user would type it.
    Guarded: `python -m utils.scoring_app`, which serves MLflow's own scoring app (same model
    loading, same environment from MLflow's `scoring_server.get_cmd`) behind the guard, under
    the same uvicorn. Both use this interpreter, so the kernel's packages serve the model.
    """
    from mlflow.pyfunc import scoring_server

    if not guard:
        env = dict(os.environ)
        # `mlflow models serve` finds uvicorn on PATH: this interpreter's bin folder first
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        args = [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            model,
            "--env-manager",
            "local",
            "-h",
            host,
            "-p",
            str(port),
            "-w",
            str(workers),
        ]
        return args, env
    _, env = scoring_server.get_cmd(model, port, host, timeout, workers)
    args = [
        sys.executable,
        "-m",
        "utils.scoring_app",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return args, env


def serve_model(
    model_uri: str,
    port: int | None = None,
    workers: int = 1,
    *,
    guard: bool = True,
    token: str | None = None,
    max_body_bytes: int = DATABRICKS_MAX_PAYLOAD_BYTES,
    max_json_depth: int = 32,
    micro_batch: bool = False,
    model_config: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    start_timeout: float = 120.0,
    request_timeout: int = 60,
    name: str = "model",
) -> ModelServer:
    """Start a scoring server for `model_uri` on 127.0.0.1 and wait until `/ping` answers.

    `port=None` picks a free port. With `guard` (default) requests pass `utils.scoring_app`
    first: bodies over `max_body_bytes` get 413, JSON nested deeper than `max_json_depth` gets
    400, and with a `token` a request without `Authorization: Bearer <token>` gets 401.
    `micro_batch` scores requests that arrive while the model is busy in one `predict` call
    (for models whose rows are scored independently, like scikit-learn pipelines).
    `model_config` reaches the model's `load_context` (MLflow's SERVING_MODEL_CONFIG). The log
    is kept under the work dir (`serving/logs`). Raises ServingError with the cause and the end
    of the server log when the port is busy, the model is missing or the server dies at start.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if port is None:
        port = free_port()
    elif not port_is_free(port):
        raise ServingError(
            f"Port {port} on {LOOPBACK} is busy (another server is listening there). "
            "Stop that server, or pass port=None to pick a free port."
        )
    if micro_batch and not guard:
        raise ValueError("micro_batch needs the guarded app (guard=True).")
    if guard:
        model = _local_model_path(model_uri)
    else:  # `mlflow models serve` downloads the model itself
        _check_model_uri(model_uri)
        model = model_uri
    args, child_env = serving_command(model, port, LOOPBACK, workers, request_timeout, guard)
    child_env.update(env or {})
    child_env.update(
        MLDEPLOY_SERVING_MAX_BODY_BYTES=str(max_body_bytes),
        MLDEPLOY_SERVING_MAX_JSON_DEPTH=str(max_json_depth),
        MLDEPLOY_SERVING_MICRO_BATCH=str(micro_batch).lower(),
    )
    child_env.pop("MLDEPLOY_SERVING_TOKEN", None)
    if token:
        child_env["MLDEPLOY_SERVING_TOKEN"] = token
    if model_config:
        child_env["SERVING_MODEL_CONFIG"] = json.dumps(dict(model_config))
    log_path = work_path("serving", "logs", f"{name}-{port}.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            args,
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
            cwd=work_path("serving"),
        )
    server = ModelServer(
        model_uri, f"http://{LOOPBACK}:{port}", port, workers, log_path, process, token
    )
    with _LIVE_LOCK:
        _LIVE_SERVERS.add(server)
    try:
        _wait_until_ready(server, start_timeout)
    except BaseException:
        server.stop(timeout=3.0)
        raise
    return server


def _wait_until_ready(server: ModelServer, timeout: float) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.is_alive():
            raise ServingError(
                f"The scoring server for {server.model_uri} exited with code "
                f"{server.process.returncode} while starting. Last lines of {server.log_path}:\n"
                f"{server.log_tail()}"
            )
        try:
            if requests.get(f"{server.url}/ping", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise ServingError(
        f"The scoring server for {server.model_uri} did not answer /ping within {timeout:.0f} s. "
        f"Last lines of {server.log_path}:\n{server.log_tail()}"
    )
