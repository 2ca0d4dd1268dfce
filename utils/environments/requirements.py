"""What a logged model needs installed to load, pinned to the versions that trained it."""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path


class RequirementNotInstalledError(LookupError):
    """A package to pin is not installed here, so its version is unknown."""


def pinned_requirements(*packages: str) -> list[str]:
    """`name==version` for each installed package, e.g. for `log_model(pip_requirements=...)`.

    MLflow infers requirements on its own, but what it detects at logging time may not be what
    you meant (and inference costs seconds per model): pin explicitly.
    """
    pins = []
    for package in packages:
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            raise RequirementNotInstalledError(
                f"Cannot pin '{package}': it is not installed in this environment "
                f"({metadata.distribution('mlflow').locate_file('')})."
            ) from None
    return pins


# ----------------------------------------------------------------- wheels, wheelhouse, restore


class WheelhouseError(RuntimeError):
    """A requirement cannot be resolved from the local wheelhouse (offline)."""


def _run(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None):
    import subprocess

    return subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd
    )


def build_wheel(package_dir: str | Path, dest: str | Path) -> Path:
    """Build a local package (a folder with pyproject.toml) into a wheel in `dest`, offline.

    `--no-build-isolation` uses the setuptools already installed instead of downloading one
    into a throw-away build environment, so this works with no package index.
    """
    import shutil
    import tempfile

    package_dir, dest = Path(package_dir), Path(dest)
    if not (package_dir / "pyproject.toml").exists():
        raise FileNotFoundError(f"{package_dir} has no pyproject.toml: not a buildable package.")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # build from a copy: setuptools leaves build/ and *.egg-info next to the sources
        source = Path(
            shutil.copytree(
                package_dir,
                Path(tmp, package_dir.name),
                ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
            )
        )
        result = _run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "--wheel-dir",
                str(dest),
                str(source),
            ]
        )
    if result.returncode:
        output = result.stdout[-1500:] + result.stderr[-1500:]
        raise RuntimeError(f"Building {package_dir} failed:\n{output}")
    name = package_dir.name.replace("-", "_")
    wheels = sorted(dest.glob(f"{name}-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise RuntimeError(f"pip built no {name}-*.whl in {dest}:\n{result.stdout[-1500:]}")
    return wheels[-1]


def install_wheel(wheel: str | Path) -> None:
    """Install a wheel into this interpreter (no dependencies fetched, no index)."""
    import importlib

    result = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--force-reinstall",
            "--quiet",
            str(wheel),
        ]
    )
    if result.returncode:
        raise RuntimeError(f"Installing {wheel} failed:\n{result.stderr[-1500:]}")
    importlib.invalidate_caches()


def requirement_files(model_uri: str) -> dict[str, str]:
    """The environment files of a logged model (requirements.txt, python_env.yaml, conda.yaml),
    as text, to show what `log_model` wrote."""
    import mlflow

    folder = Path(mlflow.artifacts.download_artifacts(model_uri))
    names = ["requirements.txt", "python_env.yaml", "conda.yaml"]
    return {name: (folder / name).read_text() for name in names if (folder / name).exists()}


def folder_size_mb(path: str | Path) -> float:
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(f.stat().st_size for f in files) / 2**20


def model_environment_requirements(model_dir: str | Path) -> list[str]:
    """Everything restoring a model's environment installs: python_env.yaml's build
    dependencies (pip, setuptools, ...) and requirements.txt (comments dropped)."""
    import yaml

    model_dir = Path(model_dir)
    python_env = yaml.safe_load((model_dir / "python_env.yaml").read_text()) or {}
    lines = list(python_env.get("build_dependencies") or [])
    lines += (model_dir / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _requirement_name(line: str) -> str | None:
    """The distribution name of a requirement line; None for a file path or URL."""
    from packaging.requirements import InvalidRequirement, Requirement

    if line.endswith(".whl") or "/" in line.split("@")[0]:
        return None
    try:
        return Requirement(line).name
    except InvalidRequirement:
        return None


def missing_from_wheelhouse(requirements: list[str], wheelhouse: str | Path) -> list[str]:
    """Requirements (direct ones) with no matching wheel in `wheelhouse`; wheel paths must exist."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename

    available: dict[str, list] = {}
    for wheel in Path(wheelhouse).glob("*.whl"):
        name, version, _, _ = parse_wheel_filename(wheel.name)
        available.setdefault(canonicalize_name(name), []).append(version)
    missing = []
    for line in requirements:
        name = _requirement_name(line)
        if name is None:
            path = line.split("@")[-1].strip().removeprefix("file://")
            if not Path(path).exists() and not Path(wheelhouse, Path(path).name).exists():
                missing.append(line)
            continue
        spec = Requirement(line).specifier
        if not any(
            spec.contains(v, prereleases=True) for v in available.get(canonicalize_name(name), [])
        ):
            missing.append(line)
    return missing


_UNRESOLVED_PATTERNS = [
    r"No matching distribution found for (?P<package>\S+)",  # pip
    r"Because (?P<package>[\w\-.\[\]]+(?:[=<>!~]=?[\w.*]+)?) was not found",  # uv
    r"(?P<package>[\w\-.]+) was not found in the (?:provided package locations|cache)",  # uv
]


def unresolved_package(output: str) -> str | None:
    """The package pip or uv could not find, read from their error output."""
    for pattern in _UNRESOLVED_PATTERNS:
        match = re.search(pattern, output)
        if match:
            return match["package"]
    return None


def _wheelhouse_error(action: str, output: str, wheelhouse: Path) -> WheelhouseError:
    package = unresolved_package(output) or "a requirement"
    return WheelhouseError(
        f"{action} failed offline: {package} cannot be resolved from the wheelhouse {wheelhouse}. "
        f"Add its wheel there (pip download {package} -d {wheelhouse}) or drop the requirement."
        f"\n--- tool output (end) ---\n{output[-1200:]}"
    )


def build_wheelhouse(requirements: list[str], wheelhouse: str | Path) -> Path:
    """Download wheels for `requirements` and all their dependencies into `wheelhouse`.

    This is the one step that reads a package index (PyPI or your mirror, as pip is set up);
    everything after it runs offline from the folder. Skipped when the folder already holds a
    wheel for every direct requirement.
    """
    wheelhouse = Path(wheelhouse)
    wheelhouse.mkdir(parents=True, exist_ok=True)
    marker = wheelhouse / ".requirements.txt"
    wanted = "\n".join(sorted(requirements)) + "\n"
    if (
        marker.exists()
        and marker.read_text() == wanted
        and not missing_from_wheelhouse(requirements, wheelhouse)
    ):
        return wheelhouse
    listing = wheelhouse / ".download-requirements.txt"
    listing.write_text(wanted)
    result = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--only-binary=:all:",
            "--quiet",
            "--dest",
            str(wheelhouse),
            "-r",
            str(listing),
        ]
    )
    if result.returncode:
        raise _wheelhouse_error("pip download", result.stdout + result.stderr, wheelhouse)
    marker.write_text(wanted)
    return wheelhouse


@contextmanager
def temporary_environment(**values: str):
    """Set environment variables for the `with` block, then restore them (chapter 07 uses it
    to make pip read only a wheelhouse, and `uv` work offline)."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def add_libraries_offline(
    model_uri: str, wheelhouse: str | Path, registered_model_name: str | None = None
):
    """`mlflow.models.add_libraries_to_model` with pip reading only `wheelhouse` (chapter 07
    shows the call).

    Registers a new version whose folder holds every dependency as a wheel (`wheels/`) and
    whose requirements.txt points at them: it installs with no index at all. Returns the new
    ModelVersion. A requirement the wheelhouse lacks raises WheelhouseError naming both.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import add_libraries_to_model

    wheelhouse = Path(wheelhouse).resolve()
    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    missing = missing_from_wheelhouse(model_environment_requirements(local), wheelhouse)
    if missing:
        raise WheelhouseError(
            f"{', '.join(missing)} cannot be resolved from the wheelhouse {wheelhouse}: no "
            f"matching wheel there. Add it (pip download ... -d {wheelhouse}) and retry."
        )
    with temporary_environment(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse)):
        try:
            info = add_libraries_to_model(model_uri, registered_model_name=registered_model_name)
        except MlflowException as error:
            raise _wheelhouse_error("add_libraries_to_model", str(error), wheelhouse) from None
    name = registered_model_name or model_uri.removeprefix("models:/").split("/")[0].split("@")[0]
    return mlflow.MlflowClient().get_model_version(name, str(info.registered_model_version))


def restore_env_variables(wheelhouse: str | Path, env_root: str | Path) -> dict[str, str]:
    """Environment for MLflow's `uv` env manager to restore a model's environment offline."""
    return {
        "UV_OFFLINE": "1",
        "UV_NO_INDEX": "1",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_FIND_LINKS": str(Path(wheelhouse).resolve()),
        "MLFLOW_ENV_ROOT": str(Path(env_root).resolve()),
        # MLflow runs `uv` from PATH: this interpreter's bin folder first
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }


def predict_in_restored_env(model_uri: str, frame, wheelhouse: str | Path, env_root: str | Path):
    """Predict with `model_uri` in a fresh virtual environment built from the model's own
    requirements (`mlflow models predict --env-manager uv`), offline from `wheelhouse`
    (chapter 07 shows `mlflow.models.predict(..., env_manager="uv")`; this runs the CLI).

    The environment is cached under `env_root` by the hash of the requirements, so a second
    call reuses it. Returns the predictions as a DataFrame.
    """
    import json
    import tempfile

    import mlflow
    import pandas as pd

    wheelhouse = Path(wheelhouse).resolve()
    local = Path(mlflow.artifacts.download_artifacts(model_uri))
    missing = missing_from_wheelhouse(
        [r for r in model_environment_requirements(local) if not r.startswith("wheels/")],
        wheelhouse,
    )
    if missing:
        raise WheelhouseError(
            f"{', '.join(missing)} cannot be resolved from the wheelhouse {wheelhouse}: no "
            "matching wheel there, so the model's environment cannot be restored offline."
        )
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp, "input.json"), Path(tmp, "predictions.json")
        source.write_text(
            json.dumps({"dataframe_split": frame.to_dict(orient="split")}, default=float)
        )
        result = _run(
            [
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "predict",
                "-m",
                str(local),
                "-i",
                str(source),
                "-o",
                str(target),
                "-t",
                "json",
                "--env-manager",
                "uv",
            ],
            env=restore_env_variables(wheelhouse, env_root),
        )
        if result.returncode:
            output = result.stdout + result.stderr
            if unresolved_package(output):
                raise _wheelhouse_error("Restoring the model environment", output, wheelhouse)
            raise RuntimeError(f"mlflow models predict failed:\n{output[-2500:]}")
        answer = json.loads(target.read_text())
    predictions = answer.get("predictions", answer) if isinstance(answer, dict) else answer
    if predictions and isinstance(predictions[0], dict):
        return pd.DataFrame.from_records(predictions)
    return pd.DataFrame({"prediction": predictions})
