"""The A/B router model: one MLflow model that splits traffic between registered versions.

This file is the model, logged from code (`mlflow.pyfunc.log_model(python_model=<this file>)`,
chapter 05) and run by the scoring server; it imports nothing from this repository, so the
logged model needs no `code_paths`. `ABRouter` holds the champion and the challenger (copied
from the registry when the router is logged, so what it serves cannot change under a running
test) and routes each request by weight. A request that carries a `request_id` always goes to
the same variant (a hash of the id picks it), so retries and follow-up requests of one customer
see one model. Every answer says which variant and model version produced it, and each request
can be appended to an inference log (JSON lines, one file per server process).

Shadow mode (chapter 12): with `model_config["shadow"]` the variant that answers is unchanged,
and a share of the requests (at most 50 %) is also scored by a shadow variant on a worker
thread, after the answer is built and off the response path, with a timeout; the log line of
such a request carries both predictions, both latencies and any shadow error. With
`model_config["weights_file"]` the split between the pinned versions can change while the
server runs (a canary controller writes the file; the versions themselves never change).

On Databricks the same weights become the endpoint's `traffic_config`
(`utils.serving.traffic_routes`); Model Serving routes and logs requests itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

# The inference table's key column (utils.monitoring.schema.REQUEST_ID): repeated here
# because this file travels alone inside the logged model.
REQUEST_ID = "request_id"


ROUTER_OUTPUTS = ("prediction", "variant", "model_version", REQUEST_ID)


_BUCKETS = 2**64


# Azure ML caps mirrored traffic at 50 %: past that the shadow costs more than the service.
MAX_SHADOW_SHARE = 0.5


def normalize_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Shares that sum to 1 from any positive weights ({"champion": 90, "challenger": 10})."""
    if not weights:
        raise ValueError("No variants: give weights such as {'champion': 90, 'challenger': 10}.")
    bad = {
        name: w
        for name, w in weights.items()
        if isinstance(w, bool) or not (isinstance(w, int | float) and math.isfinite(w) and w >= 0)
    }
    if bad:
        raise ValueError(f"Traffic weights must be finite numbers >= 0, got {bad}.")
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError(f"Traffic weights {dict(weights)} sum to 0; give at least one a share.")
    return {name: float(w) / total for name, w in weights.items()}


def bucket(request_id: str) -> float:
    """A number in [0, 1) fixed by the request id (the same in every process and run:
    Python's own `hash` is salted per process, a cryptographic digest is not)."""
    digest = hashlib.blake2b(str(request_id).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _BUCKETS


class VariantTable:
    """Variant names and the cumulative shares that split [0, 1) between them, computed once."""

    def __init__(self, weights: Mapping[str, float]):
        shares = normalize_weights(weights)
        self.names = np.asarray(list(shares), dtype=object)
        self.edges = np.cumsum(list(shares.values()))
        self.edges[-1] = 1.0  # rounding must not leave a gap at the top

    def choose(self, request_ids: Sequence[str]) -> np.ndarray:
        """The variant for each request id: the cumulative share its bucket falls under."""
        positions = np.searchsorted(self.edges, [bucket(r) for r in request_ids], side="right")
        return self.names[np.minimum(positions, len(self.names) - 1)]


def shadow_settings(shadow: Mapping[str, Any], variants: Sequence[str]) -> dict[str, Any]:
    """Checked shadow settings: `variant` (one of `variants`), `share` in (0, 0.5],
    `timeout_ms` > 0 and `max_pending` (shadow requests waiting before new ones are dropped)."""
    unknown = set(shadow) - {"variant", "share", "timeout_ms", "max_pending"}
    if unknown:
        raise ValueError(
            f"Unknown shadow settings {sorted(unknown)}: use variant, share, timeout_ms, "
            "max_pending."
        )
    variant = shadow.get("variant", "challenger")
    if variant not in variants:
        raise ValueError(
            f"Shadow variant {variant!r} is not one of the router's variants {list(variants)}: "
            "log the router with that alias in its weights (a weight of 0 loads it unrouted)."
        )
    share = shadow.get("share", 0.1)
    if not isinstance(share, int | float) or not 0 < share <= MAX_SHADOW_SHARE:
        raise ValueError(
            f"Shadow share {share!r} is not in (0, {MAX_SHADOW_SHARE}]: mirror at most half of "
            "the traffic (scoring every request twice doubles the cost); use a canary to send "
            "the challenger more."
        )
    timeout_ms = shadow.get("timeout_ms", 1000)
    max_pending = shadow.get("max_pending", 1000)
    if not isinstance(timeout_ms, int | float) or timeout_ms <= 0:
        raise ValueError(f"Shadow timeout_ms must be a number > 0, got {timeout_ms!r}.")
    if not isinstance(max_pending, int) or max_pending < 1:
        raise ValueError(f"Shadow max_pending must be an integer >= 1, got {max_pending!r}.")
    return {
        "variant": variant,
        "share": float(share),
        "timeout_ms": float(timeout_ms),
        "max_pending": max_pending,
    }


def shadow_bucket(request_id: str) -> float:
    """Like `bucket`, salted: which requests are mirrored does not depend on how they route."""
    return bucket(f"shadow:{request_id}")


def choose_variants(request_ids: Sequence[str], weights: Mapping[str, float]) -> np.ndarray:
    """The variant for each request id: the cumulative share its bucket falls under."""
    return VariantTable(weights).choose(request_ids)


def _request_ids(model_input: pd.DataFrame) -> np.ndarray:
    """The `request_id` of each row as text; a row without one gets a fresh random id, which
    routes at random and is returned so the caller can join the answer to its labels."""
    given = model_input[REQUEST_ID] if REQUEST_ID in model_input.columns else None
    if given is not None and given.dtype == object and not given.isna().any():
        ids = given.to_numpy()
        if all(type(r) is str for r in ids):  # the usual case: the signature made them text
            return ids
    if given is None:
        given = [None] * len(model_input)
    return np.asarray([str(r) if pd.notna(r) else uuid.uuid4().hex for r in given], dtype=object)


def _without_request_id(model_input: pd.DataFrame) -> pd.DataFrame:
    """The features: the input without its `request_id` column, as a view (no data copied)."""
    if REQUEST_ID not in model_input.columns:
        return model_input
    features = model_input.copy(deep=False)
    del features[REQUEST_ID]
    return features


def _as_column(predictions: Any, rows: int) -> np.ndarray:
    """One prediction per row from what a pyfunc returns (array, Series, one-column frame)."""
    if isinstance(predictions, pd.DataFrame):
        if predictions.shape[1] != 1:
            raise ValueError(
                f"ABRouter routes models with one output column; got {list(predictions.columns)}."
            )
        predictions = predictions.iloc[:, 0]
    values = np.asarray(predictions)
    if values.ndim > 1 and values.shape[1:] == (1,) * (values.ndim - 1):
        values = values.reshape(-1)
    if len(values) != rows:
        raise ValueError(f"The model returned {len(values)} predictions for {rows} rows.")
    return values


class InferenceLog:
    """Appends one JSON line per scored row to `<log_dir>/requests-<pid>.jsonl`.

    One file per process: several server workers never interleave lines, and a line is
    written with one call and flushed, so a killed server loses at most the line being written.
    """

    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir)
        self._lock = threading.Lock()
        self._file = None
        self._pid = None

    def write(self, records: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, default=_jsonable) + "\n" for r in records)
        with self._lock:
            if self._file is None or self._pid != os.getpid():  # reopen after a fork
                self.log_dir.mkdir(parents=True, exist_ok=True)
                self._pid = os.getpid()
                self._file = open(self.log_dir / f"requests-{self._pid}.jsonl", "a")  # noqa: SIM115
            self._file.write(text)
            self._file.flush()


def _native(value: Any) -> Any:
    """A numpy scalar as the Python value it holds (what JSON and users expect)."""
    return value.item() if isinstance(value, np.generic) else value


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


class ShadowScorer:
    """Scores copies of requests with the shadow variant on a worker thread and logs each with
    the answer it shadows. Nothing here runs on the response path but `submit`, which only
    puts a job on a bounded queue: a full queue drops the shadow copy (the answer is logged
    with the reason), a slow or failing shadow model only fills its own log fields.

    The model runs on its own executor thread so a call that outlives `timeout_ms` can be
    abandoned (a Python thread cannot be killed); while such a call is still running, later
    shadow requests are logged as skipped rather than queued behind it.
    """

    def __init__(self, model, variant: str, version: str, settings: Mapping[str, Any], log):
        self.model, self.variant, self.version, self.log = model, variant, version, log
        self.share = settings["share"]
        self.timeout_s = settings["timeout_ms"] / 1000
        self._jobs: queue.Queue = queue.Queue(maxsize=settings["max_pending"])
        self._executor: ThreadPoolExecutor | None = None
        self._stuck: Future | None = None
        self._pid: int | None = None
        self._start_lock = threading.Lock()

    def selected(self, request_ids: np.ndarray, variants: np.ndarray) -> np.ndarray:
        """Which rows to mirror: a fixed share of request ids, never rows the shadow variant
        already answers."""
        chosen = np.fromiter(
            (shadow_bucket(r) < self.share for r in request_ids), bool, len(request_ids)
        )
        return chosen & (variants != self.variant)

    def submit(self, records: list[dict[str, Any]], features: pd.DataFrame) -> bool:
        """Queue one request's rows (their log records and features); False when full."""
        self._ensure_worker()
        try:
            self._jobs.put_nowait((records, features))
        except queue.Full:
            return False
        return True

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued shadow request is scored and logged (tests, notebooks)."""
        deadline = time.monotonic() + timeout
        with self._jobs.all_tasks_done:
            while self._jobs.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._jobs.all_tasks_done.wait(left)
        return True

    def _ensure_worker(self) -> None:
        if self._pid == os.getpid():
            return
        with self._start_lock:  # first call in this process (also after a fork)
            if self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="shadow-model")
                self._stuck = None
                threading.Thread(target=self._run, name="shadow-scorer", daemon=True).start()
                self._pid = os.getpid()

    def _timed_predict(self, features: pd.DataFrame) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        result = self.model._model_impl.predict(features)
        return _as_column(result, len(features)), (time.perf_counter() - start) * 1000

    def _score(self, features: pd.DataFrame) -> tuple[Any, float | None, str | None]:
        if self._stuck is not None and not self._stuck.done():
            return None, None, "skipped: the shadow model is still busy with a call that timed out"
        future = self._executor.submit(self._timed_predict, features)
        try:
            predictions, latency = future.result(timeout=self.timeout_s)
        except FutureTimeout:
            self._stuck = future
            return None, None, f"timeout: no answer within {self.timeout_s * 1000:g} ms"
        except Exception as error:  # the shadow's failure is data for the report, not an outage
            return None, None, f"{type(error).__name__}: {error}"[:300]
        return predictions, latency, None

    def _run(self) -> None:
        while True:
            records, features = self._jobs.get()
            try:
                predictions, latency, error = self._score(features)
                lines = []
                for i, record in enumerate(records):
                    lines.append(
                        {
                            **record,
                            "shadow_variant": self.variant,
                            "shadow_version": self.version,
                            "shadow_prediction": None if error else _native(predictions[i]),
                            "shadow_latency_ms": None if error else round(latency, 3),
                            "shadow_error": error,
                        }
                    )
                self.log.write(lines)
            except Exception:  # never let one bad job end the worker
                pass
            finally:
                self._jobs.task_done()


class WeightsFile:
    """Traffic weights read from a JSON file whenever it changes (checked by its modification
    time, one `stat` per request): the local stand-in for updating an endpoint's traffic config.
    A file that is missing, unreadable or names unknown variants keeps the last good split."""

    def __init__(self, path: str | Path, variants: Sequence[str], fallback: VariantTable):
        self.path, self.variants, self.table = Path(path), set(variants), fallback
        self._stamp: int | None = None

    def current(self) -> VariantTable:
        try:
            stamp = self.path.stat().st_mtime_ns
        except OSError:
            return self.table
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                weights = json.loads(self.path.read_text())
                if set(weights) <= self.variants:
                    self.table = VariantTable(weights)
            except (OSError, ValueError, TypeError, AttributeError):
                pass
        return self.table


class ABRouter(mlflow.pyfunc.PythonModel):
    """Routes each row to one of several models by weight; answers with the prediction, the
    variant, its model version and the request id.

    `model_config`: `weights` ({variant: weight}), `versions` ({variant: registry version}),
    `log_dir` (where to log requests; empty = no log), optionally `shadow` (`shadow_settings`)
    and `weights_file` (`WeightsFile`). The variant models are the artifacts of the same names.
    """

    def load_context(self, context) -> None:
        config = context.model_config
        self.weights = normalize_weights(config["weights"])
        self.variant_table = VariantTable(self.weights)
        self.versions = {name: str(v) for name, v in config["versions"].items()}
        self.models = {
            name: mlflow.pyfunc.load_model(context.artifacts[name]) for name in self.weights
        }
        self.log = InferenceLog(config["log_dir"]) if config.get("log_dir") else None
        self.weights_file = (
            WeightsFile(config["weights_file"], list(self.weights), self.variant_table)
            if config.get("weights_file")
            else None
        )
        self.shadow = None
        if config.get("shadow"):
            settings = shadow_settings(config["shadow"], list(self.weights))
            if self.log is None:
                raise ValueError(
                    "Shadow mode logs what the shadow model said and nothing else sees it: "
                    "give the router a `log_dir` in its model_config."
                )
            name = settings["variant"]
            self.shadow = ShadowScorer(
                self.models[name], name, self.versions[name], settings, self.log
            )

    def predict(self, context, model_input: pd.DataFrame, params=None) -> list[dict[str, Any]]:
        """One answer per row: prediction, variant, model_version and request_id.

        Records, not a DataFrame: MLflow's server writes them to JSON as they are, while a
        frame is first converted row by row, ~0.15 ms of a one-row request (the router's budget
        is 15 % over the champion served alone). In process, `pd.DataFrame(answers)`.
        """
        started = datetime.now(UTC).isoformat() if self.log is not None else ""
        request_ids = _request_ids(model_input)
        features = _without_request_id(model_input)
        table = self.variant_table if self.weights_file is None else self.weights_file.current()
        variants = table.choose(request_ids)
        predictions = np.empty(len(features), dtype=object)
        latency_ms = np.zeros(len(features))
        for name in dict.fromkeys(variants):
            rows = variants == name
            start = time.perf_counter()
            # The router's own signature has already checked and converted the input, so the
            # variant is called without enforcing its signature a second time; `_model_impl`
            # is MLflow's stable developer API for exactly this.
            routed = features if rows.all() else features.loc[rows]  # one variant: no copy
            result = self.models[name]._model_impl.predict(routed)
            predictions[rows] = _as_column(result, len(routed))
            latency_ms[rows] = (time.perf_counter() - start) * 1000
        answers = [
            {
                "prediction": _native(prediction),
                "variant": variant,
                "model_version": self.versions[variant],
                REQUEST_ID: request_id,
            }
            for prediction, variant, request_id in zip(
                predictions, variants, request_ids, strict=True
            )
        ]
        if self.log is not None:
            self._log(answers, features, started, latency_ms, request_ids, variants)
        return answers

    def _log(self, answers, features: pd.DataFrame, started: str, latency_ms, ids, variants):
        inputs = features.to_dict(orient="records")
        records = [
            {
                "timestamp": started,
                **answer,
                "latency_ms": round(float(latency), 3),
                "inputs": json.dumps(row, default=_jsonable),
            }
            for answer, row, latency in zip(answers, inputs, latency_ms, strict=True)
        ]
        if self.shadow is not None:
            records = self._hand_to_shadow(records, features, ids, variants)
        if records:
            self.log.write(records)

    def _hand_to_shadow(self, records, features: pd.DataFrame, ids, variants) -> list:
        """Give the mirrored rows to the shadow worker (it logs them once scored); return the
        records to log now. Any failure here costs the shadow copy, never the answer."""
        mirrored = np.zeros(len(records), dtype=bool)
        try:
            mirrored = self.shadow.selected(ids, variants)
            if not mirrored.any():
                return records
            shadowed = [r for r, m in zip(records, mirrored, strict=True) if m]
            if self.shadow.submit(shadowed, features.loc[mirrored].copy()):
                return [r for r, m in zip(records, mirrored, strict=True) if not m]
            reason = "dropped: the shadow queue is full"
        except Exception as error:
            reason = f"dropped: {type(error).__name__}: {error}"[:300]
        for record, m in zip(records, mirrored, strict=False):
            if m:
                record["shadow_error"] = reason
        return records


# Models from code: MLflow runs this file when it loads the model and serves this object.
mlflow.models.set_model(ABRouter())
