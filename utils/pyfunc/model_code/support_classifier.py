"""Models-from-code: the support-message classifier as MLflow logs and serves it.

MLflow stores this file itself (not a pickle) and runs it when the model loads; the last line
tells MLflow which object is the model. `modelkit` is not installed anywhere: it travels with
the model through `code_paths`. Artifacts (`tokenizer_cache`, `model-weights`) are files MLflow
copies next to the model; `load_context` loads them once, `predict` runs per request.
"""

import json
from pathlib import Path

import mlflow
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel
from modelkit import require_artifact, require_column
from modelkit.support_classifier import Encoded, TextClassifier, encode


class SupportMessageClassifier(PythonModel):
    def load_context(self, context):
        from transformers import AutoTokenizer

        tokenizer_dir = require_artifact(context.artifacts, "tokenizer_cache")
        weights_dir = require_artifact(context.artifacts, "model-weights")
        # local_files_only: never reach for a model hub, even when the folder looks like a name
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        config = json.loads(Path(weights_dir, "config.json").read_text())
        self.labels, self.max_tokens = config["labels"], config["max_tokens"]
        self.network = TextClassifier(**config["network"])
        state = torch.load(Path(weights_dir, "weights.pt"), weights_only=True)
        self.network.load_state_dict(state)
        self.network.eval()

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        texts = require_column(model_input, "text").fillna("").astype(str).tolist()
        batch = encode(self.tokenizer, texts, self.max_tokens)
        with torch.no_grad():
            logits = self.network(batch.ids, batch.mask)
        return self.format_outputs(logits, batch)

    def format_outputs(self, logits: torch.Tensor, batch: Encoded) -> pd.DataFrame:
        """Sigmoid per label (a message can be billing AND urgent), the labels above 0.5, and
        whether the text was cut to the tokenizer's limit."""
        probabilities = torch.sigmoid(logits).numpy().astype(float)
        out = pd.DataFrame(probabilities, columns=[f"prob_{label}" for label in self.labels])
        out["labels"] = [
            ",".join(label for label, p in zip(self.labels, row, strict=True) if p >= 0.5)
            for row in probabilities
        ]
        out["n_tokens"] = batch.n_tokens
        out["truncated"] = batch.truncated
        return out


mlflow.models.set_model(SupportMessageClassifier())
