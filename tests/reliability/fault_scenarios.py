"""Kill -9 a Spark writer at chosen points, restart it, and check nothing was lost.

A *chain* runs one child process per step in one work dir (a Spark start costs ~20 s here, so
each child first checks what the previous, killed child left, then redoes that work the way a
restarted job would, then runs the next step with a fault armed):

- `batch`: an upsert of 150 rows (50 updates, 100 new keys) into an unpartitioned table;
- `stream`: a keyed stream from a landing folder, one file per micro-batch;
- `labels`: a label merge into a partitioned inference table, then the same requests logged
  again (which must keep their labels).

Faults: `write:N` kills the process group while the N-th Spark write job of the step runs
(the file write itself); `point:STAGE` kills it at a stage of `utils.table_commits` (after
staging, after the commit, after the first file move, before the metastore sync);
`cancel:N` fails the N-th write job from inside Spark (a job cancelled mid-run) instead.

Run by tests/reliability/test_table_faults.py and benchmarks/reliability.py; a child is
`python -m tests.reliability.fault_scenarios WORK_DIR STEP FAULT`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
STEPS = ("batch", "stream", "labels")
# 1,000 requests: room for ten label batches of 100 (the benchmark's chain merges seven).
BATCH_ROWS, BATCH_STEP, LANDING_FILE_ROWS, REQUESTS = 150, 100, 120, 1_000
STATE_PREFIX = "FAULT-STATE "


# --- inside the child -----------------------------------------------------------------------


def _die() -> None:
    os.killpg(os.getpgid(0), signal.SIGKILL)  # the Python driver, its JVM and Python workers


def arm(fault: str) -> None:
    """Make this process die (or a Spark job fail) at `fault`; see the module docstring."""
    if fault == "none":
        return
    kind, _, where = fault.partition(":")
    if kind == "point":
        from utils import table_commits

        def at_point(stage: str) -> None:
            if stage == where:
                _die()

        table_commits._fault_point = at_point
        return
    _on_nth_write(int(where), _die if kind == "write" else None)


def _on_nth_write(n: int, action) -> None:
    """Run `action` (default: cancel every Spark job) while the n-th write job is running."""
    from pyspark import SparkContext
    from pyspark.sql.readwriter import DataFrameWriter

    calls = [0]

    def watch(done: threading.Event) -> None:
        # The context, not SparkSession.getActiveSession(): that is None in a new thread.
        context = SparkContext._active_spark_context
        tracker = context.statusTracker()
        while not done.is_set():
            if tracker.getActiveJobsIds():
                (action or context.cancelAllJobs)()
                return
            time.sleep(0.002)

    def wrap(method):
        def wrapped(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] != n:
                return method(self, *args, **kwargs)
            done = threading.Event()
            threading.Thread(target=watch, args=(done,), daemon=True).start()
            try:
                return method(self, *args, **kwargs)
            finally:
                done.set()

        return wrapped

    for name in ("save", "saveAsTable", "insertInto", "parquet"):
        setattr(DataFrameWriter, name, wrap(getattr(DataFrameWriter, name)))


def batch_rows(number: int) -> pd.DataFrame:
    ids = range(number * BATCH_STEP, number * BATCH_STEP + BATCH_ROWS)
    return pd.DataFrame({"id": list(ids), "value": [float(number)] * BATCH_ROWS})


def landing_file(folder: Path, number: int) -> None:
    ids = range(10_000 + number * LANDING_FILE_ROWS, 10_000 + (number + 1) * LANDING_FILE_ROWS)
    frame = pd.DataFrame({"id": list(ids), "value": [float(number)] * LANDING_FILE_ROWS})
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".batch-{number:04d}.parquet"
    frame.to_parquet(temporary)
    temporary.rename(folder / f"batch-{number:04d}.parquet")  # files appear whole


def requests_frame() -> pd.DataFrame:
    return pd.DataFrame({"request_id": [f"r{i}" for i in range(REQUESTS)], "x": range(REQUESTS)})


def labels_frame(number: int) -> pd.DataFrame:
    """Labels for 100 new requests; gaps (NULL labels) for ten already-labelled ones."""
    if (number + 1) * 100 > REQUESTS:  # labels for unknown ids are never merged: not a loss
        raise ValueError(f"label batch {number} needs more than {REQUESTS} requests")
    ids = [f"r{i}" for i in range(number * 100, number * 100 + 100)]
    frame = pd.DataFrame({"request_id": ids, "actual_label": [i % 2 for i in range(100)]})
    if number:
        gaps = pd.DataFrame({"request_id": [f"r{i}" for i in range(10)], "actual_label": None})
        frame = pd.concat([frame, gaps], ignore_index=True)
    frame["actual_label"] = frame["actual_label"].astype("Int64")
    return frame


@dataclass
class Progress:
    """What the chain has done so far (kept in the work dir between children)."""

    batches: int = 0  # batch upserts completed
    landed: int = 0  # landing files dropped
    label_batches: int = 0  # label batches merged
    pending: str = ""  # the step the last child was running when it died


def _progress(work: Path) -> Progress:
    path = work / "progress.json"
    return Progress(**json.loads(path.read_text())) if path.exists() else Progress()


def _save(work: Path, progress: Progress) -> None:
    (work / "progress.json").write_text(json.dumps(progress.__dict__))


def run_step(work: Path, step: str, progress: Progress) -> None:
    """Do one step; on success record it in `progress`."""
    from utils import tables
    from utils.monitoring import inference_table as monitoring

    if step == "batch":
        tables.merge_table(batch_rows(progress.batches), "facts", ["id"])
        progress.batches += 1
    elif step == "stream":
        stream = tables.read_stream(str(work / "landing"), max_files_per_trigger=1)
        tables.write_stream(stream, "sink", str(work / "checkpoint"), keys=["id"])
    elif step == "labels":
        monitoring.merge_labels(labels_frame(progress.label_batches), "inference")
        progress.label_batches += 1
        rows = monitoring.inference_rows(requests_frame(), [0] * REQUESTS, 1)
        monitoring.log_inferences(rows, "inference")  # logged again: labels must stay
    _save(work, progress)


def _leftovers(work: Path) -> list[str]:
    from utils import tables

    if hasattr(tables, "leftovers"):
        return tables.leftovers()
    found = []  # code from before utils.table_commits: its staging tables and Spark's folders
    for _root, dirs, _ in os.walk(work / "spark-warehouse"):
        found += [d for d in dirs if "__merge_" in d or d.startswith((".spark-staging", "_temp"))]
    return found


def state(work: Path, progress: Progress) -> dict:
    """Rows expected vs found, duplicate keys, labels expected vs found, leftovers."""
    from pyspark.sql import functions as F

    from utils import tables

    found: dict = {"leftovers": _leftovers(work)}
    for table, key, expected in (
        (
            "facts",
            "id",
            BATCH_STEP * (progress.batches - 1) + BATCH_ROWS if progress.batches else 0,
        ),
        ("sink", "id", progress.landed * LANDING_FILE_ROWS),
        ("inference", "request_id", REQUESTS),
    ):
        if not tables.table_exists(table):
            found[table] = {"expected": expected, "rows": 0, "duplicate_keys": 0}
            continue
        frame = tables.read_table(table)
        row = frame.agg(F.count("*").alias("n"), F.countDistinct(key).alias("keys")).first()
        found[table] = {
            "expected": expected,
            "rows": int(row["n"]),
            "duplicate_keys": int(row["n"] - row["keys"]),
        }
    if tables.table_exists("inference"):
        labelled = tables.read_table("inference").where("actual_label IS NOT NULL").count()
        found["labels"] = {"expected": 100 * progress.label_batches, "found": labelled}
    return found


def child(work: Path, step: str, fault: str) -> None:
    from utils import tables
    from utils.monitoring import inference_table as monitoring

    report = tables.recover_tables() if hasattr(tables, "recover_tables") else None
    progress = _progress(work)
    if not tables.table_exists("inference"):
        rows = monitoring.inference_rows(requests_frame(), [0] * REQUESTS, 1)
        monitoring.log_inferences(rows, "inference")
        tables.merge_table(batch_rows(0), "facts", ["id"])
        progress.batches = 1
        _save(work, progress)
    if progress.pending:  # the killed step, redone as a restarted job would
        run_step(work, progress.pending, progress)
    after_restart = state(work, progress)
    print(STATE_PREFIX + json.dumps({"recovered": bool(report), **after_restart}), flush=True)
    if step == "verify":
        return
    if step == "stream":
        landing_file(work / "landing", progress.landed)
        landing_file(work / "landing", progress.landed + 1)
        progress.landed += 2
    progress.pending = step
    _save(work, progress)
    arm(fault)
    run_step(work, step, progress)
    progress.pending = ""
    _save(work, progress)


# --- in the test or benchmark process -------------------------------------------------------


@dataclass
class CaseResult:
    step: str
    fault: str
    fired: bool  # the child died at the fault (or its job failed), as intended
    state: dict = field(default_factory=dict)  # what the next child found after the restart
    seconds: float = 0.0

    @property
    def rows_lost(self) -> int:
        return sum(
            max(0, t["expected"] - (t["rows"] - t["duplicate_keys"]))
            for name, t in self.state.items()
            if name in ("facts", "sink", "inference")
        )

    @property
    def duplicate_keys(self) -> int:
        return sum(
            t["duplicate_keys"]
            for n, t in self.state.items()
            if n in ("facts", "sink", "inference")
        )

    @property
    def labels_lost(self) -> int:
        labels = self.state.get("labels", {"expected": 0, "found": 0})
        return max(0, labels["expected"] - labels["found"])

    @property
    def leftovers(self) -> list[str]:
        return self.state.get("leftovers", [])

    @property
    def ok(self) -> bool:
        return (
            self.fired
            and not self.rows_lost
            and not self.duplicate_keys
            and not self.labels_lost
            and not self.leftovers
        )


def _run_child(work: Path, step: str, fault: str, timeout: float, repo: Path) -> tuple[int, dict]:
    env = {
        **os.environ,
        "MLDEPLOY_WORK_DIR": str(work),
        "PYTHONPATH": str(repo),
        "SPARK_DRIVER_MEMORY": "1g",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.reliability.fault_scenarios", str(work), step, fault],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,  # the child kills its own group: never this process
    )
    states = [
        json.loads(line[len(STATE_PREFIX) :])
        for line in proc.stdout.splitlines()
        if line.startswith(STATE_PREFIX)
    ]
    if not states:
        raise RuntimeError(
            f"child {step} {fault} printed no state (exit {proc.returncode}):\n"
            + proc.stderr[-3000:]
        )
    return proc.returncode, states[-1]


def run_chain(
    work: Path, cases: list[tuple[str, str]], timeout: float = 240, repo: Path = REPO
) -> list[CaseResult]:
    """Run each (step, fault) case in turn in work dir `work`; each case is checked by the
    next child after its restart (a final `verify` child checks the last one). `repo` is the
    checkout whose `utils` the children import (another commit's, to compare)."""
    results: list[CaseResult] = []
    for step, fault in [*cases, ("verify", "none")]:
        started = time.monotonic()
        code, found = _run_child(work, step, fault, timeout, repo)
        if results:
            results[-1].state = found
        if step != "verify":
            killed = code == -signal.SIGKILL
            failed_inside_spark = fault.startswith("cancel") and code != 0
            results.append(
                CaseResult(step, fault, killed or failed_inside_spark or fault == "none")
            )
            results[-1].seconds = time.monotonic() - started
    return results


if __name__ == "__main__":
    child(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
