"""Put this repository's root first on `sys.path`, before anything imports `utils`.

Every chapter's imports cell runs `from repo_root import add_repo_root; add_repo_root()`. It
works before `utils` is importable, so it imports nothing of ours:

- locally and in Databricks Git folders the notebook's folder is on `sys.path` (Databricks
  Runtime 11.3+ adds the notebook's working directory), so this file is found next to the
  notebook; a Git folder also adds its root, a bundle deployment (`.bundle/.../files`, not a
  Git folder) adds only the notebook's folder, and a serverless job task does not promise a
  working directory at all. So the root is found from this file's own location (and from the
  notebook path in the Databricks context as a fallback), never from the working directory.
- `utils` is a common name: another `utils` on a cluster's `sys.path`, or one imported
  already, would shadow ours. The root goes first and a foreign `utils` is unloaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

MARKERS = ("utils/__init__.py", "databricks.yml")


def is_repo_root(folder: Path) -> bool:
    """True for the folder that holds this project's `utils` package and bundle file."""
    return all((folder / marker).is_file() for marker in MARKERS)


def find_repo_root(start: Path) -> Path | None:
    """The nearest folder at or above `start` that is this repository's root, or None."""
    for folder in (start, *start.parents):
        if is_repo_root(folder):
            return folder
    return None


def databricks_notebook_dir() -> Path | None:
    """The running notebook's folder under /Workspace, from the Databricks notebook context
    (None outside a Databricks notebook)."""
    try:
        from IPython import get_ipython

        dbutils = get_ipython().user_ns["dbutils"]  # type: ignore[union-attr]
        context = dbutils.notebook.entry_point.getDbutils().notebook().getContext()
        return Path("/Workspace" + context.notebookPath().get()).parent
    except Exception:  # not in a Databricks notebook, or no context: use the other hints
        return None


def add_repo_root(start: Path | None = None) -> Path:
    """Find the repository root, put it first on `sys.path`, drop a `utils` imported from
    elsewhere, and return the root. Raises FileNotFoundError naming where it looked."""
    candidates = [start] if start else [Path(__file__).resolve().parent, databricks_notebook_dir()]
    tried = [c for c in candidates if c is not None]
    root = next((r for r in map(find_repo_root, tried) if r is not None), None)
    if root is None:
        raise FileNotFoundError(
            f"No repository root (a folder with {' and '.join(MARKERS)}) at or above "
            f"{[str(c) for c in tried]}. Import or clone the whole repository, not single "
            "notebooks, and open the chapters from its notebooks/ folder."
        )
    sys.path[:] = [str(root)] + [p for p in sys.path if Path(p or ".").resolve() != root]
    loaded = sys.modules.get("utils")
    if loaded is not None and not str(getattr(loaded, "__file__", "")).startswith(str(root)):
        for name in [n for n in sys.modules if n == "utils" or n.startswith("utils.")]:
            del sys.modules[name]
    return root
