"""The chatbot's input checks and prompt, and the evaluation-set checks."""

from __future__ import annotations

import pandas as pd
import pytest

from utils.rag.chatbot import EmptyQuestionError, build_prompt, checked_question, questions_from
from utils.rag.evaluation import load_calibration, load_questions
from utils.rag.retriever import Passage, chunk_corpus, load_documents

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("question", ["", "   ", None, float("nan")])
def test_empty_question_is_refused(question):
    with pytest.raises(EmptyQuestionError, match="empty"):
        checked_question(question, 10, row=3)


def test_non_text_question_is_refused():
    with pytest.raises(EmptyQuestionError, match="not text"):
        checked_question(42, 10)


def test_long_question_is_truncated_with_a_warning():
    question, warning = checked_question("word " * 25, 10)
    assert len(question.split()) == 10
    assert "25 words" in warning and "first 10" in warning
    assert checked_question(" What  is an alias? ", 10) == ("What is an alias?", "")


def test_prompt_is_a_completion_prompt():
    passages = [Passage("a:0", "a", "A", "First."), Passage("b:0", "b", "B", "Second.")]
    assert build_prompt("Why?", passages) == "Passage: First. Second.\nQuestion: Why?\nAnswer:"


def test_questions_from_each_input_kind():
    assert questions_from(pd.DataFrame({"question": ["a", "b"]})) == ["a", "b"]
    assert questions_from({"question": "a"}) == ["a"]
    assert questions_from("a") == ["a"]
    with pytest.raises(ValueError, match="'question' column"):
        questions_from(pd.DataFrame({"text": ["a"]}))


def test_evaluation_set_matches_the_corpus():
    ids = [p.passage_id for p in chunk_corpus(load_documents())]
    questions = load_questions(passage_ids=ids)
    assert len(questions) >= 35
    assert len(load_questions(limit=8)) == 8
    with pytest.raises(ValueError, match="passages the corpus does not have"):
        load_questions(passage_ids=ids[:5])


def test_calibration_set_has_both_verdicts_for_most_questions():
    graded = load_calibration()
    assert len(graded) >= 40 and graded["example_id"].is_unique
    assert set(load_calibration(limit=4)["human_correct"]) == {"yes", "no"}
    verdicts = graded.groupby("question")["human_correct"].nunique()
    assert (verdicts == 2).mean() > 0.8


def test_calibration_file_errors_name_the_problem(tmp_path):
    path = tmp_path / "grades.csv"
    graded = load_calibration()
    graded.drop(columns="answer").to_csv(path, index=False)
    with pytest.raises(ValueError, match="lacks columns"):
        load_calibration(path)
    graded.assign(human_correct="maybe").to_csv(path, index=False)
    with pytest.raises(ValueError, match="yes or no"):
        load_calibration(path)
    graded.assign(human_professionalism=7).to_csv(path, index=False)
    with pytest.raises(ValueError, match="1-5"):
        load_calibration(path)
