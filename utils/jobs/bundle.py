"""The Databricks Asset Bundle (`databricks.yml`) read as data: jobs, tasks, their order and
parameters, with `${var.*}` substituted, so the same file runs locally and on Databricks."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.env import REPO_ROOT

BUNDLE_FILE = REPO_ROOT / "databricks.yml"


_VARIABLE = re.compile(r"\$\{(var|bundle)\.([A-Za-z0-9_]+)\}")


_JOB_PARAMETER = re.compile(r"\{\{\s*job\.parameters\.([A-Za-z0-9_]+)\s*\}\}")


class BundleError(ValueError):
    """The bundle file is not what a job run needs (unknown task, cycle, missing notebook)."""


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
    spec: dict[str, Any] = field(default_factory=dict)  # the job as Databricks receives it

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
        jobs[key] = Job(key, spec.get("name", key), tasks, parameters, spec.get("schedule"), spec)
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

