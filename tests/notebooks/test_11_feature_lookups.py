"""Chapter 11 end to end: feature tables, Feast, the leak of a naive training set, a served
model that looks its features up by key, the skew check and the bad-input answers."""

import pytest

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def result(run_chapter):
    return run_chapter(
        "11_feature_lookups", N_CUSTOMERS=600, DAYS=150, LABELS_PER_CUSTOMER=3, LATENCY_REQUESTS=50
    )


def test_feature_tables_were_written(result):
    rows = result.recorded["rows_written"]
    assert rows["customer_activity_30d_features"] == 600 * (150 - 30 + 1)
    assert rows["customer_profile_features"] == 603  # three customers signed up today
    assert rows["customer_transactions"] > 10_000


def test_point_in_time_keeps_every_label(result):
    for kept, labels in result.recorded["labels_kept"].values():
        assert kept == labels


def test_the_naive_set_leaks_and_the_point_in_time_set_does_not(result):
    leak = result.recorded["leak"]
    assert leak["naive"]["offline_auc"] > 0.95
    assert result.recorded["naive_offline_minus_later_auc"] > 0.25
    assert result.recorded["pit_offline_minus_later_auc"] < 0.15
    assert leak["point-in-time"]["later_auc"] > leak["naive"]["later_auc"] + 0.15


def test_a_request_with_only_a_key_gets_an_answer_with_its_features(result):
    answer = result.recorded["served_answer"]
    assert 0 <= answer["churn_probability"] <= 1
    assert answer["balance_per_product"] == pytest.approx(answer["balance"] / 2)
    assert answer["customer_activity_30d_as_of"].endswith("T00:00:00Z")
    assert result.recorded["shipped_code"] == ["lookupkit"]


def test_served_features_equal_the_offline_store(result):
    assert result.recorded["skew_compared"] >= 200
    assert result.recorded["skew_differences"] == 0


def test_lookup_latencies_were_recorded(result):
    assert 0 < result.recorded["lookup_p50_ms_1key"] <= result.recorded["lookup_p99_ms_1key"]
    assert result.recorded["lookup_p50_ms_100keys"] > 0
    assert result.recorded["served_p50_ms"] > 0


def test_bad_input_gets_a_clear_status_and_a_named_error(result):
    assert result.recorded["bad_input_status"] == {
        "unknown key": 404,
        "no activity yet": 404,
        "missing request feature": 400,
        "stale store": 503,
    }
    messages = result.recorded["bad_input_message"]
    assert "UnknownKeyError" in messages["unknown key"]
    assert "FeaturesNotMaterializedError" in messages["no activity yet"]
    assert "num_products" in messages["missing request feature"]
    assert "StaleFeaturesError" in messages["stale store"]
    assert result.recorded["served_after_bad_input"] == 1
