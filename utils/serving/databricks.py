"""Databricks Model Serving endpoints: the `served_entities` and `traffic_config` of an
endpoint built from registered model versions and traffic weights, and creating or updating
the endpoint through `databricks-sdk` (on Databricks only). The builders are plain dicts, so
they can be checked anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def served_entity(
    model_name: str,
    version: int | str,
    *,
    name: str | None = None,
    workload_size: str = "Small",
    scale_to_zero: bool = True,
    environment_vars: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One `served_entities` item: a registered model version on a CPU workload."""
    if workload_size not in {"Small", "Medium", "Large"}:
        raise ValueError(f"workload_size must be Small, Medium or Large, got {workload_size!r}")
    entity = {
        "name": name or f"{model_name.split('.')[-1]}-{version}",
        "entity_name": model_name,
        "entity_version": str(version),
        "workload_size": workload_size,
        "scale_to_zero_enabled": scale_to_zero,
    }
    if environment_vars:
        entity["environment_vars"] = dict(environment_vars)
    return entity


def traffic_routes(weights: Mapping[str, float]) -> list[dict[str, Any]]:
    """`traffic_config.routes` from {served entity name: share}; shares are scaled to whole
    percentages that sum to exactly 100 (largest remainders get the rounding)."""
    from utils.abtest.router import normalize_weights

    shares = normalize_weights(weights)
    exact = {name: share * 100 for name, share in shares.items()}
    percent = {name: math.floor(value) for name, value in exact.items()}
    by_remainder = sorted(exact, key=lambda n: exact[n] - percent[n], reverse=True)
    for name in by_remainder[: 100 - sum(percent.values())]:
        percent[name] += 1
    return [{"served_entity_name": name, "traffic_percentage": percent[name]} for name in shares]


def endpoint_config(
    entities: Sequence[Mapping[str, Any]], weights: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """The endpoint `config`: served entities and, for several, the traffic split between them
    by entity name (all traffic to the only entity when `weights` is None)."""
    if not entities:
        raise ValueError("An endpoint needs at least one served entity.")
    names = [e["name"] for e in entities]
    if len(set(names)) != len(names):
        raise ValueError(f"Served entity names must be unique, got {names}")
    weights = weights or ({names[0]: 100} if len(names) == 1 else None)
    if weights is None:
        raise ValueError(f"Several served entities {names}: say how traffic splits with `weights`.")
    unknown = set(weights) - set(names)
    if unknown:
        raise ValueError(f"Traffic for {sorted(unknown)}, which are not served entities {names}.")
    return {
        "served_entities": [dict(e) for e in entities],
        "traffic_config": {"routes": traffic_routes(weights)},
    }


def inference_table_gateway(
    catalog: str, schema: str, table_name_prefix: str, enabled: bool = True
) -> dict[str, Any]:
    """The endpoint's `ai_gateway` with an inference table: Databricks logs every request and
    response to `<catalog>.<schema>.<prefix>_payload` (the counterpart of chapter 05's router
    log and chapter 09's inference table). Needs CREATE TABLE on the schema."""
    if not table_name_prefix:
        raise ValueError("Give the inference table a name prefix, e.g. the endpoint's name.")
    return {
        "inference_table_config": {
            "catalog_name": catalog,
            "schema_name": schema,
            "table_name_prefix": table_name_prefix.replace("-", "_"),
            "enabled": enabled,
        }
    }


def deploy_endpoint(
    name: str,
    config: Mapping[str, Any],
    client=None,
    timeout_minutes: int = 30,
    ai_gateway: Mapping[str, Any] | None = None,
):
    """Create the serving endpoint `name`, or update its config when it exists (zero downtime:
    the old config serves until the new one is ready), with an optional `ai_gateway` (see
    `inference_table_gateway`). Runs on Databricks only; the endpoint bills while it is up."""
    from utils.env import is_databricks

    if client is None:
        if not is_databricks():
            raise RuntimeError(
                "deploy_endpoint talks to a Databricks workspace; run it on Databricks "
                "(locally, serve with utils.serving.serve_model)."
            )
        from databricks.sdk import WorkspaceClient

        client = WorkspaceClient()
    from datetime import timedelta

    from databricks.sdk.errors import NotFound
    from databricks.sdk.service.serving import AiGatewayConfig, EndpointCoreConfigInput

    core = EndpointCoreConfigInput.from_dict({"name": name, **config})
    gateway = AiGatewayConfig.from_dict(dict(ai_gateway)) if ai_gateway else None
    wait = timedelta(minutes=timeout_minutes)
    try:
        client.serving_endpoints.get(name)
    except NotFound:
        return client.serving_endpoints.create_and_wait(
            name=name, config=core, ai_gateway=gateway, timeout=wait
        )
    if gateway is not None:
        client.serving_endpoints.put_ai_gateway(
            name=name, inference_table_config=gateway.inference_table_config
        )
    return client.serving_endpoints.update_config_and_wait(
        name=name,
        served_entities=core.served_entities,
        traffic_config=core.traffic_config,
        timeout=wait,
    )


def delete_endpoint(name: str, client=None) -> bool:
    """Delete serving endpoint `name` (the cleanup cell of chapters 04 and 05); False when
    there was none. Its inference table stays in Unity Catalog."""
    from databricks.sdk.errors import NotFound

    if client is None:
        from databricks.sdk import WorkspaceClient

        client = WorkspaceClient()
    try:
        client.serving_endpoints.delete(name)
    except NotFound:
        return False
    return True
