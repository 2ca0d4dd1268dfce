"""Retraining on labelled production data, and handing the result to the validation gate.

`retrain_candidate` trains a new version from the labelled rows of an inference table, only
when enough labels arrived since the champion was trained, registers it under a `candidate`
alias and keeps its holdout (rows it never saw) as an artifact of its run, so validation
compares candidate and champion on the same recent rows wherever validation runs (the next
task of a job, on another machine). `validate_candidate_alias` runs the chapter 08 gate on it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from utils import tables
from utils.monitoring.inference_table import label_status
from utils.monitoring.schema import ACTUAL_LABEL
from utils.tracking import CHAMPION, get_aliases, model_name, register_model

CANDIDATE = "candidate"
USED_ROWS_TAG = "labelled_rows_used"
HOLDOUT_ARTIFACT = "holdout/holdout.parquet"


@dataclass
class RetrainResult:
    retrained: bool
    reason: str
    labelled_rows: int
    version: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def retrain_candidate(
    table: str,
    name: str,
    features: Sequence[str],
    label: str,
    min_new_labels: int,
    owner_team: str = "churn-analytics",
    alias: str = CANDIDATE,
    **train_params,
) -> RetrainResult:
    """Train, log and register a candidate from the labelled rows of `table` when at least
    `min_new_labels` labelled rows are newer than the champion's training data (chapter 09
    shows the MLflow calls; its job notebook calls this)."""
    import mlflow

    from utils.training import log_churn_model, train_churn_model

    client = mlflow.MlflowClient()
    name = model_name(name)
    labelled = label_status(table)["labelled"]
    champion = get_aliases(name).get(CHAMPION)
    used = 0
    if champion is not None:
        used = int(client.get_model_version(name, str(champion)).tags.get(USED_ROWS_TAG, 0))
    retrain, reason = retraining_decision(labelled, used, min_new_labels)
    if not retrain:
        return RetrainResult(False, reason, labelled)

    data = labelled_rows(table, features, label_as=label)
    trained = train_churn_model(data, label=label, **train_params)
    with mlflow.start_run(run_name="retrain-on-labelled-inferences"):
        mlflow.log_params({"labelled_rows": labelled, "source_table": table, **train_params})
        mlflow.log_metrics({f"test_{k}": v for k, v in trained.metrics.items()})
        info = log_churn_model(trained)
        log_holdout(trained.X_test, trained.y_test, label)
    version = register_model(
        info.model_uri,
        name,
        description=(
            f"Churn classifier retrained on {labelled:,} labelled production requests from "
            f"{table} (one-hot + scaling + gradient boosting); predicts {label} (1 = churns)."
        ),
        tags={
            "owner_team": owner_team,
            "training_rows": str(len(trained.X_train)),
            USED_ROWS_TAG: str(labelled),
            "trained_from": table,
        },
        aliases=[alias],
    )
    return RetrainResult(True, reason, labelled, int(version.version), trained.metrics)


def log_holdout(X: pd.DataFrame, y: pd.Series, label: str) -> None:
    """Keep a retrained model's holdout (features and `label`) as an artifact of the active
    run, where `load_holdout` and the gate find it."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(HOLDOUT_ARTIFACT).name
        X.assign(**{label: y}).to_parquet(path, index=False)
        mlflow.log_artifact(str(path), str(Path(HOLDOUT_ARTIFACT).parent))


def load_holdout(name: str, version: int | str, label: str) -> tuple[pd.DataFrame, pd.Series]:
    """The holdout kept with a retrained version: (features, label)."""
    import mlflow

    run_id = mlflow.MlflowClient().get_model_version(model_name(name), str(version)).run_id
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=HOLDOUT_ARTIFACT)
    holdout = pd.read_parquet(local)
    return holdout.drop(columns=[label]), holdout[label]


def validate_candidate_alias(name: str, label: str, alias: str = CANDIDATE, policy=None):
    """Run the validation gate on the version under `alias` with its own holdout; promote it
    when it passes. The alias is removed either way: a candidate is judged once.

    Returns the PromotionResult, or None when there is no candidate.
    """
    import mlflow

    from utils.gate.promotion import promote

    name = model_name(name)
    version = get_aliases(name).get(alias)
    if version is None:
        return None
    X, y = load_holdout(name, version, label)
    result = promote(name, version, X, y, policy=policy)
    mlflow.MlflowClient().delete_registered_model_alias(name, alias)
    return result


def labelled_rows(table: str, columns: Sequence[str], label_as: str | None = None) -> pd.DataFrame:
    """`columns` and the label of every labelled row of the inference table, as pandas;
    the label column is renamed to `label_as` (e.g. the training label name)."""
    frame = (
        tables.read_table(table)
        .where(f"{ACTUAL_LABEL} IS NOT NULL")
        .select(*columns, ACTUAL_LABEL)
        .toPandas()
    )
    return frame.rename(columns={ACTUAL_LABEL: label_as}) if label_as else frame


def retraining_decision(labelled: int, used_before: int, min_new: int) -> tuple[bool, str]:
    """Retrain only when there are at least `min_new` labelled rows not used before.

    Fewer labelled rows than were used before means the table was rebuilt: all rows are new.
    """
    new = labelled - used_before if labelled >= used_before else labelled
    if new >= min_new:
        return True, f"{new} new labelled rows (>= {min_new}): retrain"
    return False, f"only {new} new labelled rows (< {min_new}): keep the champion"
