"""Setting up an A/B test: log the router over the versions two aliases point to now, and read
the requests it logged (chapter 05 shows the `log_model` call this wraps)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from utils.abtest.router import REQUEST_ID, ROUTER_OUTPUTS, normalize_weights

ROUTER_MODEL_FILE = str(Path(__file__).with_name("router.py"))


def read_inference_log(log_dir: str | Path) -> pd.DataFrame:
    """All logged requests under `log_dir` as a frame (`timestamp` parsed, `inputs` as JSON
    text). A partial last line from a killed server is skipped, not fatal."""
    rows = []
    for path in sorted(Path(log_dir).glob("requests-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    frame = pd.DataFrame(rows, columns=None if rows else [*ROUTER_OUTPUTS, "timestamp"])
    if rows:
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame


def router_signature(input_schema, prediction_type: str = "long"):
    """The router's signature: the variants' inputs plus an optional `request_id`; outputs
    prediction, variant, model_version and request_id."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = [*input_schema.inputs, ColSpec("string", REQUEST_ID, required=False)]
    outputs = [
        ColSpec(prediction_type, "prediction"),
        ColSpec("string", "variant"),
        ColSpec("string", "model_version"),
        ColSpec("string", REQUEST_ID),
    ]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def variant_requirements(uris: Sequence[str]) -> list[str]:
    """The union of the variants' pinned requirements."""
    lines: dict[str, None] = {}
    for uri in uris:
        path = mlflow.pyfunc.get_model_dependencies(uri, format="pip")
        for line in Path(path).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                lines[line.strip()] = None
    return list(lines)


@dataclass(frozen=True)
class LoggedRouter:
    """A logged ABRouter: its ModelInfo, the weights, and the version each variant pins."""

    model_info: Any
    weights: dict[str, float]
    versions: dict[str, str]

    @property
    def model_uri(self) -> str:
        return self.model_info.model_uri


def log_router(
    model_name: str,
    weights: Mapping[str, float],
    *,
    name: str = "ab_router",
    input_example: pd.DataFrame | None = None,
    registered_model_name: str | None = None,
) -> LoggedRouter:
    """Log an ABRouter over the versions that aliases of `model_name` point to now.

    `weights` maps alias to weight, e.g. {"champion": 90, "challenger": 10}. Each alias is
    resolved to its version and that version's files are copied into the router, so moving an
    alias later does not change a running test; log a new router to change it.
    """
    from utils.tracking import model_uri, resolve_model_uri

    shares = normalize_weights(weights)
    uris = {alias: model_uri(model_name, alias) for alias in shares}
    versions = {alias: str(resolve_model_uri(uri).version) for alias, uri in uris.items()}
    pinned = {
        alias: f"models:/{resolve_model_uri(uri).name}/{versions[alias]}"
        for alias, uri in uris.items()
    }
    first = mlflow.models.get_model_info(next(iter(pinned.values())))
    if first.signature is None:
        raise ValueError(f"{pinned} has no signature; the router needs its input schema.")
    output = first.signature.outputs.inputs[0] if first.signature.outputs else None
    prediction_type = getattr(getattr(output, "type", None), "name", "long") or "long"
    if input_example is not None:
        input_example = input_example.assign(
            **{REQUEST_ID: [f"example-{i}" for i in range(len(input_example))]}
        )
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=ROUTER_MODEL_FILE,  # models from code: the file is the model
        artifacts=pinned,
        # every key a server may set must be logged (MLflow ignores unknown ones): shadow and
        # weights_file are off until `serve_model(model_config=...)` turns them on (chapter 12)
        model_config={"weights": dict(weights), "versions": versions, "log_dir": "",
                      "shadow": {}, "weights_file": ""},  # fmt: skip
        signature=router_signature(first.signature.inputs, prediction_type),
        input_example=input_example,
        pip_requirements=variant_requirements(list(pinned.values())),
        registered_model_name=registered_model_name,
    )
    return LoggedRouter(info, dict(weights), versions)

