"""The digits CNN: scikit-learn's 8x8 digits as base64 PNG, three labels per image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from utils.pyfunc.modelkit.digit_reader import DigitsCNN, batch_tensor, pixels_to_png_base64, scores


def load_digit_images(test_size: float = 0.25, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and test frames: `image` (base64 PNG) and the labels `digit`, `is_even`,
    `above_five`. Images go through PNG like requests do, so training sees served pixels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    frame = pd.DataFrame(
        {
            "image": [pixels_to_png_base64(img) for img in digits.images],
            "digit": digits.target,
            "is_even": digits.target % 2 == 0,
            "above_five": digits.target > 5,
        }
    )
    train, test = train_test_split(
        frame, test_size=test_size, random_state=seed, stratify=frame["digit"]
    )
    return train.reset_index(drop=True), test.reset_index(drop=True)


def train_digits_cnn(train: pd.DataFrame, epochs: int = 10, seed: int = 0) -> DigitsCNN:
    """Cross-entropy on the digit plus binary cross-entropy on the two flags."""
    torch.manual_seed(seed)
    network = DigitsCNN()
    images = batch_tensor(train["image"])
    digit = torch.tensor(train["digit"].to_numpy(), dtype=torch.long)
    flags = torch.tensor(train[["is_even", "above_five"]].to_numpy(), dtype=torch.float32)
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    ce, bce = torch.nn.CrossEntropyLoss(), torch.nn.BCEWithLogitsLoss()
    network.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(train)).split(64):
            optimizer.zero_grad()
            logits = network(images[rows])
            loss = ce(logits[:, :10], digit[rows]) + bce(logits[:, 10:], flags[rows])
            loss.backward()
            optimizer.step()
    return network.eval()


def predict_digits(network: DigitsCNN, images) -> pd.DataFrame:
    """In-memory predictions: the reference the logged model must match."""
    with torch.no_grad():
        return pd.DataFrame(scores(network(batch_tensor(images))))


def digits_accuracy(predicted: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    return {
        label: float((predicted[label].to_numpy() == truth[label].to_numpy()).mean())
        for label in ["digit", "is_even", "above_five"]
    }


def save_digits_artifacts(network: DigitsCNN, folder: Path) -> dict[str, str]:
    weights_dir = Path(folder, "model-weights")
    weights_dir.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), weights_dir / "weights.pt")
    (weights_dir / "config.json").write_text(json.dumps({"network": {}}, indent=2))
    return {"model-weights": str(weights_dir)}


def digits_signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    outputs = [
        ColSpec("long", "digit"),
        ColSpec("double", "digit_score"),
        ColSpec("boolean", "is_even"),
        ColSpec("double", "is_even_score"),
        ColSpec("boolean", "above_five"),
        ColSpec("double", "above_five_score"),
    ]
    return ModelSignature(inputs=Schema([ColSpec("string", "image")]), outputs=Schema(outputs))


def not_a_png_base64() -> str:
    """A valid base64 string whose bytes are a JPEG header, for the bad-input demonstration."""
    import base64

    return base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(np.arange(40, dtype=np.uint8))).decode()
