"""Lakehouse Monitoring on chapter 09's inference table: the Databricks counterpart of the
chapter's accuracy-by-version and drift cells. An inference profile computes quality metrics
per model version and time window (with the labels once they arrive) and drift against the
previous window, with a dashboard. Built here as plain dicts, created through `databricks-sdk`
on Databricks only; it bills compute on each refresh, so the chapter creates it on request and
has a cleanup cell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from utils.monitoring.schema import ACTUAL_LABEL, MODEL_VERSION, PREDICTION, SCORED_AT


def inference_monitor_config(
    *,
    granularities: Sequence[str] = ("1 day",),
    slicing_exprs: Sequence[str] = ("Geography",),
    problem_type: str = "PROBLEM_TYPE_CLASSIFICATION",
    prediction_col: str = PREDICTION,
    label_col: str = ACTUAL_LABEL,
    model_id_col: str = MODEL_VERSION,
    timestamp_col: str = SCORED_AT,
) -> dict[str, Any]:
    """The `inference_log` profile and slices of a monitor on the inference table."""
    if not granularities:
        raise ValueError("An inference profile needs at least one granularity, e.g. '1 day'.")
    return {
        "inference_log": {
            "problem_type": problem_type,
            "prediction_col": prediction_col,
            "label_col": label_col,
            "model_id_col": model_id_col,
            "timestamp_col": timestamp_col,
            "granularities": list(granularities),
        },
        "slicing_exprs": list(slicing_exprs),
    }


def create_inference_monitor(
    table: str, output_schema: str, assets_dir: str, config: Mapping[str, Any], workspace=None
):
    """Create the monitor on `table` (catalog.schema.table); metrics tables go to
    `output_schema` (catalog.schema), the dashboard to the workspace folder `assets_dir`."""
    from databricks.sdk.service.catalog import MonitorInferenceLog

    workspace = workspace or _workspace()
    return workspace.quality_monitors.create(
        table_name=table,
        output_schema_name=output_schema,
        assets_dir=assets_dir,
        inference_log=MonitorInferenceLog.from_dict(dict(config["inference_log"])),
        slicing_exprs=list(config.get("slicing_exprs", [])),
    )


def delete_inference_monitor(table: str, workspace=None) -> None:
    """Delete the monitor on `table` (its metrics tables and dashboard stay; drop them too if
    unwanted)."""
    (workspace or _workspace()).quality_monitors.delete(table_name=table)


def _workspace():
    from utils.env import is_databricks

    if not is_databricks():
        raise RuntimeError("Lakehouse Monitoring runs on Databricks; build the config here only.")
    from databricks.sdk import WorkspaceClient

    return WorkspaceClient()
