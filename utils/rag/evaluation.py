"""The chatbot's evaluation data: the question set, the rows and `predict_fn` that
`mlflow.genai.evaluate` reads (or a Spark UDF's answers over the evaluation table as rows),
per-version result rows for a table, the hand-graded calibration set stored as HUMAN feedback
on traces (and read back), and the pictures."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from utils.env import REPO_ROOT

DATA_DIR = REPO_ROOT / "data"
CORPUS_DIR = DATA_DIR / "rag_corpus"
QUESTIONS_CSV = DATA_DIR / "questions_evaluation.csv"
CALIBRATION_CSV = DATA_DIR / "rag_judge_calibration.csv"
QUESTION_COLUMNS = ["question_id", "question", "reference_answer", "passage_id"]
CALIBRATION_COLUMNS = ["example_id", "question", "answer", "reference_answer", "human_correct",
                       "human_professionalism"]


def load_questions(
    path: str | Path = QUESTIONS_CSV, passage_ids: Iterable[str] | None = None, limit: int = 0
) -> pd.DataFrame:
    """The evaluation questions, checked: the columns, unique ids and questions, and (given
    the retriever's `passage_ids`) that every answering passage exists. `limit` keeps the
    first rows (0 = all)."""
    questions = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in QUESTION_COLUMNS if c not in questions.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; it needs {QUESTION_COLUMNS}.")
    for column in ("question_id", "question"):
        repeated = questions[column][questions[column].duplicated()].tolist()
        if repeated:
            raise ValueError(f"{path}: {column} values repeat: {repeated[:3]}.")
    if passage_ids is not None:
        unknown = sorted(set(questions["passage_id"]) - set(passage_ids))
        if unknown:
            raise ValueError(
                f"{path} names passages the corpus does not have: {unknown[:5]}. Passage ids "
                "depend on the chunking: rebuild the retriever with the default chunk size or "
                "update the file."
            )
    return questions.head(limit) if limit else questions


def evaluation_data(questions: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows for `mlflow.genai.evaluate(predict_fn=...)`: the inputs the chatbot answers (with
    the question id, so results join on it) and the expectations the scorers compare with."""
    return [
        {
            "inputs": {"question_id": r["question_id"], "question": r["question"]},
            "expectations": {
                "expected_response": r["reference_answer"],
                "passage_id": r["passage_id"],
            },
        }
        for r in questions.to_dict("records")
    ]


def chatbot_predict_fn(model) -> Callable[..., str]:
    """`predict_fn` for `mlflow.genai.evaluate`: one question through a loaded chatbot model,
    its answer as the row's outputs (what the judges read, and nothing else).

    The chatbot's own spans (retrieve, build_prompt, generate) nest in the trace evaluate
    opens for the row, so a scorer finds the retrieved passages there; an error (empty
    question, endpoint down) fails that row only.
    """

    import mlflow

    @mlflow.trace(name="predict")  # the trace's root: its inputs carry the question id
    def predict(question_id: str, question: str) -> str:
        return str(model.predict(pd.DataFrame({"question": [question]})).loc[0, "answer"])

    return predict


# The chatbot model's outputs as a Spark type (OUTPUT_COLUMNS in utils.rag.chatbot)
ANSWER_TYPE = "answer string, passage_ids array<string>, warning string"


def batch_answers(questions, model_uri: str, extra_env: Mapping[str, str] | None = None):
    """Every question of `questions` (a Spark DataFrame, e.g. the evaluation table) answered by
    the chatbot model as a Spark UDF, as chapter 02 scores its table: the frame's columns plus
    answer, passage_ids and warning. `extra_env` reaches the model on the executors, which do
    not see the driver's environment (the endpoint's URL and token on Databricks)."""
    import mlflow
    from pyspark.sql import functions as F

    chatbot = mlflow.pyfunc.spark_udf(questions.sparkSession, model_uri, result_type=ANSWER_TYPE,
                                      extra_env=dict(extra_env or {}))
    replied = questions.withColumn("reply", chatbot(F.struct("question")))
    return replied.select(*questions.columns, "reply.*")


def answered_rows(answered: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows for `mlflow.genai.evaluate` without a `predict_fn`: `evaluation_data`'s inputs and
    expectations, each row's precomputed answer as its outputs (`batch_answers`, as pandas)."""
    rows = evaluation_data(answered)
    for row, answer in zip(rows, answered["answer"], strict=True):
        row["outputs"] = answer
    return rows


def results_rows(scores: pd.DataFrame, model_version: str | int, run_id: str) -> pd.DataFrame:
    """Per-question results of one evaluation, for a table keyed by (question_id,
    model_version): re-evaluating a version replaces its rows, a new version adds rows."""
    keep = [c for c in scores.columns if not c.endswith("_rationale")]
    frame = scores[keep].copy()
    frame["model_version"] = str(model_version)
    frame["run_id"] = run_id
    frame["evaluated_at"] = pd.Timestamp.now(tz="UTC").floor("s")
    # Spark infers one type per column and none from a column of nulls: grades as floats
    # (NaN when a judge failed), text as text ("" for no error).
    for column in frame.columns:
        if str(frame[column].dtype) in ("Int64", "boolean"):
            frame[column] = frame[column].astype("float64")
        elif frame[column].dtype == object:
            frame[column] = frame[column].map(lambda v: "" if v is None else str(v))
    return frame


def load_calibration(path: str | Path = CALIBRATION_CSV, limit: int = 0) -> pd.DataFrame:
    """Hand-graded answers (`data/rag_grading_rule.md` has the rule); `limit` keeps the first
    rows, which alternate correct and incorrect answers, so a sample still holds both."""
    graded = pd.read_csv(path, dtype={"human_professionalism": int})
    missing = [c for c in CALIBRATION_COLUMNS if c not in graded.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; it needs {CALIBRATION_COLUMNS}.")
    bad = graded[~graded["human_correct"].isin(["yes", "no"])]
    if len(bad):
        raise ValueError(f"{path}: human_correct must be yes or no; rows {bad.index.tolist()}.")
    bad = graded[~graded["human_professionalism"].between(1, 5)]
    if len(bad):
        raise ValueError(f"{path}: human_professionalism must be 1-5; rows {bad.index.tolist()}.")
    return graded.head(limit) if limit else graded


def log_graded_traces(graded: pd.DataFrame, grader: str = "hand-grades") -> list[str]:
    """One trace per hand-graded answer (question in, answer out, the reference as an
    expectation) with the hand grades on it as HUMAN feedback named like the judges, which is
    what `judge.align()` and the calibration read back. Returns the trace ids."""
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType, SpanType

    from utils.rag.judges import CORRECTNESS, PROFESSIONALISM

    human = AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id=grader)
    records = graded.to_dict("records")
    trace_ids = []
    for r in records:
        with mlflow.start_span(name="graded_answer", span_type=SpanType.CHAIN) as span:
            span.set_inputs({"question_id": r["example_id"], "question": r["question"]})
            span.set_outputs(r["answer"])
        trace_ids.append(span.trace_id)
    mlflow.flush_trace_async_logging()  # traces are written in the background: wait for them
    for trace_id, r in zip(trace_ids, records, strict=True):
        mlflow.set_trace_tag(trace_id, "dataset", "rag_judge_calibration")
        mlflow.log_expectation(trace_id=trace_id, name="expected_response",
                               value=r["reference_answer"])
        mlflow.log_feedback(trace_id=trace_id, name=CORRECTNESS, value=r["human_correct"],
                            source=human)
        mlflow.log_feedback(trace_id=trace_id, name=PROFESSIONALISM,
                            value=int(r["human_professionalism"]), source=human)
    return trace_ids


def human_grades(traces: Iterable) -> pd.DataFrame:
    """The HUMAN feedback stored on traces, one row per trace: trace_id, question_id and one
    column per feedback name (the latest value when a grade was corrected)."""
    rows = []
    for trace in traces:
        row: dict[str, Any] = {"trace_id": trace.info.trace_id,
                               "question_id": _inputs(trace).get("question_id")}
        for assessment in sorted(trace.info.assessments or [], key=lambda a: a.create_time_ms):
            if assessment.source.source_type == "HUMAN" and assessment.feedback is not None:
                row[f"human_{assessment.name}"] = assessment.feedback.value
        rows.append(row)
    return pd.DataFrame(rows)


def _inputs(trace) -> dict[str, Any]:
    import json

    request = trace.data.request
    value = json.loads(request) if isinstance(request, str) else request
    return value if isinstance(value, dict) else {}


def plot_scores(scores: pd.DataFrame, correctness: str = "correctness",
                professionalism: str = "professionalism"):
    """Four panels: answer length, correctness, professionalism, similarity vs correctness."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0, 0]
    ax.hist(scores["token_count"].astype(float), bins=12, color="#4c72b0", edgecolor="white")
    ax.set(title="Answer length", xlabel="tokens (words and punctuation)", ylabel="answers")

    ax = axes[0, 1]
    labels = ["no", "yes", "judge error"]
    counts = [
        int((scores[correctness] == 0).sum()),
        int((scores[correctness] == 1).sum()),
        int(scores[f"{correctness}_error"].notna().sum()),
    ]
    ax.bar(labels, counts, color=["#c44e52", "#55a868", "#8c8c8c"])
    ax.set(title="Correctness (LLM judge)", ylabel="answers")

    ax = axes[1, 0]
    grades = [str(g) for g in range(1, 6)] + ["judge error"]
    counts = [int((scores[professionalism] == g).sum()) for g in range(1, 6)]
    counts.append(int(scores[f"{professionalism}_error"].notna().sum()))
    ax.bar(grades, counts, color=["#4c72b0"] * 5 + ["#8c8c8c"])
    ax.set(title="Professionalism (LLM judge, 1-5)", xlabel="grade", ylabel="answers")

    ax = axes[1, 1]
    judged = scores[scores[correctness].notna()]
    jitter = np.random.default_rng(0).uniform(-0.08, 0.08, len(judged))
    ax.scatter(judged["semantic_similarity"].astype(float),
               judged[correctness].astype(float) + jitter, alpha=0.7)
    ax.set(title="Similarity to the reference vs judged correctness",
           xlabel="MiniLM cosine similarity", yticks=[0, 1], yticklabels=["no", "yes"],
           ylim=(-0.5, 1.5))
    fig.tight_layout()
    return fig
