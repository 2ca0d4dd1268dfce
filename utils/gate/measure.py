"""The gate's measurements of a model, run in a child process (`python -m utils.gate.measure`).

Loading a model runs its code: a cloudpickled `PythonModel`, a models-from-code file, the
`code_paths` it ships. So the gate never loads the candidate (or the champion) in its own
process: `validate_candidate` downloads the artifacts, writes the holdout and a request, and
runs this module in a child with no registry address (its tracking URI points to a closed
loopback port), which loads each model, measures it and writes the figures as JSON. Whatever
the model's `load_context` does stays in the child; a registry change it makes by other
means is caught by the gate, which re-reads the aliases afterwards.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from utils.gate.checks import LABEL_COLUMN, score_metric, single_row_latency_ms, slice_metrics


def measure(request: dict[str, Any]) -> dict[str, Any]:
    """Load the candidate (and champion) from local folders and measure what the gate checks."""
    import mlflow

    holdout = pd.read_parquet(request["holdout"])
    X, y = holdout.drop(columns=[LABEL_COLUMN]), holdout[LABEL_COLUMN]
    metric = request["metric"]
    candidate = mlflow.pyfunc.load_model(request["candidate"])
    figures: dict[str, Any] = {
        "candidate_score": score_metric(candidate, X, y, metric),
        "champion_score": None,
        "slices": None,
        "latency_p50_ms": single_row_latency_ms(candidate, X, request["latency_repeats"]),
    }
    if request["slice_column"]:
        figures["slices"] = slice_metrics(
            candidate, X, y, request["slice_column"], metric, request["min_slice_rows"]
        )
    if request["champion"]:
        champion = mlflow.pyfunc.load_model(request["champion"])
        figures["champion_score"] = score_metric(champion, X, y, metric)
    return figures


def main(argv: list[str]) -> None:
    """`python -m utils.gate.measure REQUEST.json RESULT.json`"""
    request_path, result_path = argv
    figures = measure(json.loads(Path(request_path).read_text()))
    # NaN stays NaN (json writes it as a bare NaN): the checks must see it and fail
    Path(result_path).write_text(json.dumps(figures))


if __name__ == "__main__":
    main(sys.argv[1:])
