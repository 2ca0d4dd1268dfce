"""A one-page monitoring dashboard (PNG and HTML) from the inference log, the alias history and
a metrics scrape: traffic by variant, latency percentiles, error rates, accuracy by version
over time with the alias moves marked, drift per feature, and a business metric (what the
missed churners cost at a stated cost per customer).

On Databricks, Lakehouse Monitoring computes the same profile and drift tables from the
endpoint's inference table and builds its own dashboard (`utils.operations.databricks`).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class Dashboard:
    figure: object  # matplotlib Figure
    summary: dict
    tables: dict[str, pd.DataFrame]


def missed_churner_cost(scored: pd.DataFrame, cost_per_customer: float) -> pd.DataFrame:
    """Per model version: labelled rows, churners the model missed (predicted 0, left) and
    what they cost at `cost_per_customer` each, in total and per 1,000 requests."""
    labelled = scored[scored["actual_label"].notna()]
    missed = (labelled["prediction"] == 0) & (labelled["actual_label"] == 1)
    frame = labelled.assign(missed=missed).groupby("model_version").agg(
        labelled=("missed", "size"), missed_churners=("missed", "sum")
    )
    frame["cost"] = frame["missed_churners"] * cost_per_customer
    frame["cost_per_1000"] = frame["cost"] / frame["labelled"] * 1000
    return frame


def _time_buckets(times: pd.Series, count: int = 12) -> pd.Series:
    span = (times.max() - times.min()) or pd.Timedelta(seconds=1)
    return times.dt.floor(f"{max(1, int(span.total_seconds() / count))}s")


def _error_rates(metrics: Mapping[str, float]) -> pd.DataFrame:
    rows = []
    for key, value in metrics.items():
        if key.startswith("mldeploy_requests_total{"):
            labels = dict(part.split("=", 1) for part in key[key.index("{") + 1 : -1].split(","))
            rows.append({**labels, "requests": value})
    frame = pd.DataFrame(rows, columns=["status", "variant", "requests"])
    return frame.groupby("status")["requests"].sum().to_frame()


def _rejections(metrics: Mapping[str, float]) -> pd.Series:
    prefix = "mldeploy_rejected_requests_total{reason="
    return pd.Series(
        {k[len(prefix) : -1]: v for k, v in metrics.items() if k.startswith(prefix)}, dtype=float
    )


def build_dashboard(
    log: pd.DataFrame,
    history: pd.DataFrame,
    metrics: Mapping[str, float],
    drift: pd.DataFrame,
    cost_per_customer: float,
    title: str = "Churn model in production",
) -> Dashboard:
    """The page: `log` is the inference log (answered rows, with `actual_label` once merged;
    rejected rows are counted from `metrics`), `history` the alias history of the model,
    `drift` the PSI per feature (`utils.monitoring.drift.drift_report`, chapter 09)."""
    import matplotlib.pyplot as plt

    answered = log[log["variant"].notna()].copy()
    answered["bucket"] = _time_buckets(answered["timestamp"])
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    fig.suptitle(title, fontsize=15, fontweight="bold")

    traffic = answered.groupby(["bucket", "variant"]).size().unstack(fill_value=0)
    traffic.index = traffic.index.strftime("%H:%M:%S")
    traffic.plot.bar(stacked=True, ax=axes[0, 0], width=0.9)
    axes[0, 0].set(title="Traffic by variant", xlabel="", ylabel="requests")

    latency = answered.groupby("variant")["latency_ms"].quantile([0.5, 0.95, 0.99]).unstack()
    latency.columns = ["p50", "p95", "p99"]
    latency.plot.bar(ax=axes[0, 1], rot=0)
    axes[0, 1].set(title="Model latency percentiles", xlabel="", ylabel="ms")

    statuses = _error_rates(metrics)
    total = float(statuses["requests"].sum()) or 1.0
    rejected = _rejections(metrics)
    error_rate = float(statuses.loc[statuses.index != "200", "requests"].sum() / total)
    (rejected if len(rejected) else pd.Series({"none": 0.0})).plot.barh(ax=axes[0, 2])
    axes[0, 2].set(title=f"Rejected requests by reason (error rate {error_rate:.1%})",
                   xlabel="requests")  # fmt: skip

    labelled = answered[answered["actual_label"].notna()]
    accuracy = (
        labelled.assign(right=labelled["prediction"] == labelled["actual_label"])
        .groupby(["bucket", "model_version"])["right"].mean().unstack()
    )  # fmt: skip
    ax = axes[1, 0]
    for version in accuracy.columns:
        ax.plot(accuracy.index, accuracy[version], marker="o", label=f"version {version}")
    for move in history.itertuples():
        if move.alias in ("champion", "canary") and not pd.isna(move.to_version):
            ax.axvline(move.moved_at, color="grey", linestyle="--", linewidth=0.8)
            ax.annotate(f"{move.alias}→v{move.to_version}", (move.moved_at, 0.02),
                        xycoords=("data", "axes fraction"), rotation=90, fontsize=7)  # fmt: skip
    ax.set(title="Accuracy by version (labelled rows), alias moves dashed", ylabel="accuracy")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)

    drift.set_index("feature")["psi"].sort_values().plot.barh(ax=axes[1, 1])
    axes[1, 1].axvline(0.1, color="orange", linestyle=":")
    axes[1, 1].axvline(0.25, color="red", linestyle=":")
    axes[1, 1].set(title="Drift per feature (PSI vs training)", xlabel="PSI", ylabel="")

    cost = missed_churner_cost(answered, cost_per_customer)
    cost["cost_per_1000"].plot.bar(ax=axes[1, 2], rot=0, color="firebrick")
    axes[1, 2].set(
        title=f"Missed churners: cost per 1,000 requests at {cost_per_customer:,.0f} each",
        xlabel="model version", ylabel="expected cost",
    )  # fmt: skip
    fig.tight_layout()
    summary = {
        "requests": int(total),
        "answered_rows": len(answered),
        "error_rate": error_rate,
        "rejected": {k: int(v) for k, v in rejected.items()},
        "variants": answered["variant"].value_counts().to_dict(),
        "p99_ms": latency["p99"].round(2).to_dict(),
        "labelled_rows": len(labelled),
        "alias_moves": len(history),
        "max_psi": float(drift["psi"].max()) if len(drift) else float("nan"),
        "missed_churner_cost": cost["cost"].to_dict(),
        "cost_per_customer": cost_per_customer,
    }
    tables = {"latency_ms": latency, "drift": drift, "missed_churners": cost,
              "statuses": statuses, "alias_history": history}  # fmt: skip
    return Dashboard(fig, summary, tables)


def save_dashboard(dashboard: Dashboard, png: str | Path, html_path: str | Path) -> None:
    """Write the image and an HTML page with the image and the tables behind it."""
    buffer = io.BytesIO()
    dashboard.figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    Path(png).write_bytes(buffer.getvalue())
    image = base64.b64encode(buffer.getvalue()).decode()
    sections = "".join(
        f"<h2>{html.escape(name)}</h2>{table.to_html(na_rep='-', float_format='%.3f')}"
        for name, table in dashboard.tables.items()
    )
    summary = html.escape(json.dumps(dashboard.summary, indent=1, default=str))
    Path(html_path).write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>Model dashboard</title>"
        "<style>body{font-family:sans-serif;margin:2em} table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
        f"<h1>Model dashboard</h1><img src='data:image/png;base64,{image}' width='100%'>"
        f"<h2>Summary</h2><pre>{summary}</pre>{sections}</body></html>"
    )



