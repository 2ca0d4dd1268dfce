"""The churn model every chapter deploys: one scikit-learn pipeline, trained and logged."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from utils.datasets import CHURN_CATEGORICAL, CHURN_LABEL, CHURN_NUMERIC, split_features_label
from utils.environments.requirements import pinned_requirements

# skops refuses to load types it does not know; a gradient-boosted model holds trees.
SKOPS_TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]
SKLEARN_MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "pandas", "numpy", "scipy", "skops")
# Where a churn run keeps the rows it was trained on (chapter 09 reads them as the drift reference).
TRAINING_DATA_ARTIFACT = "training_data/train.parquet"


@dataclass
class TrainedModel:
    pipeline: Pipeline
    metrics: dict[str, float]
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_test: pd.Series


def build_churn_pipeline(
    n_estimators: int = 150, learning_rate: float = 0.05, max_depth: int = 3, seed: int = 42
) -> Pipeline:
    """One-hot encode categories, scale numbers, then a gradient-boosted classifier."""
    preprocess = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), CHURN_CATEGORICAL),
            ("numeric", StandardScaler(), CHURN_NUMERIC),
        ]
    )
    classifier = GradientBoostingClassifier(
        n_estimators=n_estimators,
        learning_rate=learning_rate,
        max_depth=max_depth,
        random_state=seed,
    )
    return Pipeline([("preprocess", preprocess), ("classifier", classifier)])


def evaluate(pipeline: Pipeline, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    """AUC, accuracy and F1 of a fitted classifier on labelled rows."""
    predicted = pipeline.predict(X)
    return {
        "auc": float(roc_auc_score(y, pipeline.predict_proba(X)[:, 1])),
        "accuracy": float(accuracy_score(y, predicted)),
        "f1": float(f1_score(y, predicted)),
    }


def train_churn_model(
    df: pd.DataFrame, test_size: float = 0.25, seed: int = 42, label: str = CHURN_LABEL, **params
) -> TrainedModel:
    """Fit `build_churn_pipeline(**params)` on a stratified split and evaluate it on the rest;
    `label` names the column to learn (every other column is a feature)."""
    X, y = split_features_label(df, label)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=y
    )
    pipeline = build_churn_pipeline(seed=seed, **params).fit(X_train, y_train)
    return TrainedModel(pipeline, evaluate(pipeline, X_test, y_test), X_train, X_test, y_test)


def prediction_output(pipeline: Pipeline, X: pd.DataFrame) -> pd.Series:
    """Predictions as a named Series: a signature inferred from it has a named column output,
    so `spark_udf` returns a column rather than an array."""
    return pd.Series(pipeline.predict(X), name="prediction")


def log_training_data(features: pd.DataFrame, name: str = "churn-training-rows") -> str:
    """Keep the rows a model was trained on with the active run (chapter 01 shows these calls):
    a Parquet artifact, and `mlflow.log_input` so the run names the dataset (digest, schema,
    profile). Returns the artifact URI, the dataset's source."""
    import tempfile
    from pathlib import Path

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(TRAINING_DATA_ARTIFACT).name
        features.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), str(Path(TRAINING_DATA_ARTIFACT).parent))
    source = mlflow.get_artifact_uri(TRAINING_DATA_ARTIFACT)
    dataset = mlflow.data.from_pandas(features, source=source, name=name)
    mlflow.log_input(dataset, context="training")
    return source


def log_churn_model(
    trained: TrainedModel, name: str = "model", registered_model_name: str | None = None
):
    """Log a trained churn pipeline with signature, input example and pinned requirements,
    and its training rows (`log_training_data`). Chapter 01 shows the calls."""
    import mlflow
    from mlflow.models import infer_signature

    log_training_data(trained.X_train)
    example = trained.X_test.head(5)
    signature = infer_signature(example, prediction_output(trained.pipeline, example))
    return mlflow.sklearn.log_model(
        trained.pipeline,
        name=name,
        signature=signature,
        input_example=example,
        pip_requirements=pinned_requirements(*SKLEARN_MODEL_REQUIREMENTS),
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
        registered_model_name=registered_model_name,
    )


class ModelNameTakenError(RuntimeError):
    """A registered model of that name exists but has no `champion`: it is someone else's."""


def ensure_champion(name: str, with_challenger: bool = False, size: int = 5_000, seed: int = 42):
    """The `champion` version of `name`, training and registering the demo churn model when the
    name is not registered yet (chapter 01 shows the registry calls this makes).

    Any chapter calls this first, so it can run alone on a fresh machine. With
    `with_challenger`, a `challenger` version (a smaller model) is made too when missing. The
    runs go to the default experiment; the active experiment does not change. A model of that
    name with versions but no `champion` is not ours to add to: ModelNameTakenError.
    Returns the champion's ModelVersion.
    """
    import mlflow

    from utils.datasets import make_churn
    from utils.tracking import (
        CHALLENGER,
        CHAMPION,
        ModelNotFoundError,
        experiment_id,
        get_aliases,
        model_name,
        register_model,
    )

    default_experiment = experiment_id()
    client = mlflow.MlflowClient()
    try:
        aliases = get_aliases(name)
    except ModelNotFoundError:
        aliases = {}
    else:
        if CHAMPION not in aliases and client.search_model_versions(f"name='{model_name(name)}'"):
            raise ModelNameTakenError(
                f"Model {model_name(name)} is registered with versions but no 'champion' alias, "
                "so it is not this tutorial's demo model; the demo churn model will not be added "
                f"to it. Give MODEL_NAME another name, or set a champion: "
                f"MlflowClient().set_registered_model_alias({model_name(name)!r}, 'champion', V)."
            )
    wanted = [CHAMPION] + ([CHALLENGER] if with_challenger else [])
    data = None
    for alias in (a for a in wanted if a not in aliases):
        data = make_churn(size, seed) if data is None else data
        params = {} if alias == CHAMPION else {"n_estimators": 40, "max_depth": 2}
        trained = train_churn_model(data, **params)
        with mlflow.start_run(run_name=f"ensure-{alias}", experiment_id=default_experiment):
            mlflow.log_params({"rows": size, **params})
            mlflow.log_metrics({f"test_{k}": v for k, v in trained.metrics.items()})
            info = log_churn_model(trained)
        register_model(
            info.model_uri,
            name,
            description=(
                "Bank churn classifier (one-hot + scaling + gradient boosting) trained on "
                f"{size} generated customers; predicts Exited (1 = churns)."
            ),
            tags={
                "trained_by": "utils.training.ensure_champion",
                "test_auc": f"{trained.metrics['auc']:.4f}",
            },
            aliases=[alias],
        )
    return client.get_model_version_by_alias(model_name(name), CHAMPION)


class NoChampionError(LookupError):
    """A job needs the registered model's `champion` and there is none."""


def require_champion(name: str):
    """The `champion` version of `name`, or NoChampionError saying how to make one.

    For scheduled jobs: unlike `ensure_champion`, it never trains or registers anything, so a
    production job that finds no champion fails instead of quietly deploying a demo model.
    """
    import mlflow

    from utils.tracking import CHAMPION, ModelNotFoundError, get_aliases, model_name

    try:
        aliases = get_aliases(name)
    except ModelNotFoundError as missing:
        raise NoChampionError(
            f"{missing} A job does not train one on its own: register and promote a model "
            "first (chapters 01 and 08), then run the job again."
        ) from None
    if CHAMPION not in aliases:
        raise NoChampionError(
            f"Model {model_name(name)} has no '{CHAMPION}' alias (aliases: {aliases or 'none'}). "
            "Promote a validated version first (chapter 08), then run the job again."
        )
    return mlflow.MlflowClient().get_model_version_by_alias(model_name(name), CHAMPION)
