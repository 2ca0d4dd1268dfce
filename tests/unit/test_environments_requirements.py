"""utils.packaging: pins, wheel building, wheelhouse checks and the errors for what is missing."""

import pytest

from utils.env import REPO_ROOT
from utils.environments.requirements import (
    RequirementNotInstalledError,
    WheelhouseError,
    build_wheel,
    folder_size_mb,
    missing_from_wheelhouse,
    model_environment_requirements,
    pinned_requirements,
    restore_env_variables,
    unresolved_package,
)

pytestmark = pytest.mark.unit


def test_pinned_requirements_pins_installed_versions():
    from importlib import metadata

    assert pinned_requirements("pandas") == [f"pandas=={metadata.version('pandas')}"]
    with pytest.raises(RequirementNotInstalledError, match="no-such-package-xyz"):
        pinned_requirements("no-such-package-xyz")


def _wheel(folder, name):
    path = folder / name
    path.write_bytes(b"")
    return path


def test_missing_from_wheelhouse(tmp_path):
    _wheel(tmp_path, "pandas-2.3.3-cp311-cp311-manylinux_2_17_x86_64.whl")
    _wheel(tmp_path, "weather_features-0.1.0-py3-none-any.whl")
    requirements = [
        "pandas==2.3.3",
        "pandas>=2",
        "numpy==2.4.6",
        "Weather-Features==0.1.0",
        str(tmp_path / "weather_features-0.1.0-py3-none-any.whl"),
        "/elsewhere/private-9.9-py3-none-any.whl",
    ]
    assert missing_from_wheelhouse(requirements, tmp_path) == [
        "numpy==2.4.6",
        "/elsewhere/private-9.9-py3-none-any.whl",
    ]


@pytest.mark.parametrize(
    ("output", "package"),
    [
        ("ERROR: No matching distribution found for tabulate==0.9.0\n", "tabulate==0.9.0"),
        (
            "  × No solution found\n  ╰─▶ Because tabulate was not found in the provided package "
            "locations and you require tabulate==0.9.0, ...",
            "tabulate",
        ),
        (
            "Because nosuchpkg was not found in the cache and you require nosuchpkg==1.0",
            "nosuchpkg",
        ),
        ("some other failure", None),
    ],
)
def test_unresolved_package_reads_pip_and_uv(output, package):
    assert unresolved_package(output) == package


def test_model_environment_requirements(tmp_path):
    (tmp_path / "python_env.yaml").write_text(
        "python: 3.11.7\nbuild_dependencies:\n- pip==23.2.1\n- setuptools\n"
        "dependencies:\n- -r requirements.txt\n"
    )
    (tmp_path / "requirements.txt").write_text("# pinned\nmlflow-skinny==3.17.2\n\npandas==2.3.3\n")
    assert model_environment_requirements(tmp_path) == [
        "pip==23.2.1",
        "setuptools",
        "mlflow-skinny==3.17.2",
        "pandas==2.3.3",
    ]


def test_build_wheel_offline_leaves_sources_clean(tmp_path):
    package = REPO_ROOT / "packages" / "weather_features"
    wheel = build_wheel(package, tmp_path)
    assert wheel.name == "weather_features-0.1.0-py3-none-any.whl"
    assert folder_size_mb(wheel) > 0
    assert not (package / "build").exists()
    assert not list((package / "src").glob("*.egg-info"))


def test_build_wheel_refuses_a_folder_without_pyproject(tmp_path):
    with pytest.raises(FileNotFoundError, match="pyproject.toml"):
        build_wheel(tmp_path, tmp_path / "out")


def test_restore_env_is_offline(tmp_path):
    env = restore_env_variables(tmp_path / "wh", tmp_path / "envs")
    assert env["UV_OFFLINE"] == "1" and env["UV_PYTHON_DOWNLOADS"] == "never"
    assert env["UV_FIND_LINKS"] == str((tmp_path / "wh").resolve())


def test_wheelhouse_error_is_a_runtime_error():
    assert issubclass(WheelhouseError, RuntimeError)


@pytest.mark.unit
def test_temporary_environment_sets_then_restores(monkeypatch):
    import os

    from utils.environments.requirements import temporary_environment

    monkeypatch.setenv("ML_DEPLOY_KEPT", "before")
    monkeypatch.delenv("ML_DEPLOY_NEW", raising=False)
    with temporary_environment(ML_DEPLOY_KEPT="during", ML_DEPLOY_NEW="1"):
        assert os.environ["ML_DEPLOY_KEPT"] == "during" and os.environ["ML_DEPLOY_NEW"] == "1"
    assert os.environ["ML_DEPLOY_KEPT"] == "before" and "ML_DEPLOY_NEW" not in os.environ
