"""The canary controller: guardrails, the accuracy test, rollback, promotion, and what a crash
or a step without labels leaves behind, on a real local registry with simulated traffic."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier

from utils.operations.alias_history import alias_history, move_alias
from utils.operations.canary import (
    CanaryController,
    CanaryCrash,
    CanaryError,
    CanaryPolicy,
    NoLabelsError,
    judge,
    two_proportion_z,
)
from utils.tracking import get_aliases, register_model, setup_mlflow

pytestmark = pytest.mark.integration


class SimulatedTraffic:
    """Requests split by share; each variant is right with its own probability, fails with its
    own error rate and takes its own time (a test double for RouterTraffic)."""

    def __init__(self, accuracy, error_rate=None, latency_ms=None, seed=0, crash_at=None):
        self.accuracy, self.seed, self.crash_at = accuracy, seed, crash_at
        self.error_rate = error_rate or {"champion": 0.0, "challenger": 0.0}
        self.latency_ms = latency_ms or {"champion": 5.0, "challenger": 5.0}
        self.rng = np.random.default_rng(seed)
        self.share, self.shares, self.truth, self.sent = 0.0, [], {}, 0

    def set_share(self, share):
        self.share = share
        self.shares.append(share)

    def window(self, n):
        if self.crash_at is not None and self.share == self.crash_at:
            raise ConnectionError("lost the connection to the router")
        rows = []
        for _ in range(n):
            variant = "challenger" if self.rng.random() < self.share else "champion"
            label = int(self.rng.random() < 0.2)
            right = self.rng.random() < self.accuracy[variant]
            ok = self.rng.random() >= self.error_rate[variant]
            request_id = f"s{self.seed}-{self.sent}"
            self.sent += 1
            self.truth[request_id] = label
            prediction = (label if right else 1 - label) if ok else None
            latency = self.rng.gamma(4, self.latency_ms[variant] / 4)
            rows.append({"request_id": request_id, "variant": variant, "ok": ok,
                         "latency_ms": latency, "prediction": prediction})  # fmt: skip
        return pd.DataFrame(rows)

    def labels(self, ids):
        return ids.map(self.truth)


def observations(variant, n, ok=True, latency=5.0, right=True):
    return pd.DataFrame({"request_id": [f"{variant}{i}" for i in range(n)], "variant": variant,
                         "ok": ok, "latency_ms": latency, "prediction": 1 if right else 0,
                         "actual_label": 1.0})  # fmt: skip


def test_two_proportion_test_is_one_sided():
    z, p = two_proportion_z(85, 100, 60, 100)
    assert z < -3 and p < 0.001
    assert two_proportion_z(85, 100, 90, 100)[1] > 0.5  # better is never a breach


def test_each_guardrail_breaches_with_its_reason():
    policy = CanaryPolicy()
    good = observations("champion", 100)
    errors = pd.concat([good, observations("challenger", 50, ok=False)])
    assert judge(errors, 0.25, policy).reason.startswith("error rate 100.0%")
    slow = pd.concat([good, observations("challenger", 50, latency=80.0)])
    assert judge(slow, 0.25, policy).reason.startswith("p99 latency 80.0 ms")
    wrong = pd.concat([good, observations("challenger", 50, right=False)])
    assert judge(wrong, 0.25, policy).reason.startswith("accuracy 0.000 vs champion 1.000")
    assert not judge(pd.concat([good, observations("challenger", 50)]), 0.25, policy).breached


def test_no_labels_at_a_step_that_needs_them_is_a_clear_error():
    unlabelled = pd.concat([observations("champion", 100), observations("challenger", 50)])
    unlabelled["actual_label"] = np.nan
    assert not judge(unlabelled, 0.25, CanaryPolicy()).breached  # early steps: no labels needed
    with pytest.raises(NoLabelsError, match="none of its 50 requests has a label yet"):
        judge(unlabelled, 0.5, CanaryPolicy())


def test_bad_policies_are_refused():
    with pytest.raises(ValueError, match="increasing shares"):
        CanaryPolicy(steps=(0.5, 0.25))
    with pytest.raises(ValueError, match="increasing shares"):
        CanaryPolicy(steps=(0.05, 1.5))


@pytest.fixture(scope="module")
def model():
    setup_mlflow("test_canary")
    name = "canary_test_model"
    X = pd.DataFrame({"x": [0.0, 1.0]})
    for constant in (0, 1):
        with mlflow.start_run():
            clf = DummyClassifier(strategy="constant", constant=constant).fit(X, [0, 1])
            info = mlflow.sklearn.log_model(clf, name="model", serialization_format="cloudpickle",
                                            pip_requirements=["scikit-learn"])  # fmt: skip
        register_model(info.model_uri, name)
    return name


@pytest.fixture
def fresh(model):
    move_alias(model, "champion", 1, actor="tests", reason="reset")
    move_alias(model, "challenger", 2, actor="tests", reason="reset")
    move_alias(model, "canary", None, actor="tests", reason="reset")
    return model


def tags(model, version):
    return mlflow.MlflowClient().get_model_version(model, str(version)).tags


def test_a_bad_challenger_is_rolled_back_by_itself(fresh):
    traffic = SimulatedTraffic({"champion": 0.85, "challenger": 0.4}, seed=1)
    controller = CanaryController(fresh, traffic, labels=traffic.labels, promote=lambda v: None)
    result = controller.run()
    assert result.outcome == "rolled_back" and result.step in (0.25, 0.5)
    assert result.reason.startswith("accuracy")
    assert traffic.shares[-1] == 0.0  # traffic back to the champion
    assert get_aliases(fresh) == {"champion": 1, "challenger": 2}  # canary alias gone
    assert tags(fresh, 2)["canary_status"] == "rolled_back"
    assert tags(fresh, 2)["canary_step"] == f"{result.step:.0%}"
    last = alias_history(fresh, "canary").iloc[-1]
    assert last["to_version"] is pd.NA and last["reason"].startswith("rolled back at step")


def test_a_good_challenger_passes_every_step_and_goes_through_the_gate(fresh):
    traffic = SimulatedTraffic({"champion": 0.85, "challenger": 0.85}, seed=2)
    promoted = []

    def gate(version):
        move_alias(fresh, "champion", version, actor="canary", reason="passed the gate")
        promoted.append(version)

    controller = CanaryController(fresh, traffic, labels=traffic.labels, promote=gate)
    result = controller.run()
    assert result.outcome == "promoted" and promoted == [2]
    assert traffic.shares == [0.0, 0.05, 0.25, 0.5, 1.0]
    assert get_aliases(fresh)["champion"] == 2 and "canary" not in get_aliases(fresh)
    assert tags(fresh, 2)["canary_status"] == "promoted"


def test_a_crash_mid_step_leaves_traffic_and_aliases_as_before_the_step(fresh):
    traffic = SimulatedTraffic({"champion": 0.85, "challenger": 0.85}, seed=3, crash_at=0.25)
    controller = CanaryController(fresh, traffic, labels=traffic.labels)
    controller.start()
    controller.step(0.05)
    before = get_aliases(fresh)
    with pytest.raises(CanaryCrash, match="failed at step 25%: lost the connection"):
        controller.step(0.25)
    assert get_aliases(fresh) == before and traffic.shares[-1] == 0.05
    last = alias_history(fresh, "canary").iloc[-1]
    assert last["from_version"] == last["to_version"] == 2
    assert "crashed at step 25%" in last["reason"] and "as before the step" in last["reason"]


def test_a_step_without_labels_restores_the_share(fresh):
    traffic = SimulatedTraffic({"champion": 0.85, "challenger": 0.85}, seed=4)
    controller = CanaryController(fresh, traffic)  # no labels have arrived
    controller.start()
    controller.step(0.05)
    with pytest.raises(NoLabelsError):
        controller.step(0.5)
    assert traffic.shares[-1] == 0.05 and controller.share == 0.05


def test_a_model_without_a_challenger_cannot_start(model):
    move_alias(model, "challenger", None, actor="tests", reason="no challenger")
    with pytest.raises(CanaryError, match=r"no \['challenger'\] alias"):
        CanaryController(model, SimulatedTraffic({"champion": 1, "challenger": 1}))
