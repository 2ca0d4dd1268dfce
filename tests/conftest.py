"""Shared fixtures: a temporary work dir per test session, and a chapter runner.

Notebook kernels get a work dir of their own (`notebook_work_dir`): Spark's embedded Derby
metastore allows one process per folder, and the test process may hold its own Spark session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from utils.env import WORK_DIR_ENV
from utils.notebook import NOTEBOOKS_DIR, NotebookResult, run_notebook


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
