"""utils.features.feast_repo: a real Feast repository on small Parquet tables: configuration
under the given folder, point-in-time joins, materialization and online reads."""

import pandas as pd
import pytest
import yaml

from tests.unit.feast_store import build_small_store
from utils.features.feast_repo import (
    FEATURE_SERVICE,
    repo_config,
    service_feature_names,
    write_feature_store_yaml,
)
from utils.features.transactions import CUSTOMER_KEY, EVENT_TIME

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return build_small_store(tmp_path_factory.mktemp("feast"))


def test_everything_lives_under_the_repository_folder(tmp_path):
    config = repo_config(tmp_path)
    assert config.registry.path.startswith(str(tmp_path))
    assert config.online_store.path.startswith(str(tmp_path))
    written = yaml.safe_load(write_feature_store_yaml(tmp_path / "r").read_text())
    assert written["online_store"] == {
        "type": "sqlite",
        "path": str(tmp_path / "r" / "online_store.db"),
    }
    assert written["offline_store"] == {"type": "file"}


def test_the_feature_service_lists_stored_and_on_demand_features(small):
    names = service_feature_names(small.store)
    assert names[-1] == "balance_per_product"
    assert {"age", "balance", "txn_count_30d"} <= set(names)


def test_historical_features_are_as_of_each_label_time(small):
    activity = small.activity
    key = int(activity[CUSTOMER_KEY].iloc[0])
    times = [
        small.bank.day(40) + pd.Timedelta(hours=12),
        small.bank.day(55) + pd.Timedelta(hours=1),
    ]
    entity = pd.DataFrame({CUSTOMER_KEY: [key, key], EVENT_TIME: times, "num_products": [1, 2]})
    service = small.store.get_feature_service(FEATURE_SERVICE)
    got = small.store.get_historical_features(entity_df=entity, features=service).to_df()
    got = got.sort_values(EVENT_TIME).reset_index(drop=True)
    for i, at in enumerate(times):
        rows = activity[(activity[CUSTOMER_KEY] == key) & (activity[EVENT_TIME] <= at)]
        expected = rows.sort_values(EVENT_TIME).iloc[-1]
        assert got.loc[i, "balance"] == pytest.approx(expected["balance"])
        assert got.loc[i, "txn_count_30d"] == expected["txn_count_30d"]
        assert got.loc[i, "balance_per_product"] == pytest.approx(expected["balance"] / (i + 1))


def test_a_moment_with_no_activity_within_the_ttl_is_dropped(small):
    # Feast 0.67's file offline store drops an entity row that has no value within a view's
    # ttl (it does not return nulls): chapter 11 checks the training set keeps every label.
    key = int(small.activity[CUSTOMER_KEY].iloc[0])
    too_early, covered = small.bank.day(5), small.bank.day(40)  # snapshots start at day 30
    entity = pd.DataFrame(
        {CUSTOMER_KEY: [key, key], EVENT_TIME: [too_early, covered], "num_products": [1, 1]}
    )
    got = small.store.get_historical_features(
        entity_df=entity, features=small.store.get_feature_service(FEATURE_SERVICE)
    ).to_df()
    assert got[EVENT_TIME].tolist() == [covered]


def test_online_values_are_the_latest_materialized_ones(small):
    key = int(small.activity[CUSTOMER_KEY].iloc[0])
    online = small.store.get_online_features(
        features=small.store.get_feature_service(FEATURE_SERVICE),
        entity_rows=[{CUSTOMER_KEY: key, "num_products": 4}],
    ).to_dict()
    latest = small.activity[small.activity[CUSTOMER_KEY] == key].iloc[-1]
    assert online["balance"][0] == pytest.approx(latest["balance"])
    assert online["balance_per_product"][0] == pytest.approx(latest["balance"] / 4)
