"""The chatbot model ships only the modules it imports, and loads in a fresh interpreter that
cannot see this repository (the model's own copies are used)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from utils.rag import shipping
from utils.rag.retriever import Passage, Retriever

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.unit
def test_staged_package_holds_only_the_runtime_modules(tmp_path):
    [package] = shipping.stage_code_paths(tmp_path)
    files = sorted(str(p.relative_to(package)) for p in Path(package).rglob("*.py"))
    assert files == sorted(shipping.RUNTIME_MODULES)
    for module in files:  # nothing shipped imports a module that is not shipped
        text = (Path(package) / module).read_text()
        imported = {line.split()[1] for line in text.splitlines()
                    if line.startswith(("from utils", "import utils"))}
        assert imported <= {"utils.rag.chatbot", "utils.rag.client", "utils.rag.retriever"}


@pytest.mark.unit
def test_requirements_are_pinned():
    assert all("==" in r for r in shipping.chatbot_requirements())


FRESH = """
import importlib.util, json, sys
sys.path = [p for p in sys.path if p not in ("", {repo!r})]
sys.meta_path = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                 and "editable" not in getattr(f, "__name__", "").lower()]
assert importlib.util.find_spec("utils") is None, "the repository is still importable"
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model({uri!r})
import utils.rag.chatbot as chatbot
out = {{"chatbot_file": chatbot.__file__,
        "tracking_importable": importlib.util.find_spec("utils.tracking") is not None}}
for question in ("   ", "What is an alias?"):
    try:
        model.predict(pd.DataFrame({{"question": [question]}}))
    except Exception as error:
        out[question.strip() or "empty"] = type(error).__name__
print(json.dumps(out))
"""


@pytest.mark.integration
def test_logged_model_loads_where_the_repository_is_not_importable(tmp_path):
    retriever_dir = Retriever(
        [Passage("a:0", "a", "A", "An alias names one version.")],
        np.ones((1, 384), dtype=np.float32),
    ).save(tmp_path / "retriever")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("shipping", artifact_location=str(tmp_path / "art"))
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(
            name="chatbot",
            python_model=str(shipping.MODEL_CODE),
            artifacts={"retriever": str(retriever_dir)},
            model_config={"base_url": "http://127.0.0.1:9/v1", "model": "m"},  # nothing there
            code_paths=shipping.stage_code_paths(tmp_path / "code"),
            pip_requirements=shipping.chatbot_requirements(),
        )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
    env["HF_HUB_OFFLINE"] = "1"
    script = FRESH.format(repo=str(REPO), uri=info.model_uri)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["chatbot_file"].startswith(str(tmp_path / "art"))  # the model's own copy
    assert out["tracking_importable"] is False  # only the chatbot's modules were shipped
    assert out["empty"] == "EmptyQuestionError"
    assert out["What is an alias?"] == "EndpointUnavailableError"
