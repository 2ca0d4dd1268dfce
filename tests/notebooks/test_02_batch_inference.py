"""Chapter 02 end to end on local Spark: every row scored once, and a re-run adds nothing."""

import pytest

pytestmark = [pytest.mark.notebooks, pytest.mark.spark]
N_ROWS = 2_000


@pytest.fixture(scope="module")
def result(run_chapter):
    return run_chapter(
        "02_batch_inference",
        N_ROWS=N_ROWS,
        COMPARE_ROWS=20_000,
        RAW_TABLE="churn_raw_02",
        PREDICTIONS_TABLE="churn_predictions_02",
    )


def test_every_input_row_has_one_prediction(result):
    assert result.recorded["input_rows"] == N_ROWS
    assert result.recorded["predictions_rows"] == N_ROWS


def test_rerun_updates_instead_of_duplicating(result):
    assert result.recorded["rows_after_rerun"] == N_ROWS
    assert result.recorded["duplicate_keys_after_rerun"] == 0
    assert result.recorded["rerun_updated"] == N_ROWS


def test_predictions_carry_the_champion_version(result):
    assert result.recorded["stored_model_versions"] == [result.recorded["model_version"]]
    assert result.recorded["batch_accuracy"] > 0.75


def test_both_scoring_paths_were_measured(result):
    assert result.recorded["inprocess_rows_per_s"] > 0
    assert result.recorded["spark_rows_per_s"] > 0
    assert result.recorded["spark_master"].startswith("local")


def test_scores_customers_the_champion_was_not_trained_on(result):
    assert result.recorded["training_rows_checked"] > 1_000
    assert result.recorded["rows_seen_in_training"] == 0


def test_comparison_set_is_exactly_compare_rows(result):
    assert result.recorded["compare_rows"] == 20_000
