"""utils.deploy_targets: manifests parse and say what matters; the scoring script scores."""

import json

import pandas as pd
import pytest
import yaml

from utils.environments.targets import (
    azureml_online_deployment,
    azureml_online_endpoint,
    dockerfile_instructions,
    kubernetes_manifests,
    load_scoring_script,
    write_scoring_script,
    write_yaml,
)

pytestmark = pytest.mark.unit


def test_kubernetes_manifests(tmp_path):
    path = write_yaml(
        kubernetes_manifests("rain", "img:1", replicas=3, cpu="250m"), tmp_path / "k.yaml"
    )
    deployment, service = yaml.safe_load_all(path.read_text())
    assert deployment["kind"] == "Deployment" and service["kind"] == "Service"
    assert deployment["spec"]["replicas"] == 3
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ping", "port": 8080}
    assert container["resources"]["limits"]["cpu"] == "250m"
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["containerPort"]


def test_kubernetes_refuses_zero_replicas():
    with pytest.raises(ValueError, match="replicas"):
        kubernetes_manifests("rain", "img:1", replicas=0)


def test_azureml_no_code_deployment(tmp_path):
    endpoint = yaml.safe_load(
        write_yaml(azureml_online_endpoint("ep"), tmp_path / "e.yml").read_text()
    )
    deployment = yaml.safe_load(
        write_yaml(azureml_online_deployment("ep", "rain", 3), tmp_path / "d.yml").read_text()
    )
    assert endpoint["name"] == deployment["endpoint_name"] == "ep"
    assert deployment["model"]["type"] == "mlflow_model" and deployment["model"]["version"] == "3"
    assert "code_configuration" not in deployment and "environment" not in deployment


def test_dockerfile_instructions_join_continuations(tmp_path):
    path = tmp_path / "Dockerfile"
    path.write_text('# c\nFROM python:3.11-slim\nRUN a && \\\n    b\nENTRYPOINT ["x"]\n')
    assert dockerfile_instructions(path) == [
        ("FROM", "python:3.11-slim"),
        ("RUN", "a &&      b"),
        ("ENTRYPOINT", '["x"]'),
    ]


def test_scoring_script_init_and_run(tmp_path, monkeypatch):
    import mlflow
    from sklearn.linear_model import LogisticRegression

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    model = LogisticRegression().fit(X, [0, 0, 1, 1])
    mlflow.sklearn.save_model(
        model,
        tmp_path / "model",
        serialization_format="cloudpickle",
        pip_requirements=["scikit-learn"],
        signature=mlflow.models.infer_signature(X),
    )
    monkeypatch.delenv("MODEL_DIR", raising=False)
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path))
    script = load_scoring_script(write_scoring_script(tmp_path / "score.py"))
    script.init()
    expected = model.predict(X).tolist()
    for body in [
        {"input_data": X.to_dict(orient="split")},
        {"dataframe_split": X.to_dict(orient="split")},
        {"dataframe_records": X.to_dict(orient="records")},
    ]:
        assert script.run(json.dumps(body)) == {"predictions": expected}
    assert "Bad request" in script.run("not json")["error"]
    unnamed = script.run(json.dumps({"data": X.values.tolist()}))["error"]
    assert "missing input columns ['a', 'b']" in unnamed and "dataframe_split" in unnamed
    wrong_type = {"dataframe_records": [{"a": "high", "b": 1.0}]}
    assert "Bad request" in script.run(json.dumps(wrong_type))["error"]  # the signature refused


def test_scoring_script_answers_400_on_azure_ml_inference_server(tmp_path, monkeypatch):
    """On Azure ML's server a returned AMLResponse sets the HTTP status; a stand-in module
    (the real one comes with azureml-inference-server-http) records what the script builds."""
    import sys
    import types

    class AMLResponse:
        def __init__(self, message, status_code, json_str=False):
            self.message, self.status_code, self.json_str = message, status_code, json_str

    stand_in = types.ModuleType("azureml.contrib.services.aml_response")
    stand_in.AMLResponse = AMLResponse
    monkeypatch.setitem(sys.modules, "azureml.contrib.services.aml_response", stand_in)
    script = load_scoring_script(write_scoring_script(tmp_path / "score.py"))
    answer = script.run("not json")
    assert (answer.status_code, answer.json_str) == (400, True)
    assert "Bad request" in answer.message["error"]
