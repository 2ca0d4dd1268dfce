"""utils.serving: the local scoring server's start and stop, the ways starting fails, and the
guard in front of it, against a real server on loopback."""

from __future__ import annotations

import socket
from pathlib import Path

import pandas as pd
import pytest

import utils.serving.server as serving_server
from utils import serving
from utils.serving import ScoringError, ServingError, score_model, serve_model

pytestmark = pytest.mark.integration


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
    serving_server.stop_all_servers()
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
