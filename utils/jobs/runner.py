"""Running a bundle job locally, task by task, in notebook kernels (chapter 09).

`run_job` executes the tasks of a `databricks.yml` job in dependency order, passes each its
parameters, stops at the first failure (later tasks are skipped, as on Databricks) and
returns a `JobRun` whose `raise_for_failure()` names each failed task. `python -m utils.jobs
retraining` runs the retraining job from a shell.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from utils.env import WORK_DIR_ENV, work_path
from utils.jobs.bundle import (
    Bundle,
    BundleError,
    bundle_problems,
    load_bundle,
    task_order,
    task_parameters,
)


class JobFailedError(RuntimeError):
    """A job run ended with a failed or skipped task."""


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
    from utils.chapters import run_notebook

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
        prog="python -m utils.jobs",
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

