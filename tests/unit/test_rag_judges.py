"""Reading judge results, agreement with people, and the promotion rule."""

from __future__ import annotations

import math
import os

import pandas as pd
import pytest

from utils.rag.judges import (
    JudgeValueError,
    agreement,
    ari_grade,
    calibration_table,
    correctness_value,
    count_tokens,
    grade_value,
    promotion_decision,
    scores_frame,
    summary_metrics,
    trust_verdict,
    try_align,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("value, expected", [("yes", 1), ("No", 0), (True, 1), ('"yes"', 1),
                                             ("false", 0)])
def test_correctness_values(value, expected):
    assert correctness_value(value) == expected


def test_correctness_value_from_mlflow_enum():
    from mlflow.genai.judges import CategoricalRating

    assert correctness_value(CategoricalRating.YES) == 1


@pytest.mark.parametrize("value, expected", [(4, 4), ("4", 4), ("4.0", 4), ("3/5", 3), (" 5 ", 5)])
def test_grade_values(value, expected):
    assert grade_value(value) == expected


@pytest.mark.parametrize("value", ["maybe", "", None])
def test_unreadable_correctness(value):
    with pytest.raises(JudgeValueError, match="neither yes nor no"):
        correctness_value(value)


@pytest.mark.parametrize("value", [0, 6, "4.5", "very professional", None])
def test_unreadable_grades(value):
    with pytest.raises(JudgeValueError, match="not a grade"):
        grade_value(value)


def result_df() -> pd.DataFrame:
    """The columns `mlflow.genai.evaluate(...).result_df` has (checked on MLflow 3.17)."""
    nan = float("nan")
    return pd.DataFrame({
        "trace_id": ["tr-1", "tr-2", "tr-3"],
        "request": [{"question_id": "q1", "question": "Q1?"}, {"question_id": "q2",
                    "question": "Q2?"}, {"question_id": "q3", "question": "Q3?"}],
        "response": [{"answer": "a1"}, {"answer": "a2"}, None],
        "correctness/value": ["yes", None, "perhaps"],
        "correctness/rationale": ["r", None, "r"],
        "correctness/error_message": [None, "Failed to parse response from judge model", None],
        "professionalism/value": [5, 2, 7],
        "professionalism/rationale": ["r", "r", "r"],
        "semantic_similarity/value": [0.9, 0.4, 0.2],
        "retrieval_hit/value": [True, False, True],
        "token_count/value": [10, 20, 30],
        "readability_grade/value": [6.0, 5.0, nan],
    })


def test_scores_frame_keeps_errors_per_row():
    scores = scores_frame(result_df())
    assert scores["question_id"].tolist() == ["q1", "q2", "q3"]
    assert scores["trace_id"].tolist() == ["tr-1", "tr-2", "tr-3"]
    assert scores["answer"].tolist()[:2] == ["a1", "a2"] and scores["answer"][2] is None
    assert scores["correctness"].tolist()[0] == 1
    assert pd.isna(scores.loc[1, "correctness"])
    assert "parse" in scores.loc[1, "correctness_error"]
    assert "neither yes nor no" in scores.loc[2, "correctness_error"]  # outside the rubric
    assert scores["professionalism"].tolist()[:2] == [5, 2]
    assert "not a grade" in scores.loc[2, "professionalism_error"]
    assert pd.isna(scores.loc[2, "readability_grade"])
    assert "correctness_1_5" not in scores  # a judge that was not run gets no column


def test_summary_counts_judge_errors():
    metrics = summary_metrics(scores_frame(result_df()))
    assert metrics["rows"] == 3
    assert metrics["correctness_rate"] == 1.0  # the only readable verdict
    assert metrics["retrieval_hit_rate"] == pytest.approx(2 / 3)
    assert metrics["judge_error_rate"] == pytest.approx(2 / 3)
    assert metrics["judge_errors"] == 2 and metrics["answer_errors"] == 1
    assert math.isnan(metrics["correctness_1_5_mean"])


def test_agreement_binary_and_ordinal():
    perfect = agreement([1, 0, 1, 0], [1, 0, 1, 0], "binary")
    assert perfect["kappa"] == pytest.approx(1.0) and perfect["exact_agreement"] == 1.0
    ordinal = agreement([5, 4, 2, 1], [4, 4, 2, 1], "ordinal")
    assert ordinal["spearman"] > 0.9 and 0 < ordinal["kappa"] <= 1


def test_agreement_leaves_out_ungraded_rows_and_flags_constant_judges():
    stats = agreement([1, 0, 1], [1, None, 1], "binary")
    assert stats["graded"] == 2 and stats["not_graded"] == 1
    assert math.isnan(stats["kappa"])  # the judge said "yes" to everything
    assert "cannot tell answers apart" in trust_verdict(stats)
    with pytest.raises(ValueError, match="binary"):
        agreement([1, 2], [1, 2], "interval")


def test_trust_verdict_words():
    assert "usable" in trust_verdict({"kappa": 0.8})
    assert "loosely" in trust_verdict({"kappa": 0.3})
    assert "chance" in trust_verdict({"kappa": 0.05, "spearman": -0.1})


def test_promotion_passes_only_when_every_check_passes():
    metrics = {"correctness_rate": 0.8, "retrieval_hit_rate": 0.9, "judge_error_rate": 0.0}
    passing = promotion_decision(metrics, {"correctness_rate": 0.7, "retrieval_hit_rate": 0.8},
                                 {"judge_error_rate": 0.1})
    assert passing.promote and passing.reasons == []
    failing = promotion_decision(
        {**metrics, "judge_error_rate": 0.5, "professionalism_mean": float("nan")},
        {"correctness_rate": 0.9, "professionalism_mean": 3.0}, {"judge_error_rate": 0.1},
    )
    assert not failing.promote
    assert failing.reasons == [
        "correctness_rate = 0.800, needs >= 0.9",
        "professionalism_mean was not measured (needs >= 3.0)",
        "judge_error_rate = 0.500, needs <= 0.1",
    ]
    assert failing.checks["correctness_rate"]["passed"] is False


def test_readability_grade_offline():
    easy = ari_grade("The cat sat on the mat. It was warm.")
    hard = ari_grade(
        "Institutional interoperability necessitates comprehensive organizational standardization."
    )
    assert easy < 5 < 15 < hard
    assert ari_grade("") == 0.0


def test_calibration_table_puts_judges_and_scorers_side_by_side():
    joined = pd.DataFrame({
        "human_correctness": ["yes", "no", "yes", "no"],
        "human_professionalism": [5, 2, 4, 1],
        "correctness": [1, 1, 1, 1],  # always yes: cannot tell answers apart
        "correctness_1_5": [5, 1, 4, None],
        "semantic_similarity": [0.9, 0.2, 0.8, 0.3],
        "professionalism": [5, 3, 4, 1],
    })
    table = calibration_table(joined).set_index("scorer")
    assert list(table.index) == ["correctness", "correctness_1_5", "semantic_similarity",
                                 "professionalism"]
    assert "cannot tell" in table.loc["correctness", "verdict"]
    assert table.loc["correctness_1_5", "not_graded"] == 1
    assert table.loc["semantic_similarity", "kappa"] == pytest.approx(1.0)
    assert table.loc["professionalism", "spearman"] > 0.9


def test_try_align_reports_why_instead_of_raising():
    class NoJudge:
        model = "openai:/none"

        def align(self, traces, optimizer):
            raise RuntimeError("needs human feedback\nmore detail")

    judge, outcome = try_align(NoJudge(), [])
    assert judge is None and outcome.startswith(("RuntimeError", "MlflowException",
                                                 "ImportError", "ModuleNotFoundError"))


def test_token_count():
    assert count_tokens("An alias, champion.") == 5
    assert count_tokens("") == 0


def test_a_remote_endpoint_without_a_key_is_refused_with_where_to_put_one(monkeypatch):
    from utils.rag.client import MissingAPIKeyError, api_key_for, chat
    from utils.rag.judges import point_judges_at

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)  # point_judges_at sets it: restore it
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:1/v1")
    remote = "https://example.cloud.databricks.com/serving-endpoints"
    with pytest.raises(MissingAPIKeyError, match="LLM_SECRET_SCOPE"):
        point_judges_at(remote)
    with pytest.raises(MissingAPIKeyError, match="OPENAI_API_KEY"):
        chat(remote, "some-model", [{"role": "user", "content": "hi"}])  # refused before sending
    assert "OPENAI_API_KEY" not in os.environ  # a refusal changes nothing
    assert os.environ["OPENAI_API_BASE"] == "http://127.0.0.1:1/v1"
    for local in ("http://127.0.0.1:8800/v1", "http://localhost:8800/v1", "http://[::1]:80/v1"):
        assert api_key_for(local) == "local"  # the local endpoint accepts any key
    assert api_key_for(remote, "token") == "token"
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    point_judges_at(remote)
    assert os.environ["OPENAI_API_KEY"] == "from-env"
