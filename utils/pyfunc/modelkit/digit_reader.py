"""Image decoding and the network of the digits model.

Requests carry base64-encoded PNGs. Training data goes through the same `png_to_pixels`, so
the served model normalises exactly as in training (and never augments at prediction time).
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import torch
from torch import nn

from . import BadInputError

SIDE = 8  # scikit-learn's digits are 8x8 grey images
# A PNG's header gives its size before any pixel is decoded; a small file can declare
# gigapixels (a decompression bomb), so anything larger than this is refused unread.
MAX_SIDE = 1024
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LABELS = ["digit", "is_even", "above_five"]


def pixels_to_png_base64(pixels: np.ndarray) -> str:
    """An 8x8 image with values 0..16 (scikit-learn's scale) as base64 PNG text."""
    from PIL import Image

    grey = np.clip(np.round(np.asarray(pixels, dtype=float) * 255 / 16), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(grey.reshape(SIDE, SIDE), mode="L").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def png_to_pixels(encoded: str) -> np.ndarray:
    """Base64 PNG text -> float32 array (8, 8) in [0, 1]. Other sizes are resized to 8x8."""
    from PIL import Image

    if not isinstance(encoded, str) or not encoded:
        raise BadInputError(
            f"Expected base64 PNG text, got {type(encoded).__name__} {encoded!r:.40}."
        )
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadInputError(f"Image is not valid base64 (starts {encoded[:20]!r}).") from None
    if not raw.startswith(PNG_MAGIC):
        raise BadInputError(
            f"Image is not a PNG (first bytes {raw[:8]!r}); encode the image as PNG, then base64."
        )
    try:
        image = Image.open(io.BytesIO(raw))  # reads the header only
    except Exception as error:  # a truncated or corrupt PNG: PIL raises several types
        raise BadInputError(f"PNG could not be decoded: {error}") from None
    if max(image.size) > MAX_SIDE:
        width, height = image.size
        raise BadInputError(
            f"Image is {width}x{height} pixels; send at most {MAX_SIDE}x{MAX_SIDE} (the model "
            f"reads {SIDE}x{SIDE} grey pixels, so resize before sending)."
        )
    try:
        image = image.convert("L")
    except Exception as error:
        raise BadInputError(f"PNG could not be decoded: {error}") from None
    if image.size != (SIDE, SIDE):
        image = image.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0


def batch_tensor(encoded_images) -> torch.Tensor:
    """A (batch, 1, 8, 8) tensor from base64 PNG texts."""
    return torch.from_numpy(np.stack([png_to_pixels(e) for e in encoded_images])).unsqueeze(1)


class DigitsCNN(nn.Module):
    """Two small convolutions and a head with 12 outputs: 10 digit logits (softmax), then
    one logit each for "is even" and "above five" (sigmoid)."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * channels * 16, 64), nn.ReLU(), nn.Linear(64, 12)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def scores(logits: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-label predictions and scores from the network's 12 logits."""
    digit_probs = torch.softmax(logits[:, :10], dim=1)
    digit_score, digit = digit_probs.max(dim=1)
    flags = torch.sigmoid(logits[:, 10:])
    return {
        "digit": digit.numpy(),
        "digit_score": digit_score.numpy().astype(float),
        "is_even": (flags[:, 0] >= 0.5).numpy(),
        "is_even_score": flags[:, 0].numpy().astype(float),
        "above_five": (flags[:, 1] >= 0.5).numpy(),
        "above_five_score": flags[:, 1].numpy().astype(float),
    }
