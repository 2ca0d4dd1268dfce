"""The chatbot's steps, shared by its MLflow model (`chatbot_model.py`) and the chapter:
checking and truncating a question, building the prompt from retrieved passages, asking the
language-model endpoint, and logging the model with models-from-code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from utils.env import REPO_ROOT
from utils.rag.client import chat, reply_text
from utils.rag.retriever import EMBEDDING_REQUIREMENTS, Passage, Retriever

MODEL_CODE = Path(__file__).resolve().parent / "chatbot_model.py"
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
    """Retrieve, prompt, ask the endpoint: the answer and the passages it was given."""
    question, warning = checked_question(question, max_question_words, row)
    passages = [p for p, _ in retriever.search(question, top_k)]
    response = chat(
        base_url,
        model,
        [{"role": "user", "content": build_prompt(question, passages)}],
        max_tokens=max_tokens,
        stop=["\n"],  # one answer line; a base model goes on to invent the next question
    )
    return Answer(reply_text(response), [p.passage_id for p in passages], warning)


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


def signature_and_example():
    """The chatbot's signature (question in; answer, passage ids, warning out) and an example."""
    from mlflow.models import infer_signature

    example = pd.DataFrame({"question": ["What does the champion alias point at?"]})
    output = pd.DataFrame(
        {"answer": ["One model version."], "passage_ids": [["model-aliases:0"]], "warning": [""]}
    )
    return infer_signature(example, output), example


def chatbot_requirements() -> list[str]:
    from utils.environments.requirements import pinned_requirements

    return pinned_requirements(
        "mlflow", "pandas", "numpy", "requests", "torch", *EMBEDDING_REQUIREMENTS
    )


def log_chatbot(
    retriever_dir: str | Path,
    config: Mapping[str, Any] | None = None,
    name: str = "chatbot",
):
    """Log the chatbot with models-from-code: `chatbot_model.py` is the model, the saved
    retriever its artifact, `utils` its shipped code. Returns MLflow's ModelInfo."""
    import mlflow

    signature, example = signature_and_example()
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(MODEL_CODE),
        artifacts={"retriever": str(retriever_dir)},
        model_config={**DEFAULT_CONFIG, **(config or {})},
        code_paths=[str(REPO_ROOT / "utils")],
        signature=signature,
        input_example=example,
        pip_requirements=chatbot_requirements(),
    )
