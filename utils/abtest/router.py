"""The A/B router model: one MLflow model that splits traffic between registered versions.

This file is the model, logged from code (`mlflow.pyfunc.log_model(python_model=<this file>)`,
chapter 05) and run by the scoring server; it imports nothing from this repository, so the
logged model needs no `code_paths`. `ABRouter` holds the champion and the challenger (copied
from the registry when the router is logged, so what it serves cannot change under a running
test) and routes each request by weight. A request that carries a `request_id` always goes to
the same variant (a hash of the id picks it), so retries and follow-up requests of one customer
see one model. Every answer says which variant and model version produced it, and each request
can be appended to an inference log (JSON lines, one file per server process).

On Databricks the same weights become the endpoint's `traffic_config`
(`utils.serving.traffic_routes`); Model Serving routes and logs requests itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
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


def normalize_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Shares that sum to 1 from any positive weights ({"champion": 90, "challenger": 10})."""
    if not weights:
        raise ValueError("No variants: give weights such as {'champion': 90, 'challenger': 10}.")
    bad = {name: w for name, w in weights.items() if not (isinstance(w, int | float) and w >= 0)}
    if bad:
        raise ValueError(f"Traffic weights must be numbers >= 0, got {bad}.")
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


class ABRouter(mlflow.pyfunc.PythonModel):
    """Routes each row to one of several models by weight; answers with the prediction, the
    variant, its model version and the request id.

    `model_config`: `weights` ({variant: weight}), `versions` ({variant: registry version}),
    `log_dir` (where to log requests; empty = no log). The variant models are the artifacts of
    the same names.
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

    def predict(self, context, model_input: pd.DataFrame, params=None) -> list[dict[str, Any]]:
        """One answer per row: prediction, variant, model_version and request_id.

        Records, not a DataFrame: MLflow's server writes them to JSON as they are, while a
        frame is first converted row by row, ~0.15 ms of a one-row request (the router's budget
        is 15 % over the champion served alone). In process, `pd.DataFrame(answers)`.
        """
        started = datetime.now(UTC).isoformat() if self.log is not None else ""
        request_ids = _request_ids(model_input)
        features = _without_request_id(model_input)
        variants = self.variant_table.choose(request_ids)
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
            self._log(answers, features, started, latency_ms)
        return answers

    def _log(self, answers, features: pd.DataFrame, started: str, latency_ms) -> None:
        inputs = features.to_dict(orient="records")
        self.log.write(
            [
                {
                    "timestamp": started,
                    **answer,
                    "latency_ms": round(float(latency), 3),
                    "inputs": json.dumps(row, default=_jsonable),
                }
                for answer, row, latency in zip(answers, inputs, latency_ms, strict=True)
            ]
        )


# Models from code: MLflow runs this file when it loads the model and serves this object.
mlflow.models.set_model(ABRouter())
