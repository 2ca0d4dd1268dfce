"""The Feast feature repository of chapter 11: configuration, definitions, apply, materialize.

A Feast repository is a configuration (`feature_store.yaml`: project, registry, provider,
online and offline store) plus Python definitions (entities, sources, feature views, on-demand
feature views, feature services). Here the configuration points everything at the work dir:
the registry file and the SQLite online store live under `work_path("feast", ...)`, and the
offline store reads the Parquet files of the chapter's Spark tables. `feast apply` in a shell
and `FeatureStore.apply(objects)` in Python register the same objects; chapter 11 shows the
calls in cells, this module holds the plumbing.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from utils.env import is_databricks, work_path
from utils.features import LOOKUPKIT_PARENT  # noqa: F401  (puts `lookupkit` on sys.path)
from utils.features.transactions import (
    ACTIVITY_FEATURES,
    CUSTOMER_KEY,
    EVENT_TIME,
    PROFILE_FEATURES,
    REQUEST_FEATURE,
    Bank,
    activity_snapshots,
    new_customers,
    profile_rows,
)

PROJECT = "bank_churn"
FEATURE_SERVICE = "churn_model_v1"
ACTIVITY_TTL = timedelta(days=2)  # an older snapshot is no answer for a point in time
ON_DEMAND_FEATURES = ["balance_per_product"]

# Feast phones home with usage statistics unless told not to; this project runs offline.
os.environ.setdefault("FEAST_USAGE", "False")


def repo_dir(name: str = "repo") -> Path:
    """The feature repository's folder (registry and SQLite online store): under the work dir;
    on Databricks on the driver's local disk, since SQLite needs file locks a Volume lacks."""
    if is_databricks():
        path = Path(tempfile.gettempdir(), "mldeploy-feast", name)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return work_path("feast", name)


def offline_path(table: str) -> str:
    """A Parquet snapshot of Spark table `table` for Feast's file source, under the work dir.

    Feast reads every Parquet file in a folder, but a table's own folder can hold files that
    are not rows of the table: a Delta table keeps the files of removed versions, and a local
    Parquet table written through `utils.tables` can hold an empty schema-only file (which
    Feast's Dask reader cannot order by time). Export again after the table changes.
    """
    from utils import tables

    path = work_path("feast", "offline", table)
    tables.read_table(table).write.mode("overwrite").parquet(str(path))
    return str(path)


def repo_config(directory: Path, project: str = PROJECT):
    """Feast's configuration for a local repository: file registry, SQLite online store and
    the file (Parquet) offline store, all under `directory`."""
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.repo_config import RegistryConfig, RepoConfig

    directory = Path(directory)
    return RepoConfig(
        project=project,
        provider="local",
        registry=RegistryConfig(path=str(directory / "registry.db"), cache_ttl_seconds=60),
        online_store=SqliteOnlineStoreConfig(path=str(directory / "online_store.db")),
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=directory,
    )


def write_feature_store_yaml(directory: Path, project: str = PROJECT) -> Path:
    """Write `feature_store.yaml` for `directory`, so the `feast` CLI works there too."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = (
        f"project: {project}\nprovider: local\n"
        f"registry:\n  path: {directory / 'registry.db'}\n  cache_ttl_seconds: 60\n"
        f"online_store:\n  type: sqlite\n  path: {directory / 'online_store.db'}\n"
        "offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
    )
    path = directory / "feature_store.yaml"
    path.write_text(text)
    return path


def open_store(directory: Path, project: str = PROJECT):
    """A `FeatureStore` over the repository in `directory` (created when missing)."""
    from feast import FeatureStore

    directory = Path(directory)
    write_feature_store_yaml(directory, project)
    return FeatureStore(config=repo_config(directory, project))


@dataclass
class FeatureRepo:
    """The definitions of the chapter's repository, ready for `store.apply(repo.objects)`."""

    customer: Any
    profile_view: Any
    activity_view: Any
    request: Any
    on_demand: Any
    service: Any
    extra: list[Any] = field(default_factory=list)

    @property
    def objects(self) -> list[Any]:
        return [
            self.customer,
            self.profile_view,
            self.activity_view,
            self.on_demand,
            self.service,
            *self.extra,
        ]


def define_features(profile_path: str, activity_path: str) -> FeatureRepo:
    """Entity, sources, views and the feature service over the two Parquet feature tables."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.types import Float64, Int64, String
    from feast.value_type import ValueType

    customer = Entity(name="customer", join_keys=[CUSTOMER_KEY], value_type=ValueType.INT64)
    types = {
        "geography": String,
        "balance": Float64,
        "deposits_30d": Float64,
        "withdrawals_30d": Float64,
    }
    profile_view = FeatureView(
        name="customer_profile",
        entities=[customer],
        ttl=timedelta(0),  # 0: a profile never expires
        schema=[Field(name=f, dtype=types.get(f, Int64)) for f in PROFILE_FEATURES],
        source=FileSource(
            name="customer_profile_source", path=profile_path, timestamp_field=EVENT_TIME
        ),
    )
    activity_view = FeatureView(
        name="customer_activity_30d",
        entities=[customer],
        ttl=ACTIVITY_TTL,
        schema=[Field(name=f, dtype=types.get(f, Int64)) for f in ACTIVITY_FEATURES],
        source=FileSource(
            name="customer_activity_source", path=activity_path, timestamp_field=EVENT_TIME
        ),
    )
    request = RequestSource(name="request", schema=[Field(name=REQUEST_FEATURE, dtype=Int64)])

    @on_demand_feature_view(
        sources=[activity_view, request],
        schema=[Field(name="balance_per_product", dtype=Float64)],
        mode="python",
    )
    def customer_ratios(inputs: dict[str, list]) -> dict[str, list]:
        # Feast stores this function's source in the registry and runs it on its own, so it
        # names everything it uses here: `lookupkit` travels with the served model.
        from lookupkit.ondemand import balance_per_product

        pairs = zip(inputs["balance"], inputs["num_products"], strict=True)
        return {"balance_per_product": [balance_per_product(b, n) for b, n in pairs]}

    service = FeatureService(
        name=FEATURE_SERVICE, features=[profile_view, activity_view, customer_ratios]
    )
    return FeatureRepo(customer, profile_view, activity_view, request, customer_ratios, service)


def service_feature_names(store, service: str = FEATURE_SERVICE) -> list[str]:
    """The feature names a feature service returns, in its order (`view__feature` not used)."""
    names = []
    for projection in store.get_feature_service(service).feature_view_projections:
        names += [f.name for f in projection.features]
    return names


def write_feature_tables(
    bank: Bank, profile_table: str, activity_table: str, transactions_table: str | None = None
) -> dict[str, int]:
    """Write the profile (with the newly signed-up customers) and activity feature tables, and
    the transactions when `transactions_table` is given, as Spark tables (the offline sources
    of the Feast repository). Rows written per table."""
    from utils import tables

    frames = {
        profile_table: pd.concat([profile_rows(bank), new_customers(bank)], ignore_index=True),
        activity_table: activity_snapshots(bank),
    }
    if transactions_table:
        frames[transactions_table] = bank.transactions.drop(columns=["day"])
    for name, frame in frames.items():
        tables.write_table(frame, name)
    return {name: len(frame) for name, frame in frames.items()}
