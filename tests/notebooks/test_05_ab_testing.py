"""Chapter 05 end to end with a few hundred requests: split, stickiness, inference table."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def result(run_chapter):
    return run_chapter("05_ab_testing", N_REQUESTS=300, SPLIT_CHECK_REQUESTS=2000, CONCURRENCY=4)


def test_router_pins_both_registered_versions(result):
    versions = result.recorded["variant_versions"]
    assert set(versions) == {"champion", "challenger"}
    assert versions["champion"] != versions["challenger"]
    assert result.recorded["router_uri"].startswith("models:/bank_churn_ab_router/")


def test_observed_split_is_within_3_points_of_the_configured_one(result):
    assert result.recorded["configured_shares"] == {"champion": 0.9, "challenger": 0.1}
    assert result.recorded["split_check_requests"] >= 2000
    assert result.recorded["split_error_points"] <= 3.0
    # 300 requests over HTTP: the same routing, a wider margin by chance alone
    assert result.recorded["http_split_error_points"] <= 6.0


def test_every_request_answered_with_its_variant_and_sticks_to_it(result):
    assert result.recorded["http_requests"] == 300
    assert result.recorded["http_errors"] == 0
    assert result.recorded["every_answer_has_variant"] is True
    assert result.recorded["sticky_routing"] is True


def test_inference_table_gets_every_request_and_its_label(result):
    assert result.recorded["inference_rows"] == 300
    assert result.recorded["labels_merged"] == 300
    assert result.recorded["labels_unmatched"] == 1  # the label for an unknown request


def test_variants_are_compared_on_the_traffic_they_served(result):
    rows = {row["variant"]: row for row in result.recorded["comparison"]}
    assert set(rows) == {"champion", "challenger"}
    assert sum(row["requests"] for row in rows.values()) == 300
    assert rows["champion"]["requests"] > rows["challenger"]["requests"]
    assert all(0 <= row["accuracy"] <= 1 for row in rows.values())


def test_the_same_split_as_a_databricks_traffic_config(result):
    assert result.recorded["traffic_routes"] == [
        {"served_entity_name": "champion", "traffic_percentage": 90},
        {"served_entity_name": "challenger", "traffic_percentage": 10},
    ]


def test_the_variants_are_compared_by_a_test_of_their_difference(result):
    low, high = result.recorded["difference_interval"]
    assert low < result.recorded["accuracy_difference"] < high
    assert 0 <= result.recorded["p_value"] <= 1
    # A 10% arm needs far more traffic than this run sent to see a 2-point difference.
    assert result.recorded["needed_requests_for_2_points"] > 10 * result.recorded["inference_rows"]
