"""Chapter 10 end to end with a small evaluation (8 questions, 6 hand-graded answers), on the
real local endpoint, real MLflow judges and real tables."""

from __future__ import annotations

import pytest

from utils.rag.judges import promotion_decision

pytestmark = pytest.mark.notebooks

N_QUESTIONS, N_CALIBRATION = 8, 6


@pytest.fixture(scope="module")
def result(run_chapter):
    return run_chapter(
        "10_rag_evaluation", N_QUESTIONS=N_QUESTIONS, N_CALIBRATION=N_CALIBRATION, MAX_TOKENS=32
    )


def test_every_question_is_answered_stored_and_scored(result):
    recorded = result.recorded
    assert recorded["questions"] == N_QUESTIONS
    assert recorded["eval_table_rows"] == N_QUESTIONS
    assert recorded["predictions_rows"] == N_QUESTIONS
    assert recorded["scored_rows"] == N_QUESTIONS
    assert 30 <= recorded["passages"] <= 200


def test_retrieval_finds_the_answering_passage(result):
    # 6 of the first 8 questions get their passage in the top 2 with MiniLM (deterministic)
    assert result.recorded["retrieval_hit_rate"] >= 0.6


def test_local_judges_always_answer_in_the_rubric(result):
    # the endpoint chooses among allowed values, so no row may lack a judge result
    assert result.recorded["judge_error_rate"] == 0.0
    metrics = result.recorded["metrics"]
    assert 0.0 <= metrics["correctness_rate"] <= 1.0
    assert 1.0 <= metrics["professionalism_mean"] <= 5.0


def test_calibration_is_computed_on_every_graded_answer(result):
    assert result.recorded["calibration_rows"] == N_CALIBRATION
    for name in ("correctness_agreement", "professionalism_agreement"):
        stats = result.recorded[name]
        assert stats["graded"] == N_CALIBRATION and stats["not_graded"] == 0
        assert "kappa" in stats and 0.0 <= stats["exact_agreement"] <= 1.0


def test_production_alias_follows_the_thresholds(result):
    recorded = result.recorded
    limits = dict(recorded["thresholds"])
    maximum = {"judge_error_rate": limits.pop("judge_error_rate_max")}
    expected = promotion_decision(recorded["metrics"], limits, maximum)
    assert recorded["promoted"] == expected.promote
    assert recorded["promotion_reasons"] == expected.reasons
    has_production = recorded["aliases"].get("production") == recorded["model_version"]
    assert has_production == recorded["promoted"]


def test_bad_input_and_failures_are_explained(result):
    recorded = result.recorded
    assert "empty" in recorded["empty_question_error"]
    assert "words" in recorded["long_question_warning"]
    assert "start_llm_server" in recorded["endpoint_down_error"]
    assert recorded["unparseable_rows"] >= 1  # recorded as errors, and the evaluation finished
    assert recorded["server_stopped"] is True
