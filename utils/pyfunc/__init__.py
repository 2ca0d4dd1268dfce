"""Custom pyfunc models for chapter 06: data, training and the pieces the models ship with.

Each model keeps one name in every folder:

- `wine`: scikit-learn's wine data for the decision-tree wrapper (its PythonModel lives in the
  notebook: it is the lesson).
- `support_classifier`: the support-message classifier. `support_classifier.py` here trains
  the tokenizer and the torch network and writes the artifacts; `modelkit/support_classifier.py`
  is the pre-processing the model carries through `code_paths`; `model_code/support_classifier.py`
  is the models-from-code file MLflow logs and serves.
- `digit_reader`: the digits CNN taking base64 PNG input, laid out the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

PYFUNC_DIR = Path(__file__).resolve().parent
MODELKIT_DIR = PYFUNC_DIR / "modelkit"
MODEL_CODE_DIR = PYFUNC_DIR / "model_code"

# The model files import `modelkit` as a top-level package, as they will inside a served model
# (MLflow puts the `code_paths` folders on sys.path when it loads the model). MLflow also runs a
# models-from-code file once while logging it, so the same import must work here.
if str(PYFUNC_DIR) not in sys.path:
    sys.path.append(str(PYFUNC_DIR))


def max_abs_difference(left: pd.DataFrame, right: pd.DataFrame) -> float:
    """Largest absolute difference over the numeric columns two prediction frames share.

    Non-numeric columns (labels) must match exactly; a mismatch counts as infinity, so the
    number answers "do these two predict the same?" in one figure.
    """
    if len(left) != len(right):
        raise ValueError(f"Frames have {len(left)} and {len(right)} rows; compare equal lengths.")
    shared = [c for c in left.columns if c in right.columns]
    if not shared:
        raise ValueError(f"No shared columns: {list(left.columns)} vs {list(right.columns)}.")
    worst = 0.0
    for column in shared:
        a, b = left[column].reset_index(drop=True), right[column].reset_index(drop=True)
        if pd.api.types.is_bool_dtype(a) or not pd.api.types.is_numeric_dtype(a):
            if not (a.astype(str) == b.astype(str)).all():
                return float("inf")
        else:
            worst = max(worst, float(np.max(np.abs(a.to_numpy(float) - b.to_numpy(float)))))
    return worst
