"""Inference table, label merge (idempotent, unknown keys reported), accuracy, PSI."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

import utils.datasets as datasets
import utils.monitoring.drift as drift
import utils.monitoring.inference_table as inference_log
import utils.monitoring.retraining as retraining

DAY1, DAY2 = datetime(2026, 3, 2, 9), datetime(2026, 3, 3, 15)


# --- PSI on known distributions (no Spark) ----------------------------------------------------


@pytest.mark.unit
def test_psi_of_a_sample_against_itself_is_zero():
    x = np.random.default_rng(0).normal(size=5_000)
    assert drift.population_stability_index(x, x) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.unit
def test_psi_categorical_matches_the_hand_computed_value():
    expected = ["a"] * 50 + ["b"] * 50
    actual = ["a"] * 90 + ["b"] * 10
    # (0.9-0.5) ln(0.9/0.5) + (0.1-0.5) ln(0.1/0.5)
    assert drift.population_stability_index(expected, actual) == pytest.approx(0.8789, abs=1e-3)


@pytest.mark.unit
def test_psi_of_a_shifted_normal_is_about_the_squared_shift():
    rng = np.random.default_rng(1)
    reference = rng.normal(0, 1, 50_000)
    assert drift.population_stability_index(reference, rng.normal(0, 1, 50_000)) < 0.01
    # For two unit normals PSI (a symmetrised KL divergence) is the squared mean shift.
    shifted = drift.population_stability_index(reference, rng.normal(0.4, 1, 50_000), bins=20)
    assert shifted == pytest.approx(0.4**2, rel=0.1)
    assert drift.drift_level(shifted) == "moderate"
    assert drift.drift_level(0.05) == "none" and drift.drift_level(0.3) == "major"


@pytest.mark.unit
def test_psi_unseen_category_is_large_but_finite_and_empty_side_errors():
    psi = drift.population_stability_index(["x"] * 100, ["x"] * 80 + ["y"] * 20)
    assert np.isfinite(psi) and psi > 1
    with pytest.raises(ValueError, match="empty"):
        drift.population_stability_index([], [1, 2])


@pytest.mark.unit
def test_drift_report_flags_the_drifted_feature():
    requests, _ = datasets.simulate_churn_traffic(3000, seed=1, first_row=1)
    drifted, _ = datasets.simulate_churn_traffic(3000, seed=2, first_row=10_000, age_shift=10)
    report = drift.drift_report(
        requests, drifted, ["Age", "CreditScore", "Geography", "NumOfProducts"]
    )
    assert report.iloc[0]["feature"] == "Age" and report.iloc[0]["drift"] == "major"
    assert (report.set_index("feature").drop("Age")["drift"] == "none").all()
    with pytest.raises(ValueError, match="missing"):
        drift.drift_report(requests, drifted, ["Income"])


@pytest.mark.unit
def test_label_batches_cover_share_and_carry_unknown_ids():
    truth = pd.DataFrame(
        {"request_id": [f"r{i}" for i in range(100)], "y": [i % 2 for i in range(100)]}
    )
    batches = inference_log.label_batches(
        truth, "y", batches=3, coverage=0.9, unknown_per_batch=2, seed=3
    )
    assert len(batches) == 3
    assert sum(len(b) for b in batches) == 90 + 6
    known = pd.concat(batches).query("not request_id.str.startswith('unknown')")
    assert known["request_id"].is_unique
    assert list(batches[0].columns) == ["request_id", "actual_label", "labelled_at"]
    with pytest.raises(ValueError, match="coverage"):
        inference_log.label_batches(truth, "y", coverage=0)


@pytest.mark.unit
def test_inference_rows_and_retraining_decision():
    requests = pd.DataFrame({"request_id": [1, 2], "x": [0.1, 0.2]})
    rows = inference_log.inference_rows(requests, np.array([[1], [0]]), "3", DAY1)
    assert rows["request_id"].tolist() == ["1", "2"]
    assert rows["prediction"].tolist() == [1, 0] and (rows["model_version"] == 3).all()
    assert rows["scored_date"].iloc[0] == "2026-03-02"
    with pytest.raises(ValueError, match="2 requests"):
        inference_log.inference_rows(requests, [1], 3)
    with pytest.raises(ValueError, match="request_id"):
        inference_log.inference_rows(requests.drop(columns="request_id"), [1, 0], 3)
    assert retraining.retraining_decision(1200, 1000, 100)[0]
    retrain, reason = retraining.retraining_decision(1050, 1000, 100)
    assert not retrain and "only 50" in reason
    assert retraining.retraining_decision(300, 1000, 100)[
        0
    ]  # the table was rebuilt: all rows are new


# --- the inference table on Spark -----------------------------------------------------------


@pytest.fixture(scope="module")
def inference_table():
    name = "test_inference_log"
    requests = pd.DataFrame({"request_id": [f"r{i}" for i in range(6)], "x": np.arange(6.0)})
    inference_log.log_inferences(
        inference_log.inference_rows(requests.head(3), [1, 0, 1], 1, DAY1), name
    )
    inference_log.log_inferences(
        inference_log.inference_rows(requests.tail(3), [0, 0, 1], 2, DAY2), name
    )
    inference_log.log_inferences(
        inference_log.inference_rows(requests.tail(3), [0, 0, 1], 2, DAY2), name
    )  # replayed
    return name


def _snapshot(name: str) -> pd.DataFrame:
    from utils.tables import read_table

    return read_table(name).toPandas().sort_values("request_id", ignore_index=True)


@pytest.mark.spark
def test_logging_is_keyed_by_request_id_and_labels_start_empty(inference_table):
    snapshot = _snapshot(inference_table)
    assert len(snapshot) == 6
    assert snapshot["actual_label"].isna().all() and snapshot["labelled_at"].isna().all()
    assert inference_log.label_status(inference_table) == {"rows": 6, "labelled": 0}


@pytest.mark.spark
def test_label_merge_is_idempotent_and_reports_unknown_keys(inference_table):
    labels = pd.DataFrame(
        {
            "request_id": ["r0", "r1", "r3", "r4", "ghost-1", "ghost-2"],
            "actual_label": [1, 1, 0, 1, 0, 1],
            "labelled_at": pd.Timestamp("2026-03-05 08:00"),
        }
    )
    first = inference_log.merge_labels(labels, inference_table, unknown_table="test_unknown_labels")
    assert (first.received, first.labelled, first.unchanged, first.unknown) == (6, 4, 0, 2)
    assert sorted(first.unknown_examples) == ["ghost-1", "ghost-2"]
    after_first = _snapshot(inference_table)
    assert after_first.set_index("request_id").loc["r1", "actual_label"] == 1

    second = inference_log.merge_labels(
        labels, inference_table, unknown_table="test_unknown_labels"
    )
    assert (second.labelled, second.unchanged, second.unknown) == (0, 4, 2)
    pd.testing.assert_frame_equal(_snapshot(inference_table), after_first)
    assert _snapshot("test_unknown_labels")["request_id"].tolist() == ["ghost-1", "ghost-2"]

    corrected = inference_log.merge_labels(labels.head(1).assign(actual_label=0), inference_table)
    assert (corrected.labelled, corrected.unchanged) == (1, 0)
    assert inference_log.label_status(inference_table) == {"rows": 6, "labelled": 4}


@pytest.mark.spark
def test_accuracy_by_version_and_window(inference_table):
    labels = pd.DataFrame(
        {"request_id": ["r0", "r1", "r2", "r3", "r4", "r5"], "actual_label": [1, 0, 0, 0, 1, 1]}
    )
    inference_log.merge_labels(labels, inference_table)
    frame = inference_log.accuracy_by_version(inference_table, window="1 day")
    by_version = frame.set_index("model_version")
    # version 1 predicted [1, 0, 1] for truth [1, 0, 0]; version 2 [0, 0, 1] for [0, 1, 1]
    assert by_version.loc[1, "accuracy"] == pytest.approx(2 / 3)
    assert by_version.loc[2, "accuracy"] == pytest.approx(2 / 3)
    assert by_version["scored"].tolist() == [3, 3]
    training = retraining.labelled_rows(inference_table, ["x"], label_as="y")
    assert list(training.columns) == ["x", "y"] and len(training) == 6


@pytest.mark.spark
def test_merge_rejects_labels_without_the_key(inference_table):
    from utils.tables import SchemaMismatchError

    with pytest.raises(SchemaMismatchError, match="request_id"):
        inference_log.merge_labels(
            pd.DataFrame({"id": ["r0"], "actual_label": [1]}), inference_table
        )


@pytest.mark.spark
def test_logging_again_and_gaps_in_a_feed_keep_merged_labels():
    name = "test_inference_relog"
    requests = pd.DataFrame({"request_id": ["a", "b", "c"], "x": [1.0, 2.0, 3.0]})
    inference_log.log_inferences(inference_log.inference_rows(requests, [1, 0, 1], 1, DAY1), name)
    labels = pd.DataFrame({"request_id": ["a", "b"], "actual_label": [1, 0]})
    inference_log.merge_labels(labels, name)
    inference_log.log_inferences(
        inference_log.inference_rows(requests, [1, 0, 1], 1, DAY1), name
    )  # a retried request
    gaps = pd.DataFrame({"request_id": ["a", "c"], "actual_label": pd.array([None, 1], "Int64")})
    report = inference_log.merge_labels(gaps, name)
    assert (report.labelled, report.empty) == (1, 1)
    stored = _snapshot(name).set_index("request_id")["actual_label"]
    assert stored.to_dict() == {"a": 1, "b": 0, "c": 1}
