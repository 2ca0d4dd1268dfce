"""The local scoring server: MLflow's own scoring app for a model URI on 127.0.0.1.

`serve_model` runs the app `mlflow models serve --env-manager local` runs, under uvicorn,
behind the thin guard of `utils.serving.guard` (body size, JSON nesting, optional bearer
token); `guard=False` runs the `mlflow models serve` command itself. The process is started,
health-checked and stopped by `utils.processes`: the server lives exactly as long as its
`ModelServer` (a context manager, `stop()`, and an exit hook).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.env import REPO_ROOT, work_path
from utils.processes import (
    LOOPBACK,
    BackgroundProcess,
    ProcessStartError,
    free_port,
    port_is_free,
    start_process,
    stop_all_processes,
)
from utils.serving.client import DATABRICKS_MAX_PAYLOAD_BYTES


class ServingError(RuntimeError):
    """A scoring server could not start (busy port, missing model, crash at start)."""


@dataclass(eq=False)
class ModelServer:
    """A running scoring server; `stop()` or leaving the `with` block ends it and its workers."""

    model_uri: str
    url: str
    port: int
    workers: int
    handle: BackgroundProcess = field(repr=False)
    token: str | None = field(default=None, repr=False)

    @property
    def invocations_url(self) -> str:
        return f"{self.url}/invocations"

    @property
    def log_path(self) -> Path:
        return self.handle.log_path

    @property
    def process(self):
        return self.handle.process

    def is_alive(self) -> bool:
        return self.handle.is_alive()

    def log_tail(self, lines: int = 20) -> str:
        return self.handle.log_tail(lines)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server's whole process group (uvicorn and its workers), then reap it."""
        self.handle.stop(timeout)

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_all_servers() -> None:
    """Stop every server (every background process) this interpreter started."""
    stop_all_processes()


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
    Guarded: `python -m utils.serving.guard`, which serves MLflow's own scoring app (same model
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
        "utils.serving.guard",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return args, env


def _metrics_env(port: int, workers: int, name: str, log_dir: str | None) -> dict[str, str]:
    """Settings for `/metrics`; several workers share prometheus_client's multiprocess folder
    (emptied first: files from an earlier server would be counted again)."""
    import shutil

    env = {"MLDEPLOY_SERVING_METRICS": "true", "MLDEPLOY_SERVING_REJECTED_LOG_DIR": log_dir or ""}
    if workers > 1:
        folder = work_path("serving", "metrics", f"{name}-{port}")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return env


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
    metrics: bool = False,
    model_config: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    start_timeout: float = 120.0,
    request_timeout: int = 60,
    name: str = "model",
) -> ModelServer:
    """Start a scoring server for `model_uri` on 127.0.0.1 and wait until `/ping` answers.

    `port=None` picks a free port. With `guard` (default) requests pass `utils.serving.guard`
    first: bodies over `max_body_bytes` get 413, JSON nested deeper than `max_json_depth` gets
    400, and with a `token` a request without `Authorization: Bearer <token>` gets 401.
    `micro_batch` scores requests that arrive while the model is busy in one `predict` call
    (for models whose rows are scored independently, like scikit-learn pipelines).
    `metrics` adds `GET /metrics` (Prometheus; `utils.operations.metrics`) and, when
    `model_config` has a `log_dir`, logs rejected (4xx) requests there with their reason.
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
    if metrics:
        if not guard:
            raise ValueError("metrics needs the guarded app (guard=True).")
        child_env.update(_metrics_env(port, workers, name, (model_config or {}).get("log_dir")))
    try:
        handle = start_process(
            args,
            name=f"The scoring server for {model_uri}",
            log_path=work_path("serving", "logs", f"{name}-{port}.log"),
            env=child_env,
            cwd=work_path("serving"),
            ready_url=f"http://{LOOPBACK}:{port}/ping",
            timeout=start_timeout,
        )
    except ProcessStartError as error:
        raise ServingError(str(error)) from None
    return ModelServer(model_uri, f"http://{LOOPBACK}:{port}", port, workers, handle, token)
