import pytest

from utils.datasets import make_churn
from utils.environments.requirements import RequirementNotInstalledError, pinned_requirements
from utils.training import build_churn_pipeline, prediction_output, train_churn_model

pytestmark = pytest.mark.unit


def test_pipeline_learns_churn():
    trained = train_churn_model(make_churn(4_000), n_estimators=60)
    assert trained.metrics["auc"] >= 0.75
    assert 0 <= trained.metrics["f1"] <= 1
    assert len(trained.X_test) == 1_000


def test_prediction_output_is_a_named_series():
    trained = train_churn_model(make_churn(800), n_estimators=10)
    output = prediction_output(trained.pipeline, trained.X_test.head(3))
    assert output.name == "prediction" and len(output) == 3


def test_pipeline_steps():
    assert [name for name, _ in build_churn_pipeline().steps] == ["preprocess", "classifier"]


def test_pinned_requirements():
    pins = pinned_requirements("mlflow", "scikit-learn")
    assert pins[0].startswith("mlflow==3.") and pins[1].startswith("scikit-learn==")
    with pytest.raises(RequirementNotInstalledError, match="'no-such-package-xyz'"):
        pinned_requirements("no-such-package-xyz")


def test_train_churn_model_learns_the_label_it_is_given():
    """Regression: `retrain_candidate(label=...)` trained on `Exited` whatever label it got."""
    data = make_churn(1_200).rename(columns={"Exited": "churned"})
    trained = train_churn_model(data, n_estimators=10, label="churned")
    assert trained.y_test.name == "churned"
    assert "churned" not in trained.X_train.columns
    with pytest.raises(KeyError, match="Exited"):
        train_churn_model(data, n_estimators=10)  # the default label is not in this frame
