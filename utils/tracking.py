"""MLflow set up for the chapters, and the registry helpers they share.

Locally: a SQLite tracking and registry database and an artifact folder under the work dir.
On Databricks: the workspace's tracking server and the Unity Catalog registry, with models
named `catalog.schema.model` from the CATALOG and SCHEMA parameters. Aliases only; no stages.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from utils.env import get_param, is_databricks, work_dir, work_path

DEFAULT_EXPERIMENT = "mlflow-deployment-notebooks"
CHAMPION, CHALLENGER = "champion", "challenger"

# Offline defaults checked on these machines (DESIGN.md section 7): no telemetry, no model
# catalog look-ups, no pip checks or uv detection.
OFFLINE_DEFAULTS = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_MODEL_CATALOG_URI": "",
    "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
    "MLFLOW_UV_AUTO_DETECT": "false",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # one bar per file clutters notebooks
}


# The local store is one SQLite file behind a small connection pool, and the local language
# model answers one request at a time: with MLflow's default of 10 evaluation workers (times
# up to 10 scorer workers) trace writes ran out of pooled connections and evaluation rows
# were silently dropped (22 of 40 scored). Two of each keeps every row and loses no speed here.
LOCAL_STORE_DEFAULTS = {
    "MLFLOW_GENAI_EVAL_MAX_WORKERS": "2",
    "MLFLOW_GENAI_EVAL_MAX_SCORER_WORKERS": "2",
}


class ModelNotFoundError(LookupError):
    """A model URI names a registered model, version or alias that does not exist."""


def apply_offline_defaults() -> None:
    """Set the offline MLflow settings unless the environment already chose otherwise."""
    for key, value in OFFLINE_DEFAULTS.items():
        os.environ.setdefault(key, value)


def tracking_uri() -> str:
    """`sqlite:///<work dir>/mlflow.db` locally, `databricks` on Databricks."""
    if is_databricks():
        return "databricks"
    return f"sqlite:///{work_path('mlflow.db')}"


def setup_mlflow(experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Point MLflow at this project's tracking store and registry; return the experiment id.

    Call it before any other MLflow call: MLflow 3 otherwise creates `mlflow.db` in the current
    directory. The URI is exported too, so servers and workers started later use the same store.
    """
    import mlflow

    apply_offline_defaults()
    if is_databricks():
        mlflow.set_tracking_uri("databricks")
        mlflow.set_registry_uri("databricks-uc")
        return mlflow.set_experiment(f"/Shared/{DEFAULT_EXPERIMENT}/{experiment}").experiment_id
    for key, value in LOCAL_STORE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    uri = tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_REGISTRY_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        artifacts = work_path("mlartifacts", experiment)
        mlflow.create_experiment(experiment, artifact_location=artifacts.as_uri())
    return mlflow.set_experiment(experiment).experiment_id


def model_name(name: str) -> str:
    """The registry name to use: `catalog.schema.name` in Unity Catalog, `name` locally."""
    if is_databricks() and "." not in name:
        return f"{get_param('CATALOG', 'main')}.{get_param('SCHEMA', 'mlflow_deployment')}.{name}"
    return name


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def registered_model_names() -> list[str]:
    return sorted(m.name for m in _client().search_registered_models())


def get_aliases(name: str) -> dict[str, int]:
    """Aliases of a registered model as {alias: version}.

    Read from the registered model: `search_model_versions` does not fill `aliases`.
    """
    from mlflow.exceptions import MlflowException

    try:
        model = _client().get_registered_model(model_name(name))
    except MlflowException:
        raise ModelNotFoundError(
            f"No registered model '{model_name(name)}'. Registered models: "
            f"{registered_model_names() or 'none'}. "
            "Run chapter 01 or utils.tracking.ensure_champion."
        ) from None
    return {alias: int(version) for alias, version in model.aliases.items()}


def set_alias(name: str, alias: str, version: int | str) -> None:
    _client().set_registered_model_alias(model_name(name), alias, str(version))


def register_model(
    model_uri: str,
    name: str,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    aliases: Iterable[str] = (),
):
    """Register `model_uri` as a new version of `name`, with description, tags and aliases."""
    import mlflow

    version = mlflow.register_model(model_uri, model_name(name), tags=dict(tags or {}))
    client = _client()
    if description:
        client.update_model_version(version.name, version.version, description=description)
    for alias in aliases:
        client.set_registered_model_alias(version.name, alias, version.version)
    return client.get_model_version(version.name, version.version)


_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def resolve_model_uri(uri: str):
    """The model version a `models:/name@alias` or `models:/name/version` URI points to.

    An unknown name lists the registered models; an unknown alias lists the aliases that exist.
    """
    match = _URI.match(uri)
    if not match:
        raise ModelNotFoundError(
            f"'{uri}' is not a registry URI; use models:/NAME@ALIAS or models:/NAME/VERSION."
        )
    name = model_name(match["name"])
    aliases = get_aliases(name)
    client = _client()
    if match["alias"]:
        if match["alias"] not in aliases:
            raise ModelNotFoundError(
                f"Model '{name}' has no alias '{match['alias']}'. Its aliases: "
                f"{aliases or 'none'}. Set one with utils.tracking.set_alias."
            )
        return client.get_model_version_by_alias(name, match["alias"])
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    if int(match["version"]) not in versions:
        raise ModelNotFoundError(
            f"Model '{name}' has no version {match['version']}; versions: {versions}."
        )
    return client.get_model_version(name, match["version"])


def model_uri(name: str, alias: str = CHAMPION) -> str:
    return f"models:/{model_name(name)}@{alias}"


def load_model(uri: str):
    """`mlflow.pyfunc.load_model` after checking the URI, so mistakes get a helpful message."""
    import mlflow

    if uri.startswith("models:/"):
        resolve_model_uri(uri)
    return mlflow.pyfunc.load_model(uri)


def ensure_champion(name: str, with_challenger: bool = False, size: int = 5_000, seed: int = 42):
    """The `champion` version of `name`, training and registering one when there is none.

    Any chapter calls this first, so it can run alone on a fresh machine. With
    `with_challenger`, a `challenger` version (a smaller model) is made too when missing.
    Returns the champion's ModelVersion.
    """
    import mlflow

    from utils.datasets import make_churn
    from utils.training import log_churn_model, train_churn_model

    setup_mlflow()
    try:
        aliases = get_aliases(name)
    except ModelNotFoundError:
        aliases = {}
    wanted = [CHAMPION] + ([CHALLENGER] if with_challenger else [])
    data = None
    for alias in (a for a in wanted if a not in aliases):
        data = make_churn(size, seed) if data is None else data
        params = {} if alias == CHAMPION else {"n_estimators": 40, "max_depth": 2}
        trained = train_churn_model(data, **params)
        with mlflow.start_run(run_name=f"ensure-{alias}"):
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
                "trained_by": "utils.tracking.ensure_champion",
                "test_auc": f"{trained.metrics['auc']:.4f}",
            },
            aliases=[alias],
        )
    return _client().get_model_version_by_alias(model_name(name), CHAMPION)


def artifacts_dir():
    """Folder of the local artifact store (models, plots)."""
    return work_dir() / "mlartifacts"
