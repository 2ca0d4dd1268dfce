"""utils.endpoints: Databricks serving endpoint config and create-or-update (with a fake
workspace client; the real calls run only on Databricks)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from utils.serving import databricks as endpoints
from utils.serving.databricks import endpoint_config, served_entity, traffic_routes

pytestmark = pytest.mark.unit


def test_traffic_routes_are_whole_percentages_summing_to_100():
    routes = traffic_routes({"a": 1, "b": 1, "c": 1})
    assert [r["traffic_percentage"] for r in routes] == [34, 33, 33]
    assert traffic_routes({"champion": 0.9, "challenger": 0.1}) == [
        {"served_entity_name": "champion", "traffic_percentage": 90},
        {"served_entity_name": "challenger", "traffic_percentage": 10},
    ]


def test_endpoint_config_for_an_ab_test():
    entities = [
        served_entity("main.ml.churn", 3, name="champion"),
        served_entity("main.ml.churn", 4, name="challenger", workload_size="Medium"),
    ]
    config = endpoint_config(entities, {"champion": 90, "challenger": 10})
    assert config["served_entities"][1] == {
        "name": "challenger",
        "entity_name": "main.ml.churn",
        "entity_version": "4",
        "workload_size": "Medium",
        "scale_to_zero_enabled": True,
    }
    assert [r["traffic_percentage"] for r in config["traffic_config"]["routes"]] == [90, 10]
    from databricks.sdk.service.serving import EndpointCoreConfigInput

    parsed = EndpointCoreConfigInput.from_dict({"name": "churn", **config})  # the SDK accepts it
    assert parsed.traffic_config.routes[0].served_entity_name == "champion"


def test_one_entity_gets_all_traffic_and_mistakes_are_named():
    single = endpoint_config([served_entity("churn", 1)])
    assert single["traffic_config"]["routes"] == [
        {"served_entity_name": "churn-1", "traffic_percentage": 100}
    ]
    two = [served_entity("m", 1, name="a"), served_entity("m", 2, name="b")]
    with pytest.raises(ValueError, match="say how traffic splits"):
        endpoint_config(two)
    with pytest.raises(ValueError, match=r"\['c'\], which are not served entities"):
        endpoint_config(two, {"a": 50, "c": 50})
    with pytest.raises(ValueError, match="unique"):
        endpoint_config([served_entity("m", 1, name="a")] * 2, {"a": 1})
    with pytest.raises(ValueError, match="at least one"):
        endpoint_config([])
    with pytest.raises(ValueError, match="workload_size"):
        served_entity("m", 1, workload_size="Huge")


class FakeEndpoints:
    def __init__(self, exists: bool):
        self.exists, self.calls = exists, []

    def get(self, name):
        from databricks.sdk.errors import NotFound

        if not self.exists:
            raise NotFound("no endpoint")
        return SimpleNamespace(name=name)

    def create_and_wait(self, name, config, timeout, ai_gateway=None):
        self.calls.append(("create", name, config))

    def put_ai_gateway(self, name, inference_table_config):
        self.calls.append(("gateway", name, inference_table_config))

    def delete(self, name):
        from databricks.sdk.errors import NotFound

        if not self.exists:
            raise NotFound("no endpoint")
        self.calls.append(("delete", name))

    def update_config_and_wait(self, name, served_entities, traffic_config, timeout):
        self.calls.append(("update", name, traffic_config))


@pytest.mark.parametrize("exists,action", [(False, "create"), (True, "update")])
def test_deploy_endpoint_creates_or_updates(exists, action):
    fake = FakeEndpoints(exists)
    config = endpoint_config([served_entity("m", 1, name="a")])
    endpoints.deploy_endpoint("churn", config, client=SimpleNamespace(serving_endpoints=fake))
    assert [c[0] for c in fake.calls] == [action]


def test_deploy_endpoint_refuses_to_run_off_databricks(monkeypatch):
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    with pytest.raises(RuntimeError, match="run it on Databricks"):
        endpoints.deploy_endpoint("churn", {})


@pytest.mark.parametrize("exists,actions", [(False, ["create"]), (True, ["gateway", "update"])])
def test_deploy_endpoint_with_an_inference_table(exists, actions):
    fake = FakeEndpoints(exists)
    config = endpoint_config([served_entity("m", 1, name="a")])
    gateway = endpoints.inference_table_gateway("dev", "ml", "bank-churn")
    endpoints.deploy_endpoint(
        "churn", config, client=SimpleNamespace(serving_endpoints=fake), ai_gateway=gateway
    )
    assert [c[0] for c in fake.calls] == actions


@pytest.mark.parametrize("exists", [True, False])
def test_delete_endpoint_says_whether_there_was_one(exists):
    fake = FakeEndpoints(exists)
    assert endpoints.delete_endpoint("churn", SimpleNamespace(serving_endpoints=fake)) is exists


def test_inference_table_gateway_round_trips_through_the_sdk():
    from databricks.sdk.service.serving import AiGatewayConfig

    gateway = endpoints.inference_table_gateway("dev", "ml", "bank-churn-ab")
    assert gateway["inference_table_config"]["table_name_prefix"] == "bank_churn_ab"
    assert AiGatewayConfig.from_dict(gateway).as_dict() == gateway
    with pytest.raises(ValueError, match="prefix"):
        endpoints.inference_table_gateway("dev", "ml", "")
