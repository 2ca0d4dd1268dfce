"""The same feature lookups on Databricks, with Databricks Feature Engineering in Unity Catalog.

Locally chapter 11 uses Feast; on Databricks it runs these calls instead (only there: the
`databricks-feature-engineering` client needs a workspace). The arguments are built by plain
functions, unit-tested here, so what runs there is what was checked:

- feature tables: `fe.create_table(name, primary_keys, timeseries_column, df)` (Delta tables
  with a primary key; the time-series column makes lookups point-in-time);
- `FeatureLookup(table_name, lookup_key, feature_names, timestamp_lookup_key)` per table;
- the on-demand feature as a Unity Catalog Python function (`FeatureFunction`), whose body is
  the source of `lookupkit.ondemand.balance_per_product`, the function Feast runs locally;
- `fe.create_training_set(df=labels, feature_lookups=..., label=..., exclude_columns=...)`;
- `fe.log_model(model=..., artifact_path=..., flavor=mlflow.sklearn, training_set=...)`, which
  stores the lookups with the model, so `fe.score_batch(model_uri, df)` and a serving endpoint
  look the features up from keys alone (online: publish the tables to an online store).
"""

from __future__ import annotations

import inspect
import textwrap
from typing import Any

from utils.features.feast_repo import ACTIVITY_TTL
from utils.features.model_code.lookupkit.ondemand import balance_per_product
from utils.features.transactions import (
    ACTIVITY_FEATURES,
    CUSTOMER_KEY,
    EVENT_TIME,
    LABEL,
    PROFILE_FEATURES,
    REQUEST_FEATURE,
)

# Feature tables of their own (with primary keys), filled from the chapter's Spark tables.
PROFILE_TABLE = "customer_profile_fe"
ACTIVITY_TABLE = "customer_activity_30d_fe"
ON_DEMAND_FUNCTION = "balance_per_product"
LOOKUP_TIME = "label_time"  # the labels' time column, as Databricks names a lookup's time key


def three_part_name(catalog: str, schema: str, name: str) -> str:
    """`catalog.schema.name`, refusing names that would resolve against another schema."""
    for part, value in (("catalog", catalog), ("schema", schema), ("name", name)):
        if not value or "." in value or "`" in value:
            raise ValueError(f"{part} must be one plain identifier, got {value!r}")
    return f"{catalog}.{schema}.{name}"


def feature_table_specs(catalog: str, schema: str) -> list[dict[str, Any]]:
    """`fe.create_table` arguments (without `df`) for the profile and activity tables."""
    return [
        {
            "name": three_part_name(catalog, schema, PROFILE_TABLE),
            "primary_keys": [CUSTOMER_KEY],
            "description": "Customer profile (age, credit score, tenure, ...); one row each.",
        },
        {
            "name": three_part_name(catalog, schema, ACTIVITY_TABLE),
            "primary_keys": [CUSTOMER_KEY, EVENT_TIME],
            "timeseries_column": EVENT_TIME,
            "description": "Daily snapshots of 30-day transaction aggregates per customer.",
        },
    ]


def write_feature_tables(fe, catalog: str, schema: str, frames: list) -> list[str]:
    """Create each feature table of `feature_table_specs` from the matching Spark DataFrame in
    `frames` (profile, activity), or merge the rows into it when it exists already (re-runs)."""
    names = []
    for spec, df in zip(feature_table_specs(catalog, schema), frames, strict=True):
        try:
            fe.get_table(name=spec["name"])
        except Exception:  # the client raises a generic error for a missing table
            fe.create_table(**spec, df=df)
        else:
            fe.write_table(name=spec["name"], df=df, mode="merge")
        names.append(spec["name"])
    return names


def feature_lookup_specs(catalog: str, schema: str) -> list[dict[str, Any]]:
    """`FeatureLookup` arguments: profile by key; activity by key as of the label time, no
    older than the activity view's ttl (as Feast's ttl does locally)."""
    return [
        {
            "table_name": three_part_name(catalog, schema, PROFILE_TABLE),
            "lookup_key": CUSTOMER_KEY,
            "feature_names": list(PROFILE_FEATURES),
        },
        {
            "table_name": three_part_name(catalog, schema, ACTIVITY_TABLE),
            "lookup_key": CUSTOMER_KEY,
            "timestamp_lookup_key": LOOKUP_TIME,
            "lookback_window": ACTIVITY_TTL,
            "feature_names": list(ACTIVITY_FEATURES),
        },
    ]


def feature_function_spec(catalog: str, schema: str) -> dict[str, Any]:
    """`FeatureFunction` arguments for the on-demand feature."""
    return {
        "udf_name": three_part_name(catalog, schema, ON_DEMAND_FUNCTION),
        "input_bindings": {"balance": "balance", "num_products": REQUEST_FEATURE},
        "output_name": "balance_per_product",
    }


def uc_function_body() -> str:
    """The Python body of the Unity Catalog function: the shared definition, then a call."""
    source = textwrap.dedent(inspect.getsource(balance_per_product))
    return f"{source}\nreturn balance_per_product(balance, num_products)\n"


def uc_function_sql(catalog: str, schema: str) -> str:
    """`CREATE FUNCTION` for the on-demand feature (a Python UDF in Unity Catalog)."""
    return (
        f"CREATE OR REPLACE FUNCTION {three_part_name(catalog, schema, ON_DEMAND_FUNCTION)}"
        "(balance DOUBLE, num_products BIGINT)\nRETURNS DOUBLE\nLANGUAGE PYTHON\n"
        f"COMMENT 'Balance per product held; same code as Feast runs locally'\nAS $$\n"
        f"{uc_function_body()}$$"
    )


def training_set_kwargs(catalog: str, schema: str) -> dict[str, Any]:
    """`fe.create_training_set` arguments besides `df` and `feature_lookups`."""
    return {"label": LABEL, "exclude_columns": [LOOKUP_TIME]}


def labels_for_databricks(labels):
    """Labels with the time column renamed as the lookups expect (Feast calls it the event
    timestamp; a Databricks lookup names it with `timestamp_lookup_key`)."""
    return labels.rename(columns={EVENT_TIME: LOOKUP_TIME})


def log_model_kwargs(registered_model_name: str) -> dict[str, Any]:
    """`fe.log_model` arguments besides `model`, `flavor` and `training_set`."""
    return {
        "artifact_path": "model",
        "registered_model_name": registered_model_name,
        "infer_input_example": True,
    }


def build_lookups(catalog: str, schema: str) -> list[Any]:
    """The `FeatureLookup` and `FeatureFunction` objects (needs databricks-feature-engineering)."""
    from databricks.feature_engineering import FeatureFunction, FeatureLookup

    return [FeatureLookup(**spec) for spec in feature_lookup_specs(catalog, schema)] + [
        FeatureFunction(**feature_function_spec(catalog, schema))
    ]


def request_columns() -> list[str]:
    """What a request to the Databricks-logged model carries: the key and the request feature."""
    return [CUSTOMER_KEY, REQUEST_FEATURE]
