"""The support-message classifier: a WordPiece tokenizer trained here, a small torch network,
and the two artifacts the logged model needs (`tokenizer_cache`, `model-weights`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from utils.env import REPO_ROOT
from utils.pyfunc.modelkit.support_classifier import TextClassifier, encode, normalize

SUPPORT_MESSAGES_CSV = REPO_ROOT / "data" / "support_messages" / "messages.csv"
SUPPORT_LABELS = ["billing", "technical", "delivery", "urgent"]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]  # [PAD] first: id 0 is the padding id


def load_support_messages(path: Path = SUPPORT_MESSAGES_CSV) -> pd.DataFrame:
    """The labelled messages from `data/support_messages` (see its README for their origin)."""
    frame = pd.read_csv(path)
    missing = [c for c in ["text", *SUPPORT_LABELS] if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; regenerate it with its generate.py.")
    return frame


def train_tokenizer(texts: list[str], vocab_size: int = 600, max_tokens: int = 40):
    """Train a WordPiece tokenizer on `texts` and wrap it as a `transformers` fast tokenizer.

    Trained here, from the project's own text: nothing is downloaded. `max_tokens` becomes the
    tokenizer's `model_max_length`; longer texts are truncated to it at prediction time.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    tokenizer.train_from_iterator([normalize(t) for t in texts], trainer=trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=max_tokens,
    )


@dataclass
class TrainedText:
    network: TextClassifier
    tokenizer: object
    labels: list[str]
    max_tokens: int
    metrics: dict[str, float]
    test: pd.DataFrame
    network_config: dict


def train_text_classifier(
    frame: pd.DataFrame, tokenizer, epochs: int = 40, test_size: float = 0.25, seed: int = 0
) -> TrainedText:
    """Fit the network on a split of `frame`; metrics are per-label accuracy on the rest."""
    torch.manual_seed(seed)
    shuffled = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    n_test = int(len(shuffled) * test_size)
    test, train = shuffled.iloc[:n_test], shuffled.iloc[n_test:]
    max_tokens = tokenizer.model_max_length
    config = {"vocab_size": len(tokenizer), "n_labels": len(SUPPORT_LABELS)}
    network = TextClassifier(**config)
    batch = encode(tokenizer, train["text"].tolist(), max_tokens)
    targets = torch.tensor(train[SUPPORT_LABELS].to_numpy(), dtype=torch.float32)
    optimizer = torch.optim.Adam(network.parameters(), lr=0.02)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    network.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(train)).split(32):
            optimizer.zero_grad()
            loss = loss_fn(network(batch.ids[rows], batch.mask[rows]), targets[rows])
            loss.backward()
            optimizer.step()
    network.eval()
    trained = TrainedText(network, tokenizer, list(SUPPORT_LABELS), max_tokens, {}, test, config)
    predicted = predict_probabilities(trained, test["text"].tolist()) >= 0.5
    truth = test[SUPPORT_LABELS].to_numpy().astype(bool)
    trained.metrics = {
        **{
            f"accuracy_{label}": float((predicted[:, i] == truth[:, i]).mean())
            for i, label in enumerate(SUPPORT_LABELS)
        },
        "exact_match": float((predicted == truth).all(axis=1).mean()),
        "final_loss": loss.item(),
    }
    return trained


def predict_probabilities(trained: TrainedText, texts: list[str]) -> np.ndarray:
    """Label probabilities from the in-memory network: the reference the logged model must match."""
    batch = encode(trained.tokenizer, texts, trained.max_tokens)
    with torch.no_grad():
        return torch.sigmoid(trained.network(batch.ids, batch.mask)).numpy().astype(float)


def save_text_artifacts(trained: TrainedText, folder: Path) -> dict[str, str]:
    """Write the tokenizer (`save_pretrained`) and the weights + config; return the artifacts
    mapping for `log_model(artifacts=...)`."""
    tokenizer_dir, weights_dir = Path(folder, "tokenizer_cache"), Path(folder, "model-weights")
    trained.tokenizer.save_pretrained(tokenizer_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    torch.save(trained.network.state_dict(), weights_dir / "weights.pt")
    config = {
        "labels": trained.labels,
        "max_tokens": trained.max_tokens,
        "network": trained.network_config,
    }
    (weights_dir / "config.json").write_text(json.dumps(config, indent=2))
    return {"tokenizer_cache": str(tokenizer_dir), "model-weights": str(weights_dir)}


def text_signature():
    """Input: one `text` column. Output: a probability per label, the labels above 0.5, the
    token count before truncation and whether the text was truncated."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    outputs = [ColSpec("double", f"prob_{label}") for label in SUPPORT_LABELS]
    outputs += [
        ColSpec("string", "labels"),
        ColSpec("long", "n_tokens"),
        ColSpec("boolean", "truncated"),
    ]
    return ModelSignature(inputs=Schema([ColSpec("string", "text")]), outputs=Schema(outputs))
