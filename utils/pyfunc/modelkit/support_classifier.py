"""Text pre-processing and the network of the support-message classifier.

Training (in the notebook) and prediction (in the served model) both call `encode`, so the
model sees text prepared the same way in both places.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower-case and collapse whitespace; None becomes empty text."""
    return _SPACES.sub(" ", str(text or "")).strip().lower()


@dataclass
class Encoded:
    ids: torch.Tensor  # (batch, tokens) token ids, padded
    mask: torch.Tensor  # (batch, tokens) 1 for real tokens
    n_tokens: list[int]  # tokens before truncation
    truncated: list[bool]  # True where the text was cut to max_tokens


def encode(tokenizer, texts: list[str], max_tokens: int) -> Encoded:
    """Tokenize normalized texts, cutting each to `max_tokens` and saying which were cut."""
    cleaned = [normalize(t) for t in texts]
    full_lengths = [len(ids) for ids in tokenizer(cleaned, verbose=False)["input_ids"]]
    batch = tokenizer(
        cleaned, truncation=True, max_length=max_tokens, padding=True, return_tensors="pt"
    )
    return Encoded(
        ids=batch["input_ids"],
        mask=batch["attention_mask"],
        n_tokens=full_lengths,
        truncated=[n > max_tokens for n in full_lengths],
    )


class TextClassifier(nn.Module):
    """Token embeddings, averaged over the real tokens, then a small two-layer head.

    Returns logits, one per label; a sigmoid turns them into independent probabilities
    because a message can carry several labels at once.
    """

    def __init__(self, vocab_size: int, n_labels: int, dim: int = 48, hidden: int = 32):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_labels))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).float()
        pooled = (self.embedding(ids) * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.head(pooled)
