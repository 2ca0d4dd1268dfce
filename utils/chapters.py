"""Run chapter notebooks like a reader would, and collect what each recorded.

`python -m utils.chapters [02 03 ...] [-p NAME=VALUE]` (what `make run` calls) executes each
chapter in a fresh kernel, injects parameters before its `parameters` cell, writes the executed
copy (and the kernel's start-up log) to `<work dir>/executed/`, measures peak memory of the
kernel plus its Spark JVM, and prints a summary of the results each chapter recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import pprint
import re
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.env import REPO_ROOT, WORK_DIR_ENV, work_path
from utils.record import jsonable, recorded_values

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
# Cells with this tag run only on Databricks (the `%pip install` + restartPython cell at the
# top of every chapter); run here, they are skipped and say so in their place.
DATABRICKS_ONLY_TAG = "databricks-only"


@dataclass
class NotebookResult:
    """What running one notebook gave: recorded values, time, memory and where the copy is."""

    notebook: str
    status: str
    seconds: float
    peak_rss_mb: float
    recorded: dict[str, Any] = field(default_factory=dict)
    output_path: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _find_parameters_cell(nb) -> int | None:
    for index, cell in enumerate(nb.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return index
    return None


def inject_parameters(nb, parameters: Mapping[str, Any]):
    """Insert a cell tagged `injected-parameters` just before the `parameters` cell; the
    parameters cell's `get_param` calls then return these values."""
    import nbformat

    if not parameters:
        return nb
    index = _find_parameters_cell(nb)
    if index is None:
        raise ValueError("The notebook has no cell tagged 'parameters' to inject values before.")
    source = (
        "# Parameters injected by utils.chapters.run_notebook\n"
        "import utils.env\n"
        # A Python literal, not JSON: JSON's true/false/null are not Python names.
        f"utils.env.inject_params({pprint.pformat(jsonable(dict(parameters)), sort_dicts=False)})"
    )
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    if (nb.nbformat, nb.nbformat_minor) < (4, 5):
        del cell["id"]  # cell ids came with format 4.5; an older notebook must not have one
    nb.cells.insert(index, cell)
    return nb


def skip_databricks_only(nb):
    """Replace the code of every cell tagged `databricks-only` with a comment saying it was
    skipped, keeping the cell (and every other cell's position) in the executed copy."""
    for cell in nb.cells:
        if cell.cell_type == "code" and DATABRICKS_ONLY_TAG in cell.get("metadata", {}).get(
            "tags", []
        ):
            cell.source = f"# skipped here: tagged '{DATABRICKS_ONLY_TAG}' (runs on Databricks)"
    return nb


class _PeakMemory:
    """Samples the resident memory of a process and its children (the kernel and the Spark
    JVM it starts) in a background thread, keeping the peak."""

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.peak_bytes = 0
        self.pid: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        import psutil

        if self.pid is None:
            return
        try:
            root = psutil.Process(self.pid)
            total = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.Error:
            return
        self.peak_bytes = max(self.peak_bytes, total)

    def children(self) -> list:
        import psutil

        try:
            return psutil.Process(self.pid).children(recursive=True) if self.pid else []
        except psutil.Error:
            return []

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_notebook(
    path: str | Path,
    parameters: Mapping[str, Any] | None = None,
    output_dir: str | Path | None = None,
    timeout: int = 1800,
    env: Mapping[str, str] | None = None,
) -> NotebookResult:
    """Execute a notebook top to bottom in a fresh kernel with injected parameters.

    The executed copy goes to `output_dir` (default: `executed/` under the work dir), never
    next to the source. A failing cell does not raise: the result says `failed` with the error,
    and the copy shows where it stopped. `env` adds environment variables for the kernel.
    """
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    path = Path(path)
    nb = inject_parameters(nbformat.read(path, as_version=4), parameters or {})
    skip_databricks_only(nb)
    output_dir = Path(output_dir) if output_dir else work_path("executed")
    output_dir.mkdir(parents=True, exist_ok=True)
    output_path = output_dir / path.name
    kernel_log = output_dir / f"{path.stem}.kernel.log"

    # The kernel is this interpreter, whatever kernelspecs the machine has installed.
    kernel_env = {**os.environ, **(env or {})}
    km = KernelManager(kernel_name="python3")
    km.kernel_spec.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    client = NotebookClient(
        nb,
        km=km,
        timeout=timeout,
        # A kernel normally starts in seconds; on a loaded 2-core machine (a chapter's own
        # Spark JVM and servers running) 60 s, nbclient's default, was seen to run out.
        startup_timeout=180,
        resources={"metadata": {"path": str(path.parent)}},
    )
    status, error = "ok", ""
    children: list = []
    start = time.perf_counter()
    with _PeakMemory() as memory:
        try:
            # cleanup_kc: NotebookClient leaves a kernel it did not create running; shut it down.
            # The kernel process's own output (ipykernel and JVM start-up warnings) goes to a
            # log beside the executed copy; cell outputs stay in the notebook.
            with (
                kernel_log.open("w") as log,
                client.setup_kernel(
                    env=kernel_env, cwd=str(path.parent), cleanup_kc=True, stdout=log, stderr=log
                ),
            ):
                memory.pid = km.provisioner.process.pid if km.provisioner else None
                try:
                    client.execute(reset_kc=False)
                finally:
                    memory.sample()  # a short notebook may end between two samples
                    children = memory.children()
        except CellExecutionError as exc:
            # utils.env.exit_notebook ends a notebook early on purpose (job mode): not a failure.
            if exc.ename != "NotebookExit":
                status, error = "failed", _short_error(str(exc))
        except (CellTimeoutError, DeadKernelError, RuntimeError) as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
        finally:
            # The kernel's Spark JVM holds the Derby metastore lock until it exits: wait for it,
            # so the next notebook on the same work dir can open the metastore.
            _wait_for_exit(children)
    seconds = time.perf_counter() - start
    nbformat.write(nb, output_path)
    return NotebookResult(
        notebook=path.name,
        status=status,
        seconds=round(seconds, 1),
        peak_rss_mb=round(memory.peak_bytes / 2**20, 1),
        recorded=recorded_values(nb),
        output_path=str(output_path),
        error=error,
    )


def _wait_for_exit(processes: list, timeout: float = 30) -> None:
    import psutil

    _, alive = psutil.wait_procs(processes, timeout=timeout)
    for process in alive:
        process.kill()


def _short_error(message: str) -> str:
    """The end of a cell error: the exception line and a little context."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", message)  # tracebacks arrive coloured
    lines = [line for line in plain.strip().splitlines() if line.strip()]
    return "\n".join(lines[-12:])


def chapter_paths(selection: Sequence[str] = ()) -> list[Path]:
    """Chapter notebooks in order; `selection` picks by number or name part ("02", "batch")."""
    paths = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not selection:
        return paths
    chosen = [p for p in paths if any(p.name.startswith(s) or s in p.stem for s in selection)]
    if not chosen:
        raise SystemExit(
            f"No chapter matches {list(selection)}; chapters: {[p.stem for p in paths]}"
        )
    return chosen


def _format_value(value: Any, width: int = 40) -> str:
    """A recorded value on one short line (long texts such as file listings are cut)."""
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def summary_table(results: Sequence[NotebookResult], key_limit: int = 6) -> str:
    """A plain-text table: chapter, status, seconds, peak memory, key results."""
    rows = [("chapter", "status", "seconds", "peak MB", "key results")]
    for r in results:
        keys = ", ".join(
            f"{k}={_format_value(v)}"
            for k, v in list(r.recorded.items())[:key_limit]
            if not isinstance(v, dict | list)
        )
        rows.append(
            (
                r.notebook.removesuffix(".ipynb"),
                r.status,
                f"{r.seconds:.0f}",
                f"{r.peak_rss_mb:.0f}",
                keys,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for i, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True))
            + "  "
            + row[4]
        )
        if i == 0:
            lines.append("-" * (sum(widths) + 8 + len("key results")))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m utils.chapters",
        description="Run chapter notebooks and print what they recorded."
    )
    parser.add_argument("chapters", nargs="*", help="chapter numbers or names (default: all)")
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="parameter for every chapter (repeatable), e.g. -p N_ROWS=2000",
    )
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args(argv)
    parameters = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--param takes NAME=VALUE, got {item!r}")
        parameters[name] = value
    results = []
    for path in chapter_paths(args.chapters):
        print(f"running {path.name} ...", flush=True)
        result = run_notebook(path, parameters, timeout=args.timeout)
        print(f"  {result.status} in {result.seconds:.0f} s", flush=True)
        if not result.ok:
            print("  " + result.error.replace("\n", "\n  "), flush=True)
        results.append(result)
    print()
    print(summary_table(results))
    report = work_path("executed") / "summary.json"
    report.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    print(
        f"\nExecuted notebooks and summary.json are in {report.parent} "
        f"(work dir: ${WORK_DIR_ENV} or .local/)."
    )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

