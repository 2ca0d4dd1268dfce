"""Chapter 07 end to end: requirements files, bundled wheels, an offline restored environment
that predicts like the notebook, ONNX agreement, and deployment files that parse."""

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def result(run_chapter):
    return run_chapter("07_packaging_dependencies", N_ROWS=1200, RESTORE_ROWS=50)


def test_requirements_three_ways(result):
    pip_only = result.recorded["pip_requirements_txt"].split()
    assert pip_only[0].startswith("mlflow==") and any(r.startswith("skops==") for r in pip_only)
    assert "onnxruntime==" in result.recorded["extra_requirements_txt"]
    conda = yaml.safe_load(result.recorded["conda_yaml"])
    assert conda["channels"] == ["conda-forge"]


def test_private_wheel_is_bundled_with_every_dependency(result):
    bundled = result.recorded["bundled_requirements"]
    assert all(r.startswith("wheels/") and r.endswith(".whl") for r in bundled)
    assert any("weather_features-0.1.0" in r for r in bundled)
    assert any("mlflow_skinny" in r for r in bundled)
    sizes = result.recorded["model_size_mb"]
    assert sizes["bundled"] > 10 * sizes["plain"]


def test_restored_environment_predicts_like_the_notebook(result):
    assert result.recorded["restored_rows"] == 50
    assert result.recorded["restored_mismatches"] == 0


def test_unresolvable_requirement_names_package_and_wheelhouse(result):
    error = result.recorded["unresolvable_error"]
    assert "tabulate==0.9.0" in error and "wheelhouse" in error


def test_onnx_uses_the_fitted_scaler_and_agrees_with_sklearn(result):
    assert result.recorded["onnx_scaler_matches"] is True
    assert result.recorded["onnx_agreement"] >= 0.99
    assert result.recorded["onnx_served_mismatches"] == 0
    assert result.recorded["scoring_script_matches"] is True


def test_deployment_files_parse(result):
    files = result.recorded["deploy_files"]
    deployment, service = yaml.safe_load_all(Path(files["kubernetes"]).read_text())
    probe = deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["path"] == "/ping"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    endpoint = yaml.safe_load(Path(files["endpoint"]).read_text())
    azure = yaml.safe_load(Path(files["deployment"]).read_text())
    assert azure["endpoint_name"] == endpoint["name"]
    assert azure["model"]["type"] == "mlflow_model"
    compile(Path(files["score"]).read_text(), files["score"], "exec")


def test_dockerfile_serves_the_model(result):
    instructions = result.recorded["dockerfile_instructions"]
    assert instructions[0] == "FROM" and instructions[-1] == "ENTRYPOINT"
    text = Path(result.recorded["dockerfile"]).read_text()
    assert "COPY model_dir /opt/ml/model" in text
    assert (Path(result.recorded["dockerfile"]).parent / "model_dir").is_dir()
