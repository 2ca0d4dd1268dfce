"""Online feature lookups for a served model, with the checks that keep them honest.

`OnlineLookup` takes the request rows (the key and the request-time features), asks the
feature store's online store for a feature service, and either returns the features with the
time each group was computed, or raises an error that names what is wrong:

- `MissingRequestFeatureError` (HTTP 400): a request-time feature or the key is missing/null;
- `UnknownKeyError` (404): the store has nothing at all for a key;
- `FeaturesNotMaterializedError` (404): the key is known but a feature view has no row for it
  in the online store yet (a new customer, or a materialization that has not run);
- `StaleFeaturesError` (503): a feature view's values are older than the model's limit (the
  materialization job is late); retry after it runs.

MLflow's scoring server answers an `MlflowException` with the HTTP status of its error code,
so these reach the client as clear 4xx/503 answers. Nothing is imputed: a missing value is an
error, never a silent default. Self-contained (travels with the model): no `utils` imports.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)

PRESENT, NOT_FOUND, OUTSIDE_MAX_AGE = 1, 3, 4  # Feast's FieldStatus values


class FeatureLookupError(MlflowException):
    """A request whose features cannot be looked up; the message starts with the class name."""

    code = INVALID_PARAMETER_VALUE

    def __init__(self, message: str):
        super().__init__(f"{type(self).__name__}: {message}", error_code=self.code)


class MissingRequestFeatureError(FeatureLookupError):
    code = INVALID_PARAMETER_VALUE


class UnknownKeyError(FeatureLookupError):
    code = RESOURCE_DOES_NOT_EXIST


class FeaturesNotMaterializedError(FeatureLookupError):
    code = RESOURCE_DOES_NOT_EXIST


class StaleFeaturesError(FeatureLookupError):
    code = TEMPORARILY_UNAVAILABLE


@dataclass(frozen=True)
class LookupConfig:
    """What a model needs looked up: the feature service, the key column, the request-time
    features, and per feature view the oldest value (in hours) it accepts."""

    feature_service: str
    entity_key: str
    request_features: tuple[str, ...] = ()
    max_age_hours: Mapping[str, float] | None = None

    @classmethod
    def from_dict(cls, config: Mapping) -> LookupConfig:
        missing = [k for k in ("feature_service", "entity_key") if k not in config]
        if missing:
            raise ValueError(f"The model config needs {missing}; it has {sorted(config)}.")
        return cls(
            config["feature_service"],
            config["entity_key"],
            tuple(config.get("request_features", ())),
            dict(config.get("max_age_hours") or {}),
        )


def check_request(frame: pd.DataFrame, key: str, request_features: Sequence[str]) -> None:
    """Raise MissingRequestFeatureError unless every row has the key and each request feature."""
    columns = [key, *request_features]
    for column in columns:
        if column not in frame.columns:
            kind = "the entity key" if column == key else "a request-time feature"
            raise MissingRequestFeatureError(
                f"The request has no column '{column}' ({kind}; the store cannot look it up). "
                f"Send it with every row; the request had {list(frame.columns)}."
            )
    nulls = frame[columns].isna().to_numpy()
    if nulls.any():
        row, column = (int(i) for i in next(zip(*nulls.nonzero(), strict=True)))
        rows = [int(i) for i in frame.index[nulls[:, column]][:5]]
        raise MissingRequestFeatureError(
            f"'{columns[column]}' is null in rows {rows}; send a value (nothing is imputed)."
        )


class OnlineLookup:
    """Looks a feature service up for request rows in a Feast store's online store."""

    def __init__(self, store, config: LookupConfig, clock: Callable[[], float] = time.time):
        self.store, self.config, self.clock = store, config, clock
        self.service = store.get_feature_service(config.feature_service)
        # feature name -> view, for the stored views (on-demand ones are computed per request)
        on_demand = {view.name for view in store.list_on_demand_feature_views()}
        self.view_of: dict[str, str] = {}
        for projection in self.service.feature_view_projections:
            if projection.name not in on_demand:
                self.view_of.update({f.name: projection.name for f in projection.features})
        self.views = sorted(set(self.view_of.values()))
        self.feature_names = [
            f.name for p in self.service.feature_view_projections for f in p.features
        ]

    def lookup(self, frame: pd.DataFrame) -> tuple[dict[str, list], dict[str, list[int]]]:
        """The looked-up values per feature (lists in request order), and per view each row's
        time the values were computed (Unix seconds, UTC). Raises a FeatureLookupError when any
        row cannot be served. Plain Python between the store and the caller: this runs per
        request, and each pandas step would cost more than the lookup itself."""
        key, request = self.config.entity_key, list(self.config.request_features)
        check_request(frame, key, request)
        keys = frame[key].tolist()
        columns = [keys, *(frame[name].tolist() for name in request)]
        rows = [
            dict(zip([key, *request], values, strict=True)) for values in zip(*columns, strict=True)
        ]
        response = self.store.get_online_features(features=self.service, entity_rows=rows)
        status, seconds = self._status_and_time(response.proto)
        self._raise_for_missing(keys, status)
        self._raise_for_stale(keys, status, seconds)
        values = response.to_dict()
        return {name: values[name] for name in self.feature_names}, seconds

    def _status_and_time(self, proto) -> tuple[dict[str, list[set[int]]], dict[str, list[int]]]:
        """Per view: each row's set of field statuses, and the newest event time (seconds)."""
        n = len(proto.results[0].values) if proto.results else 0
        status = {view: [set() for _ in range(n)] for view in self.views}
        seconds = {view: [0] * n for view in self.views}
        for name, vector in zip(proto.metadata.feature_names.val, proto.results, strict=True):
            view = self.view_of.get(name)
            if view is None:
                continue
            for i, (s, ts) in enumerate(zip(vector.statuses, vector.event_timestamps, strict=True)):
                status[view][i].add(int(s))
                seconds[view][i] = max(seconds[view][i], ts.seconds)
        return status, seconds

    def _raise_for_missing(self, keys: list, status: dict[str, list[set[int]]]) -> None:
        found = [[v for v in self.views if status[v][i] - {NOT_FOUND}] for i in range(len(keys))]
        unknown = [k for k, views in zip(keys, found, strict=True) if not views]
        if unknown:
            raise UnknownKeyError(
                f"{self.config.entity_key} {unknown} not found in any feature view of "
                f"'{self.config.feature_service}' ({', '.join(self.views)}). Check the key; "
                "a customer created after the last materialization appears after the next one."
            )
        partial = {
            k: sorted(set(self.views) - set(views))
            for k, views in zip(keys, found, strict=True)
            if len(views) < len(self.views)
        }
        if partial:
            raise FeaturesNotMaterializedError(
                f"No online values yet for {self.config.entity_key} -> feature views {partial}. "
                "The key is known, but those views have no row for it in the online store "
                "(nothing computed yet, or not materialized). Nothing is imputed: retry after "
                "the next materialization, or score it with a model that does not need them."
            )

    def _raise_for_stale(self, keys: list, status, seconds: dict[str, list[int]]) -> None:
        now = self.clock()
        limits = self.config.max_age_hours or {}
        stale = {}
        for view in self.views:
            limit = limits.get(view)
            for i, computed in enumerate(seconds[view]):
                age_hours = (now - computed) / 3600
                if OUTSIDE_MAX_AGE in status[view][i] or (limit is not None and age_hours > limit):
                    stale.setdefault(view, []).append((keys[i], round(age_hours, 1)))
        if stale:
            detail = "; ".join(
                f"{view} (limit {limits.get(view, 'its ttl')} h): "
                + ", ".join(f"{k} is {h} h old" for k, h in pairs[:5])
                for view, pairs in stale.items()
            )
            raise StaleFeaturesError(
                f"The online store is stale: {detail}. The materialization job is late; run "
                "store.materialize_incremental(end_date=now) and retry."
            )
