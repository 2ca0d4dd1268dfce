"""A canary on Databricks: a sequence of endpoint traffic configs over two served entities
(the rollback is the config with share 0), checked to add up to 100 %. The endpoint's inference
table (`utils.serving.inference_table_gateway`) and its Lakehouse Monitoring profile
(`utils.monitoring.lakehouse`) are built by the chapter 05 and 09 helpers; deploying runs only
on Databricks (`utils.serving.deploy_endpoint`)."""

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
