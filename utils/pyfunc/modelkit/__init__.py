"""Code that travels with the chapter 06 models through `code_paths`.

MLflow copies this folder into the model's `code/` directory and puts that directory on
`sys.path` when the model loads, so a serving container imports it as `modelkit` without the
rest of this repository. Keep it self-contained: no imports from `utils`, only relative ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


class MissingArtifactError(FileNotFoundError):
    """The model was logged without an artifact its `load_context` needs."""


class BadInputError(ValueError):
    """A request value cannot be used (not base64, not a PNG, wrong column)."""


def require_artifact(artifacts: Mapping[str, str] | None, name: str) -> Path:
    """The local path of artifact `name`, or an error naming it and the artifacts there are."""
    artifacts = artifacts or {}
    if name not in artifacts:
        raise MissingArtifactError(
            f"The model has no artifact '{name}' (it has: {sorted(artifacts) or 'none'}). "
            f"Log it with log_model(artifacts={{'{name}': <local path>}})."
        )
    path = Path(artifacts[name])
    if not path.exists():
        raise MissingArtifactError(f"Artifact '{name}' is listed but its files are missing: {path}")
    return path


def require_column(frame, column: str):
    """Column `column` of a request DataFrame, or a BadInputError naming the columns sent."""
    if column not in getattr(frame, "columns", ()):
        sent = list(getattr(frame, "columns", []))
        raise BadInputError(f"The request needs a column '{column}'; it sent {sent}.")
    return frame[column]
