"""The chapter's operations on Databricks: a canary is a sequence of endpoint traffic configs
over two served entities; the endpoint's AI Gateway writes the inference table; Lakehouse
Monitoring profiles that table (an InferenceLog monitor) and draws its dashboard. The builders
are plain dicts (checked anywhere against `databricks-sdk`'s dataclasses); applying them talks
to a workspace and runs only there."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from utils.serving.databricks import endpoint_config, served_entity

CHAMPION_ENTITY, CHALLENGER_ENTITY = "champion", "challenger"


def check_percentages(routes: dict[str, float]) -> dict[str, float]:
    """Traffic percentages as an endpoint wants them: numbers >= 0 that add up to exactly 100."""
    bad = {k: v for k, v in routes.items() if not isinstance(v, int | float) or v < 0}
    if bad:
        raise ValueError(f"Traffic percentages must be numbers >= 0, got {bad}.")
    total = sum(routes.values())
    if abs(total - 100) > 1e-9:
        raise ValueError(
            f"Traffic percentages {routes} add up to {total:g}, not 100: an endpoint would "
            "refuse this config. Fix the numbers, or pass weights to endpoint_config, which "
            "scales them to whole percentages."
        )
    return routes


def canary_endpoint_configs(
    model_name: str, champion_version: int | str, challenger_version: int | str,
    steps: Sequence[float] = (0.05, 0.25, 0.5, 1.0),
) -> list[dict[str, Any]]:  # fmt: skip
    """One endpoint config per canary step: both versions served, the challenger's share of
    traffic in whole percent (a rollback is the config with share 0)."""
    entities = [
        served_entity(model_name, champion_version, name=CHAMPION_ENTITY),
        served_entity(model_name, challenger_version, name=CHALLENGER_ENTITY),
    ]
    configs = []
    for share in steps:
        if not 0 <= share <= 1:
            raise ValueError(f"A canary step is a share in [0, 1], got {share}.")
        weights = {CHAMPION_ENTITY: 1 - share, CHALLENGER_ENTITY: share}
        config = endpoint_config(entities, weights)
        check_percentages({r["served_entity_name"]: r["traffic_percentage"]
                           for r in config["traffic_config"]["routes"]})  # fmt: skip
        configs.append(config)
    return configs


def inference_table_config(catalog: str, schema: str, prefix: str) -> dict[str, Any]:
    """The AI Gateway setting that makes the endpoint log every request and response to
    `<catalog>.<schema>.<prefix>_payload` (for `put_ai_gateway`)."""
    return {
        "inference_table_config": {
            "catalog_name": catalog, "schema_name": schema,
            "table_name_prefix": prefix, "enabled": True,
        }
    }  # fmt: skip


def inference_monitor(
    prediction_col: str = "prediction", label_col: str = "actual_label",
    model_id_col: str = "model_version", timestamp_col: str = "scored_at",
    granularities: Sequence[str] = ("1 hour", "1 day"),
) -> dict[str, Any]:  # fmt: skip
    """A Lakehouse Monitoring InferenceLog profile for a classifier's inference table: the
    same accuracy-by-version and drift this chapter draws locally, computed by Databricks."""
    return {
        "problem_type": "PROBLEM_TYPE_CLASSIFICATION", "prediction_col": prediction_col,
        "label_col": label_col, "model_id_col": model_id_col,
        "timestamp_col": timestamp_col, "granularities": list(granularities),
    }  # fmt: skip


def apply_on_databricks(
    endpoint: str, config: dict[str, Any], table: str | None = None,
    monitor: dict[str, Any] | None = None, assets_dir: str = "", output_schema: str = "",
):  # fmt: skip
    """Deploy a step's config and, when given, create the monitor on `table`. Databricks only."""
    from utils.env import is_databricks
    from utils.serving.databricks import deploy_endpoint

    if not is_databricks():
        raise RuntimeError("apply_on_databricks talks to a workspace; run it on Databricks.")
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.service.catalog import MonitorInferenceLog

    client = WorkspaceClient()
    endpoint_state = deploy_endpoint(endpoint, config, client=client)
    if table and monitor:
        client.quality_monitors.create(
            table_name=table, assets_dir=assets_dir, output_schema_name=output_schema,
            inference_log=MonitorInferenceLog.from_dict(monitor),
        )  # fmt: skip
    return endpoint_state
