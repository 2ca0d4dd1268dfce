"""`add_repo_root` for the job notebooks: the one in `notebooks/repo_root.py`, loaded by its
path from this file's location (never from the working directory, which a serverless job task
does not promise)."""

import runpy
from pathlib import Path

_SHARED = runpy.run_path(str(Path(__file__).resolve().parent.parent / "repo_root.py"))
add_repo_root = _SHARED["add_repo_root"]
find_repo_root = _SHARED["find_repo_root"]
