"""Training/serving skew check: did the served model see what training would have seen?

For each request the served model answers with the feature values it looked up. The offline
store, asked for the same keys at the same time (`get_historical_features`), must give the same
values; any difference means the online path (materialization, types, on-demand code) drifted
from the training path.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pandas as pd


def feature_differences(
    served: pd.DataFrame, offline: pd.DataFrame, key: str, features: list[str], atol: float = 1e-9
) -> pd.DataFrame:
    """One row per (key, feature) whose served and offline values differ. Numbers compare
    within `atol`; everything else exactly; a value missing on one side is a difference."""
    missing = [f for f in [key, *features] if f not in served or f not in offline]
    if missing:
        raise ValueError(f"Columns {missing} are missing from the served or the offline frame.")
    joined = served[[key, *features]].merge(
        offline[[key, *features]], on=key, how="outer", suffixes=("_served", "_offline")
    )
    rows = []
    for feature in features:
        a, b = joined[f"{feature}_served"], joined[f"{feature}_offline"]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            same = np.isclose(a.astype(float), b.astype(float), atol=atol, rtol=0)
        else:
            same = (a.astype(str) == b.astype(str)).to_numpy()
        same = (same & ~(a.isna() ^ b.isna()).to_numpy()) | (a.isna() & b.isna()).to_numpy()
        for i in np.flatnonzero(~same):
            rows.append(
                {
                    key: joined[key].iloc[i],
                    "feature": feature,
                    "served": a.iloc[i],
                    "offline": b.iloc[i],
                }
            )
    return pd.DataFrame(rows, columns=[key, "feature", "served", "offline"])


def timed_ms(call: Callable[[], object], n: int, warmup: int = 3) -> np.ndarray:
    """Milliseconds of `n` calls of `call` one after another (after `warmup` untimed calls)."""
    for _ in range(warmup):
        call()
    times = np.empty(n)
    for i in range(n):
        start = time.perf_counter()
        call()
        times[i] = (time.perf_counter() - start) * 1000
    return times
