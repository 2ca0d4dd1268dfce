"""Deployment targets as files: a Dockerfile from MLflow, Kubernetes manifests for it, an Azure
ML managed online endpoint + deployment, and an init()/run() scoring script.

None of these can be built or applied from a laptop without a registry or a cloud account; the
tests parse them and check the fields that matter (probe path, limits, model reference).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

SERVING_PORT = 8080  # what MLflow's generated image listens on


def generate_dockerfile(model_uri: str, output_dir: str | Path) -> Path:
    """`mlflow models generate-dockerfile`: a build context with the model and a Dockerfile
    that serves it on port 8080 (`docker build -t NAME output_dir` builds the image)."""
    output_dir = Path(output_dir)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "generate-dockerfile",
            "-m",
            model_uri,
            "-d",
            str(output_dir),
            "--env-manager",
            "local",
        ],
        capture_output=True,
        text=True,
    )
    dockerfile = output_dir / "Dockerfile"
    if result.returncode or not dockerfile.exists():
        raise RuntimeError(f"generate-dockerfile failed for {model_uri}:\n{result.stderr[-2000:]}")
    return dockerfile


def dockerfile_instructions(dockerfile: str | Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = Path(dockerfile).read_text().replace("\\\n", " ")
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def kubernetes_manifests(
    name: str,
    image: str,
    replicas: int = 2,
    cpu: str = "500m",
    memory: str = "1Gi",
    port: int = SERVING_PORT,
) -> list[dict[str, Any]]:
    """A Deployment (replicas, requests = limits, readiness and liveness on `/ping`) and a
    ClusterIP Service in front of it."""
    if replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    labels = {"app": name}
    probe = {"httpGet": {"path": "/ping", "port": port}, "periodSeconds": 10}
    container = {
        "name": name,
        "image": image,
        "ports": [{"containerPort": port, "name": "http"}],
        "resources": {
            "requests": {"cpu": cpu, "memory": memory},
            "limits": {"cpu": cpu, "memory": memory},
        },
        # loading a model takes a while: do not send traffic (or restart) before it answers
        "readinessProbe": {**probe, "initialDelaySeconds": 10},
        "livenessProbe": {**probe, "initialDelaySeconds": 60, "failureThreshold": 3},
        "env": [{"name": "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT", "value": "60"}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": labels,
            "ports": [{"name": "http", "port": 80, "targetPort": port}],
        },
    }
    return [deployment, service]


def azureml_online_endpoint(name: str) -> dict[str, Any]:
    """An Azure ML managed online endpoint (key auth)."""
    return {
        "$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json",
        "name": name,
        "auth_mode": "key",
    }


def azureml_online_deployment(
    endpoint: str,
    model_name: str,
    model_version: int | str,
    model_path: str = "model",
    instance_type: str = "Standard_DS3_v2",
    instance_count: int = 1,
) -> dict[str, Any]:
    """A deployment of an MLflow model with no scoring script and no environment: Azure ML
    builds both from the MLflow model folder (no-code deployment). Requests wrap the usual
    payload in `input_data`."""
    return {
        "$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json",
        "name": "blue",
        "endpoint_name": endpoint,
        "model": {
            "name": model_name,
            "version": str(model_version),
            "path": model_path,
            "type": "mlflow_model",
        },
        "instance_type": instance_type,
        "instance_count": instance_count,
    }


def write_yaml(documents: list[dict[str, Any]] | dict[str, Any], path: str | Path) -> Path:
    """One YAML file; several documents are separated by `---` (kubectl apply -f reads all)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    docs = documents if isinstance(documents, list) else [documents]
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


SCORING_SCRIPT = '''"""Scoring script for servers that call init() once and run(raw_json) per call
(Azure ML with a custom environment, Azure ML v1's ACI/AKS web services, many in-house servers).

The model folder comes from MODEL_DIR, else AZUREML_MODEL_DIR/model. Requests may be MLflow's
`dataframe_split` / `dataframe_records` or Azure's `{"input_data": {...}}`. A bad request gets
HTTP 400 with the reason from Azure ML's inference server (an `AMLResponse`); another server
gets `{"error": ...}` back and chooses the status itself.
"""
import json
import os

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException

try:  # Azure ML's inference server (azureml-inference-server-http) provides this module
    from azureml.contrib.services.aml_response import AMLResponse
except ImportError:
    AMLResponse = None

HINT = "Send dataframe_split, dataframe_records or input_data."
model = None


def init():
    global model
    model_dir = os.environ.get("MODEL_DIR")
    if not model_dir:
        model_dir = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model")
    model = mlflow.pyfunc.load_model(model_dir)


def _frame(request):
    data = request.get("input_data", request)
    if "dataframe_split" in data:
        data = data["dataframe_split"]
    if "dataframe_records" in data:
        return pd.DataFrame.from_records(data["dataframe_records"])
    if "columns" in data:
        return pd.DataFrame(data["data"], columns=data["columns"], index=data.get("index"))
    return pd.DataFrame(data)


def _missing_columns(frame):
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return []
    required = [spec.name for spec in schema.inputs if getattr(spec, "required", True)]
    return [name for name in required if name not in frame.columns]


def _bad_request(reason):
    body = {"error": f"Bad request: {reason}"}
    return AMLResponse(body, 400, json_str=True) if AMLResponse else body


def run(raw_data):
    try:
        frame = _frame(json.loads(raw_data))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        return _bad_request(f"{type(error).__name__}: {error}. {HINT}")
    missing = _missing_columns(frame)
    if missing:
        return _bad_request(f"missing input columns {missing}, got {list(frame.columns)}. {HINT}")
    try:
        predictions = model.predict(frame)
    except MlflowException as error:  # the model's signature refused the input
        return _bad_request(error.message)
    if isinstance(predictions, pd.DataFrame):
        return {"predictions": predictions.to_dict(orient="records")}
    return {"predictions": pd.Series(predictions).tolist()}
'''


def write_scoring_script(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SCORING_SCRIPT)
    return path


def load_scoring_script(path: str | Path):
    """Import a scoring script as a module (what a server does before calling init())."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"score_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
