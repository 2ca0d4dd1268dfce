"""Evaluation rows, the predict_fn, per-version result rows, and hand grades stored on traces
as HUMAN feedback and read back (on a real MLflow SQLite store)."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

from utils.rag import evaluation
from utils.rag.judges import CORRECTNESS, PROFESSIONALISM


@pytest.fixture
def tracking(tmp_path):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(
        "hand-grades", artifact_location=str(tmp_path / "artifacts")))
    yield
    mlflow.set_tracking_uri(previous)


@pytest.mark.unit
def test_evaluation_data_carries_ids_and_expectations():
    questions = evaluation.load_questions(limit=2)
    rows = evaluation.evaluation_data(questions)
    assert rows[0]["inputs"] == {"question_id": "q01", "question": questions.loc[0, "question"]}
    assert set(rows[0]["expectations"]) == {"expected_response", "passage_id"}


@pytest.mark.integration
def test_predict_fn_answers_one_question_with_a_loaded_model(tracking):
    class OneAnswer:  # stands in for a loaded pyfunc in this one-function test
        def predict(self, frame):
            assert frame["question"].tolist() == ["Why?"]
            return pd.DataFrame({"answer": ["Because."], "passage_ids": [("a:0",)],
                                 "warning": [""]})

    predict = evaluation.chatbot_predict_fn(OneAnswer())
    assert predict(question_id="q1", question="Why?") == "Because."  # all the judges see


@pytest.mark.unit
def test_results_rows_are_keyed_by_version_without_rationales():
    scores = pd.DataFrame({"question_id": ["q1"], "answer": ["a"],
                           "correctness": pd.array([1], dtype="Int64"),
                           "correctness_rationale": ["long text"], "correctness_error": [None]})
    rows = evaluation.results_rows(scores, 3, "run-1")
    assert rows.loc[0, "model_version"] == "3" and rows.loc[0, "run_id"] == "run-1"
    assert "correctness_rationale" not in rows
    assert rows.loc[0, "correctness_error"] == ""  # a column Spark can type
    assert rows["correctness"].dtype == "float64"


@pytest.mark.integration
def test_hand_grades_are_stored_on_traces_and_read_back(tracking):
    graded = evaluation.load_calibration(limit=4)
    trace_ids = evaluation.log_graded_traces(graded)
    assert len(set(trace_ids)) == 4
    traces = [mlflow.get_trace(t) for t in trace_ids]
    human = evaluation.human_grades(traces)
    assert human["question_id"].tolist() == graded["example_id"].tolist()
    assert human[f"human_{CORRECTNESS}"].tolist() == graded["human_correct"].tolist()
    assert human[f"human_{PROFESSIONALISM}"].tolist() == graded["human_professionalism"].tolist()
    expectations = [a for a in traces[0].info.assessments if a.expectation is not None]
    assert expectations[0].expectation.value == graded.loc[0, "reference_answer"]


@pytest.mark.spark
def test_a_spark_udf_answers_the_evaluation_table_as_rows_to_evaluate(tracking, tmp_path):
    """The Databricks path of chapter 10, run on the local Spark session and endpoint: the
    registered chatbot as a UDF over the questions, the endpoint named through `extra_env`
    (the model's own config points at a closed port), the answers as static rows."""
    import numpy as np

    from utils.rag import shipping
    from utils.rag.llm import start_llm_server
    from utils.rag.retriever import Passage, Retriever
    from utils.spark import get_spark

    retriever_dir = Retriever(
        [Passage("model-aliases:0", "model-aliases", "Aliases",
                 "An alias is a movable name for one version of a registered model.")],
        np.ones((1, 384), dtype=np.float32),
    ).save(tmp_path / "retriever")
    questions = evaluation.load_questions(limit=2)
    with start_llm_server() as server, mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="chatbot", python_model=str(shipping.MODEL_CODE),
            artifacts={"retriever": str(retriever_dir)},
            model_config={"base_url": "http://127.0.0.1:9/v1", "model": server.model_name,
                          "max_tokens": 8},
            code_paths=shipping.stage_code_paths(tmp_path / "code"),
            pip_requirements=shipping.chatbot_requirements(),
        )
        answered = evaluation.batch_answers(get_spark().createDataFrame(questions),
                                            info.model_uri, {"LLM_BASE_URL": server.base_url})
        answered = answered.toPandas()
    assert answered["question_id"].tolist() == questions["question_id"].tolist()
    assert answered["answer"].str.strip().str.len().gt(0).all()
    assert answered["passage_ids"].map(list).tolist() == [["model-aliases:0"]] * 2
    rows = evaluation.answered_rows(answered)
    assert [row["outputs"] for row in rows] == answered["answer"].tolist()
    assert rows[0]["expectations"]["passage_id"] == questions.loc[0, "passage_id"]
