"""The Databricks configs of chapter 12 round-trip through databricks-sdk's dataclasses."""

from __future__ import annotations

import pytest
from databricks.sdk.service.serving import EndpointCoreConfigInput

from utils.operations.databricks import canary_endpoint_configs

pytestmark = pytest.mark.unit


def test_canary_steps_become_endpoint_configs():
    configs = canary_endpoint_configs("main.ml.bank_churn", 3, 4)
    shares = [{r["served_entity_name"]: r["traffic_percentage"]
               for r in c["traffic_config"]["routes"]} for c in configs]  # fmt: skip
    assert shares == [
        {"champion": 95, "challenger": 5}, {"champion": 75, "challenger": 25},
        {"champion": 50, "challenger": 50}, {"champion": 0, "challenger": 100},
    ]  # fmt: skip
    for config in configs:
        assert EndpointCoreConfigInput.from_dict(config).as_dict() == config
    with pytest.raises(ValueError, match=r"share in \[0, 1\]"):
        canary_endpoint_configs("m", 1, 2, steps=(1.5,))


def test_percentages_that_do_not_add_up_are_refused():
    from utils.operations.databricks import check_percentages

    with pytest.raises(ValueError, match="add up to 110, not 100"):
        check_percentages({"champion": 90, "challenger": 20})
    with pytest.raises(ValueError, match="numbers >= 0"):
        check_percentages({"champion": 110, "challenger": -10})
    assert check_percentages({"a": 95, "b": 5}) == {"a": 95, "b": 5}
