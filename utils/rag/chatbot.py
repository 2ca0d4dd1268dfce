"""The chatbot's steps, shared by its MLflow model (`chatbot_model.py`) and the chapter:
checking and truncating a question, retrieving passages, building the prompt, asking the
language-model endpoint. Each step is an MLflow trace span (retrieval, prompt, generation), so
an answer can be inspected, and evaluated again later, from its trace.

This module ships inside the logged model (with `client` and `retriever`): it imports nothing
else from this repository.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import SpanType

from utils.rag.client import chat, reply_text
from utils.rag.retriever import Passage, Retriever

DEFAULT_CONFIG = {
    "base_url": "http://127.0.0.1:8800/v1",  # LLM_BASE_URL overrides it where the model runs
    "model": "gemma-3-270m",  # LLM_MODEL overrides it
    "top_k": 2,  # passages put in the prompt
    "max_question_words": 60,  # longer questions are cut, with a warning in the output
    "max_tokens": 48,  # answer length limit
}
OUTPUT_COLUMNS = ["answer", "passage_ids", "warning"]


class EmptyQuestionError(ValueError):
    """A question with no words in it."""


@dataclass(frozen=True)
class Answer:
    answer: str
    passage_ids: list[str]
    warning: str = ""


def checked_question(question: Any, max_words: int, row: int | None = None) -> tuple[str, str]:
    """(question, warning): empty questions raise; long ones are cut to `max_words` words."""
    where = f"Question {row}" if row is not None else "The question"
    if question is None or (isinstance(question, float) and pd.isna(question)):
        question = ""
    if not isinstance(question, str):
        raise EmptyQuestionError(f"{where} is a {type(question).__name__}, not text.")
    words = question.split()
    if not words:
        raise EmptyQuestionError(
            f"{where} is empty. Send a question in words, e.g. "
            "{'question': 'What does the champion alias point at?'}."
        )
    if len(words) <= max_words:
        return " ".join(words), ""
    warning = (
        f"The question had {len(words)} words; only the first {max_words} were used, to keep "
        "the prompt within the language model's context."
    )
    return " ".join(words[:max_words]), warning


def build_prompt(question: str, passages: Sequence[Passage]) -> str:
    """A completion prompt a base model answers in one grounded sentence."""
    context = " ".join(p.text for p in passages)
    return f"Passage: {context}\nQuestion: {question}\nAnswer:"


def answer_question(
    question: str,
    retriever: Retriever,
    base_url: str,
    model: str,
    top_k: int = 2,
    max_tokens: int = 48,
    max_question_words: int = 60,
    row: int | None = None,
) -> Answer:
    """Retrieve, prompt, ask the endpoint: the answer and the passages it was given. One trace
    span for the whole answer, with a child span for each step."""
    with mlflow.start_span(name="answer_question", span_type=SpanType.CHAIN) as root:
        root.set_inputs({"question": question, "model": model, "top_k": top_k})
        question, warning = checked_question(question, max_question_words, row)
        with mlflow.start_span(name="retrieve", span_type=SpanType.RETRIEVER) as span:
            span.set_inputs({"query": question, "top_k": top_k})
            passages = [p for p, _ in retriever.search(question, top_k)]
            span.set_outputs([{"page_content": p.text,
                               "metadata": {"doc_uri": p.doc_id, "chunk_id": p.passage_id}}
                              for p in passages])
        with mlflow.start_span(name="build_prompt", span_type=SpanType.PARSER) as span:
            span.set_inputs({"question": question,
                             "passage_ids": [p.passage_id for p in passages]})
            prompt = build_prompt(question, passages)
            span.set_outputs({"prompt": prompt})
        messages = [{"role": "user", "content": prompt}]
        with mlflow.start_span(name="generate", span_type=SpanType.CHAT_MODEL) as span:
            span.set_inputs({"model": model, "messages": messages, "max_tokens": max_tokens})
            # one answer line: a base model goes on to invent the next question
            response = chat(base_url, model, messages, max_tokens=max_tokens, stop=["\n"])
            span.set_outputs(response)
        answer = Answer(reply_text(response), [p.passage_id for p in passages], warning)
        root.set_outputs({"answer": answer.answer, "passage_ids": answer.passage_ids,
                          "warning": warning})
    return answer


def questions_from(model_input: Any) -> list[Any]:
    """The questions in a pyfunc input: a frame with a `question` column, a list, or a dict."""
    if isinstance(model_input, pd.DataFrame):
        if "question" not in model_input.columns:
            raise ValueError(
                f"The input needs a 'question' column; it has {list(model_input.columns)}."
            )
        return model_input["question"].tolist()
    if isinstance(model_input, Mapping):
        value = model_input.get("question")
        return list(value) if isinstance(value, list | tuple) else [value]
    if isinstance(model_input, str):
        return [model_input]
    return list(model_input)
