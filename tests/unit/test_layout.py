"""The utils package's layout: no import cycles, a shallow import graph, no private names
imported across modules, and `import utils` that loads nothing heavy."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

from utils.env import REPO_ROOT

pytestmark = pytest.mark.unit

UTILS = REPO_ROOT / "utils"
MAX_DEPTH = 5


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(p): p
        for p in UTILS.rglob("*.py")
        if "model_code" not in p.parts and "modelkit" not in p.parts  # travel alone in models
    }


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) for every `import utils...` / `from utils... import` in a file,
    module level and inside functions alike."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("utils"):
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("utils")]
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, names in _imports(path):
            # `from utils import tables` imports the module utils.tables
            for candidate in [f"{target}.{n}" for n in names] + [target]:
                if candidate in modules and candidate != name:
                    graph[name].add(candidate)
                    if candidate != target:
                        break
    return graph


def test_no_import_cycles_and_at_most_five_levels():
    graph = _graph()

    @functools.cache
    def depth(module: str, trail: tuple[str, ...] = ()) -> int:
        if module in trail:
            raise AssertionError("import cycle: " + " -> ".join([*trail, module]))
        return 1 + max((depth(dep, (*trail, module)) for dep in graph[module]), default=0)

    depths = {module: depth(module) for module in graph}
    deepest = max(depths, key=depths.get)
    assert depths[deepest] <= MAX_DEPTH, f"{deepest} is {depths[deepest]} levels deep"


def test_no_module_imports_a_private_name_of_another():
    offenders = [
        f"{_module_name(path)} imports {target}.{name}"
        for path in list(UTILS.rglob("*.py")) + list((REPO_ROOT / "tests").rglob("*.py"))
        for target, names in _imports(path)
        for name in names
        if name.startswith("_") and target != _module_name(path)
    ]
    assert offenders == []


def test_importing_utils_loads_no_spark_torch_or_server_code():
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, utils; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, cwd=REPO_ROOT,
    ).stdout.split()  # fmt: skip
    heavy = [m for m in loaded if m.split(".")[0] in {"pyspark", "torch", "mlflow", "uvicorn"}]
    assert heavy == []
    assert [m for m in loaded if m.startswith("utils.")] == []


def test_every_utils_module_has_a_test():
    modules = _modules()
    tested = set()
    for path in (REPO_ROOT / "tests").rglob("test_*.py"):
        for target, names in _imports(path):
            tested |= {target, *(f"{target}.{name}" for name in names)} & set(modules)
    untested = sorted(
        name for name in modules if "." in name and not name.endswith("__main__")
        and name not in tested and not name.endswith(tuple(_PACKAGES_WITHOUT_CODE))
    )  # fmt: skip
    assert untested == [], f"no test imports {untested}"


# Packages whose __init__ holds only a docstring (or re-exports, tested through their modules).
_PACKAGES_WITHOUT_CODE = (".batch", ".abtest", ".environments", ".gate", ".monitoring", ".jobs",
                          ".rag", ".pyfunc.modelkit")  # fmt: skip
