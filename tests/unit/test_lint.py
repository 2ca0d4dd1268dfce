"""The code and the notebooks pass ruff with the project's settings (pyproject.toml)."""

import subprocess
import sys

import pytest

from utils.env import REPO_ROOT

pytestmark = pytest.mark.unit


def test_ruff_finds_nothing():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_notebooks_are_committed_without_outputs():
    import nbformat

    dirty = []
    for path in sorted((REPO_ROOT / "notebooks").rglob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code" and (cell.outputs or cell.execution_count):
                dirty.append(path.name)
                break
    assert not dirty, f"strip outputs from {dirty}"
