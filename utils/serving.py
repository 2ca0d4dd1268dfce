"""Real-time serving: a local MLflow scoring server, a client for every payload format, and the
Databricks Model Serving endpoint config that serves the same model at scale.

Locally `serve_model` runs MLflow's own scoring app (the one `mlflow models serve --env-manager
local` runs) under uvicorn on 127.0.0.1, behind the thin guard of `utils.scoring_app` (body
size, JSON nesting, optional bearer token); `guard=False` runs the `mlflow models serve` command
itself. The server lives exactly as long as its `ModelServer`: a context manager, `stop()`, and
an exit hook make sure no server outlives the notebook or test that started it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from utils.env import REPO_ROOT, work_path

DATABRICKS_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024  # Databricks Model Serving's per-request limit
PAYLOAD_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs", "csv")
LOOPBACK = "127.0.0.1"


class ServingError(RuntimeError):
    """A scoring server could not start (busy port, missing model, crash at start)."""


class PayloadTooLargeError(ValueError):
    """A request body is over the size an endpoint accepts; nothing was sent."""


class ScoringError(RuntimeError):
    """A scoring request failed: HTTP status, MLflow/Databricks `error_code` and message."""

    def __init__(self, status: int, error_code: str, message: str):
        self.status, self.error_code, self.message = status, error_code, message
        super().__init__(f"HTTP {status} {error_code}: {message}")


# --------------------------------------------------------------------------- server lifecycle


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


# --------------------------------------------------------------------------- payloads and client


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pd.Timestamp | np.datetime64):
        return pd.Timestamp(value).isoformat()
    raise TypeError(f"Cannot send a {type(value).__name__} in a JSON payload: {value!r}")


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing values as None (JSON null): NaN is not valid JSON."""
    return frame.astype(object).where(frame.notna(), None)


def build_payload(
    data: pd.DataFrame | np.ndarray | Mapping[str, Any] | Sequence[Any],
    format: str = "dataframe_split",
    *,
    azure: bool = False,
    params: Mapping[str, Any] | None = None,
) -> tuple[bytes, str]:
    """The request body and content type for `data` in one of PAYLOAD_FORMATS.

    - `dataframe_split`: columns once, then rows as lists (compact);
    - `dataframe_records`: one object per row (readable, repeats the names);
    - `instances`: row-major tensors/rows; every instance shares dimension 0;
    - `inputs`: columnar (a dict of columns, or one tensor); counts may differ per input;
    - `csv`: `text/csv` with a header row.
    `azure=True` wraps the JSON payload in `input_data`, the shape Azure ML online endpoints
    take (`dataframe_split` content without its key). `params` go along as MLflow `params`.
    """
    if format not in PAYLOAD_FORMATS:
        raise ValueError(f"Unknown payload format {format!r}; use one of {PAYLOAD_FORMATS}.")
    if format == "csv":
        if azure or params:
            raise ValueError(
                "CSV payloads carry neither `params` nor the Azure `input_data` wrapper."
            )
        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
        return frame.to_csv(index=False).encode(), "text/csv"
    if isinstance(data, pd.DataFrame):
        plain = _plain(data)
        content = {
            "dataframe_split": lambda: {
                "columns": list(plain.columns),
                "data": plain.values.tolist(),
            },
            "dataframe_records": lambda: plain.to_dict(orient="records"),
            "instances": lambda: plain.to_dict(orient="records"),
            "inputs": lambda: plain.to_dict(orient="list"),
        }[format]()
    elif isinstance(data, np.ndarray):
        if format.startswith("dataframe_"):
            raise ValueError(
                "A numpy array has no column names: send it as `instances` or `inputs`."
            )
        content = data.tolist()
    else:
        content = data
    body = {"input_data": content} if azure else {format: content}
    if params:
        body["params"] = dict(params)
    return json.dumps(body, default=_json_default, allow_nan=False).encode(), "application/json"


def check_payload_size(body: bytes, limit: int = DATABRICKS_MAX_PAYLOAD_BYTES) -> None:
    if len(body) > limit:
        raise PayloadTooLargeError(
            f"The payload is {len(body) / 2**20:.1f} MB; endpoints accept at most "
            f"{limit / 2**20:.0f} MB per request (the Databricks Model Serving limit). Nothing was "
            "sent. Send fewer rows per request: score_in_chunks(url, frame, chunk_rows=256)."
        )


_sessions = threading.local()


def _session():
    """One keep-alive HTTP session per thread: reconnecting costs more than a small predict."""
    import requests

    if not hasattr(_sessions, "session"):
        _sessions.session = requests.Session()
    return _sessions.session


def predictions_frame(answer: Any) -> pd.DataFrame:
    """Predictions from a response (`{"predictions": ...}` or a bare list) as a DataFrame."""
    predictions = answer.get("predictions", answer) if isinstance(answer, dict) else answer
    if isinstance(predictions, dict):
        return pd.DataFrame(predictions)
    if predictions and isinstance(predictions[0], dict):
        return pd.DataFrame.from_records(predictions)
    return pd.DataFrame({"prediction": predictions})


def score_model(
    url: str,
    data: Any,
    format: str = "dataframe_split",
    *,
    azure: bool = False,
    token: str | None = None,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    max_bytes: int = DATABRICKS_MAX_PAYLOAD_BYTES,
) -> pd.DataFrame:
    """Score `data` at `url` (a server root or its `/invocations`) and return the predictions.

    Works against the local server, a Databricks serving endpoint (`.../invocations` with a
    token) or an Azure ML endpoint (`azure=True`). A payload over `max_bytes` is refused before
    sending; a failed request raises ScoringError with status, `error_code` and message.
    """
    body, content_type = build_payload(data, format, azure=azure, params=params)
    check_payload_size(body, max_bytes)
    if not url.rstrip("/").endswith("/invocations") and "/serving-endpoints/" not in url:
        url = url.rstrip("/") + "/invocations"
    sent_headers = {"Content-Type": content_type, **(headers or {})}
    if token:
        sent_headers["Authorization"] = f"Bearer {token}"
    response = _session().post(url, data=body, headers=sent_headers, timeout=timeout)
    if response.status_code >= 400:
        raise error_from_response(response.status_code, response.content)
    return predictions_frame(response.json())


def error_from_response(status: int, content: bytes) -> ScoringError:
    """A ScoringError from an error response. MLflow and Databricks send JSON with `error_code`
    and `message`; when MLflow's message is generic ("unexpected error while evaluating the
    model") the cause is the last line of its `stack_trace`, so it is added. Some answers (415
    from MLflow, proxies) are plain text."""
    try:
        answer = json.loads(content)
        code = answer.get("error_code", f"HTTP_{status}")
        message = answer.get("message", str(answer))
    except (ValueError, AttributeError):
        return ScoringError(status, f"HTTP_{status}", content.decode(errors="replace").strip())
    trace = [line for line in str(answer.get("stack_trace") or "").splitlines() if line.strip()]
    if trace and trace[-1].strip() not in message:
        message = f"{message} Cause: {trace[-1].strip()}"
    return ScoringError(status, code, message)


def score_in_chunks(url: str, frame: pd.DataFrame, chunk_rows: int = 256, **kwargs) -> pd.DataFrame:
    """Score a large frame as several requests of `chunk_rows` rows (what BI tools do)."""
    parts = [
        score_model(url, frame.iloc[i : i + chunk_rows], **kwargs)
        for i in range(0, len(frame), chunk_rows)
    ]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


# --------------------------------------------------------------------------- Databricks endpoints


def served_entity(
    model_name: str,
    version: int | str,
    *,
    name: str | None = None,
    workload_size: str = "Small",
    scale_to_zero: bool = True,
    environment_vars: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One `served_entities` item: a registered model version on a CPU workload."""
    if workload_size not in {"Small", "Medium", "Large"}:
        raise ValueError(f"workload_size must be Small, Medium or Large, got {workload_size!r}")
    entity = {
        "name": name or f"{model_name.split('.')[-1]}-{version}",
        "entity_name": model_name,
        "entity_version": str(version),
        "workload_size": workload_size,
        "scale_to_zero_enabled": scale_to_zero,
    }
    if environment_vars:
        entity["environment_vars"] = dict(environment_vars)
    return entity


def traffic_routes(weights: Mapping[str, float]) -> list[dict[str, Any]]:
    """`traffic_config.routes` from {served entity name: share}; shares are scaled to whole
    percentages that sum to exactly 100 (largest remainders get the rounding)."""
    from utils.traffic import normalize_weights

    shares = normalize_weights(weights)
    exact = {name: share * 100 for name, share in shares.items()}
    percent = {name: math.floor(value) for name, value in exact.items()}
    by_remainder = sorted(exact, key=lambda n: exact[n] - percent[n], reverse=True)
    for name in by_remainder[: 100 - sum(percent.values())]:
        percent[name] += 1
    return [{"served_entity_name": name, "traffic_percentage": percent[name]} for name in shares]


def endpoint_config(
    entities: Sequence[Mapping[str, Any]], weights: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """The endpoint `config`: served entities and, for several, the traffic split between them
    by entity name (all traffic to the only entity when `weights` is None)."""
    if not entities:
        raise ValueError("An endpoint needs at least one served entity.")
    names = [e["name"] for e in entities]
    if len(set(names)) != len(names):
        raise ValueError(f"Served entity names must be unique, got {names}")
    weights = weights or ({names[0]: 100} if len(names) == 1 else None)
    if weights is None:
        raise ValueError(f"Several served entities {names}: say how traffic splits with `weights`.")
    unknown = set(weights) - set(names)
    if unknown:
        raise ValueError(f"Traffic for {sorted(unknown)}, which are not served entities {names}.")
    return {
        "served_entities": [dict(e) for e in entities],
        "traffic_config": {"routes": traffic_routes(weights)},
    }


def deploy_endpoint(name: str, config: Mapping[str, Any], client=None, timeout_minutes: int = 30):
    """Create the serving endpoint `name`, or update its config when it exists (zero downtime:
    the old config serves until the new one is ready). Runs on Databricks only."""
    from utils.env import is_databricks

    if client is None:
        if not is_databricks():
            raise RuntimeError(
                "deploy_endpoint talks to a Databricks workspace; run it on Databricks "
                "(locally, serve with utils.serving.serve_model)."
            )
        from databricks.sdk import WorkspaceClient

        client = WorkspaceClient()
    from datetime import timedelta

    from databricks.sdk.errors import NotFound
    from databricks.sdk.service.serving import EndpointCoreConfigInput

    core = EndpointCoreConfigInput.from_dict({"name": name, **config})
    wait = timedelta(minutes=timeout_minutes)
    try:
        client.serving_endpoints.get(name)
    except NotFound:
        return client.serving_endpoints.create_and_wait(name=name, config=core, timeout=wait)
    return client.serving_endpoints.update_config_and_wait(
        name=name,
        served_entities=core.served_entities,
        traffic_config=core.traffic_config,
        timeout=wait,
    )
