"""utils.abtest: weights, deterministic routing, the A/B router model and its inference log."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest

from utils.abtest.experiment import read_inference_log, router_signature
from utils.abtest.router import (
    REQUEST_ID,
    ABRouter,
    InferenceLog,
    bucket,
    choose_variants,
    normalize_weights,
)

pytestmark = pytest.mark.unit


def test_weights_become_shares_and_bad_weights_are_named():
    assert normalize_weights({"champion": 90, "challenger": 10}) == {
        "champion": 0.9,
        "challenger": 0.1,
    }
    with pytest.raises(ValueError, match="No variants"):
        normalize_weights({})
    with pytest.raises(ValueError, match="numbers >= 0, got {'b': -1}"):
        normalize_weights({"a": 1, "b": -1})
    with pytest.raises(ValueError, match="sum to 0"):
        normalize_weights({"a": 0})
    for weight in (float("inf"), float("nan"), True, "90"):  # inf would make every share NaN
        with pytest.raises(ValueError, match="finite numbers >= 0"):
            normalize_weights({"a": weight, "b": 1})


def test_bucket_is_fixed_by_the_id_and_in_range():
    values = [bucket(f"id-{i}") for i in range(1000)]
    assert all(0 <= v < 1 for v in values)
    assert bucket("customer-42") == bucket("customer-42")
    assert len(set(values)) == 1000


def test_split_follows_the_weights_and_repeats_for_the_same_ids():
    ids = [f"req-{i}" for i in range(20_000)]
    variants = choose_variants(ids, {"champion": 90, "challenger": 10})
    share = (variants == "challenger").mean()
    assert abs(share - 0.10) < 0.01
    assert (choose_variants(ids, {"champion": 90, "challenger": 10}) == variants).all()
    assert set(choose_variants(ids[:100], {"only": 1})) == {"only"}
    assert set(choose_variants(ids[:100], {"a": 1, "off": 0})) == {"a"}


@pytest.fixture(scope="module")
def router(tmp_path_factory):
    """An ABRouter over two constant models: `zero` always says 0, `one` always says 1."""
    import mlflow
    from sklearn.dummy import DummyClassifier

    X = pd.DataFrame({"x": [0.0, 1.0]})
    paths = {}
    for name, constant in (("zero", 0), ("one", 1)):
        model = DummyClassifier(strategy="constant", constant=constant).fit(X, [0, 1])
        paths[name] = str(tmp_path_factory.mktemp("variants") / name)
        mlflow.sklearn.save_model(
            model,
            paths[name],
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn"],
        )
    log_dir = tmp_path_factory.mktemp("inference-log")
    context = SimpleNamespace(
        artifacts=paths,
        model_config={
            "weights": {"zero": 50, "one": 50},
            "versions": {"zero": 3, "one": 4},
            "log_dir": str(log_dir),
        },
    )
    router = ABRouter()
    router.load_context(context)
    return router, log_dir


def test_router_answers_with_prediction_variant_version_and_id(router):
    model, _ = router
    rows = pd.DataFrame({"x": [0.5] * 200, REQUEST_ID: [f"r{i}" for i in range(200)]})
    answers = model.predict(None, rows)
    assert isinstance(answers, list) and isinstance(answers[0]["prediction"], int)  # JSON-ready
    answer = pd.DataFrame(answers)
    assert list(answer.columns) == ["prediction", "variant", "model_version", REQUEST_ID]
    assert answer[REQUEST_ID].tolist() == rows[REQUEST_ID].tolist()  # order kept
    assert (answer["prediction"] == answer["variant"].map({"zero": 0, "one": 1})).all()
    assert (answer["model_version"] == answer["variant"].map({"zero": "3", "one": "4"})).all()
    assert 0.35 < (answer["variant"] == "one").mean() < 0.65
    again = pd.DataFrame(model.predict(None, rows))
    assert (again["variant"] == answer["variant"]).all()  # same id, same variant


def test_rows_without_an_id_get_a_fresh_one(router):
    model, _ = router
    answer = pd.DataFrame(model.predict(None, pd.DataFrame({"x": [1.0, 2.0]})))
    assert answer[REQUEST_ID].str.len().eq(32).all() and answer[REQUEST_ID].nunique() == 2


def test_given_ids_are_kept_as_text_missing_ones_are_filled_and_the_input_is_untouched(router):
    model, _ = router
    rows = pd.DataFrame({"x": [1.0, 2.0, 3.0], REQUEST_ID: ["a", None, 7]})
    answer = pd.DataFrame(model.predict(None, rows))
    assert answer[REQUEST_ID].iloc[0] == "a" and answer[REQUEST_ID].iloc[2] == "7"
    assert len(answer[REQUEST_ID].iloc[1]) == 32  # a fresh random id
    assert list(rows.columns) == ["x", REQUEST_ID] and rows[REQUEST_ID].iloc[1] is None


def test_one_variant_answers_every_row_with_plain_values(tmp_path):
    from types import SimpleNamespace

    import mlflow
    from sklearn.dummy import DummyClassifier

    X = pd.DataFrame({"x": [0.0, 1.0]})
    path = str(tmp_path / "only")
    model = DummyClassifier(strategy="constant", constant=1).fit(X, [0, 1])
    mlflow.sklearn.save_model(model, path, serialization_format="cloudpickle")
    router = ABRouter()
    router.load_context(
        SimpleNamespace(
            artifacts={"only": path},
            model_config={"weights": {"only": 1}, "versions": {"only": 1}, "log_dir": ""},
        )
    )
    answers = router.predict(None, pd.DataFrame({"x": [0.5, 0.7], REQUEST_ID: ["p", "q"]}))
    assert [a["prediction"] for a in answers] == [1, 1]
    assert all(type(a["prediction"]) is int and a["variant"] == "only" for a in answers)
    assert router.predict(None, pd.DataFrame({"x": []}, dtype=float)) == []


def test_every_row_is_logged_and_read_back(router):
    model, log_dir = router
    before = len(read_inference_log(log_dir))
    model.predict(None, pd.DataFrame({"x": [7.0], REQUEST_ID: ["logged-1"]}))
    log = read_inference_log(log_dir)
    assert len(log) == before + 1
    row = log[log[REQUEST_ID] == "logged-1"].iloc[0]
    assert json.loads(row["inputs"]) == {"x": 7.0}
    assert row["variant"] in {"zero", "one"} and row["latency_ms"] >= 0
    assert str(row["timestamp"].tz) == "UTC"


def test_a_partial_last_line_is_skipped(tmp_path):
    InferenceLog(tmp_path).write([{"timestamp": "2024-01-01T00:00:00+00:00", REQUEST_ID: "a"}])
    with open(next(tmp_path.glob("requests-*.jsonl")), "a") as log:
        log.write('{"timestamp": "2024-01-01T00:00:01+00:00", "request_id": "b", "var')
    assert read_inference_log(tmp_path)[REQUEST_ID].tolist() == ["a"]
    assert read_inference_log(tmp_path / "empty").empty


def test_router_signature_adds_an_optional_request_id():
    from mlflow.types import ColSpec, Schema

    signature = router_signature(Schema([ColSpec("double", "x")]))
    request_id = signature.inputs.inputs[-1]
    assert request_id.name == REQUEST_ID and not request_id.required
    assert signature.outputs.input_names() == ["prediction", "variant", "model_version", REQUEST_ID]
