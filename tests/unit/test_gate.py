"""The validation gate: each check alone (pass and fail), then validate/promote/rollback on a
real local registry."""

from __future__ import annotations

import os

import mlflow
import pandas as pd
import pytest
from mlflow.models import infer_signature

import utils.gate.checks as gate_checks
import utils.gate.promotion as gate_promotion
from utils.datasets import make_churn, split_features_label
from utils.tracking import get_aliases, register_model, set_alias, setup_mlflow
from utils.training import log_churn_model, train_churn_model

pytestmark = pytest.mark.integration


# --- each check ------------------------------------------------------------------------------

GOOD_DESCRIPTION = (
    "Churn classifier trained on generated bank customers; predicts Exited for retention."
)


def test_description_passes_when_meaningful():
    assert gate_checks.check_description(GOOD_DESCRIPTION, min_words=8).passed


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "no description"),
        ("   ", "no description"),
        ("TODO", "placeholder"),
        ("churn model v2", "3 words"),
    ],
)
def test_description_fails_with_reason(text, reason):
    result = gate_checks.check_description(text, min_words=8)
    assert not result.passed
    assert reason in result.reason


def test_tags_name_what_is_missing():
    result = gate_checks.check_tags(
        {"owner_team": "x", "training_rows": " "}, ["owner_team", "training_rows"]
    )
    assert not result.passed
    assert "training_rows" in result.reason and "owner_team" not in result.reason
    assert gate_checks.check_tags(
        {"owner_team": "x", "training_rows": "10"}, ["owner_team", "training_rows"]
    ).passed


def test_signature_needs_inputs_and_outputs():
    X = pd.DataFrame({"a": [1.0, 2.0]})
    full = infer_signature(X, pd.Series([0, 1], name="prediction"))
    assert gate_checks.check_signature(full).passed
    inputs_only = infer_signature(X)
    result = gate_checks.check_signature(inputs_only)
    assert not result.passed and "no outputs" in result.reason
    assert not gate_checks.check_signature(None).passed


def test_input_example():
    assert gate_checks.check_input_example(True).passed
    result = gate_checks.check_input_example(False)
    assert not result.passed and "input_example" in result.reason


def test_requirements_must_all_be_pinned():
    assert gate_checks.check_requirements(
        ["mlflow==3.17.2", "scikit-learn==1.9.0", "# comment", ""]
    ).passed
    result = gate_checks.check_requirements(["mlflow==3.17.2", "scikit-learn", "pandas>=2"])
    assert not result.passed
    assert result.value == "1/3 pinned"
    assert "scikit-learn" in result.reason and "pandas>=2" in result.reason
    assert not gate_checks.check_requirements(None).passed
    assert not gate_checks.check_requirements(["# nothing"]).passed


@pytest.mark.parametrize(
    "line",
    [
        "-e git+https://example.invalid/repo.git@main#egg=repo",
        "--extra-index-url http://example.invalid/simple",
        "-r other.txt",
        "--index-url=http://example.invalid/simple",
        "pkg==1.*",
    ],
)
def test_requirements_accept_only_name_equals_version_lines(line):
    result = gate_checks.check_requirements(["mlflow==3.17.2", line])
    assert not result.passed
    assert line in result.reason and result.value == "1/2 pinned"


def test_metric_vs_champion_tolerance():
    assert gate_checks.check_metric_vs_champion(0.845, 0.85, "auc", tolerance=0.01).passed
    worse = gate_checks.check_metric_vs_champion(0.80, 0.85, "auc", tolerance=0.01)
    assert not worse.passed and "0.8500" in worse.reason and worse.threshold == ">= 0.8400"
    assert gate_checks.check_metric_vs_champion(0.5, None).passed  # first version: nothing to beat


def test_nan_and_missing_metrics_fail_with_a_reason():
    nan = float("nan")
    for candidate, champion in ((nan, 0.85), (None, 0.85), (nan, None), (0.9, nan)):
        result = gate_checks.check_metric_vs_champion(candidate, champion, "auc")
        assert not result.passed, (candidate, champion)
        assert "could not be measured" in result.reason
    slices = gate_checks.check_slices({"France": 0.9, "Germany": nan}, floor=0.75)
    assert not slices.passed and "Germany" in slices.reason and "France" not in slices.reason
    latency = gate_checks.check_latency(nan, 50)
    assert not latency.passed and "could not be measured" in latency.reason


def test_slices_below_floor_are_named_and_small_slices_not_judged():
    result = gate_checks.check_slices({"France": 0.86, "Germany": 0.71, "Spain": None}, floor=0.75)
    assert not result.passed
    assert "Germany 0.710" in result.reason and "France" not in result.reason
    assert gate_checks.check_slices({"France": 0.86, "Spain": None}, floor=0.75).passed
    assert not gate_checks.check_slices({"Spain": None}, floor=0.75).passed


def test_latency_budget():
    assert gate_checks.check_latency(3.2, 50).passed
    slow = gate_checks.check_latency(75.0, 50)
    assert not slow.passed and "75.0 ms" in slow.reason


def test_report_tags_fit_unity_catalog_limits():
    checks = [
        gate_checks.CheckResult("description", False, 0, ">= 8 words", "x" * 400),
        gate_checks.CheckResult("tags", True, "a", "a", ""),
    ]
    report = gate_checks.ValidationReport("m", 3, 2, checks)
    tags = report.as_tags()
    assert tags["validation_status"] == "failed"
    assert tags["validated_against"] == "2"
    assert all(len(value) <= 256 for value in tags.values())
    assert tags["validation.tags"].startswith("pass")
    assert not gate_checks.ValidationReport("m", 1, None, []).passed  # no checks is not a pass


def test_score_metric_and_slices_on_a_fitted_model():
    data = make_churn(1500, seed=3)
    trained = train_churn_model(data, n_estimators=20)
    X, y = split_features_label(make_churn(900, seed=4))
    auc = gate_checks.score_metric(trained.pipeline, X, y, "auc")
    assert 0.6 < auc <= 1.0
    by_geo = gate_checks.slice_metrics(trained.pipeline, X, y, "Geography", "auc", min_rows=250)
    assert set(by_geo) == {"France", "Germany", "Spain"}
    assert by_geo["Spain"] is None or by_geo["Spain"] > 0.5
    with pytest.raises(ValueError, match="metric must be"):
        gate_checks.score_metric(trained.pipeline, X, y, "r2")
    with pytest.raises(ValueError, match="Slice column"):
        gate_checks.slice_metrics(trained.pipeline, X, y, "Country")


# --- validate, promote, rollback on a real registry -----------------------------------------


@pytest.fixture(scope="module")
def registry():
    """A model with a good champion (v1), then a weak candidate and a good candidate."""
    setup_mlflow("test_validation")
    name = "validation_test_model"
    data = make_churn(2000, seed=11)
    tags = {"owner_team": "tests", "training_rows": "2000"}
    champion = train_churn_model(data, n_estimators=60)
    with mlflow.start_run():
        info = log_churn_model(champion)
    register_model(
        info.model_uri, name, description=GOOD_DESCRIPTION, tags=tags, aliases=["champion"]
    )

    weak = train_churn_model(data.head(300), n_estimators=2, max_depth=1)
    with mlflow.start_run():
        weak_info = mlflow.sklearn.log_model(
            weak.pipeline,
            name="model",
            pip_requirements=["scikit-learn", "mlflow"],
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )
    weak_version = register_model(weak_info.model_uri, name, description="todo")

    good = train_churn_model(data, n_estimators=60, seed=7)
    with mlflow.start_run():
        good_info = log_churn_model(good)
    good_version = register_model(
        good_info.model_uri, name, description=GOOD_DESCRIPTION, tags=tags
    )
    X, y = split_features_label(make_churn(1500, seed=12, first_row=500_000))
    return name, int(weak_version.version), int(good_version.version), X, y


def test_weak_candidate_is_refused_with_reasons_and_tagged(registry):
    name, weak, _, X, y = registry
    result = gate_promotion.promote(name, weak, X, y)
    assert not result.promoted
    failed = {c.check for c in result.report.failures}
    assert {
        "description",
        "tags",
        "signature",
        "input_example",
        "requirements",
        "auc_vs_champion",
    } <= failed
    assert get_aliases(name)["champion"] == 1
    tags = mlflow.MlflowClient().get_model_version(name, str(weak)).tags
    assert tags["validation_status"] == "failed"
    assert "description" in tags["validation_reasons"]
    assert tags["validated_against"] == "1"


def test_good_candidate_is_promoted_and_old_champion_kept_as_previous(registry):
    name, _, good, X, y = registry
    report = gate_checks.validate_candidate(name, good, X, y)
    assert report.passed, str(report)
    assert report.champion_version == 1
    result = gate_promotion.promote(name, good, report=report)
    assert result.promoted and result.champion_version == good and result.previous_version == 1
    tags = mlflow.MlflowClient().get_model_version(name, str(good)).tags
    assert tags["validation_status"] == "passed"


def test_rollback_restores_previous_then_refuses_a_second_time(registry):
    name, _, good, X, y = registry
    if get_aliases(name).get("champion") != good:  # run alone: promote first
        gate_promotion.promote(name, good, X, y)
    result = gate_promotion.rollback(name, reason="complaints from the retention team")
    assert (result.champion_version, result.rolled_back_version) == (1, good)
    aliases = get_aliases(name)
    assert aliases["champion"] == 1 and "previous" not in aliases
    tags = mlflow.MlflowClient().get_model_version(name, str(good)).tags
    assert tags["rollback_reason"] == "complaints from the retention team"
    with pytest.raises(gate_promotion.PromotionError, match="no 'previous' alias"):
        gate_promotion.rollback(name)


def test_artifacts_of_a_rolled_back_version_are_refused_until_its_tag_is_deleted(registry):
    name, _, good, X, y = registry
    client = mlflow.MlflowClient()
    old_tags = client.get_model_version(name, str(good)).tags
    client.set_model_version_tag(name, str(good), "rollback_reason", "confuses the campaign tool")
    source = client.get_model_version(name, str(good)).source
    again = int(register_model(source, name, description=GOOD_DESCRIPTION, tags={
        "owner_team": "tests", "training_rows": "2000"}).version)  # fmt: skip
    try:
        refused = gate_checks.validate_candidate(name, again, X, y).check("not_rolled_back")
        assert not refused.passed and refused.value == str(good)
        assert f"version {good}: confuses the campaign tool" in refused.reason
        assert "delete the rollback_reason tag" in refused.reason
        client.delete_model_version_tag(name, str(good), "rollback_reason")
        cleared = gate_checks.validate_candidate(name, again, X, y).check("not_rolled_back")
        assert cleared.passed and cleared.value == "none"
    finally:
        if "rollback_reason" in old_tags:
            client.set_model_version_tag(name, str(good), "rollback_reason",
                                         old_tags["rollback_reason"])  # fmt: skip


def test_promote_rejects_a_report_about_another_version(registry):
    name, weak, good, X, y = registry
    report = gate_checks.ValidationReport(name, weak, None, [])
    with pytest.raises(ValueError, match="not"):
        gate_promotion.promote(name, good, report=report)
    with pytest.raises(ValueError, match="holdout"):
        gate_promotion.promote(name, good)


def test_unknown_version_is_a_clear_error(registry):
    name, *_, X, y = registry
    from utils.tracking import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="no version 99"):
        gate_checks.validate_candidate(name, 99, X, y)


def test_first_version_has_no_champion_to_beat(registry):
    name, _, good, X, y = registry
    set_alias(name, "champion", good)
    report = gate_checks.validate_candidate(name, good, X, y)
    assert report.champion_version is None
    metric_check = next(c for c in report.checks if c.check == "auc_vs_champion")
    assert metric_check.passed and metric_check.threshold == "no champion yet"


def test_candidate_alias_is_judged_once_with_its_own_holdout(registry, tmp_path):
    from utils.monitoring.retraining import HOLDOUT_ARTIFACT, validate_candidate_alias

    name, _, good, X, y = registry
    assert validate_candidate_alias(name, "Exited") is None  # no candidate: nothing to do
    run_id = mlflow.MlflowClient().get_model_version(name, str(good)).run_id
    holdout = tmp_path / "holdout.parquet"
    X.assign(Exited=y).to_parquet(holdout)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_artifact(str(holdout), "holdout")
    assert HOLDOUT_ARTIFACT == "holdout/holdout.parquet"
    set_alias(name, "candidate", good)
    result = validate_candidate_alias(name, "Exited")
    assert result.version == good and len(result.report.checks) == 9
    assert "candidate" not in get_aliases(name)


# --- compare-and-set promotion, the candidate in its own process ------------------------------


def _passing_report(name, version, champion, validated_at=None):
    check = gate_checks.CheckResult("tags", True, "a", "a", "")
    report = gate_checks.ValidationReport(name, version, champion, [check])
    if validated_at:
        report.validated_at = validated_at
    return report


def test_promote_refuses_a_report_made_before_the_champion_changed(registry):
    name, weak, good, X, y = registry
    set_alias(name, "champion", 1)
    report = _passing_report(name, good, 1)
    set_alias(name, "champion", weak)  # someone else promoted in between
    try:
        with pytest.raises(gate_promotion.PromotionError, match=f"champion is now version {weak}"):
            gate_promotion.promote(name, good, report=report)
        assert get_aliases(name)["champion"] == weak
    finally:
        set_alias(name, "champion", 1)


def test_promote_refuses_an_old_report(registry):
    name, _, good, X, y = registry
    set_alias(name, "champion", 1)
    report = _passing_report(name, good, 1, validated_at="2020-01-01T00:00:00+00:00")
    with pytest.raises(gate_promotion.PromotionError, match="old"):
        gate_promotion.promote(name, good, report=report, max_report_age_s=600)
    assert get_aliases(name)["champion"] == 1


def test_alias_move_rechecks_the_alias_right_before_setting_it(registry, monkeypatch):
    name, weak, good, X, y = registry
    set_alias(name, "champion", 1)
    real_move_alias = gate_promotion.move_alias

    def racing_move_alias(model, alias, version, **why):
        real_move_alias(model, alias, version, **why)
        if alias == "previous":  # another promotion lands between our two alias writes
            set_alias(model, "champion", weak)

    monkeypatch.setattr(gate_promotion, "move_alias", racing_move_alias)
    try:
        with pytest.raises(gate_promotion.PromotionError, match="moved"):
            gate_promotion.promote(name, good, report=_passing_report(name, good, 1))
        assert get_aliases(name)["champion"] == weak  # the other writer's choice stands
    finally:
        set_alias(name, "champion", 1)


def test_candidate_code_runs_in_another_process_and_moving_an_alias_refuses(registry):
    """A candidate whose load_context moves `champion` to itself and changes the loading
    process: the gate's process is untouched and the validation is refused."""
    name, _, _, X, y = registry
    set_alias(name, "champion", 1)
    tracking_uri = mlflow.get_tracking_uri()

    class AliasMover(mlflow.pyfunc.PythonModel):  # defined here: pickled by value
        def load_context(self, context):
            import os

            os.environ["GATE_TEST_CANDIDATE_RAN_HERE"] = "1"
            client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            versions = client.search_model_versions(f"name='{name}'")
            newest = max(int(v.version) for v in versions)
            client.set_registered_model_alias(name, "champion", str(newest))

        def predict(self, context, model_input):
            return pd.Series([0.5] * len(model_input))

    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="model", python_model=AliasMover())
    evil = int(register_model(info.model_uri, name, description=GOOD_DESCRIPTION).version)
    try:
        with pytest.raises(gate_checks.PromotionError, match="moved while"):
            gate_checks.validate_candidate(name, evil, X, y)
        assert "GATE_TEST_CANDIDATE_RAN_HERE" not in os.environ
        assert get_aliases(name)["champion"] == evil  # it did move it: the gate noticed
    finally:
        set_alias(name, "champion", 1)


def test_webhook_events_are_read_back_from_the_registry(registry):
    from utils.gate.webhooks import registry_version_for_event

    name, weak, good, X, y = registry

    def created(version, model=name):
        return {"entity": "model_version", "action": "created",
                "data": {"name": model, "version": str(version), "tags": {}}}  # fmt: skip

    assert registry_version_for_event(created(weak), name) == (weak, "")
    assert registry_version_for_event(created(weak), name, max_age_s=0)[1].startswith(
        f"ignored: version {weak} was created"
    )
    alias_event = created(weak) | {"entity": "model_version_alias"}
    assert registry_version_for_event(alias_event, name) == (
        None, "ignored model_version_alias.created"
    )  # fmt: skip
    assert "other" in registry_version_for_event(created(weak, "other"), name)[1]
    assert "no version '99'" in registry_version_for_event(created(99), name)[1]
    mlflow.MlflowClient().set_model_version_tag(name, str(good), "rolled_back_at", "now")
    try:
        version, reason = registry_version_for_event(created(good), name)
        assert version is None and "rolled back" in reason
    finally:
        mlflow.MlflowClient().delete_model_version_tag(name, str(good), "rolled_back_at")


def test_measure_writes_the_figures_the_checks_need(registry, tmp_path):
    import json

    from utils.gate import measure

    name, _, good, X, y = registry
    model_dir = mlflow.artifacts.download_artifacts(f"models:/{name}/{good}", dst_path=tmp_path)
    holdout = tmp_path / "holdout.parquet"
    X.assign(**{gate_checks.LABEL_COLUMN: y.to_numpy()}).to_parquet(holdout)
    request = {"candidate": model_dir, "champion": None, "holdout": str(holdout), "metric": "auc",
               "slice_column": "Geography", "min_slice_rows": 50, "latency_repeats": 3}  # fmt: skip
    (tmp_path / "request.json").write_text(json.dumps(request))
    measure.main([str(tmp_path / "request.json"), str(tmp_path / "result.json")])
    figures = json.loads((tmp_path / "result.json").read_text())
    assert 0.6 < figures["candidate_score"] <= 1 and figures["champion_score"] is None
    assert set(figures["slices"]) == {"France", "Germany", "Spain"}
    assert figures["latency_p50_ms"] > 0
