"""Chapter 09 end to end: inference table, late labels merged idempotently, monitoring,
retraining through the gate, and the retraining job of databricks.yml run locally."""

import pytest

pytestmark = pytest.mark.notebooks

REQUESTS_PER_DAY, DAYS, LABEL_BATCHES, UNKNOWN = 500, 3, 3, 4


@pytest.fixture(scope="module")
def result(run_chapter):
    return run_chapter(
        "09_inference_tables_and_retraining",
        REQUESTS_PER_DAY=REQUESTS_PER_DAY,
        DAYS=DAYS,
        DRIFT_FROM_DAY=1,
        LABEL_BATCHES=LABEL_BATCHES,
        UNKNOWN_LABELS_PER_BATCH=UNKNOWN,
        MIN_NEW_LABELS=500,
        JOB_REQUESTS=500,
        JOB_MIN_NEW_LABELS=200,
    )


def test_every_request_is_logged_and_90_percent_get_labels(result):
    recorded = result.recorded
    assert recorded["inference_rows"] == REQUESTS_PER_DAY * DAYS
    assert recorded["labels_merged"] == int(0.9 * REQUESTS_PER_DAY * DAYS)


def test_unknown_labels_are_counted_and_kept(result):
    assert result.recorded["unknown_labels"] == LABEL_BATCHES * UNKNOWN
    assert result.recorded["unknown_labels_kept"] == LABEL_BATCHES * UNKNOWN


def test_merging_a_batch_again_changes_nothing(result):
    recorded = result.recorded
    assert recorded["remerge_labelled"] == 0
    assert recorded["remerge_unchanged"] == int(0.9 * REQUESTS_PER_DAY * DAYS) // LABEL_BATCHES
    before, after = recorded["labelled_rows_before_after_remerge"]
    assert before == after == recorded["labels_merged"]


def test_monitoring_sees_the_drift_and_the_accuracy_drop(result):
    psi = result.recorded["psi"]
    assert psi["Age"] > 0.25
    assert max(v for k, v in psi.items() if k != "Age") < 0.1
    days = result.recorded["accuracy_by_day"]
    assert len(days) == DAYS
    assert days[0]["accuracy"] > days[-1]["accuracy"]


def test_retrained_candidate_went_through_the_gate(result):
    recorded = result.recorded
    assert recorded["retrained"] is True
    assert isinstance(recorded["candidate_version"], int)
    if recorded["candidate_promoted"]:
        assert recorded["champion_version"] == recorded["candidate_version"]
    else:
        assert recorded["candidate_reasons"]
        assert recorded["champion_version"] != recorded["candidate_version"]


def test_local_workflow_run_completes_every_task(result):
    assert result.recorded["job_ok"] is True
    assert result.recorded["job_tasks"] == {
        "score": "ok",
        "merge_labels": "ok",
        "retrain": "ok",
        "validate": "ok",
    }


def test_drift_reference_is_the_champions_logged_training_set(result):
    assert result.recorded["drift_reference_datasets"] == ["churn-training-rows"]
    assert result.recorded["drift_reference_rows"] > 1_000
