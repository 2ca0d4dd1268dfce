"""Shadow mode and the live weights file of the A/B router (chapter 12)."""

from __future__ import annotations

import json
import os
import threading
import time
from types import SimpleNamespace

import pandas as pd
import pytest

from utils.abtest.experiment import read_inference_log
from utils.abtest.router import REQUEST_ID, ABRouter, shadow_settings

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def variant_paths(tmp_path_factory):
    """Two constant models saved as MLflow models: `champion` says 0, `challenger` says 1."""
    import mlflow
    from sklearn.dummy import DummyClassifier

    X = pd.DataFrame({"x": [0.0, 1.0]})
    paths = {}
    for name, constant in (("champion", 0), ("challenger", 1)):
        model = DummyClassifier(strategy="constant", constant=constant).fit(X, [0, 1])
        paths[name] = str(tmp_path_factory.mktemp("variants") / name)
        mlflow.sklearn.save_model(model, paths[name], serialization_format="cloudpickle")
    return paths


def make_router(paths, log_dir, shadow=None, weights=None, **config) -> ABRouter:
    router = ABRouter()
    router.load_context(
        SimpleNamespace(
            artifacts=paths,
            model_config={
                "weights": weights or {"champion": 100, "challenger": 0},
                "versions": {"champion": 1, "challenger": 2},
                "log_dir": str(log_dir) if log_dir else "",
                **({"shadow": shadow} if shadow else {}),
                **config,
            },
        )
    )
    return router


def requests(n: int, prefix: str = "r") -> pd.DataFrame:
    return pd.DataFrame({"x": [0.5] * n, REQUEST_ID: [f"{prefix}{i}" for i in range(n)]})


class Misbehaving:
    """Stands in for the shadow model's implementation: raises, or sleeps past the timeout."""

    def __init__(self, sleep_s: float = 0.0, error: Exception | None = None):
        self.sleep_s, self.error, self.calls = sleep_s, error, 0

    def predict(self, frame):
        self.calls += 1
        if self.error:
            raise self.error
        time.sleep(self.sleep_s)
        return [1] * len(frame)


def test_bad_shadow_settings_are_named():
    variants = ["champion", "challenger"]
    with pytest.raises(ValueError, match=r"Shadow share 0.6 is not in \(0, 0.5\]"):
        shadow_settings({"share": 0.6}, variants)
    with pytest.raises(ValueError, match="'other' is not one of the router's variants"):
        shadow_settings({"variant": "other"}, variants)
    with pytest.raises(ValueError, match=r"Unknown shadow settings \['shere'\]"):
        shadow_settings({"shere": 0.1}, variants)
    with pytest.raises(ValueError, match="timeout_ms must be a number > 0"):
        shadow_settings({"timeout_ms": 0}, variants)
    assert shadow_settings({"share": 0.5}, variants)["share"] == 0.5


def test_shadow_needs_a_log(variant_paths):
    with pytest.raises(ValueError, match="give the router a `log_dir`"):
        make_router(variant_paths, None, shadow={"share": 0.2})


def test_answers_are_the_same_with_and_without_shadow_and_both_predictions_are_logged(
    variant_paths, tmp_path
):
    plain = make_router(variant_paths, tmp_path / "off")
    mirrored = make_router(variant_paths, tmp_path / "on", shadow={"share": 0.3})
    rows = requests(400)
    answers_off = [plain.predict(None, rows.iloc[[i]]) for i in range(len(rows))]
    answers_on = [mirrored.predict(None, rows.iloc[[i]]) for i in range(len(rows))]
    assert json.dumps(answers_on) == json.dumps(answers_off)
    assert mirrored.shadow.wait_idle(10)
    log = read_inference_log(tmp_path / "on")
    assert len(log) == 400 and log[REQUEST_ID].is_unique  # one line per request
    shadowed = log[log["shadow_variant"].notna()]
    assert 0.22 < len(shadowed) / 400 < 0.38
    assert (shadowed["prediction"] == 0).all() and (shadowed["shadow_prediction"] == 1).all()
    assert (shadowed["shadow_latency_ms"] >= 0).all() and shadowed["shadow_error"].isna().all()
    assert (shadowed["shadow_version"] == "2").all() and (log["variant"] == "champion").all()


def test_a_raising_shadow_model_changes_no_answer_and_its_error_is_logged(
    variant_paths, tmp_path
):
    router = make_router(variant_paths, tmp_path, shadow={"share": 0.5})
    expected = make_router(variant_paths, None).predict(None, requests(50))
    router.shadow.model = SimpleNamespace(_model_impl=Misbehaving(error=RuntimeError("boom")))
    assert router.predict(None, requests(50)) == expected
    assert router.shadow.wait_idle(10)
    errors = read_inference_log(tmp_path)["shadow_error"].dropna()
    assert len(errors) > 0 and errors.str.startswith("RuntimeError: boom").all()


def test_a_shadow_model_slower_than_its_timeout_never_delays_the_answer(variant_paths, tmp_path):
    router = make_router(variant_paths, tmp_path, shadow={"share": 0.5, "timeout_ms": 50})
    slow = Misbehaving(sleep_s=0.5)
    router.shadow.model = SimpleNamespace(_model_impl=slow)
    started = time.perf_counter()
    answers = [router.predict(None, requests(1, prefix=f"slow{i}-")) for i in range(40)]
    assert time.perf_counter() - started < 0.4  # the 0.5 s sleeps are not on this path
    assert all(a[0]["prediction"] == 0 for a in answers)
    assert router.shadow.wait_idle(10)
    errors = read_inference_log(tmp_path)["shadow_error"].dropna()
    assert errors.str.startswith("timeout: no answer within 50 ms").sum() >= 1
    # while the timed-out call still runs, later copies are skipped, not queued behind it
    assert errors.str.startswith("skipped").sum() >= 1 and slow.calls < len(errors)


def test_a_full_shadow_queue_drops_the_copy_and_logs_the_answer_at_once(variant_paths, tmp_path):
    router = make_router(
        variant_paths, tmp_path, shadow={"share": 0.5, "timeout_ms": 2000, "max_pending": 1}
    )
    gate = threading.Event()
    blocked = Misbehaving()
    blocked.predict = lambda frame: gate.wait(5) and [1] * len(frame)
    router.shadow.model = SimpleNamespace(_model_impl=blocked)
    for i in range(30):
        router.predict(None, requests(1, prefix=f"q{i}-"))
    dropped = read_inference_log(tmp_path)["shadow_error"].dropna()
    assert dropped.eq("dropped: the shadow queue is full").sum() >= 1
    gate.set()
    assert router.shadow.wait_idle(10)


def test_the_weights_file_changes_the_split_while_running(variant_paths, tmp_path):
    weights_file = tmp_path / "weights.json"
    router = make_router(variant_paths, None, weights_file=str(weights_file))
    rows = requests(2000)
    assert {a["variant"] for a in router.predict(None, rows)} == {"champion"}  # no file yet
    weights_file.write_text(json.dumps({"champion": 75, "challenger": 25}))
    share = pd.DataFrame(router.predict(None, rows))["variant"].eq("challenger").mean()
    assert 0.21 < share < 0.29
    weights_file.write_text(json.dumps({"nobody": 1}))  # unknown variant: last good split kept
    os.utime(weights_file, ns=(time.time_ns(), time.time_ns() + 10**9))
    again = pd.DataFrame(router.predict(None, rows))["variant"].eq("challenger").mean()
    assert again == share


def test_the_shadow_report_counts_agreement_errors_and_bands(variant_paths, tmp_path):
    from utils.operations.shadow import shadow_report, shadow_rows, wait_for_log

    router = make_router(variant_paths, tmp_path, shadow={"share": 0.5})
    rows = requests(300).assign(x=[float(i % 3) for i in range(300)])
    for i in range(len(rows)):
        router.predict(None, rows.iloc[[i]])
    log = wait_for_log(tmp_path, rows[REQUEST_ID], timeout=10)
    mirrored = shadow_rows(log)
    scores = pd.Series([0.05 + 0.9 * (i % 2) for i in range(len(mirrored))], index=mirrored.index)
    report = shadow_report(mirrored, segment="x", scores=scores)
    assert report.summary["compared"] == report.summary["mirrored"] == len(mirrored) > 100
    assert report.summary["agreement"] == 0.0  # constant 0 against constant 1
    assert report.summary["shadow_errors"] == report.summary["shadow_timeouts"] == 0
    assert set(report.by_segment.index) == {0.0, 1.0, 2.0}
    assert (report.by_segment["disagreement"] == 1.0).all()
    assert report.by_band["mirrored"].sum() == len(mirrored)
    with pytest.raises(ValueError, match="no shadow columns"):
        shadow_rows(log.drop(columns=[c for c in log.columns if c.startswith("shadow")]))
