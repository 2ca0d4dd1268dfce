"""The one-page dashboard from a log, an alias history and a metrics scrape; the business
metric by version."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import utils.operations
from utils.operations.dashboard import build_dashboard, missed_churner_cost, save_dashboard

pytestmark = pytest.mark.unit


def test_missed_churners_cost_per_version():
    scored = pd.DataFrame({
        "model_version": ["1", "1", "1", "2", "2"], "prediction": [0, 0, 1, 0, 1],
        "actual_label": [1, 0, 1, 1, None],
    })  # fmt: skip
    cost = missed_churner_cost(scored, 500.0)
    assert cost.loc["1", "missed_churners"] == 1 and cost.loc["1", "cost"] == 500.0
    assert cost.loc["2", "labelled"] == 1 and cost.loc["2", "cost_per_1000"] == 500_000.0


def test_the_page_has_every_panel_and_the_html_embeds_it(tmp_path):
    assert "dashboard" in utils.operations.__doc__
    rng = np.random.default_rng(0)
    n = 200
    times = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="s")
    log = pd.DataFrame({
        "timestamp": times, "variant": np.where(np.arange(n) < 150, "champion", "challenger"),
        "model_version": np.where(np.arange(n) < 150, "1", "2"),
        "latency_ms": rng.gamma(4, 1, n), "prediction": rng.integers(0, 2, n),
        "actual_label": rng.integers(0, 2, n).astype(float),
        "inputs": [json.dumps({"Age": 30 + i % 10}) for i in range(n)],
    })  # fmt: skip
    history = pd.DataFrame({
        "model": "m", "alias": ["champion"], "from_version": [1], "to_version": [2],
        "actor": "canary", "reason": "promoted", "moved_at": [times[150]],
    })  # fmt: skip
    metrics = {
        "mldeploy_requests_total{status=200,variant=champion}": 150.0,
        "mldeploy_requests_total{status=200,variant=challenger}": 50.0,
        "mldeploy_requests_total{status=400,variant=none}": 4.0,
        "mldeploy_rejected_requests_total{reason=BAD_REQUEST}": 4.0,
    }
    drift = pd.DataFrame({"feature": ["Age"], "psi": [0.3], "drift": ["major"]})
    page = build_dashboard(log, history, metrics, drift, cost_per_customer=500.0)
    assert len(page.figure.axes) == 6
    titles = " ".join(ax.get_title() for ax in page.figure.axes)
    for words in ("Traffic by variant", "latency", "Rejected", "Accuracy", "Drift", "Missed"):
        assert words in titles
    assert page.summary["requests"] == 204 and page.summary["rejected"] == {"BAD_REQUEST": 4}
    assert page.summary["error_rate"] == pytest.approx(4 / 204)
    save_dashboard(page, tmp_path / "d.png", tmp_path / "d.html")
    assert (tmp_path / "d.png").read_bytes()[:4] == b"\x89PNG"
    assert "data:image/png;base64," in (tmp_path / "d.html").read_text()
