"""The alias history: rows appended by every helper that moves an alias, and "which version
was champion at time T", on a real local registry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import mlflow
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier

from utils.gate.promotion import rollback
from utils.operations.alias_history import (
    alias_history,
    move_alias,
    record_alias_move,
    version_at,
    versions_at,
)
from utils.tracking import get_aliases, register_model, setup_mlflow

pytestmark = pytest.mark.integration

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_version_at_follows_recorded_moves():
    model = "history_only_model"
    record_alias_move(model, "champion", None, 1, "tests", "first champion", T0)
    record_alias_move(model, "champion", 1, 2, "tests", "promoted", T0 + timedelta(days=2))
    record_alias_move(model, "champion", 2, 1, "tests", "rolled back", T0 + timedelta(days=3))
    assert version_at(model, T0 - timedelta(hours=1)) is None  # before anything was recorded
    assert version_at(model, T0 + timedelta(days=1)) == 1
    assert version_at(model, T0 + timedelta(days=2, hours=1)) == 2
    assert version_at(model, T0 + timedelta(days=9)) == 1
    times = [T0 + timedelta(days=d) for d in (3.5, 0.5, 2.5, -1)]  # any order
    assert versions_at(model, times).tolist() == [1, 1, 2, pd.NA]
    history = alias_history(model)
    assert history["reason"].tolist() == ["first champion", "promoted", "rolled back"]
    assert list(history.columns) == [
        "model", "alias", "from_version", "to_version", "actor", "reason", "moved_at",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="needs an actor"):
        record_alias_move(model, "champion", 1, 2, "", "no actor")


@pytest.fixture(scope="module")
def two_versions():
    setup_mlflow("test_alias_history")
    name = "alias_history_test_model"
    X = pd.DataFrame({"x": [0.0, 1.0]})
    versions = []
    for constant in (0, 1):
        with mlflow.start_run():
            model = DummyClassifier(strategy="constant", constant=constant).fit(X, [0, 1])
            info = mlflow.sklearn.log_model(
                model, name="model", serialization_format="cloudpickle",
                pip_requirements=["scikit-learn"],
            )  # fmt: skip
        versions.append(int(register_model(info.model_uri, name).version))
    return name, versions


def test_move_alias_moves_it_and_appends_a_row(two_versions):
    name, (v1, v2) = two_versions
    assert move_alias(name, "champion", v1, actor="tests", reason="first") is None
    assert move_alias(name, "champion", v2, actor="tests", reason="second") == v1
    assert get_aliases(name)["champion"] == v2
    assert move_alias(name, "staging", None, actor="tests", reason="nothing to delete") is None
    rows = alias_history(name, "champion")
    assert rows[["from_version", "to_version"]].astype(object).values.tolist() == [
        [pd.NA, v1], [v1, v2],
    ]  # fmt: skip


def test_rollback_records_both_of_its_moves(two_versions):
    name, (v1, v2) = two_versions
    move_alias(name, "champion", v2, actor="tests", reason="set up")
    move_alias(name, "previous", v1, actor="tests", reason="set up")
    before = len(alias_history(name))
    rollback(name, reason="alerts fired")
    rows = alias_history(name).iloc[before:]
    assert rows["alias"].tolist() == ["champion", "previous"]
    assert rows["to_version"].astype(object).tolist() == [v1, pd.NA]
    assert (rows["actor"] == "utils.gate.rollback").all()
    assert rows["reason"].str.contains("alerts fired").all()
    assert version_at(name, datetime.now(UTC)) == v1


def test_model_card_has_every_section_and_the_versions_history(two_versions):
    from utils.operations.cards import CARD_SECTIONS, diff_card, log_model_card
    from utils.tracking import ModelNotFoundError

    name, (v1, v2) = two_versions
    mlflow.MlflowClient().set_model_version_tag(name, str(v2), "validation.slices", "pass: {}")
    card = log_model_card(name, v2)
    for section in CARD_SECTIONS:
        assert f"## {section}\n" in card
    assert f"# Model card: {name} version {v2}" in card and "| champion |" in card
    assert "`scikit-learn" in card and "validation.slices" not in card and "| slices |" in card
    tags = mlflow.MlflowClient().get_model_version(name, str(v2)).tags
    assert tags["model_card"] == f"model_cards/v{v2}.md"
    diff = diff_card(name, v1, v2)
    assert f"version {v1} vs version {v2}" in diff and "tag `validation.slices`" in diff
    with pytest.raises(ModelNotFoundError, match="has no version 99"):
        log_model_card(name, 99)
