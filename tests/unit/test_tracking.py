"""Registry helpers against a real SQLite-backed MLflow in the test work dir."""

import mlflow
import pytest

from utils.tracking import (
    ModelNotFoundError,
    get_aliases,
    load_model,
    model_name,
    register_model,
    resolve_model_uri,
    set_alias,
    setup_mlflow,
    tracking_uri,
)
from utils.training import ensure_champion

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def champion():
    return ensure_champion("tracking_test_model", with_challenger=True, size=1_500)


def test_setup_uses_sqlite_under_the_work_dir(work_dir):
    setup_mlflow("tracking-tests")
    assert tracking_uri() == f"sqlite:///{work_dir / 'mlflow.db'}"
    assert mlflow.get_tracking_uri() == tracking_uri()
    experiment = mlflow.get_experiment_by_name("tracking-tests")
    assert experiment.artifact_location.startswith((work_dir / "mlartifacts").as_uri())


def test_ensure_champion_creates_champion_and_challenger_once(champion):
    aliases = get_aliases("tracking_test_model")
    assert set(aliases) == {"champion", "challenger"}
    assert aliases["champion"] == int(champion.version)
    again = ensure_champion("tracking_test_model", with_challenger=True)
    assert again.version == champion.version
    assert get_aliases("tracking_test_model") == aliases


def test_champion_has_description_tags_and_signature(champion):
    assert "churn" in champion.description.lower()
    assert float(champion.tags["test_auc"]) > 0.7
    info = mlflow.models.get_model_info(f"models:/{champion.name}@champion")
    assert info.signature.inputs.input_names()[0] == "CreditScore"
    assert info.signature.outputs.input_names() == ["prediction"]


def test_register_with_description_tags_and_alias(champion):
    source = f"models:/{champion.name}/{champion.version}"
    version = register_model(
        source,
        "tracking_copy",
        description="copy for a test",
        tags={"team": "qa"},
        aliases=["candidate"],
    )
    assert version.description == "copy for a test"
    assert version.tags["team"] == "qa"
    assert get_aliases("tracking_copy") == {"candidate": int(version.version)}
    set_alias("tracking_copy", "champion", version.version)
    assert resolve_model_uri("models:/tracking_copy@champion").version == version.version


def test_unknown_alias_lists_existing_aliases(champion):
    with pytest.raises(ModelNotFoundError, match=r"no alias 'production'.*challenger.*champion"):
        resolve_model_uri("models:/tracking_test_model@production")


def test_unknown_model_lists_registered_models(champion):
    with pytest.raises(
        ModelNotFoundError, match=r"No registered model 'nope'.*tracking_test_model"
    ):
        load_model("models:/nope@champion")


def test_unknown_version_and_bad_uri(champion):
    with pytest.raises(ModelNotFoundError, match="has no version 999"):
        resolve_model_uri("models:/tracking_test_model/999")
    with pytest.raises(ModelNotFoundError, match="not a registry URI"):
        resolve_model_uri("runs:/abc/model")


def test_loaded_champion_predicts(champion):
    from utils.datasets import make_churn, split_features_label

    X, _ = split_features_label(make_churn(20, seed=9))
    predictions = load_model("models:/tracking_test_model@champion").predict(X)
    assert len(predictions) == 20 and set(predictions) <= {0, 1}


def test_model_name_is_three_part_on_databricks(monkeypatch):
    assert model_name("m") == "m"
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    monkeypatch.setenv("CATALOG", "ml")
    monkeypatch.setenv("SCHEMA", "churn")
    assert model_name("m") == "ml.churn.m"
    assert model_name("other.schema.m") == "other.schema.m"


def test_ensure_champion_keeps_the_chapters_experiment_active():
    """Regression: ensure_champion switched to the default experiment, so runs a chapter
    logged after it landed there instead of in the chapter's own experiment."""
    chapter_experiment = setup_mlflow("tracking-tests-chapter")
    ensure_champion("experiment_switch_model", size=800)  # trains and registers: a new name
    with mlflow.start_run() as run:
        pass
    assert run.info.experiment_id == chapter_experiment
    ensure_runs = mlflow.search_runs(
        experiment_names=["mlflow-deployment-notebooks"],
        filter_string="attributes.run_name = 'ensure-champion'",
    )
    assert len(ensure_runs) >= 1  # the demo model's own run went to the default experiment


def test_ensure_champion_refuses_a_name_that_is_not_the_demo_model(champion):
    from utils.training import ModelNameTakenError

    setup_mlflow("tracking-tests")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(champion_model_pipeline(), name="model")
    register_model(info.model_uri, "someone_elses_model", description="x" * 40)
    with pytest.raises(ModelNameTakenError, match="no 'champion' alias"):
        ensure_champion("someone_elses_model")


def champion_model_pipeline():
    from sklearn.dummy import DummyClassifier

    return DummyClassifier().fit([[0], [1]], [0, 1])


def test_every_churn_model_keeps_its_training_rows_with_its_run(champion):
    """ensure_champion logs through log_churn_model, which keeps the training rows (chapter 09
    reads them back as the drift reference)."""
    import pandas as pd

    from utils.training import TRAINING_DATA_ARTIFACT

    run = mlflow.MlflowClient().get_run(champion.run_id)
    inputs = run.inputs.dataset_inputs
    assert [d.dataset.name for d in inputs] == ["churn-training-rows"]
    assert inputs[0].tags[0].value == "training"
    local = mlflow.artifacts.download_artifacts(
        run_id=champion.run_id, artifact_path=TRAINING_DATA_ARTIFACT
    )
    rows = pd.read_parquet(local)
    assert len(rows) == 1_125  # 75% of the 1,500 rows ensure_champion trained on
    assert "Exited" not in rows.columns and "CustomerId" not in rows.columns
