"""The chatbot's evaluation data: the question set, answers generated in batch, the rows
`mlflow.genai.evaluate` reads, the hand-graded calibration set, and the pictures."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from utils.env import REPO_ROOT

DATA_DIR = REPO_ROOT / "data"
QUESTIONS_CSV = DATA_DIR / "questions_evaluation.csv"
CALIBRATION_CSV = DATA_DIR / "rag_judge_calibration.csv"
QUESTION_COLUMNS = ["question_id", "question", "reference_answer", "passage_id"]


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


def answer_all(model, questions: pd.DataFrame, model_version: str | int) -> pd.DataFrame:
    """Answer every question with a loaded chatbot (progress bar); one prediction row each,
    with the model version and the seconds it took."""
    from tqdm.auto import tqdm

    rows = []
    for record in tqdm(questions.to_dict("records"), desc="answering", unit="question"):
        start = time.perf_counter()
        out = model.predict(pd.DataFrame({"question": [record["question"]]})).iloc[0]
        rows.append(
            {
                "question_id": record["question_id"],
                "question": record["question"],
                "answer": out["answer"],
                "passage_ids": list(out["passage_ids"]),
                "warning": out["warning"],
                "model_version": str(model_version),
                "seconds": round(time.perf_counter() - start, 2),
                "answered_at": pd.Timestamp.now(tz="UTC").floor("s"),
            }
        )
    return pd.DataFrame(rows)


def evaluation_rows(predictions: pd.DataFrame, questions: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows for `mlflow.genai.evaluate`: inputs, the chatbot's outputs, and expectations."""
    joined = predictions.merge(
        questions[["question_id", "reference_answer", "passage_id"]], on="question_id"
    )
    return [
        {
            "inputs": {"question": r["question"]},
            "outputs": {"answer": r["answer"], "passage_ids": list(r["passage_ids"])},
            "expectations": {
                "expected_response": r["reference_answer"],
                "passage_id": r["passage_id"],
            },
        }
        for r in joined.to_dict("records")
    ]


def load_calibration(path: str | Path = CALIBRATION_CSV, limit: int = 0) -> pd.DataFrame:
    """Hand-graded answers (`data/rag_grading_rule.md` has the rule); `limit` keeps a sample
    that still holds both verdicts (alternating rows from the file's interleaved order)."""
    graded = pd.read_csv(path, dtype={"human_professionalism": int})
    bad = graded[~graded["human_correct"].isin(["yes", "no"])]
    if len(bad):
        raise ValueError(f"{path}: human_correct must be yes or no; rows {bad.index.tolist()}.")
    return graded.head(limit) if limit else graded


def calibration_rows(graded: pd.DataFrame) -> list[dict[str, Any]]:
    return [
        {
            "inputs": {"question": r["question"]},
            "outputs": {"answer": r["answer"], "passage_ids": []},
            "expectations": {"expected_response": r["reference_answer"]},
        }
        for r in graded.to_dict("records")
    ]


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
