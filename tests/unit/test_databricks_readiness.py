"""The notebooks' Databricks branch, checked here without a workspace: each notebook's setup
cells, full Unity Catalog names in registry calls, no `sparkContext`, nothing billable or
local-only by default on Databricks, and every job and config the chapters send to Databricks
loaded by Databricks' own classes (`databricks-bundles`, `databricks-sdk`)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from utils import env
from utils.chapters import DATABRICKS_ONLY_TAG, NOTEBOOKS_DIR
from utils.env import REPO_ROOT

pytestmark = pytest.mark.unit

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb")) + sorted(
    (NOTEBOOKS_DIR / "jobs").glob("*.ipynb")
)
IDS = [str(p.relative_to(NOTEBOOKS_DIR)) for p in NOTEBOOKS]
# MlflowClient / mlflow calls whose first argument is a registered model's name: on Unity
# Catalog a short name resolves against the session's current catalog and schema.
REGISTRY_CALLS = {
    "get_registered_model", "get_model_version", "get_model_version_by_alias",
    "set_registered_model_alias", "delete_registered_model_alias", "create_model_version",
    "update_model_version", "delete_model_version", "set_model_version_tag",
    "delete_registered_model", "rename_registered_model", "update_registered_model",
    "create_registered_model", "get_latest_versions",
}  # fmt: skip
# Things that cost money or start processes that only make sense on a laptop.
BILLABLE = {"deploy_endpoint": "delete_endpoint", "create_inference_monitor":
            "delete_inference_monitor", "run_now": None}  # fmt: skip
LOCAL_ONLY = ("tracking_server(", "run_job(")
OFF_ON_DATABRICKS = (
    "DEPLOY_ENDPOINT", "CREATE_MONITOR", "BUNDLE_JOB_ID", "RUN_LOCAL_JOB",
    "WEBHOOK_DEMO", "COMPARE_STOCK_SERVER", "KEEP_ENDPOINT", "KEEP_MONITOR",
)  # fmt: skip


def code_cells(path: Path) -> list:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def python_source(cell) -> str:
    """A cell's code with IPython magics blanked, so `ast` can read it."""
    lines = cell.source.split("\n")
    return "\n".join("" if line.lstrip().startswith("%") else line for line in lines)


def parameters_on_databricks(path: Path, monkeypatch) -> dict:
    """The parameters cell's values with Databricks' defaults (no widget filled in)."""
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    cell = next(c for c in code_cells(path) if "parameters" in c.metadata.get("tags", []))
    namespace = {"get_param": env.get_param, "is_databricks": env.is_databricks}
    exec(cell.source, namespace)  # noqa: S102 - our own notebook's parameters cell
    return {k: v for k, v in namespace.items() if k.isupper()}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_setup_cells_install_then_put_the_repository_first(path):
    install, bootstrap = code_cells(path)[:2]
    assert install.metadata.get("tags") == [DATABRICKS_ONLY_TAG]
    match = re.search(r"^%pip install .*-r (\S+)$", install.source, re.M)
    assert match, install.source
    assert (path.parent / match[1]).resolve() == REPO_ROOT / "requirements-databricks.txt"
    assert install.source.rstrip().split("\n")[-1].startswith("dbutils.library.restartPython()")
    assert "add_repo_root()" in bootstrap.source and not bootstrap.metadata.get("tags")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_parameters_name_the_catalog_and_schema(path, monkeypatch):
    values = parameters_on_databricks(path, monkeypatch)
    assert values["CATALOG"] == env.DEFAULT_CATALOG and values["SCHEMA"] == env.DEFAULT_SCHEMA


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_registry_calls_use_full_names_and_no_spark_context(path):
    for cell in code_cells(path):
        source = python_source(cell)
        assert "sparkContext" not in source, f"Spark Connect has no sparkContext: {source[:80]}"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") in REGISTRY_CALLS:
                first = node.args[0] if node.args else None
                bare = isinstance(first, ast.Name) and first.id.isupper()
                short = isinstance(first, ast.Constant) and "." not in str(first.value)
                assert not (bare or short), f"{path.name}: {ast.unparse(node)[:90]}"
            # MLflow itself gets the name as written (utils' helpers apply model_name themselves).
            if isinstance(node, ast.Call) and ast.unparse(node.func).startswith("mlflow."):
                uri = node.args[0] if node.args else None
                if isinstance(uri, ast.JoinedStr) and ast.unparse(uri).startswith("f'models:/{"):
                    name = uri.values[1].value
                    bare = isinstance(name, ast.Name) and name.id.isupper()
                    assert not bare, f"{path.name}: use model_name(): {ast.unparse(node)[:90]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_nothing_billable_or_local_only_runs_by_default_on_databricks(path, monkeypatch):
    values = parameters_on_databricks(path, monkeypatch)
    for flag in OFF_ON_DATABRICKS:
        assert not values.get(flag), f"{path.name}: {flag}={values[flag]!r} on Databricks"
    sources = [python_source(c) for c in code_cells(path)]
    for call, cleanup in BILLABLE.items():
        for source in (s for s in sources if f"{call}(" in s and f"def {call}" not in s):
            assert "is_databricks() and" in source, f"{path.name}: unguarded {call}"
            if cleanup:
                assert any(f"{cleanup}(" in s for s in sources), f"{path.name}: no {cleanup}"
    for call in LOCAL_ONLY:
        calling = [s for s in sources if call in s and "import" not in s.split(call)[0][-40:]]
        for source in calling:
            assert "not is_databricks()" in source, f"{path.name}: {call} runs on Databricks"


def test_readme_checklist_covers_every_chapter():
    """The README's compute table names every chapter, and its "nothing billable" item every
    chapter that can deploy an endpoint: a new chapter must say where it runs."""
    readme = (REPO_ROOT / "README.md").read_text()
    chapter_notebooks = [p for p in NOTEBOOKS if p.parent == NOTEBOOKS_DIR]
    chapters = {p.name[:2] for p in chapter_notebooks}
    compute_rows = re.findall(r"^ *\| ([0-9, ]+(?:, jobs)?) \| (?:yes|no)", readme, re.MULTILINE)
    in_table = {number for row in compute_rows for number in re.findall(r"\d\d", row)}
    assert in_table == chapters, f"compute table: missing {chapters - in_table}"
    sources = {p.name[:2]: "".join(c.source for c in code_cells(p)) for p in chapter_notebooks}
    deploying = {number for number, source in sources.items() if "DEPLOY_ENDPOINT" in source}
    listed = re.search(r"`DEPLOY_ENDPOINT=true` \(([0-9, ]+)\)", readme)
    assert listed and set(re.findall(r"\d\d", listed.group(1))) == deploying, deploying
    endpoint_rows = re.findall(r"^ *\| ([0-9, ]+) \| yes \| endpoint cells only", readme,
                               re.MULTILINE)
    claimed = {number for row in endpoint_rows for number in re.findall(r"\d\d", row)}
    assert claimed <= deploying, f"'endpoint cells only', yet none: {claimed - deploying}"


def test_no_spark_context_in_utils_outside_local_branches():
    allowed = {"spark.py", "cluster.py"}  # local sessions and the standalone cluster only
    found = [
        str(p.relative_to(REPO_ROOT))
        for p in (REPO_ROOT / "utils").rglob("*.py")
        if "sparkContext" in p.read_text() and p.name not in allowed
    ]
    assert not found


def test_requirements_file_pins_what_pyproject_allows():
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    specs = [Requirement(r) for r in project["dependencies"]]
    specs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    allowed = {}
    for spec in specs:
        allowed.setdefault(spec.name.lower(), []).append(spec.specifier)
    lines = (REPO_ROOT / "requirements-databricks.txt").read_text().splitlines()
    pins = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    assert {p.name for p in pins} >= {"mlflow", "skops", "databricks-sdk"}
    assert "torch" not in {p.name for p in pins}  # the runtime's torch stays
    for pin in pins:
        (version,) = [s.version for s in pin.specifier]  # exactly one == pin
        for specifier in allowed.get(pin.name.lower(), []):
            assert version in specifier, f"{pin} is outside pyproject's {specifier}"


def test_bundle_jobs_load_with_databricks_bundles():
    from databricks.bundles.jobs import Job

    from utils.jobs.bundle import load_bundle

    bundle = load_bundle()
    assert bundle.jobs
    for job in bundle.jobs.values():
        loaded = Job.from_dict(job.spec)  # raises on unknown or misspelt keys
        assert loaded.as_dict()["tasks"]
        assert job.spec["schedule"]["pause_status"] == "PAUSED", job.key
    streaming = bundle.job("streaming_ingestion").tasks[0].parameters
    assert streaming["SIMULATE"] == "false" and streaming["RESET"] == "false"
    assert load_bundle(variables={"schedule_status": "UNPAUSED"}).job(
        "retraining"
    ).spec["schedule"]["pause_status"] == "UNPAUSED"


def test_serving_configs_round_trip_through_the_sdk():
    from databricks.sdk.service.serving import EndpointCoreConfigInput, TrafficConfig

    from utils.serving.databricks import endpoint_config, served_entity

    single = endpoint_config([served_entity("dev.ml.bank_churn", 3, name="champion")])
    ab = endpoint_config(
        [served_entity("dev.ml.bank_churn", 3, name="champion"),
         served_entity("dev.ml.bank_churn", 4, name="challenger")],
        {"champion": 90, "challenger": 10},
    )  # fmt: skip
    for config in (single, ab):
        full = {"name": "bank-churn", **config}
        assert EndpointCoreConfigInput.from_dict(full).as_dict() == full
        traffic = config["traffic_config"]
        assert TrafficConfig.from_dict(traffic).as_dict() == traffic


def test_monitor_config_round_trips_through_the_sdk():
    from databricks.sdk.service.catalog import MonitorInferenceLog

    from utils.monitoring.lakehouse import inference_monitor_config

    config = inference_monitor_config()
    profile = config["inference_log"]
    assert MonitorInferenceLog.from_dict(profile).as_dict() == profile
    assert profile["model_id_col"] == "model_version" and config["slicing_exprs"] == ["Geography"]
    with pytest.raises(ValueError, match="granularity"):
        inference_monitor_config(granularities=[])
