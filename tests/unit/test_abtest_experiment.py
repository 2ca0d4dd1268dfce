"""utils.abtest.experiment: a router logged over two aliases carries only what it imports."""

from __future__ import annotations

import mlflow
import pytest

from utils.abtest.experiment import ROUTER_MODEL_FILE, log_router
from utils.abtest.router import REQUEST_ID
from utils.datasets import CHURN_FEATURES, make_churn
from utils.tracking import get_aliases, setup_mlflow
from utils.training import ensure_champion

pytestmark = pytest.mark.integration

MODEL = "router_isolation_model"


@pytest.fixture(scope="module")
def logged_router():
    setup_mlflow("test-abtest-experiment")
    ensure_champion(MODEL, with_challenger=True, size=800)
    rows = make_churn(20, seed=5)[CHURN_FEATURES]
    with mlflow.start_run():
        router = log_router(MODEL, {"champion": 50, "challenger": 50}, input_example=rows.head(2))
    return router, rows


def test_router_is_logged_from_code_with_no_code_paths(logged_router):
    router, _ = logged_router
    local = mlflow.artifacts.download_artifacts(router.model_uri)
    flavor = mlflow.models.Model.load(local).flavors["python_function"]
    assert "code" not in flavor or not flavor["code"]  # no code_paths at all
    assert flavor.get("model_code_path", "").endswith("router.py")
    assert ROUTER_MODEL_FILE.endswith("router.py")
    aliases = get_aliases(MODEL)
    assert router.versions == {"champion": str(aliases["champion"]),
                               "challenger": str(aliases["challenger"])}  # fmt: skip


def test_router_predicts_in_an_interpreter_without_the_repository(
    logged_router, predict_without_repo
):
    router, rows = logged_router
    requests = rows.assign(**{REQUEST_ID: [f"iso-{i}" for i in range(len(rows))]})
    answers = predict_without_repo(router.model_uri, requests)
    assert len(answers) == len(rows)
    assert set(answers["variant"]) <= {"champion", "challenger"}
    assert answers[REQUEST_ID].tolist() == requests[REQUEST_ID].tolist()
    in_process = mlflow.pyfunc.load_model(router.model_uri).predict(requests)
    assert [a["prediction"] for a in in_process] == answers["prediction"].tolist()
