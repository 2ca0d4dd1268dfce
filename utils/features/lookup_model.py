"""Logging the chapter 11 lookup model: its artifacts, signature and model config.

The model itself is `model_code/churn_lookup_model.py` (models from code) with `lookupkit/`
shipped through `code_paths`; chapter 11 shows its `log_model` call in a cell. These helpers
prepare what that call takes.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from utils.features import LOOKUPKIT_DIR, MODEL_CODE_DIR
from utils.features.feast_repo import FEATURE_SERVICE
from utils.features.training_sets import MODEL_FEATURES, SKOPS_TRUSTED_TYPES
from utils.features.transactions import CUSTOMER_KEY, REQUEST_FEATURE

MODEL_FILE = MODEL_CODE_DIR / "churn_lookup_model.py"
LOOKUP_REQUIREMENTS = ("mlflow", "feast", "scikit-learn", "pandas", "numpy", "scipy", "skops")


def lookup_model_config(
    feature_repo: str | Path, max_activity_age_hours: float = 36.0, **extra: Any
) -> dict[str, Any]:
    """The model config the lookup model is logged with: which feature service to look up,
    by which key, which features the request brings, how old values may be, and where the
    feature repository (`feature_store.yaml`) is."""
    return {
        "feature_service": FEATURE_SERVICE,
        "entity_key": CUSTOMER_KEY,
        "request_features": [REQUEST_FEATURE],
        "max_age_hours": {"customer_activity_30d": max_activity_age_hours},
        "model_features": MODEL_FEATURES,
        "feature_repo": str(feature_repo),
        **extra,
    }


def save_classifier(pipeline, folder: Path) -> dict[str, str]:
    """Save the fitted pipeline as an MLflow sklearn model folder; the artifacts mapping."""
    import mlflow

    path = Path(folder) / "classifier"
    if path.exists():
        shutil.rmtree(path)
    mlflow.sklearn.save_model(pipeline, str(path), skops_trusted_types=SKOPS_TRUSTED_TYPES)
    return {"classifier": str(path)}


def lookup_signature():
    """Inputs: the key and the request-time feature only. Outputs: the probability, when the
    features were computed, and the values looked up."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec("long", CUSTOMER_KEY), ColSpec("long", REQUEST_FEATURE)])
    outputs = Schema(
        [ColSpec("long", CUSTOMER_KEY), ColSpec("double", "churn_probability")]
        + [ColSpec("string", "customer_activity_30d_as_of")]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def lookup_example(keys, num_products) -> pd.DataFrame:
    """A request as the application sends it: keys and the request-time feature."""
    return pd.DataFrame({CUSTOMER_KEY: list(keys), REQUEST_FEATURE: list(num_products)})


def code_paths() -> list[str]:
    """What the model imports beyond its installed requirements: `lookupkit` only."""
    return [str(LOOKUPKIT_DIR)]
