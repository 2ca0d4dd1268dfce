"""What every benchmark writes: a table printed and saved as Markdown, and the key figures as
JSON `{"figures": {...}, "machine": {...}, "when": ISO date}` under benchmarks/results/."""

from __future__ import annotations

import contextlib
import json
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict:
    """Cores, memory, CPU model and the versions that matter for the figures."""
    info = {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except (ImportError, OSError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    for package in ("mlflow", "pyspark", "scikit-learn", "pandas"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[package] = metadata.version(package)
    return info


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(name: str, figures: dict, machine: dict | None = None, **details) -> Path:
    """Write results/NAME.json: the key figures, the machine (`machine_info()` unless given),
    when, and any further `details` (raw rows, step timings)."""
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "figures": figures,
        "machine": machine if machine is not None else machine_info(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        **details,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def write_results(
    name: str,
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    figures: dict,
    notes: Sequence[str] = (),
) -> Path:
    """Print the table and figures, and write results/NAME.md and results/NAME.json."""
    machine, when = machine_info(), datetime.now(UTC).isoformat(timespec="seconds")
    table = markdown_table(header, rows)
    figure_lines = "\n".join(f"- `{key}`: {value}" for key, value in figures.items())
    note_lines = "\n".join(f"- {note}" for note in notes)
    text = (
        f"# {name}\n\nMeasured {when} on {machine.get('cores')} cores "
        f"({machine.get('cpu', 'unknown CPU')}, "
        f"load average {machine.get('load_avg_1m', '?')} at the end).\n\n"
        f"{table}\n\n## Key figures\n\n{figure_lines}\n"
        + (f"\n## Notes\n\n{note_lines}\n" if notes else "")
    )
    write_json(name, figures, machine)
    (RESULTS / f"{name}.md").write_text(text)
    print(table, "\n", figure_lines, sep="\n")
    return RESULTS / f"{name}.md"
