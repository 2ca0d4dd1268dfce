"""Models-from-code: the RAG chatbot as MLflow logs and serves it.

MLflow stores this file (not a pickle) and runs it when the model loads; `set_model` at the end
names the model object. `load_context` reads the saved retriever (an artifact copied with the
model) and the endpoint settings (`model_config`, overridable by the LLM_BASE_URL and LLM_MODEL
environment variables of wherever the model runs, as a serving endpoint's environment would).
`predict` answers each question and returns the answer, the ids of the passages it was given,
and a warning when the question had to be shortened.
"""

import os

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from utils.rag.chatbot import OUTPUT_COLUMNS, answer_question, questions_from
from utils.rag.retriever import Retriever


class RagChatbot(PythonModel):
    def load_context(self, context):
        config = context.model_config or {}
        self.retriever = Retriever.load(context.artifacts["retriever"])
        self.base_url = os.environ.get("LLM_BASE_URL") or config["base_url"]
        self.model = os.environ.get("LLM_MODEL") or config["model"]
        self.top_k = int(config.get("top_k", 2))
        self.max_tokens = int(config.get("max_tokens", 48))
        self.max_question_words = int(config.get("max_question_words", 60))
        _ = self.retriever.embedder  # load the embedding model now, not on the first request

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        rows = []
        for row, question in enumerate(questions_from(model_input)):
            answer = answer_question(
                question,
                self.retriever,
                self.base_url,
                self.model,
                top_k=self.top_k,
                max_tokens=self.max_tokens,
                max_question_words=self.max_question_words,
                row=row,
            )
            rows.append([answer.answer, answer.passage_ids, answer.warning])
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


mlflow.models.set_model(RagChatbot())
