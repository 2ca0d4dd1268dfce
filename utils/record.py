"""`record(name, value)`: a chapter's key results, for the reader and for the tests.

The last cell of every chapter records what it measured. The value is shown and also written
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


def record(name: str, value: Any) -> None:
    """Record one key result of this notebook (shown, and read back by the runner)."""
    value = jsonable(value)
    RECORDED[name] = value
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(
                {RECORD_MIME: {name: value}, "text/plain": f"recorded {name} = {value!r}"}, raw=True
            )
    except ImportError:
        pass


def recorded_values(nb) -> dict[str, Any]:
    """All values `record` displayed in an executed notebook, in order."""
    values: dict[str, Any] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if RECORD_MIME in data:
                values.update(data[RECORD_MIME])
    return values

