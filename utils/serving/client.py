"""A client for MLflow scoring endpoints: builds every payload format MLflow and Databricks
accept (plus Azure ML's `input_data`), refuses bodies over the 16 MB Databricks limit before
sending, and turns error answers into exceptions carrying status, `error_code` and message.
Works against a local `utils.serving` server, a Databricks serving endpoint or Azure ML.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

DATABRICKS_MAX_PAYLOAD_BYTES = 16 * 1024 * 1024  # Databricks Model Serving's per-request limit
PAYLOAD_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs", "csv")


class PayloadTooLargeError(ValueError):
    """A request body is over the size an endpoint accepts; nothing was sent."""


class ScoringError(RuntimeError):
    """A scoring request failed: HTTP status, MLflow/Databricks `error_code` and message."""

    def __init__(self, status: int, error_code: str, message: str):
        self.status, self.error_code, self.message = status, error_code, message
        super().__init__(f"HTTP {status} {error_code}: {message}")


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
    """Score a large frame as several requests of `chunk_rows` rows (what BI tools do; chapter
    04 shows it). Each answer carries its chunk's index, so results join back to `frame` by
    index, not by position."""
    parts = []
    for start in range(0, len(frame), chunk_rows):
        chunk = frame.iloc[start : start + chunk_rows]
        parts.append(score_model(url, chunk, **kwargs).set_axis(chunk.index))
    return pd.concat(parts) if parts else pd.DataFrame()
