"""utils.serving: payloads, the client's checks and errors, Databricks endpoint config, and the
local server's start and stop, including the ways starting fails."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from utils import serving
from utils.serving import (
    DATABRICKS_MAX_PAYLOAD_BYTES,
    PayloadTooLargeError,
    ScoringError,
    ServingError,
    build_payload,
    endpoint_config,
    error_from_response,
    predictions_frame,
    score_model,
    serve_model,
    served_entity,
    traffic_routes,
)

pytestmark = pytest.mark.unit

FRAME = pd.DataFrame({"age": [31, 45], "city": ["Paris", "Lyon"], "balance": [10.5, np.nan]})


def decode(body: bytes) -> dict:
    return json.loads(body)


def test_dataframe_split_lists_columns_once_and_sends_nan_as_null():
    body, content_type = build_payload(FRAME, "dataframe_split")
    assert content_type == "application/json"
    assert decode(body) == {
        "dataframe_split": {
            "columns": ["age", "city", "balance"],
            "data": [[31, "Paris", 10.5], [45, "Lyon", None]],
        }
    }


def test_records_and_instances_are_one_object_per_row():
    for fmt in ("dataframe_records", "instances"):
        rows = decode(build_payload(FRAME, fmt)[0])[fmt]
        assert rows == [
            {"age": 31, "city": "Paris", "balance": 10.5},
            {"age": 45, "city": "Lyon", "balance": None},
        ]


def test_inputs_is_columnar():
    assert decode(build_payload(FRAME, "inputs")[0]) == {
        "inputs": {"age": [31, 45], "city": ["Paris", "Lyon"], "balance": [10.5, None]}
    }


def test_csv_has_a_header_and_its_content_type():
    body, content_type = build_payload(FRAME, "csv")
    assert content_type == "text/csv"
    assert body.decode().splitlines() == ["age,city,balance", "31,Paris,10.5", "45,Lyon,"]


def test_tensors_go_as_instances_or_inputs_but_not_as_dataframes():
    array = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert decode(build_payload(array, "instances")[0]) == {"instances": array.tolist()}
    with pytest.raises(ValueError, match="no column names"):
        build_payload(array, "dataframe_split")


def test_azure_wraps_the_payload_in_input_data_and_params_travel_along():
    body = decode(build_payload(FRAME.head(1), "dataframe_split", azure=True, params={"k": 3})[0])
    assert set(body) == {"input_data", "params"}
    assert body["input_data"]["columns"] == ["age", "city", "balance"]
    assert body["params"] == {"k": 3}


def test_unknown_format_and_csv_with_params_are_refused():
    with pytest.raises(ValueError, match="Unknown payload format 'json'"):
        build_payload(FRAME, "json")
    with pytest.raises(ValueError, match="CSV"):
        build_payload(FRAME, "csv", params={"k": 1})


def test_a_payload_over_16_mb_is_refused_before_sending():
    big = pd.DataFrame({"text": ["x" * 1000] * (DATABRICKS_MAX_PAYLOAD_BYTES // 1000 + 10)})
    # nothing listens on this port: the error must come from the size check, not the network
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PayloadTooLargeError, match="at most 16 MB.*score_in_chunks"):
        score_model(f"http://127.0.0.1:{port}", big)


def test_predictions_frame_reads_every_response_shape():
    assert predictions_frame({"predictions": [1, 0]})["prediction"].tolist() == [1, 0]
    records = predictions_frame({"predictions": [{"p": 0.1, "label": "a"}]})
    assert records.to_dict("records") == [{"p": 0.1, "label": "a"}]
    assert predictions_frame([0.5, 0.7])["prediction"].tolist() == [0.5, 0.7]  # Azure: bare list
    assert predictions_frame({"predictions": {"a": [1, 2]}})["a"].tolist() == [1, 2]


def test_errors_carry_status_code_and_message():
    error = error_from_response(400, b'{"error_code": "BAD_REQUEST", "message": "missing col"}')
    assert (error.status, error.error_code, error.message) == (400, "BAD_REQUEST", "missing col")
    plain = error_from_response(415, b"This predictor only supports JSON")
    assert isinstance(plain, ScoringError) and plain.error_code == "HTTP_415"
    assert "only supports" in str(plain)


# --------------------------------------------------------------------------- Databricks config


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

    def create_and_wait(self, name, config, timeout):
        self.calls.append(("create", name, config))

    def update_config_and_wait(self, name, served_entities, traffic_config, timeout):
        self.calls.append(("update", name, traffic_config))


@pytest.mark.parametrize("exists,action", [(False, "create"), (True, "update")])
def test_deploy_endpoint_creates_or_updates(exists, action):
    endpoints = FakeEndpoints(exists)
    config = endpoint_config([served_entity("m", 1, name="a")])
    serving.deploy_endpoint("churn", config, client=SimpleNamespace(serving_endpoints=endpoints))
    assert [c[0] for c in endpoints.calls] == [action]


def test_deploy_endpoint_refuses_to_run_off_databricks(monkeypatch):
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    with pytest.raises(RuntimeError, match="run it on Databricks"):
        serving.deploy_endpoint("churn", {})


# --------------------------------------------------------------------------- the local server


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A logistic regression on two numeric columns, saved to a folder (no registry needed)."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    from utils.tracking import setup_mlflow

    setup_mlflow("unit-serving")
    X = pd.DataFrame({"x1": [0.0, 1.0, 2.0, 3.0], "x2": [1.0, 0.0, 1.0, 0.0]})
    model = LogisticRegression().fit(X, [0, 0, 1, 1])
    path = tmp_path_factory.mktemp("models") / "tiny"
    mlflow.sklearn.save_model(
        model,
        path,
        signature=infer_signature(X, pd.Series([0, 1], name="prediction")),
        pip_requirements=["scikit-learn"],
        serialization_format="cloudpickle",
    )
    return str(path)


def test_serve_score_and_stop(tiny_model):
    rows = pd.DataFrame({"x1": [0.0, 3.0], "x2": [1.0, 0.0]})
    with serve_model(tiny_model, name="unit") as server:
        assert server.is_alive() and server.url.startswith("http://127.0.0.1:")
        answers = {
            fmt: score_model(server.url, rows, fmt)["prediction"].tolist()
            for fmt in serving.PAYLOAD_FORMATS
        }
        assert all(a == [0, 1] for a in answers.values()), answers
        with pytest.raises(ScoringError) as missing:
            score_model(server.url, rows[["x1"]])
        assert missing.value.status == 400
        assert missing.value.error_code == "INVALID_PARAMETER_VALUE"
        assert "x2" in missing.value.message
    assert not server.is_alive()
    assert serving.port_is_free(server.port)
    assert server.log_path.exists()


def test_a_busy_port_is_named(tiny_model):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ServingError, match=f"Port {port} .* is busy"):
            serve_model(tiny_model, port=port)


def test_a_missing_model_is_named():
    with pytest.raises(ServingError, match="no-such-model"):
        serve_model("models:/no-such-model@champion")


def test_a_server_dying_at_start_shows_its_log(tiny_model, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    text = (Path(tiny_model) / "MLmodel").read_text()
    (broken / "MLmodel").write_text(text.replace("mlflow.sklearn", "mlflow.no_such_flavor"))
    with pytest.raises(ServingError, match="(?s)exited with code 1.*Last lines.*no_such_flavor"):
        serve_model(str(broken), start_timeout=60)


def test_exit_hook_stops_servers_left_running(tiny_model):
    server = serve_model(tiny_model, name="left-running")
    serving.stop_all_servers()
    assert not server.is_alive()


def test_guard_answers_413_400_and_401_and_the_server_survives(tiny_model):
    import requests

    rows = pd.DataFrame({"x1": [0.0], "x2": [1.0]})
    with serve_model(tiny_model, token="s3cret", max_body_bytes=1_000_000) as server:
        url = server.invocations_url
        assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200  # no token
        with pytest.raises(ScoringError) as unauthenticated:
            score_model(server.url, rows)
        assert unauthenticated.value.status == 401
        auth = {"Authorization": "Bearer s3cret", "Content-Type": "application/json"}
        big = requests.post(url, data=b"[" + b" " * 2_000_000 + b"]", headers=auth, timeout=30)
        assert big.status_code == 413 and big.json()["error_code"] == "PAYLOAD_TOO_LARGE"
        nested = requests.post(url, data=b"[" * 5000 + b"]" * 5000, headers=auth, timeout=30)
        assert nested.status_code == 400 and "nests 5000 levels" in nested.json()["message"]
        assert score_model(server.url, rows, token="s3cret")["prediction"].tolist() == [0]
        assert server.is_alive()
