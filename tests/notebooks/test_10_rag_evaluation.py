"""Chapter 10 end to end with a small evaluation (4 questions, 4 hand-graded answers), on the
real llama.cpp endpoint, real MLflow judges, traces and feedback, and real tables."""

from __future__ import annotations

import pytest

from utils.rag.judges import promotion_decision

pytestmark = pytest.mark.notebooks

N_QUESTIONS, N_CALIBRATION = 4, 4
# benchmarks/rag_eval.py times the chapter with these too (goal: at most 90 s)
PARAMETERS = {"N_QUESTIONS": N_QUESTIONS, "N_CALIBRATION": N_CALIBRATION, "MAX_TOKENS": 32,
              "JUDGE_MAX_TOKENS": 48}


@pytest.fixture(scope="module")
def result(run_chapter):
    return run_chapter("10_rag_evaluation", **PARAMETERS)


def test_every_question_is_answered_traced_stored_and_scored(result):
    recorded = result.recorded
    assert recorded["questions"] == recorded["scored_rows"] == N_QUESTIONS
    assert recorded["eval_table_rows"] == N_QUESTIONS
    assert recorded["results_rows_for_version"] == N_QUESTIONS
    assert recorded["metrics"]["answer_errors"] == 0
    assert 30 <= recorded["passages"] <= 200
    assert {"answer_question", "retrieve", "build_prompt", "generate"} <= set(
        recorded["trace_span_names"])


def test_judges_get_schema_valid_json(result):
    recorded = result.recorded
    assert recorded["structured_reply"]["result"] in {"yes", "no"}
    assert recorded["metrics"]["judge_error_rate"] == 0.0  # grammar-constrained replies
    assert 0.0 <= recorded["metrics"]["correctness_rate"] <= 1.0
    assert 1.0 <= recorded["metrics"]["professionalism_mean"] <= 5.0
    assert recorded["metrics"]["retrieval_hit_rate"] >= 0.5


def test_second_evaluation_reads_the_stored_traces(result):
    recorded = result.recorded
    assert recorded["regraded_rows"] == N_QUESTIONS
    assert recorded["regraded_same_answers"] is True
    assert recorded["regraded_errors"] == 0


def test_hand_grades_come_back_from_the_traces_and_are_compared(result):
    recorded = result.recorded
    assert recorded["calibration_rows"] == recorded["human_grades_read_back"] == N_CALIBRATION
    rows = {row["scorer"]: row for row in recorded["agreement"]}
    assert set(rows) == {"correctness", "correctness_1_5", "semantic_similarity",
                         "professionalism"}
    for row in rows.values():
        assert row["graded"] + row["not_graded"] == N_CALIBRATION
        assert 0.0 <= row["exact_agreement"] <= 1.0
    assert recorded["align_outcome"]  # aligned, or the reason it could not run


def test_production_alias_follows_the_thresholds(result):
    recorded = result.recorded
    limits = recorded["thresholds"]
    expected = promotion_decision(recorded["metrics"], limits["minimums"], limits["maximums"])
    assert recorded["promoted"] == expected.promote
    assert recorded["promotion_reasons"] == expected.reasons
    has_production = recorded["aliases"].get("production") == recorded["model_version"]
    assert has_production == recorded["promoted"]


def test_bad_input_and_failures_are_explained(result):
    bad = result.recorded["bad_input"]
    assert "empty" in bad["empty_question"]
    assert "words" in bad["long_question"]
    assert "start_llm_server" in bad["endpoint_down"]
    assert bad["over_limit"]["status"] == 400 and "stop" in bad["over_limit"]["message"]
    assert result.recorded["server_stopped"] is True
