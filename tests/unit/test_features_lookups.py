"""lookupkit (shipped with the chapter 11 model): request checks and online lookups against a
real small Feast store, with each failure named and mapped to its HTTP status."""

import pandas as pd
import pytest

from tests.unit.feast_store import END, build_small_store
from utils.features import LOOKUPKIT_PARENT  # noqa: F401
from utils.features.feast_repo import FEATURE_SERVICE
from utils.features.model_code.lookupkit.lookups import (
    FeaturesNotMaterializedError,
    LookupConfig,
    MissingRequestFeatureError,
    OnlineLookup,
    StaleFeaturesError,
    UnknownKeyError,
    check_request,
)
from utils.features.transactions import CUSTOMER_KEY

pytestmark = pytest.mark.unit
CONFIG = LookupConfig(
    FEATURE_SERVICE, CUSTOMER_KEY, ("num_products",), {"customer_activity_30d": 36.0}
)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return build_small_store(tmp_path_factory.mktemp("feast"))


def lookup(small, hours_after_end: float = 6.0) -> OnlineLookup:
    now = (END + pd.Timedelta(hours=hours_after_end)).timestamp()
    return OnlineLookup(small.store, CONFIG, clock=lambda: now)


def request(keys, products=1) -> pd.DataFrame:
    return pd.DataFrame({CUSTOMER_KEY: keys, "num_products": [products] * len(keys)})


def test_known_keys_get_features_and_their_time(small):
    keys = small.activity[CUSTOMER_KEY].unique()[:3].tolist()
    values, as_of = lookup(small).lookup(request(keys, 2))
    features = pd.DataFrame(values)
    assert len(features) == 3 and not features.isna().any().any()
    assert (features["balance_per_product"] == features["balance"] / 2).all()
    assert as_of["customer_activity_30d"] == [END.timestamp()] * 3


def test_an_unknown_key_is_a_404_naming_it(small):
    with pytest.raises(UnknownKeyError, match=r"UnknownKeyError: customer_id \[1\]") as error:
        lookup(small).lookup(request([1]))
    assert error.value.get_http_status_code() == 404


def test_a_key_without_activity_rows_is_not_materialized(small):
    newcomer = int(small.newcomers[CUSTOMER_KEY].iloc[0])
    with pytest.raises(FeaturesNotMaterializedError, match="customer_activity_30d") as error:
        lookup(small).lookup(request([newcomer]))
    assert error.value.get_http_status_code() == 404


def test_values_older_than_the_limit_are_stale(small):
    key = int(small.activity[CUSTOMER_KEY].iloc[0])
    with pytest.raises(StaleFeaturesError, match=r"48.0 h old.*materialize_incremental") as error:
        lookup(small, hours_after_end=48).lookup(request([key]))
    assert error.value.get_http_status_code() == 503


def test_missing_or_null_request_features_are_400(small):
    key = int(small.activity[CUSTOMER_KEY].iloc[0])
    with pytest.raises(MissingRequestFeatureError, match="no column 'num_products'") as error:
        lookup(small).lookup(pd.DataFrame({CUSTOMER_KEY: [key]}))
    assert error.value.get_http_status_code() == 400
    with pytest.raises(MissingRequestFeatureError, match="'num_products' is null in rows \\[1\\]"):
        check_request(
            pd.DataFrame({CUSTOMER_KEY: [1, 2], "num_products": [1, None]}),
            CUSTOMER_KEY,
            ["num_products"],
        )
    with pytest.raises(MissingRequestFeatureError, match="the entity key"):
        check_request(pd.DataFrame({"num_products": [1]}), CUSTOMER_KEY, ["num_products"])


def test_config_needs_a_service_and_a_key():
    with pytest.raises(ValueError, match="feature_service"):
        LookupConfig.from_dict({"entity_key": "k"})
    config = LookupConfig.from_dict(
        {"feature_service": "s", "entity_key": "k", "request_features": ["r"]}
    )
    assert config.request_features == ("r",) and config.max_age_hours == {}
