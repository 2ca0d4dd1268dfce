"""Read the jobs of `databricks.yml` (a Databricks Asset Bundle) and run one on this machine.

The bundle is the one definition of the workflows: Databricks deploys it with
`databricks bundle deploy`, and `run_job` runs the same job locally: tasks in dependency order,
each notebook in a fresh kernel through `utils.notebook.run_notebook` with the job's parameters,
a failed task skipping everything that depends on it, and a run report (task, status, seconds)
printed and saved. `bundle_problems` gives the structural checks the tests run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from utils.env import REPO_ROOT, WORK_DIR_ENV, work_path

BUNDLE_FILE = REPO_ROOT / "databricks.yml"
_VARIABLE = re.compile(r"\$\{(var|bundle)\.([A-Za-z0-9_]+)\}")
_JOB_PARAMETER = re.compile(r"\{\{\s*job\.parameters\.([A-Za-z0-9_]+)\s*\}\}")


class BundleError(ValueError):
    """The bundle file is not what a job run needs (unknown task, cycle, missing notebook)."""


class JobFailedError(RuntimeError):
    """A job run ended with a failed or skipped task."""


@dataclass
class Task:
    key: str
    notebook: Path  # resolved against the bundle file's folder
    parameters: dict[str, str] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)


@dataclass
class Job:
    key: str
    name: str
    tasks: list[Task]
    parameters: dict[str, str] = field(default_factory=dict)
    schedule: dict[str, Any] | None = None

    def task(self, key: str) -> Task:
        for task in self.tasks:
            if task.key == key:
                return task
        raise BundleError(
            f"Job '{self.key}' has no task '{key}'; tasks: {[t.key for t in self.tasks]}"
        )


@dataclass
class Bundle:
    path: Path
    name: str
    target: str
    variables: dict[str, str]
    jobs: dict[str, Job]

    def job(self, key: str) -> Job:
        if key not in self.jobs:
            raise BundleError(f"No job '{key}' in {self.path.name}; jobs: {sorted(self.jobs)}")
        return self.jobs[key]


def _substitute(value: Any, context: Mapping[str, Mapping[str, str]]) -> Any:
    """Replace `${var.x}` and `${bundle.x}` in strings (recursively in lists and dicts)."""
    if isinstance(value, str):

        def replace(match: re.Match) -> str:
            scope, name = match.groups()
            if name not in context[scope]:
                raise BundleError(f"'${{{scope}.{name}}}' is not defined in the bundle.")
            return str(context[scope][name])

        return _VARIABLE.sub(replace, value)
    if isinstance(value, list):
        return [_substitute(v, context) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, context) for k, v in value.items()}
    return value


def load_bundle(
    path: str | Path = BUNDLE_FILE,
    target: str | None = None,
    variables: Mapping[str, str] | None = None,
) -> Bundle:
    """Parse a bundle file: variables (defaults, then the target's, then `variables`),
    jobs with their tasks, parameters, dependencies and schedule."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise BundleError(f"No bundle file at {path}.")
    raw = yaml.safe_load(path.read_text()) or {}
    targets = raw.get("targets") or {}
    if target is None:
        target = next((k for k, v in targets.items() if (v or {}).get("default")), "local")
    elif target not in targets:
        raise BundleError(f"No target '{target}' in {path.name}; targets: {sorted(targets)}")
    values = {k: str((v or {}).get("default", "")) for k, v in (raw.get("variables") or {}).items()}
    values.update(
        {k: str(v) for k, v in ((targets.get(target) or {}).get("variables") or {}).items()}
    )
    values.update({k: str(v) for k, v in (variables or {}).items()})
    name = (raw.get("bundle") or {}).get("name", path.parent.name)
    context = {"var": values, "bundle": {"name": name, "target": target}}

    jobs = {}
    for key, spec in ((raw.get("resources") or {}).get("jobs") or {}).items():
        spec = _substitute(spec or {}, context)
        tasks = []
        for task in spec.get("tasks") or []:
            if "notebook_task" not in task:
                raise BundleError(
                    f"Task '{task.get('task_key')}' of job '{key}' is not a notebook task."
                )
            notebook = task["notebook_task"]
            tasks.append(
                Task(
                    key=task["task_key"],
                    notebook=(path.parent / notebook["notebook_path"]).resolve(),
                    parameters={
                        k: str(v) for k, v in (notebook.get("base_parameters") or {}).items()
                    },
                    depends_on=[d["task_key"] for d in task.get("depends_on") or []],
                )
            )
        parameters = {p["name"]: str(p.get("default", "")) for p in spec.get("parameters") or []}
        jobs[key] = Job(key, spec.get("name", key), tasks, parameters, spec.get("schedule"))
    return Bundle(path, name, target, values, jobs)


def task_order(job: Job) -> list[Task]:
    """Tasks so that each comes after the tasks it depends on (stable: file order otherwise).

    Raises BundleError for a dependency on an unknown task, a repeated task key or a cycle.
    """
    keys = [t.key for t in job.tasks]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise BundleError(f"Job '{job.key}' repeats task keys {repeated}.")
    for task in job.tasks:
        unknown = [d for d in task.depends_on if d not in keys]
        if unknown:
            raise BundleError(
                f"Task '{task.key}' of job '{job.key}' depends on unknown tasks {unknown}; "
                f"tasks: {keys}."
            )
    ordered: list[Task] = []
    done: set[str] = set()
    remaining = list(job.tasks)
    while remaining:
        ready = [t for t in remaining if set(t.depends_on) <= done]
        if not ready:
            raise BundleError(
                f"Job '{job.key}' has a dependency cycle among {[t.key for t in remaining]}."
            )
        for task in ready:
            ordered.append(task)
            done.add(task.key)
            remaining.remove(task)
    return ordered


def bundle_problems(bundle: Bundle) -> list[str]:
    """Everything structurally wrong with the bundle (empty list when it is fine)."""
    problems = []
    if not bundle.jobs:
        problems.append("the bundle defines no jobs")
    for job in bundle.jobs.values():
        if not job.tasks:
            problems.append(f"job '{job.key}' has no tasks")
        for task in job.tasks:
            if not task.notebook.exists():
                problems.append(f"task '{job.key}.{task.key}': no notebook {task.notebook}")
        try:
            task_order(job)
        except BundleError as exc:
            problems.append(str(exc))
    return problems


# --- running a job locally ------------------------------------------------------------------


@dataclass
class TaskRun:
    task: str
    status: str  # ok, failed, skipped
    seconds: float = 0.0
    error: str = ""
    output_path: str = ""
    recorded: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """The last line of the error: usually the exception and its message."""
        lines = self.error.strip().splitlines()
        return lines[-1] if lines else ""


@dataclass
class JobRun:
    job: str
    started_at: str
    parameters: dict[str, str]
    tasks: list[TaskRun]
    report_path: str = ""

    @property
    def ok(self) -> bool:
        return all(t.status == "ok" for t in self.tasks)

    @property
    def seconds(self) -> float:
        return round(sum(t.seconds for t in self.tasks), 1)

    def raise_for_failure(self) -> None:
        """Raise JobFailedError naming each task that did not succeed and why, so a failed run
        stops the notebook or script that started it instead of passing unnoticed. (On
        Databricks, `jobs.run_now(...).result()` returns a failed run without raising: check
        its `state.result_state`.)"""
        problems = [f"{t.task} {t.status}: {t.reason}" for t in self.tasks if t.status != "ok"]
        if problems:
            where = Path(self.report_path).parent
            raise JobFailedError(
                f"Job '{self.job}' did not succeed: {'; '.join(problems)}. "
                f"The executed task notebooks and the report are in {where}."
            )

    def table(self) -> str:
        rows = [("task", "status", "seconds", "note")]
        for t in self.tasks:
            note = t.reason[:90]
            rows.append((t.task, t.status, f"{t.seconds:.1f}", note))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
            for r in rows
        ]
        lines.insert(1, "-" * (sum(widths) + 10))
        return "\n".join(lines)


def task_parameters(job: Job, task: Task, job_parameters: Mapping[str, str]) -> dict[str, str]:
    """What a task's notebook receives, as on Databricks: its own base parameters (with
    `{{job.parameters.x}}` filled in), then the job's parameters, which win on a clash."""

    def fill(value: str) -> str:
        def replace(match: re.Match) -> str:
            if match.group(1) not in job_parameters:
                raise BundleError(
                    f"Task '{task.key}' refers to unknown job parameter '{match.group(1)}'."
                )
            return str(job_parameters[match.group(1)])

        return _JOB_PARAMETER.sub(replace, value)

    return {**{k: fill(v) for k, v in task.parameters.items()}, **job_parameters}


def run_job(
    job_key: str,
    bundle: Bundle | None = None,
    parameters: Mapping[str, Any] | None = None,
    work_dir: str | Path | None = None,
    output_dir: str | Path | None = None,
    timeout: int = 1800,
    runner: Callable[..., Any] | None = None,
    verbose: bool = True,
) -> JobRun:
    """Run job `job_key` of the bundle here, task by task in dependency order.

    `parameters` override the job's parameter defaults. Each task notebook runs in a fresh
    kernel; `work_dir` gives those kernels their own work dir (needed when the caller holds
    the local Spark metastore, which admits one process). A failed task marks every task
    that depends on it, directly or not, as skipped; independent tasks still run. The report
    is printed and saved as JSON and Markdown next to the executed notebooks.
    """
    from utils.notebook import run_notebook

    bundle = bundle or load_bundle()
    job = bundle.job(job_key)
    unknown = sorted(set(parameters or {}) - set(job.parameters))
    if unknown:
        raise BundleError(
            f"Job '{job_key}' has no parameters {unknown}; "
            f"its parameters: {sorted(job.parameters)}."
        )
    job_parameters = {**job.parameters, **{k: str(v) for k, v in (parameters or {}).items()}}
    ordered = task_order(job)
    started = datetime.now(UTC)
    output_dir = (
        Path(output_dir)
        if output_dir
        else work_path("job_runs", f"{job_key}-{started.strftime('%Y%m%dT%H%M%S')}")
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    env = {WORK_DIR_ENV: str(Path(work_dir).resolve())} if work_dir else None
    runner = runner or run_notebook

    runs: dict[str, TaskRun] = {}
    for task in ordered:
        blocked = [d for d in task.depends_on if runs[d].status != "ok"]
        if blocked:
            runs[task.key] = TaskRun(
                task.key, "skipped", error=f"upstream {blocked} did not succeed"
            )
        else:
            if verbose:
                print(f"[{job_key}] {task.key} ...", flush=True)
            waited = wait_for_metastore(Path(work_dir) if work_dir else None)
            if verbose and waited >= 1:
                print(f"[{job_key}] waited {waited:.0f} s for the last task's Spark to exit")
            result = runner(
                task.notebook,
                task_parameters(job, task, job_parameters),
                output_dir=output_dir / task.key,
                timeout=timeout,
                env=env,
            )
            runs[task.key] = TaskRun(
                task.key,
                "ok" if result.ok else "failed",
                result.seconds,
                result.error,
                result.output_path,
                result.recorded,
            )
        if verbose:
            print(
                f"[{job_key}] {task.key}: {runs[task.key].status} ({runs[task.key].seconds:.0f} s)",
                flush=True,
            )

    run = JobRun(
        job_key,
        started.isoformat(timespec="seconds"),
        job_parameters,
        [runs[t.key] for t in ordered],
    )
    run.report_path = str(save_report(run, output_dir))
    if verbose:
        print(run.table())
        print(f"report: {run.report_path}")
    return run


def wait_for_metastore(work_dir: Path | None = None, timeout: float = 120.0) -> float:
    """Wait until no process holds the local Spark metastore of `work_dir`; returns seconds.

    Embedded Derby admits one process, and the Spark JVM of a finished task's kernel can take
    a few seconds to exit after the kernel; the next task would fail to open the catalog.
    Derby holds a POSIX lock on `dbex.lck` while it is open, so probing that lock tells.
    """
    import fcntl

    from utils.env import work_dir as default_work_dir

    # Derby writes its id into db.lck and holds the OS lock on dbex.lck.
    lock = (work_dir or default_work_dir()) / "metastore" / "metastore_db" / "dbex.lck"
    start = time.monotonic()
    while lock.exists():
        try:
            with open(lock, "a") as handle:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.lockf(handle, fcntl.LOCK_UN)
            break
        except OSError:
            if time.monotonic() - start > timeout:
                raise TimeoutError(
                    f"The Spark metastore {lock.parent} is still in use after {timeout:.0f} s; "
                    "another process (a notebook kernel?) holds it. Stop it or use another "
                    "work dir."
                ) from None
            time.sleep(0.5)
    return time.monotonic() - start


def save_report(run: JobRun, folder: Path) -> Path:
    """Write the run as `report.json` and `report.md` in `folder`; returns the JSON path."""
    report = folder / "report.json"
    report.write_text(
        json.dumps({**asdict(run), "ok": run.ok, "seconds": run.seconds}, indent=2, default=str)
    )
    lines = [
        f"# Job {run.job}, started {run.started_at}",
        "",
        "| task | status | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {t.task} | {t.status} | {t.seconds:.1f} |" for t in run.tasks]
    (folder / "report.md").write_text("\n".join(lines) + "\n")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Check databricks.yml, or run one of its jobs locally."
    )
    parser.add_argument("job", nargs="?", help="job key to run (omit with --check)")
    parser.add_argument("--check", action="store_true", help="only check the bundle's structure")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--work-dir", help="work dir for the task notebooks (default: ours)")
    args = parser.parse_args(argv)
    bundle = load_bundle()
    problems = bundle_problems(bundle)
    for problem in problems:
        print("problem:", problem)
    if args.check or not args.job:
        print(f"{bundle.path.name}: jobs {sorted(bundle.jobs)}, {len(problems)} problems")
        return 1 if problems else 0
    params = dict(item.split("=", 1) for item in args.param)
    return 0 if run_job(args.job, bundle, params, work_dir=args.work_dir).ok else 1


if __name__ == "__main__":
    sys.exit(main())
