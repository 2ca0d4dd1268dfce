"""Shared fixtures: a temporary work dir per test session, and a chapter runner.

Notebook kernels get a work dir of their own (`notebook_work_dir`): Spark's embedded Derby
metastore allows one process per folder, and the test process may hold its own Spark session.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from utils.chapters import NOTEBOOKS_DIR, NotebookResult, run_notebook
from utils.env import WORK_DIR_ENV


@pytest.fixture(scope="session", autouse=True)
def work_dir(tmp_path_factory) -> Path:
    """Everything the test process writes goes to a temporary work dir."""
    path = tmp_path_factory.mktemp("work")
    previous = os.environ.get(WORK_DIR_ENV)
    os.environ[WORK_DIR_ENV] = str(path)
    yield path
    if previous is None:
        os.environ.pop(WORK_DIR_ENV, None)
    else:
        os.environ[WORK_DIR_ENV] = previous


@pytest.fixture(scope="session")
def notebook_work_dir(tmp_path_factory) -> Path:
    """The work dir every chapter run in the tests shares (so later chapters reuse models)."""
    return tmp_path_factory.mktemp("notebook-work")


@pytest.fixture(scope="session")
def run_chapter(notebook_work_dir):
    """`run_chapter("02_batch_inference", N_ROWS=2000)` executes a chapter and returns its
    NotebookResult; a failed run fails the test with the cell error."""

    def run(stem: str, env: dict[str, str] | None = None, **parameters) -> NotebookResult:
        path = NOTEBOOKS_DIR / f"{stem}.ipynb"
        assert path.exists(), f"no notebook {path}"
        result = run_notebook(
            path,
            parameters,
            output_dir=notebook_work_dir / "executed",
            timeout=900,
            env={WORK_DIR_ENV: str(notebook_work_dir), **(env or {})},
        )
        assert result.ok, f"{stem} failed; executed copy: {result.output_path}\n{result.error}"
        return result

    return run


_WITHOUT_REPO = r"""
import importlib.util, json, sys
repo = sys.argv[1]
# Forget the repository: its folder on sys.path and the editable install's import hook.
sys.path[:] = [p for p in sys.path if p not in ("", ".", repo)
               and (not p.startswith(repo + "/") or p.startswith(sys.prefix))]
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")
                    and "__editable__" not in type(f).__module__]
assert importlib.util.find_spec("utils") is None, "the repository is still importable"
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[2])
answer = model.predict(pd.read_json(sys.argv[3], orient="split"))
frame = answer if isinstance(answer, pd.DataFrame) else pd.DataFrame(answer)
print("PREDICTIONS" + frame.to_json(orient="split"))
"""


@pytest.fixture(scope="session")
def predict_without_repo(tmp_path_factory):
    """`predict_without_repo(model_uri, frame)` loads a logged model in a fresh interpreter
    that cannot import this repository (as a serving container would) and returns its
    predictions: proof that the model carries every module it needs."""
    import subprocess
    import sys

    import pandas as pd

    from utils.env import REPO_ROOT

    cwd = tmp_path_factory.mktemp("fresh-interpreter")

    def predict(model_uri: str, frame: pd.DataFrame) -> pd.DataFrame:
        done = subprocess.run(
            [sys.executable, "-c", _WITHOUT_REPO, str(REPO_ROOT), model_uri,
             frame.to_json(orient="split")],
            capture_output=True, text=True, cwd=cwd, timeout=300,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )  # fmt: skip
        assert done.returncode == 0, f"loading {model_uri} without the repo failed:\n{done.stderr}"
        payload = done.stdout.split("PREDICTIONS", 1)[1]
        return pd.read_json(io.StringIO(payload), orient="split")

    return predict
