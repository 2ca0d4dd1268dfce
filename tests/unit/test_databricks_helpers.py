"""The Databricks-only helpers, each tested here with a stand-in for the one workspace or
Spark object it talks to: the repo-root bootstrap, experiment folders, task values, the
champion a job requires, Auto Loader and table-update streams, the batch session, the
Lakehouse monitor, and where appended logs go."""

from __future__ import annotations

import runpy
import sys
from types import SimpleNamespace

import pytest

from utils import env, record, spark, tracking, training
from utils.batch import databricks as streams
from utils.env import REPO_ROOT
from utils.monitoring import lakehouse

pytestmark = pytest.mark.unit


@pytest.fixture
def on_databricks(monkeypatch):
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")


def test_repo_root_is_found_from_the_helper_and_put_first(monkeypatch):
    bootstrap = runpy.run_path(str(REPO_ROOT / "notebooks" / "repo_root.py"))
    foreign = SimpleNamespace(__file__="/somewhere/else/utils/__init__.py")
    ours = {k: v for k, v in sys.modules.items() if k == "utils" or k.startswith("utils.")}
    monkeypatch.setattr(sys, "path", ["/somewhere/else", str(REPO_ROOT), "/x"])
    sys.modules["utils"] = foreign
    try:
        assert bootstrap["add_repo_root"]() == REPO_ROOT
        assert "utils" not in sys.modules  # the shadowing package was unloaded
    finally:
        sys.modules.update(ours)  # the other tests keep the modules they imported
    assert sys.path[:2] == [str(REPO_ROOT), "/somewhere/else"]
    assert sys.path.count(str(REPO_ROOT)) == 1


def test_repo_root_says_where_it_looked(tmp_path):
    bootstrap = runpy.run_path(str(REPO_ROOT / "notebooks" / "repo_root.py"))
    with pytest.raises(FileNotFoundError, match="Import or clone the whole repository"):
        bootstrap["add_repo_root"](tmp_path)


def test_job_notebooks_load_the_same_bootstrap():
    shim = runpy.run_path(str(REPO_ROOT / "notebooks" / "jobs" / "repo_root.py"))
    assert shim["find_repo_root"](REPO_ROOT / "notebooks" / "jobs") == REPO_ROOT


class FakeWorkspace:
    def __init__(self):
        self.made = []
        self.current_user = SimpleNamespace(me=lambda: SimpleNamespace(user_name="0000-sp"))
        self.workspace = SimpleNamespace(mkdirs=self.made.append)
        self.monitors = []
        self.quality_monitors = SimpleNamespace(
            create=lambda **kw: self.monitors.append(kw) or "created",
            delete=lambda table_name: self.monitors.append(("deleted", table_name)),
        )


def test_experiment_path_creates_its_folder():
    workspace = FakeWorkspace()
    path = tracking.databricks_experiment_path("01_train", workspace)
    assert path == "/Users/0000-sp/mlflow-deployment-notebooks/01_train"
    assert workspace.made == ["/Users/0000-sp/mlflow-deployment-notebooks"]
    assert tracking.databricks_experiment_path("/Shared/team/exp", workspace) == "/Shared/team/exp"
    assert workspace.made[-1] == "/Shared/team"


class FakeDbutils:
    def __init__(self):
        self.values = {}
        self.jobs = SimpleNamespace(taskValues=SimpleNamespace(set=self._set))
        self.exited = None
        self.notebook = SimpleNamespace(exit=self._exit)
        self.secrets = SimpleNamespace(get=lambda scope, key: f"token-{scope}-{key}")

    def _set(self, key, value):
        self.values[key] = value

    def _exit(self, text):
        self.exited = text


def test_record_sets_task_values_on_databricks_only(monkeypatch):
    fake = FakeDbutils()
    monkeypatch.setattr(env, "databricks_utils", lambda: fake)
    record.record("scored", 2000)
    assert fake.values == {"scored": 2000}
    assert not record.set_task_value("huge", "x" * (record.TASK_VALUE_LIMIT_BYTES + 1))
    monkeypatch.setattr(env, "databricks_utils", lambda: None)
    assert not record.set_task_value("scored", 1)


def test_exit_notebook_and_secret(monkeypatch):
    monkeypatch.setattr(env, "databricks_utils", lambda: None)
    with pytest.raises(env.NotebookExit, match="rows_scored"):
        env.exit_notebook({"rows_scored": 3})
    with pytest.raises(RuntimeError, match="Databricks only"):
        env.secret("llm", "token")
    fake = FakeDbutils()
    monkeypatch.setattr(env, "databricks_utils", lambda: fake)
    fake.notebook.exit = lambda text: (_ for _ in ()).throw(SystemExit(text))  # ends the cell
    with pytest.raises(SystemExit, match='"rows_scored": 3'):
        env.exit_notebook({"rows_scored": 3})
    assert env.secret("llm", "token") == "token-llm-token"


def test_append_path_leaves_the_volume_on_databricks(monkeypatch, tmp_path, on_databricks):
    monkeypatch.delenv(env.WORK_DIR_ENV, raising=False)
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(tmp_path))
    path = env.append_path("inference_logs", "05-run")
    assert path == tmp_path / "mlflow-deployment-notebooks" / "inference_logs" / "05-run"
    assert path.is_dir() and not str(path).startswith("/Volumes")


def test_require_champion_never_trains(monkeypatch):
    monkeypatch.setattr(
        tracking, "get_aliases", lambda name: (_ for _ in ()).throw(tracking.ModelNotFoundError(
            f"No registered model '{name}'."
        ))
    )  # fmt: skip
    with pytest.raises(training.NoChampionError, match="does not train one"):
        training.require_champion("bank_churn")
    monkeypatch.setattr(tracking, "get_aliases", lambda name: {"candidate": 3})
    with pytest.raises(training.NoChampionError, match="no 'champion' alias"):
        training.require_champion("bank_churn")


class FakeReader:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return self

        return call


def test_auto_loader_and_table_update_streams():
    reader = FakeReader()
    fake_spark = SimpleNamespace(readStream=reader)
    landing = "/Volumes/c/s/work/landing"
    streams.read_auto_loader(fake_spark, landing, "/chk", max_files_per_trigger=1)
    assert reader.calls[0] == ("format", ("cloudFiles",), {})
    assert reader.calls[1][2] == {
        "cloudFiles.format": "parquet",
        "cloudFiles.schemaLocation": "/chk",
        "cloudFiles.maxFilesPerTrigger": "1",
    }
    assert reader.calls[2] == ("load", (landing,), {})
    with pytest.raises(ValueError, match="schema location"):
        streams.auto_loader_options("")
    reader.calls.clear()
    streams.read_table_updates(fake_spark, "c.s.churn_inference_log", mode="change_feed")
    assert reader.calls == [
        ("options", (), {"readChangeFeed": "true"}),
        ("table", ("c.s.churn_inference_log",), {}),
    ]
    assert streams.table_update_options() == {"skipChangeCommits": "true"}
    with pytest.raises(ValueError, match="mode must be one of"):
        streams.table_update_options("ignoreChanges")


def test_batch_session_is_what_get_spark_returns_inside_foreach_batch():
    session = object()
    with spark.batch_session(SimpleNamespace(sparkSession=session)) as inside:
        assert inside is session and spark.get_spark() is session
    assert not spark._batch_session


def test_cached_falls_back_only_on_databricks(monkeypatch):
    class Refuses:
        def cache(self):
            raise RuntimeError("PERSIST is not supported on serverless")

    frame = Refuses()
    with pytest.raises(RuntimeError):
        spark.cached(frame)
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "16.4")
    assert spark.cached(frame) is frame


def test_inference_monitor_is_created_and_deleted_through_the_sdk():
    workspace = FakeWorkspace()
    config = lakehouse.inference_monitor_config()
    lakehouse.create_inference_monitor("c.s.log", "c.s", "/Workspace/Shared/m", config, workspace)
    created = workspace.monitors[0]
    assert created["table_name"] == "c.s.log" and created["slicing_exprs"] == ["Geography"]
    assert created["inference_log"].as_dict() == config["inference_log"]
    lakehouse.delete_inference_monitor("c.s.log", workspace)
    assert workspace.monitors[-1] == ("deleted", "c.s.log")


def test_monitor_refuses_to_reach_a_workspace_off_databricks(monkeypatch):
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    with pytest.raises(RuntimeError, match="runs on Databricks"):
        lakehouse.delete_inference_monitor("c.s.log")
