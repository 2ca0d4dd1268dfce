"""`record_results({...})`: a chapter's key results, for the reader and for the tests.

The last cell of every chapter records what it measured in one `record_results` call
(`record(name, value)` records a single value). The value is shown and also written
to the cell's output under a MIME type of our own, so the notebook runner (`utils.chapters`)
and the tests read it back from the executed notebook, with no side files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

RECORD_MIME = "application/vnd.mldeploy.record+json"


RECORDED: dict[str, Any] = {}


def jsonable(value: Any) -> Any:
    """Plain JSON values from numpy scalars, arrays, pandas objects, paths."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


# The limit of one task value's JSON (Databricks "Use task values to pass information").
TASK_VALUE_LIMIT_BYTES = 48 * 1024


def set_task_value(name: str, value: Any) -> bool:
    """Also publish a recorded value as a job task value on Databricks
    (`dbutils.jobs.taskValues.set`), so later tasks can read it with
    `{{tasks.<task>.values.<name>}}`. Values over 48 KiB of JSON are skipped. Returns whether
    it was set (False off Databricks)."""
    import json

    from utils.env import databricks_utils

    dbutils = databricks_utils()
    if dbutils is None or len(json.dumps(value)) > TASK_VALUE_LIMIT_BYTES:
        return False
    dbutils.jobs.taskValues.set(key=name, value=value)
    return True


def record(name: str, value: Any) -> None:
    """Record one key result of this notebook (shown, read back by the runner and, on
    Databricks, set as a job task value)."""
    record_results({name: value})


def record_results(values: Mapping[str, Any]) -> dict[str, Any]:
    """Record a chapter's key results at once: shown as one list, read back by the runner and,
    on Databricks, set as job task values.

    Returns the recorded (JSON-safe) values. Names must be strings, so a typo such as passing
    a list of pairs fails here rather than in the test that reads them back.
    """
    if not isinstance(values, Mapping) or not all(isinstance(name, str) for name in values):
        raise TypeError("record_results takes a dict of {name: value} with string names.")
    recorded = {name: jsonable(value) for name, value in values.items()}
    RECORDED.update(recorded)
    for name, value in recorded.items():
        set_task_value(name, value)
    text = "\n".join(f"recorded {name} = {value!r}" for name, value in recorded.items())
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display({RECORD_MIME: recorded, "text/plain": text}, raw=True)
    except ImportError:
        pass
    return recorded


def recorded_values(nb) -> dict[str, Any]:
    """All values `record` displayed in an executed notebook, in order."""
    values: dict[str, Any] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if RECORD_MIME in data:
                values.update(data[RECORD_MIME])
    return values

