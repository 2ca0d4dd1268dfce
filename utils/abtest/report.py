"""Comparing the variants of an A/B test from its inference table (chapter 05).

Kept apart from `utils.abtest.router`, which travels inside the served router model and must
not pull plotting libraries into the scoring server.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from utils.monitoring.schema import ACTUAL_LABEL, MODEL_VERSION


def compare_variants(scored: pd.DataFrame, label: str = ACTUAL_LABEL) -> pd.DataFrame:
    """Per variant and model version: requests, accuracy with a 95 % interval, predicted and
    actual positive rates and median latency. `scored` needs `variant`, `model_version`,
    `prediction`, `latency_ms` and the label column; rows without a label are left out."""
    labelled = scored.dropna(subset=[label])
    grouped = labelled.groupby(["variant", MODEL_VERSION])
    comparison = pd.DataFrame(
        {
            "requests": grouped.size(),
            "accuracy": grouped.apply(
                lambda g: (g["prediction"] == g[label]).mean(), include_groups=False
            ),
            "predicted churn rate": grouped["prediction"].mean(),
            "actual churn rate": grouped[label].mean(),
            "p50 latency ms": grouped["latency_ms"].median(),
        }
    )
    # Normal approximation of a binomial proportion: enough to see whether two variants differ.
    margin = 1.96 * np.sqrt(
        comparison["accuracy"] * (1 - comparison["accuracy"]) / comparison["requests"]
    )
    comparison["accuracy low"] = comparison["accuracy"] - margin
    comparison["accuracy high"] = comparison["accuracy"] + margin
    return comparison.round(3)


def plot_variant_comparison(
    comparison: pd.DataFrame, scored: pd.DataFrame, highlight: str = "champion"
):
    """Accuracy (with its interval), predicted vs actual churn rate and router latency per
    variant, side by side. Returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    variants = list(comparison.index.get_level_values("variant"))
    colors = ["C0" if v == highlight else "C3" for v in variants]
    errors = [
        comparison["accuracy"] - comparison["accuracy low"],
        comparison["accuracy high"] - comparison["accuracy"],
    ]
    axes[0].bar(variants, comparison["accuracy"], color=colors, yerr=errors, capsize=6)
    axes[0].set(title="accuracy on the traffic each served (95 % interval)", ylim=(0, 1))
    for i, requests in enumerate(comparison["requests"]):
        axes[0].text(i, 0.05, f"n={int(requests)}", ha="center", color="white")
    width, x = 0.38, np.arange(len(variants))
    axes[1].bar(
        x - width / 2, comparison["predicted churn rate"], width, color=colors, label="predicted"
    )
    axes[1].bar(
        x + width / 2,
        comparison["actual churn rate"],
        width,
        color="grey",
        alpha=0.6,
        label="actual",
    )
    axes[1].set(xticks=x, xticklabels=variants, title="churn rate: predicted vs actual")
    axes[1].legend()
    for variant, color in zip(variants, colors, strict=True):
        latency = scored.loc[scored["variant"] == variant, "latency_ms"]
        axes[2].hist(
            latency,
            bins=np.logspace(0, 2.3, 40),
            alpha=0.6,
            color=color,
            label=variant,
            density=True,
        )
    axes[2].set(
        xscale="log", xlabel="model latency per request (ms)", title="latency inside the router"
    )
    axes[2].legend()
    fig.tight_layout()
    return fig
