"""Drift of production features against the training data: population stability index (PSI)
per feature and time window, and a heat map of it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from utils import tables
from utils.monitoring.inference_table import window_label
from utils.monitoring.schema import SCORED_AT

# Rule of thumb for the population stability index.
PSI_MODERATE, PSI_MAJOR = 0.1, 0.25


def population_stability_index(expected, actual, bins: int = 10, eps: float = 1e-4) -> float:
    """PSI of `actual` against `expected`: sum over bins of (a - e) * ln(a / e).

    Numbers with more than `bins` distinct values are cut at the quantiles of `expected`
    (outer bins open-ended); anything else is compared value by value. Empty bins count as
    `eps` so that a category seen on one side only gives a large, finite index.
    """
    expected, actual = pd.Series(expected).dropna(), pd.Series(actual).dropna()
    if expected.empty or actual.empty:
        raise ValueError("PSI needs values on both sides; one side is empty.")
    numeric = pd.api.types.is_numeric_dtype(expected) and not pd.api.types.is_bool_dtype(expected)
    if numeric and expected.nunique() > bins:
        edges = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1))[1:-1])
        e_counts = np.bincount(
            np.searchsorted(edges, expected, side="right"), minlength=len(edges) + 1
        )
        a_counts = np.bincount(
            np.searchsorted(edges, actual, side="right"), minlength=len(edges) + 1
        )
    else:
        categories = sorted(set(expected.astype(str)) | set(actual.astype(str)))
        e_counts = expected.astype(str).value_counts().reindex(categories, fill_value=0).to_numpy()
        a_counts = actual.astype(str).value_counts().reindex(categories, fill_value=0).to_numpy()
    e = np.clip(e_counts / e_counts.sum(), eps, None)
    a = np.clip(a_counts / a_counts.sum(), eps, None)
    return float(np.sum((a - e) * np.log(a / e)))


def drift_level(psi: float) -> str:
    if psi >= PSI_MAJOR:
        return "major"
    return "moderate" if psi >= PSI_MODERATE else "none"


def drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, features: Sequence[str], bins: int = 10
) -> pd.DataFrame:
    """PSI of each feature of `current` against `reference` (e.g. the training data)."""
    missing = [f for f in features if f not in reference.columns or f not in current.columns]
    if missing:
        raise ValueError(f"Features {missing} are missing from the reference or current rows.")
    rows = []
    for feature in features:
        psi = population_stability_index(reference[feature], current[feature], bins)
        rows.append({"feature": feature, "psi": round(psi, 4), "drift": drift_level(psi)})
    return pd.DataFrame(rows).sort_values("psi", ascending=False, ignore_index=True)


def drift_by_window(
    table: str, reference: pd.DataFrame, features: Sequence[str], window: str = "1 day"
) -> pd.DataFrame:
    """PSI of each feature per time window of the inference table: features x windows."""
    from pyspark.sql import functions as F

    rows = (
        tables.read_table(table)
        .select(*features, F.window(SCORED_AT, window).start.alias("window_start"))
        .toPandas()
    )
    return pd.DataFrame(
        {
            window_label(start): {
                f: population_stability_index(reference[f], group[f]) for f in features
            }
            for start, group in rows.groupby("window_start")
        }
    )


def plot_drift(by_window: pd.DataFrame, title: str = "Feature drift against training data (PSI)"):
    """A heat map of PSI, features x windows (from `drift_by_window`), with the usual bands."""
    import matplotlib.pyplot as plt

    values = by_window.to_numpy(float)
    fig, ax = plt.subplots(figsize=(1.1 * by_window.shape[1] + 3.5, 0.32 * len(by_window) + 1.4))
    image = ax.imshow(values, cmap="Reds", vmin=0, vmax=max(0.5, values.max()), aspect="auto")
    ax.set_xticks(range(by_window.shape[1]), by_window.columns, rotation=30, ha="right")
    ax.set_yticks(range(len(by_window)), by_window.index)
    for (i, j), value in np.ndenumerate(values):
        color = "white" if value > PSI_MAJOR else "black"
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(image, ax=ax, label=f"PSI (moderate > {PSI_MODERATE}, major > {PSI_MAJOR})")
    ax.set_title(title)
    fig.tight_layout()
    return fig
