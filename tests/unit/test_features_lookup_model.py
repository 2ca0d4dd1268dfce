"""utils.features.lookup_model and the model file: the config, the signature, and proof that
the saved model loads and predicts with only what it ships (`lookupkit`), without `utils`."""

import json
import subprocess
import sys

import mlflow
import pandas as pd
import pytest

from tests.unit.feast_store import build_small_store
from utils.features.lookup_model import (
    MODEL_FILE,
    code_paths,
    lookup_example,
    lookup_model_config,
    lookup_signature,
    save_classifier,
)
from utils.features.training_sets import build_classifier
from utils.features.transactions import CUSTOMER_KEY

pytestmark = pytest.mark.unit


def test_the_config_names_the_service_key_request_features_and_repository(tmp_path):
    config = lookup_model_config(tmp_path, max_activity_age_hours=12)
    assert config["feature_service"] == "churn_model_v1"
    assert config["entity_key"] == CUSTOMER_KEY and config["request_features"] == ["num_products"]
    assert config["max_age_hours"] == {"customer_activity_30d": 12}
    assert config["feature_repo"] == str(tmp_path)
    json.dumps(config)  # a model config must be plain JSON


def test_the_model_takes_only_the_key_and_request_features():
    assert lookup_signature().inputs.input_names() == [CUSTOMER_KEY, "num_products"]
    assert [p.rsplit("/", 1)[-1] for p in code_paths()] == ["lookupkit"]
    assert list(lookup_example([1], [2]).columns) == [CUSTOMER_KEY, "num_products"]


LOAD_WITHOUT_UTILS = """
import sys, json
sys.modules["utils"] = None  # any import of the project's package fails
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
answer = model.predict(pd.DataFrame(json.loads(sys.argv[2])))
print(json.dumps(answer.iloc[0].to_dict(), default=str))
"""


@pytest.mark.slow
def test_the_saved_model_predicts_from_keys_alone_without_utils(tmp_path):
    small = build_small_store(tmp_path / "feast")
    keys = small.activity[CUSTOMER_KEY].unique()[:1].tolist()
    entity = small.activity[[CUSTOMER_KEY, "event_timestamp"]].head(200).assign(num_products=1)
    training = small.store.get_historical_features(
        entity_df=entity,
        features=small.store.get_feature_service("churn_model_v1"),
    ).to_df()
    busy = training["txn_count_30d"] < training["txn_count_30d"].median()
    training["churned_30d"] = busy.astype(int)
    pipeline = build_classifier().fit(training, training["churned_30d"])
    path = tmp_path / "model"
    mlflow.pyfunc.save_model(
        str(path),
        python_model=str(MODEL_FILE),
        artifacts=save_classifier(pipeline, tmp_path),
        code_paths=code_paths(),
        model_config=lookup_model_config(small.directory, max_activity_age_hours=1e6),
        signature=lookup_signature(),
        pip_requirements=["mlflow", "feast"],
    )
    request = pd.DataFrame({CUSTOMER_KEY: keys, "num_products": [2]}).to_dict(orient="list")
    done = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_UTILS, str(path), json.dumps(request)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer[CUSTOMER_KEY] == keys[0] and 0 <= answer["churn_probability"] <= 1
    assert answer["customer_activity_30d_as_of"] == "2026-03-01T00:00:00Z"
    assert answer["balance_per_product"] == pytest.approx(answer["balance"] / 2)
