"""utils.rag.chatbot_model: the models-from-code file's settings and its answers, with a
retriever and an endpoint stood in (the logged model itself is loaded in a fresh interpreter by
tests/unit/test_rag_shipping.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from utils.rag import chatbot_model
from utils.rag.chatbot import OUTPUT_COLUMNS, EmptyQuestionError

pytestmark = pytest.mark.unit


class _Retriever:
    embedder = object()

    def search(self, question, top_k):
        passage = SimpleNamespace(text="Aliases name versions.", doc_id="d", passage_id="d:0")
        return [(passage, 1.0)][:top_k]


def _model(monkeypatch, **config) -> chatbot_model.RagChatbot:
    monkeypatch.setattr(chatbot_model.Retriever, "load", staticmethod(lambda path: _Retriever()))
    model = chatbot_model.RagChatbot()
    context = SimpleNamespace(artifacts={"retriever": "unused"}, model_config=config)
    model.load_context(context)
    return model


def test_endpoint_comes_from_config_unless_the_environment_overrides_it(monkeypatch):
    monkeypatch.delenv("LLM_BASE_URL", raising=False)
    monkeypatch.delenv("LLM_MODEL", raising=False)
    model = _model(monkeypatch, base_url="http://127.0.0.1:1/v1", model="gemma", top_k=1)
    assert (model.base_url, model.model, model.top_k) == ("http://127.0.0.1:1/v1", "gemma", 1)
    monkeypatch.setenv("LLM_BASE_URL", "https://serving.example/v1")
    monkeypatch.setenv("LLM_MODEL", "databricks-llama")
    model = _model(monkeypatch, base_url="http://127.0.0.1:1/v1", model="gemma")
    assert (model.base_url, model.model) == ("https://serving.example/v1", "databricks-llama")


def test_predict_answers_each_question_with_its_passages(monkeypatch):
    monkeypatch.setattr(
        chatbot_model, "answer_question",
        lambda question, *args, **kwargs: SimpleNamespace(
            answer=f"answer to {question}", passage_ids=["d:0"], warning=None
        ),
    )  # fmt: skip
    model = _model(monkeypatch, base_url="http://127.0.0.1:1/v1", model="gemma")
    answers = model.predict(None, pd.DataFrame({"question": ["What is an alias?", "Why?"]}))
    assert list(answers.columns) == OUTPUT_COLUMNS
    assert answers.iloc[:, 0].tolist() == ["answer to What is an alias?", "answer to Why?"]


def test_an_empty_question_is_a_named_error(monkeypatch):
    model = _model(monkeypatch, base_url="http://127.0.0.1:1/v1", model="gemma")
    with pytest.raises(EmptyQuestionError):
        model.predict(None, pd.DataFrame({"question": ["   "]}))
