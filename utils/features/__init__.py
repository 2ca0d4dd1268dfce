"""Chapter 11: feature tables, a feature store (Feast locally, Databricks Feature Engineering
there), point-in-time training sets and a served model that looks its features up by key.

- `transactions`: generated customers, transactions stream, and the feature tables.
- `training_sets`: labels over time, the point-in-time and the naive training set, the leak.
- `feast_repo`: the Feast repository: configuration, definitions, apply, materialize.
- `lookup_model`: logging and serving the lookup model; `skew`: served vs offline features.
- `databricks_fe`: the Feature Engineering calls the chapter makes on Databricks.
- `model_code/`: the models-from-code file MLflow logs, and `lookupkit/`, the package the
  served model carries through `code_paths` (lookups, checks, the on-demand feature).
"""

from __future__ import annotations

import sys
from pathlib import Path

FEATURES_DIR = Path(__file__).resolve().parent
MODEL_CODE_DIR = FEATURES_DIR / "model_code"
LOOKUPKIT_DIR = MODEL_CODE_DIR / "lookupkit"
LOOKUPKIT_PARENT = MODEL_CODE_DIR

# The model file imports `lookupkit` as a top-level package, as it will inside a served model
# (MLflow puts `code_paths` folders on sys.path). Feast's on-demand view, pickled into the
# registry, refers to `lookupkit` by that name too, so the same import must work here.
if str(LOOKUPKIT_PARENT) not in sys.path:
    sys.path.append(str(LOOKUPKIT_PARENT))
