"""Reliability under faults: tables killed mid-write, and the scoring guard under hostile input.

- tables: the fault chain of tests/reliability/fault_scenarios.py (kill -9 at every commit
  stage and during Spark's write jobs, jobs cancelled mid-write) per step (batch upsert,
  streaming micro-batch, label merge): cases tried, rows and labels lost, duplicate keys and
  leftovers after the restart. `--repo PATH` runs the children on another checkout's `utils`
  (to compare with the code before the staged commits);
- guard: hostile bodies (unterminated escape runs, deep nesting, random bytes, missing and
  conflicting headers) against MLflow's own scoring app behind the guard, in process: answers
  with status 5xx, and the worst depth-scan time per MB.

`python benchmarks/reliability.py [--quick] [--repo PATH]` writes results/reliability.{md,json}.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results  # noqa: E402
from tests.asgi import asgi_request  # noqa: E402
from tests.reliability.fault_scenarios import REPO, run_chain  # noqa: E402
from utils.serving.guard import ScoringGuard, json_depth  # noqa: E402

STAGES = ["point:staged", "point:committed", "point:moved", "point:applied", "write:1", "cancel:1"]


def table_cases(quick: bool) -> list[tuple[str, str]]:
    stages = STAGES[1:3] + STAGES[4:5] if quick else STAGES
    return [(step, fault) for fault in stages for step in ("batch", "stream", "labels")]


def guard_seconds_per_mb() -> tuple[float, list]:
    rows, worst = [], 0.0
    for megabytes in (1, 4, 16):
        size = megabytes * 2**20
        for shape, body in (
            ("escapes", b"[" * 40 + b'"' + b'\\"' * (size // 2)),
            ("nesting", b"[" * (size // 2) + b"]" * (size // 2)),
            ("records", b'{"dataframe_records": [' + b'{"a": "x\\"y", "b": [1]},' * (size // 26)),
        ):
            started = time.perf_counter()
            json_depth(body)
            per_mb = (time.perf_counter() - started) / (len(body) / 2**20)
            worst = max(worst, per_mb)
            rows.append((f"guard scan {shape}", f"{megabytes} MB", f"{per_mb:.3f} s/MB"))
    return worst, rows


def guard_5xx(count: int = 300) -> tuple[int, int]:
    """Hostile requests against MLflow's app behind the guard: (requests, answers >= 500)."""
    import random

    import mlflow
    from mlflow.pyfunc import scoring_server

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    with tempfile.TemporaryDirectory() as folder:
        mlflow.pyfunc.save_model(f"{folder}/m", python_model=Echo(), pip_requirements=["mlflow"])
        app = ScoringGuard(scoring_server.init(mlflow.pyfunc.load_model(f"{folder}/m")))
    rng = random.Random(0)
    header_sets = [
        [(b"content-type", b"application/json")],
        [],
        [(b"content-type", b"application/json"), (b"content-type", b"text/csv")],
        [(b"content-type", b"text/csv")],
        [(b"content-type", b"application/json"), (b"authorization", "Bearer é".encode())],
    ]
    failures = 0
    for i in range(count):
        kind = i % 4
        n = rng.randint(0, 5_000)
        body = [
            b"[" * 40 + b'"' + b'\\"' * n,
            b"[" * n + b"]" * n,
            rng.randbytes(rng.randint(0, 2_000)),
            b'{"dataframe_split": {"columns": ["a"], "data": [[1], [2'[: rng.randint(0, 50)],
        ][kind]
        status = asgi_request(app, body, header_sets[i % len(header_sets)]).status
        failures += status >= 500
    return count, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three fault stages, not six")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout the children import")
    args = parser.parse_args()
    figures: dict = {}
    rows = []
    with tempfile.TemporaryDirectory() as work:
        results = run_chain(Path(work) / "faults", table_cases(args.quick), 900, args.repo)
    by_class = defaultdict(list)
    for result in results:
        by_class[result.step].append(result)
        rows.append(
            (
                f"{result.step} {result.fault}",
                "kept all" if result.ok else "LOST/LEFT",
                f"rows lost {result.rows_lost}, labels lost {result.labels_lost}, "
                f"duplicates {result.duplicate_keys}, leftovers {len(result.leftovers)}",
            )
        )
    for step, cases in by_class.items():
        figures[step] = {
            "cases": len(cases),
            "kept_every_row": sum(c.ok for c in cases),
            "rows_lost": sum(c.rows_lost for c in cases),
            "labels_lost": sum(c.labels_lost for c in cases),
            "status_5xx": 0,
        }
    requests, errors = guard_5xx()
    figures["guard"] = {"cases": requests, "rows_lost": 0, "labels_lost": 0, "status_5xx": errors}
    rows.append(("guard hostile requests", f"{requests}", f"{errors} answered 5xx"))
    worst, scan_rows = guard_seconds_per_mb()
    figures["guard_worst_s_per_mb"] = round(worst, 4)
    rows += scan_rows
    source = "this checkout" if args.repo == REPO else args.repo
    write_results(
        "reliability",
        ["case", "outcome", "detail"],
        rows,
        figures,
        notes=[f"children imported utils from {source}"],
    )


if __name__ == "__main__":
    main()
