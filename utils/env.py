"""Where we run (laptop or Databricks), where files go, and how notebooks read parameters.

Parameters are read in one order everywhere: a Databricks widget, then a value injected by the
notebook runner, then an environment variable, then the notebook's default. The value is
converted to the type of the default, so a size given as text by a widget or an environment
variable arrives as an int, and a wrong value names the parameter.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypeVar

WORK_DIR_ENV = "MLDEPLOY_WORK_DIR"
# Every chapter's parameters cell reads CATALOG and SCHEMA with these defaults; the Unity
# Catalog names below use the same values, so there is one default in one place.
DEFAULT_CATALOG = "main"
DEFAULT_SCHEMA = "mlflow_deployment"
REPO_ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")

_injected: dict[str, Any] = {}
_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off", ""}


class ParameterError(ValueError):
    """A parameter's value cannot be read as the type its default has."""


def is_databricks() -> bool:
    """True inside a Databricks runtime (notebook or job)."""
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def uc_name(name: str) -> str:
    """Unity Catalog's naming rule, in one place: on Databricks a bare `name` becomes
    `catalog.schema.name` from the `CATALOG` and `SCHEMA` parameters (a short name would resolve
    against the session's current catalog and schema, not the chapter's). Locally, and for a
    name that already has dots, the name is returned as it is."""
    if is_databricks() and "." not in name:
        return f"{catalog()}.{schema()}.{name}"
    return name


def catalog() -> str:
    """The chapter's Unity Catalog catalog (the `CATALOG` parameter)."""
    return get_param("CATALOG", DEFAULT_CATALOG)


def schema() -> str:
    """The chapter's schema inside `catalog()` (the `SCHEMA` parameter)."""
    return get_param("SCHEMA", DEFAULT_SCHEMA)


def work_dir() -> Path:
    """The one folder for everything a local run writes: tracking DB, artifacts, warehouse,
    checkpoints, landing files, logs and executed notebooks.

    `$MLDEPLOY_WORK_DIR` overrides the default `.local/` in the repository. On Databricks the
    default is a Unity Catalog volume of the chapter's catalog and schema, so that Spark and
    plain Python see the same files.
    """
    override = os.environ.get(WORK_DIR_ENV)
    if override:
        path = Path(override).expanduser().resolve()
    elif is_databricks():
        path = Path(f"/Volumes/{catalog()}/{schema()}/work")
        if not path.exists():
            _create_volume(catalog(), schema(), "work")
    else:
        path = REPO_ROOT / ".local"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _create_volume(catalog: str, schema: str, volume: str) -> None:
    """Create the chapter's schema and work volume in Unity Catalog (needs CREATE privileges)."""
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS `{catalog}`.`{schema}`")
    spark.sql(f"CREATE VOLUME IF NOT EXISTS `{catalog}`.`{schema}`.`{volume}`")


def work_path(*parts: str) -> Path:
    """A folder (created) or a file's path (parent created) under the work dir:
    `work_path("checkpoints", "ch03")`, `work_path("mlflow.db")`."""
    path = work_dir().joinpath(*parts)
    (path.parent if path.suffix else path).mkdir(parents=True, exist_ok=True)
    return path


def append_path(*parts: str) -> Path:
    """A folder (created) for files written by appending while open, such as request logs:
    under the work dir locally; on Databricks on the driver's local disk, because Unity
    Catalog volumes (the work dir there) do not support appends to open files."""
    if not is_databricks() or os.environ.get(WORK_DIR_ENV):
        return work_path(*parts)
    import tempfile

    path = Path(tempfile.gettempdir(), "mlflow-deployment-notebooks", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def inject_params(values: dict[str, Any]) -> None:
    """Set parameter values for this process; the notebook runner calls this in an injected
    cell placed before a notebook's `parameters` cell."""
    _injected.update(values)


def clear_injected_params() -> None:
    _injected.clear()


def databricks_utils():
    """Databricks' `dbutils` from the notebook's namespace, or None elsewhere."""
    if not is_databricks():
        return None
    try:
        from IPython import get_ipython

        return get_ipython().user_ns["dbutils"]  # type: ignore[union-attr]
    except (ImportError, AttributeError, KeyError):
        return None


def _widget_value(name: str, default: Any) -> str | None:
    """A Databricks widget's value, creating the widget with the default when missing."""
    dbutils = databricks_utils()
    if dbutils is None:
        return None
    try:
        return dbutils.widgets.get(name)
    except Exception:  # the widget does not exist yet: create it so the UI shows it
        text = json.dumps(default) if isinstance(default, list | dict) else str(default)
        dbutils.widgets.text(name, "" if default is None else text)
        return dbutils.widgets.get(name)


def coerce(name: str, value: Any, default: Any) -> Any:
    """Convert `value` to the type of `default`; raise ParameterError naming `name` if it can't."""
    if default is None or value is None:
        return value
    target = type(default)
    if isinstance(value, target) and not (target is int and isinstance(value, bool)):
        return value
    text = str(value).strip()
    try:
        if target is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
        if target is int:
            if isinstance(value, float) and value.is_integer():
                return int(value)
            return int(text.replace("_", ""))
        if target is float:
            return float(text)
        if target in (list, dict):
            parsed = json.loads(text) if isinstance(value, str) else value
            if not isinstance(parsed, target):
                raise ValueError
            return parsed
        return target(text)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ParameterError(
            f"Parameter {name}={value!r} is not a valid {target.__name__} "
            f"(default {default!r}). Pass a {target.__name__}, e.g. {name}={default!r}."
        ) from None


def get_param(name: str, default: T) -> T:
    """Read parameter `name`: Databricks widget, injected value, environment variable, default.

    The result has the type of `default` (bool, int, float, str, list or dict).
    """
    for value in (_widget_value(name, default), _injected.get(name), os.environ.get(name)):
        if value is not None and not (isinstance(value, str) and value == "" and default):
            return coerce(name, value, default)
    return default


class NotebookExit(RuntimeError):
    """Raised by `exit_notebook` off Databricks, where no `dbutils.notebook.exit` exists."""


def exit_notebook(summary: Any) -> None:
    """End the notebook here with `summary` (JSON): `dbutils.notebook.exit` on Databricks (the
    run succeeds, the summary is the task's output); elsewhere NotebookExit says why it ended."""
    text = json.dumps(summary, default=str)
    dbutils = databricks_utils()
    if dbutils is not None:
        dbutils.notebook.exit(text)
    raise NotebookExit(f"The notebook ended here on purpose (job mode): {text}")


def secret(scope: str, key: str) -> str:
    """A secret from a Databricks secret scope (`dbutils.secrets.get`); Databricks only, so a
    token never appears in a notebook or its parameters."""
    dbutils = databricks_utils()
    if dbutils is None:
        raise RuntimeError(
            f"Secret scopes exist on Databricks only; here set the value in the environment "
            f"instead of reading secret {scope}/{key}."
        )
    return dbutils.secrets.get(scope=scope, key=key)
