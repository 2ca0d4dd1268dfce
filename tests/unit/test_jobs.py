"""databricks.yml parsing and checks, and the local job runner (order, parameters, failure)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import utils.jobs.bundle as job_bundle
import utils.jobs.runner as job_runner

pytestmark = pytest.mark.unit


# --- the repository's bundle ------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle() -> job_bundle.Bundle:
    return job_bundle.load_bundle()


def test_repository_bundle_has_no_structural_problems(bundle):
    assert job_bundle.bundle_problems(bundle) == []


def test_every_task_notebook_exists_and_dependencies_name_tasks(bundle):
    for job in bundle.jobs.values():
        keys = {t.key for t in job.tasks}
        for task in job.tasks:
            assert task.notebook.is_file(), f"{job.key}.{task.key}: {task.notebook}"
            assert task.notebook.suffix == ".ipynb"
            assert set(task.depends_on) <= keys


def test_retraining_job_runs_score_merge_retrain_validate_in_order(bundle):
    job = bundle.job("retraining")
    assert [t.key for t in job_bundle.task_order(job)] == [
        "score",
        "merge_labels",
        "retrain",
        "validate",
    ]
    assert job.schedule["quartz_cron_expression"] and job.schedule["timezone_id"] == "UTC"
    assert {"CATALOG", "SCHEMA", "MODEL_NAME", "N_REQUESTS"} <= set(job.parameters)
    streaming = bundle.job("streaming_ingestion")
    assert streaming.tasks[0].notebook.name == "03_streaming_inference.ipynb"
    assert streaming.schedule is not None


def test_variables_fill_catalog_and_schema_and_can_be_overridden(bundle):
    assert bundle.job("retraining").parameters["CATALOG"] == bundle.variables["catalog"] == "main"
    other = job_bundle.load_bundle(variables={"catalog": "ml_prod"})
    assert other.job("retraining").parameters["CATALOG"] == "ml_prod"
    assert job_bundle.load_bundle(target="prod").target == "prod"
    with pytest.raises(job_bundle.BundleError, match="No target 'staging'"):
        job_bundle.load_bundle(target="staging")


def test_bundle_file_is_relative_and_impersonal():
    text = job_bundle.BUNDLE_FILE.read_text()
    for personal in ("/Users/", "@", "cloud.databricks.com", "azuredatabricks", "/home/"):
        assert personal not in text
    import yaml

    raw = yaml.safe_load(text)
    for job in raw["resources"]["jobs"].values():
        for task in job["tasks"]:
            assert task["notebook_task"]["notebook_path"].startswith("./")


def test_task_parameters_fill_job_references_and_job_parameters_win(bundle):
    job = bundle.job("retraining")
    merge = job.task("merge_labels")
    params = job_bundle.task_parameters(job, merge, {**job.parameters, "INFERENCE_TABLE": "log_x"})
    assert params["UNKNOWN_LABELS_TABLE"] == "log_x_unknown_labels"
    assert params["INFERENCE_TABLE"] == "log_x"
    with pytest.raises(job_bundle.BundleError, match="no task 'train'"):
        job.task("train")


# --- structural errors in a bundle written here ---------------------------------------------


def _write_bundle(folder: Path, tasks: str) -> Path:
    (folder / "nb").mkdir(exist_ok=True)
    for name in ("a", "b", "c"):
        (folder / "nb" / f"{name}.ipynb").write_text("{}")
    path = folder / "databricks.yml"
    path.write_text(
        "bundle: {name: t}\n"
        "variables: {catalog: {default: dev}}\n"
        "resources:\n  jobs:\n    j:\n      name: job ${var.catalog}\n"
        "      parameters: [{name: N, default: '1'}]\n"
        "      tasks:\n" + tasks
    )
    return path


def _task(key: str, notebook: str, *deps: str) -> str:
    depends = "".join(f"\n          - task_key: {d}" for d in deps)
    return (
        f"        - task_key: {key}\n"
        f"          notebook_task: {{notebook_path: ./nb/{notebook}.ipynb}}\n"
        + (f"          depends_on:{depends}\n" if deps else "")
    )


def test_unknown_dependency_missing_notebook_and_cycle_are_reported(tmp_path):
    path = _write_bundle(tmp_path, _task("a", "a") + _task("b", "missing", "a", "ghost"))
    problems = job_bundle.bundle_problems(job_bundle.load_bundle(path))
    assert any("no notebook" in p and "missing.ipynb" in p for p in problems)
    assert any("unknown tasks ['ghost']" in p for p in problems)

    cyclic = _write_bundle(
        tmp_path, _task("a", "a", "c") + _task("b", "b", "a") + _task("c", "c", "b")
    )
    with pytest.raises(job_bundle.BundleError, match="cycle"):
        job_bundle.task_order(job_bundle.load_bundle(cyclic).job("j"))


def test_undefined_variable_is_an_error(tmp_path):
    path = _write_bundle(tmp_path, _task("a", "a"))
    path.write_text(path.read_text().replace("${var.catalog}", "${var.schema}"))
    with pytest.raises(job_bundle.BundleError, match="var.schema"):
        job_bundle.load_bundle(path)


# --- the local runner -------------------------------------------------------------------------


def _fake_runner(fail: set[str], calls: list):
    """Stands in for run_notebook: records the call, fails the named notebooks."""

    def run(path, parameters, output_dir, timeout, env):
        calls.append((Path(path).stem, dict(parameters), env))
        ok = Path(path).stem not in fail
        return SimpleNamespace(
            ok=ok,
            seconds=0.1,
            error="" if ok else "ValueError: boom",
            output_path="",
            recorded={"name": Path(path).stem},
        )

    return run


def test_failed_task_skips_its_dependents_but_not_independent_tasks(tmp_path):
    # a -> b -> c, and d depends on a only; b fails
    path = _write_bundle(
        tmp_path,
        _task("a", "a") + _task("b", "b", "a") + _task("c", "c", "b") + _task("d", "a", "a"),
    )
    calls: list = []
    run = job_runner.run_job(
        "j",
        job_bundle.load_bundle(path),
        {"N": 5},
        work_dir=tmp_path / "wd",
        output_dir=tmp_path / "out",
        runner=_fake_runner({"b"}, calls),
        verbose=False,
    )
    statuses = {t.task: t.status for t in run.tasks}
    assert statuses == {"a": "ok", "b": "failed", "c": "skipped", "d": "ok"}
    assert not run.ok
    assert [c[0] for c in calls] == ["a", "b", "a"]  # c never started
    assert calls[0][1] == {"N": "5"}
    assert calls[0][2] == {"MLDEPLOY_WORK_DIR": str((tmp_path / "wd").resolve())}
    report = json.loads(Path(run.report_path).read_text())
    assert report["ok"] is False
    assert {t["task"]: t["status"] for t in report["tasks"]} == statuses
    assert "skipped" in (tmp_path / "out" / "report.md").read_text()
    assert "upstream ['b']" in next(t for t in run.tasks if t.task == "c").error
    assert "failed" in run.table()
    with pytest.raises(
        job_runner.JobFailedError, match=r"b failed: ValueError: boom; c skipped: upstream"
    ):
        run.raise_for_failure()


def test_unknown_job_or_parameter_is_a_clear_error(tmp_path):
    bundle = job_bundle.load_bundle(_write_bundle(tmp_path, _task("a", "a")))
    with pytest.raises(job_bundle.BundleError, match="No job 'k'"):
        job_runner.run_job("k", bundle, runner=_fake_runner(set(), []))
    with pytest.raises(job_bundle.BundleError, match=r"no parameters \['M'\]"):
        job_runner.run_job("j", bundle, {"M": 1}, runner=_fake_runner(set(), []))


def test_cli_check_passes_on_the_repository_bundle(capsys):
    assert job_runner.main(["--check"]) == 0
    assert "0 problems" in capsys.readouterr().out


def test_wait_for_metastore_waits_for_the_holder_and_times_out(tmp_path):
    import subprocess
    import sys
    import time

    lock = tmp_path / "metastore" / "metastore_db" / "dbex.lck"
    lock.parent.mkdir(parents=True)
    lock.touch()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, time; h = open(sys.argv[1], 'a'); "
         "fcntl.lockf(h, fcntl.LOCK_EX); print('held', flush=True); time.sleep(3)", str(lock)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError, match="still in use"):
            job_runner.wait_for_metastore(tmp_path, timeout=0.5)
        start = time.monotonic()
        job_runner.wait_for_metastore(tmp_path, timeout=20)
        assert holder.poll() is not None or time.monotonic() - start > 1
    finally:
        holder.kill()
        holder.wait()
    job_runner.wait_for_metastore(tmp_path / "nowhere")  # no metastore yet: nothing to wait for


def test_runner_waits_for_the_metastore_before_each_task(tmp_path, monkeypatch):
    waited_for = []
    monkeypatch.setattr(
        job_runner, "wait_for_metastore", lambda work_dir: waited_for.append(work_dir) or 0
    )
    path = _write_bundle(tmp_path, _task("a", "a") + _task("b", "b", "a"))
    run = job_runner.run_job(
        "j", job_bundle.load_bundle(path), work_dir=tmp_path / "wd", output_dir=tmp_path / "o",
        runner=_fake_runner(set(), []), verbose=False,
    )  # fmt: skip
    assert waited_for == [tmp_path / "wd", tmp_path / "wd"]
    run.raise_for_failure()  # every task succeeded: nothing to raise
