"""Chapter 08 end to end: a weak candidate refused with reasons, a good one promoted, a
rollback, and the gate triggered by a registry webhook on a loopback receiver."""

import pytest

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def result(run_chapter):
    return run_chapter("08_validation_and_promotion", HOLDOUT_ROWS=3_000)


def test_weak_candidate_is_refused_with_its_reasons(result):
    recorded = result.recorded
    assert recorded["weak_refused"] is True
    assert recorded["weak_status_tag"] == "failed"
    failed = set(recorded["weak_failed_checks"])
    assert {
        "description",
        "tags",
        "signature",
        "input_example",
        "requirements",
        "auc_vs_champion",
    } <= failed
    assert "latency_p50_ms" not in failed  # a small model is fast: only real problems listed
    reasons = " ".join(recorded["weak_reasons"])
    assert "placeholder" in reasons and "owner_team" in reasons and "unpinned" in reasons


def test_good_candidate_passes_every_check_and_is_promoted(result):
    recorded = result.recorded
    assert recorded["good_promoted"] is True
    assert all(recorded["good_checks"].values()), recorded["good_checks"]
    assert len(recorded["good_checks"]) == 9
    assert recorded["promoted_version"] == recorded["weak_version"] + 1
    assert recorded["previous_after_promotion"] == recorded["champion_before"]


def test_rollback_restores_the_previous_champion(result):
    assert result.recorded["champion_after_rollback"] == result.recorded["champion_before"]
    assert result.recorded["previous_after_rollback"] is None


def test_version_created_event_triggers_the_gate_which_keeps_the_rollback(result):
    recorded = result.recorded
    assert recorded["webhook_test_status"] == 200
    assert recorded["webhook_events"] == 2  # the test delivery and model_version.created
    assert recorded["webhook_version"] == recorded["promoted_version"] + 1
    # the rolled-back artifacts registered again: refused for that reason alone
    assert recorded["webhook_promoted"] is False
    assert recorded["webhook_failed_checks"] == ["not_rolled_back"]
    assert recorded["aliases"]["champion"] == recorded["champion_before"]
    assert "previous" not in recorded["aliases"]


def test_replayed_deliveries_are_refused_and_the_secret_is_owner_only(result):
    recorded = result.recorded
    assert recorded["webhook_replays"] == {
        "the same delivery again": 409,
        "a delivery signed 10 minutes ago": 401,
    }
    assert recorded["webhook_secret_mode"] == "600"


def test_mlflow_metric_threshold_agrees_with_the_gate_on_the_metric(result):
    gate = result.recorded["metric_threshold_gate"]
    assert gate["good"] == "passed"
    assert gate["weak"] != "passed" and "auc" in gate["weak"].lower()


def test_rollback_says_why_on_the_version(result):
    assert "campaign tool" in result.recorded["rollback_reason_tag"]
