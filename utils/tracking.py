"""MLflow set up for the chapters, and the registry helpers they share.

Locally: a SQLite tracking and registry database and an artifact folder under the work dir.
On Databricks: the workspace's tracking server and the Unity Catalog registry, with models
named `catalog.schema.model` from the CATALOG and SCHEMA parameters. Aliases only; no stages.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

from utils.env import is_databricks, uc_name, work_dir, work_path

DEFAULT_EXPERIMENT = "mlflow-deployment-notebooks"
CHAMPION, CHALLENGER = "champion", "challenger"

# Offline defaults: no telemetry, no model catalog look-ups (each costs ~6 s per evaluate
# call), no pip checks or uv detection.
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


def configure_tracking() -> None:
    """Point MLflow at this project's tracking store and registry, leaving the active
    experiment alone. The URI is exported too, so servers and workers started later use it."""
    import mlflow

    apply_offline_defaults()
    if is_databricks():
        mlflow.set_tracking_uri("databricks")
        mlflow.set_registry_uri("databricks-uc")
        return
    for key, value in LOCAL_STORE_DEFAULTS.items():
        os.environ.setdefault(key, value)
    uri = tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_REGISTRY_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


def experiment_id(experiment: str = DEFAULT_EXPERIMENT) -> str:
    """The id of `experiment`, created when missing (locally with its artifacts under the work
    dir); the active experiment does not change."""
    import mlflow

    configure_tracking()
    if is_databricks():
        experiment = databricks_experiment_path(experiment)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    if is_databricks():
        return mlflow.create_experiment(experiment)
    artifacts = work_path("mlartifacts", experiment)
    return mlflow.create_experiment(experiment, artifact_location=artifacts.as_uri())


def databricks_experiment_path(experiment: str, workspace=None) -> str:
    """Where `experiment` lives in a Databricks workspace, its folder created.

    A name becomes `/Users/<you>/mlflow-deployment-notebooks/<name>` (a folder every user, and
    a job's service principal, may write); an absolute path is kept. MLflow does not create
    parent folders (`RESOURCE_DOES_NOT_EXIST`), so the folder is made with the workspace API's
    `mkdirs`, which succeeds when it exists already. `workspace` is a WorkspaceClient.
    """
    if workspace is None:
        from databricks.sdk import WorkspaceClient

        workspace = WorkspaceClient()
    if experiment.startswith("/"):
        path = experiment
    else:
        me = workspace.current_user.me().user_name
        path = f"/Users/{me}/{DEFAULT_EXPERIMENT}/{experiment}"
    workspace.workspace.mkdirs(path.rsplit("/", 1)[0])
    return path


def setup_mlflow(experiment: str = DEFAULT_EXPERIMENT) -> str:
    """Point MLflow at this project's tracking store and registry and make `experiment` the
    active one; return its id.

    Call it before any other MLflow call: MLflow 3 otherwise creates `mlflow.db` in the current
    directory. Prints the MLflow and Python versions with where runs go: the first thing to
    compare when a chapter behaves differently on another machine or after an upgrade.
    """
    import platform

    import mlflow

    active = mlflow.set_experiment(experiment_id=experiment_id(experiment))
    print(
        f"MLflow {mlflow.__version__}, Python {platform.python_version()}; experiment "
        f"{active.name!r} (id {active.experiment_id}) in {mlflow.get_tracking_uri()}"
    )
    return active.experiment_id


def model_name(name: str) -> str:
    """The registry name to use: `catalog.schema.name` in Unity Catalog, `name` locally."""
    return uc_name(name)


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
            "Run chapter 01 or utils.training.ensure_champion."
        ) from None
    return {alias: int(version) for alias, version in model.aliases.items()}


def set_alias(name: str, alias: str, version: int | str) -> None:
    """Point `alias` at `version` of `name` (chapter 01 shows `set_registered_model_alias`)."""
    _client().set_registered_model_alias(model_name(name), alias, str(version))


def register_model(
    model_uri: str,
    name: str,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    aliases: Iterable[str] = (),
):
    """Register `model_uri` as a new version of `name`, with description, tags and aliases.

    Chapter 01 shows the calls: `mlflow.register_model`, `MlflowClient().update_model_version`
    and `set_registered_model_alias`; later chapters use this."""
    import mlflow

    version = mlflow.register_model(model_uri, model_name(name), tags=dict(tags or {}))
    client = _client()
    if description:
        client.update_model_version(version.name, version.version, description=description)
    for alias in aliases:
        client.set_registered_model_alias(version.name, alias, version.version)
    return client.get_model_version(version.name, version.version)


def register_or_refusal(model_uri: str, name: str, **kwargs):
    """`register_model`, or the registry's refusal when the model has no signature: returns
    (version, None) or (None, the refusal's message). Unity Catalog refuses a model logged
    without a signature ("All models in the Unity Catalog must be logged with a model
    signature"); chapter 08 shows that refusal as part of its lesson. Other errors raise."""
    from mlflow.exceptions import MlflowException

    try:
        return register_model(model_uri, name, **kwargs), None
    except MlflowException as refusal:
        if "signature" not in refusal.message:
            raise
        return None, f"The registry refused {model_name(name)}: {refusal.message}"


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


def artifacts_dir():
    """Folder of the local artifact store (models, plots)."""
    return work_dir() / "mlartifacts"
