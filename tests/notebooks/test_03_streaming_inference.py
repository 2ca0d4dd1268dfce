"""Chapter 03 end to end: table and folder streams, restart and replay, each row once."""

import pytest

pytestmark = [pytest.mark.notebooks, pytest.mark.spark]
BATCH_ROWS, FIRST, LATER = 200, 2, 2


@pytest.fixture(scope="module")
def result(run_chapter):
    return run_chapter(
        "03_streaming_inference",
        N_ROWS=1_500,
        RAW_TABLE="churn_raw_03",
        BATCH_ROWS=BATCH_ROWS,
        FIRST_BATCHES=FIRST,
        LATER_BATCHES=LATER,
    )


def test_table_stream_scores_every_row(result):
    assert result.recorded["table_rows_in"] == 1_500
    assert result.recorded["table_rows_out"] == 1_500


def test_restart_reads_only_new_files(result):
    assert result.recorded["rows_first_run"] == FIRST * BATCH_ROWS
    assert result.recorded["rows_after_restart"] == LATER * BATCH_ROWS
    assert result.recorded["rows_nothing_new"] == 0


def test_every_landed_row_scored_exactly_once_even_after_a_replay(result):
    assert result.recorded["rows_replayed"] == BATCH_ROWS
    assert result.recorded["landing_rows_in"] == (FIRST + LATER) * BATCH_ROWS
    assert result.recorded["landing_rows_out"] == result.recorded["landing_rows_in"]
    assert result.recorded["duplicate_keys"] == 0


def test_streamed_predictions_are_right_on_labelled_rows(result):
    assert result.recorded["stream_accuracy"] > 0.75
