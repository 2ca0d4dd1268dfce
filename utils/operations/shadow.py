"""The shadow report: how often the shadow model agreed with the one that answered, where it
disagreed (by segment and by score band), how fast it was and how often it failed, from the
router's inference log (`utils.abtest.router`, shadow mode)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from utils.abtest.experiment import read_inference_log

DEFAULT_BANDS = (0.0, 0.1, 0.3, 0.5, 0.7, 1.0)


def wait_for_log(log_dir: str | Path, request_ids: Sequence[str], timeout: float = 30.0):
    """The log once it has a line for every one of `request_ids` (shadowed lines are written
    when the shadow model has answered); raises TimeoutError naming how many are missing."""
    wanted = set(map(str, request_ids))
    deadline = time.monotonic() + timeout
    while True:
        log = read_inference_log(log_dir)
        have = set(log["request_id"].dropna().astype(str)) if "request_id" in log else set()
        missing = wanted - have
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if missing:
        raise TimeoutError(f"{len(missing)} of {len(wanted)} requests not in the log yet.")
    return log[log["request_id"].astype(str).isin(wanted)]


def shadow_rows(log: pd.DataFrame) -> pd.DataFrame:
    """The mirrored requests of a log, with their inputs as columns and `agree` set where the
    shadow answered (None where it failed, timed out or was dropped)."""
    if "shadow_variant" not in log.columns:
        raise ValueError(
            "The log has no shadow columns: serve the router with model_config "
            "{'log_dir': ..., 'shadow': {'share': 0.2}}."
        )
    rows = log[log["shadow_variant"].notna() | log.get("shadow_error", pd.Series()).notna()]
    rows = rows.reset_index(drop=True)
    inputs = pd.DataFrame([json.loads(text) for text in rows["inputs"]], index=rows.index)
    rows = pd.concat([rows.drop(columns=["inputs"]), inputs], axis=1)
    answered = rows["shadow_error"].isna() & rows["shadow_prediction"].notna()
    rows["agree"] = np.where(answered, rows["prediction"] == rows["shadow_prediction"], None)
    return rows


def champion_scores(rows: pd.DataFrame, model_uri: str, features: Sequence[str]) -> pd.Series:
    """The answering model's churn probability for each row (scikit-learn flavour), to put
    disagreements in score bands: disagreeing near 0.5 is expected, far from it is not."""
    import mlflow

    model = mlflow.sklearn.load_model(model_uri)
    return pd.Series(model.predict_proba(rows[list(features)])[:, 1], index=rows.index)


@dataclass
class ShadowReport:
    """Agreement overall, by segment and by score band; shadow latency and failures."""

    summary: dict
    by_segment: pd.DataFrame
    by_band: pd.DataFrame | None


def _agreement(frame: pd.DataFrame, by) -> pd.DataFrame:
    scored = frame[frame["agree"].notna()]
    grouped = scored.groupby(by, observed=True)["agree"]
    return pd.DataFrame(
        {"mirrored": frame.groupby(by, observed=True).size(), "compared": grouped.size(),
         "disagreement": 1 - grouped.mean().astype(float)}  # fmt: skip
    ).fillna({"compared": 0})


def shadow_report(
    rows: pd.DataFrame,
    segment: str = "Geography",
    scores: pd.Series | None = None,
    bands: Sequence[float] = DEFAULT_BANDS,
) -> ShadowReport:
    """Summarise mirrored rows (`shadow_rows`); `scores` (e.g. `champion_scores`) adds bands."""
    answered = rows["agree"].notna()
    errors = rows["shadow_error"].fillna("").astype(str)
    timeouts = errors.str.startswith(("timeout", "skipped"))
    dropped = errors.str.startswith("dropped")
    failed = errors.str.len().gt(0) & ~timeouts & ~dropped
    latency = rows.loc[answered, "shadow_latency_ms"].astype(float)
    agree = rows.loc[answered, "agree"].astype(bool)
    summary = {
        "mirrored": len(rows),
        "compared": int(answered.sum()),
        "agreement": float(agree.mean()) if len(agree) else float("nan"),
        "shadow_errors": int(failed.sum()),
        "shadow_timeouts": int(timeouts.sum()),
        "shadow_dropped": int(dropped.sum()),
        "shadow_p50_ms": float(latency.median()) if len(latency) else float("nan"),
        "shadow_p99_ms": float(np.percentile(latency, 99)) if len(latency) else float("nan"),
        "answer_p50_ms": float(rows["latency_ms"].median()),
    }
    by_band = None
    if scores is not None:
        band = pd.cut(scores, list(bands), include_lowest=True)
        by_band = _agreement(rows.assign(score_band=band), "score_band")
    return ShadowReport(summary, _agreement(rows, segment), by_band)
