"""Chapter 01 end to end: two registered versions, aliases, and an exact reload."""

import pytest

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def result(run_chapter):
    return run_chapter("01_train_and_register", N_ROWS=4_000)


def test_champion_learns_churn(result):
    assert result.recorded["test_auc"] >= 0.75
    assert 0.7 <= result.recorded["test_accuracy"] <= 1
    assert result.recorded["test_f1"] > 0.3


def test_two_versions_with_champion_and_challenger(result):
    aliases = result.recorded["aliases"]
    assert set(aliases) >= {"champion", "challenger"}
    assert aliases["champion"] == result.recorded["champion_version"]
    assert aliases["challenger"] == result.recorded["challenger_version"]
    assert result.recorded["champion_version"] != result.recorded["challenger_version"]


def test_champion_reloads_with_identical_predictions(result):
    assert result.recorded["reload_mismatches"] == 0


def test_unknown_alias_error_lists_the_aliases(result):
    message = result.recorded["unknown_alias_error"]
    assert "no alias 'production'" in message and "champion" in message


def test_the_champion_run_keeps_its_training_rows(result):
    assert result.recorded["training_inputs"] == ["churn-training-rows"]
    assert result.recorded["training_rows_logged"] == result.recorded["training_rows"] == 3_000
