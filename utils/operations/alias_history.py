"""Alias history: who moved which alias of which model from which version to which, why, when.

MLflow keeps only where an alias points now (a history has been an open MLflow request since
2019), so every alias move made by this project's helpers (`utils.gate.promotion.promote` and
`rollback`, the canary controller) goes through `move_alias`, which moves the alias and appends
one row to the history. The history is a folder of one-row JSON files under the work dir
(`registry/alias_history/`), each written whole and renamed into place, so a crash never leaves
half a row, and nothing is ever appended to an open file (Unity Catalog volumes, the work dir
on Databricks, do not support that); `spark.read.json(folder)` reads it as a table. A move
made outside these helpers (the UI, a bare `set_registered_model_alias`) is not seen.

`version_at(model, when)` answers "which version was champion at time T", and
`versions_at` does it for a column of timestamps, so predictions can be joined to the champion
of their time (chapters 05 and 09).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from utils.env import work_path
from utils.tracking import CHAMPION, get_aliases, model_name, set_alias

HISTORY_COLUMNS = ("model", "alias", "from_version", "to_version", "actor", "reason", "moved_at")


def history_dir() -> Path:
    """The folder that holds the history, one JSON file per alias move."""
    return work_path("registry", "alias_history")


def record_alias_move(
    model: str,
    alias: str,
    from_version: int | None,
    to_version: int | None,
    actor: str,
    reason: str,
    moved_at: datetime | None = None,
) -> dict:
    """Append one row to the history (a version of None: the alias did not exist / was removed;
    from == to: a decision that left the alias where it was, worth keeping too)."""
    if not actor or not reason:
        raise ValueError("An alias move needs an actor (who or what) and a reason (why).")
    moved_at = moved_at or datetime.now(UTC)
    row = {
        "model": model_name(model),
        "alias": alias,
        "from_version": None if from_version is None else int(from_version),
        "to_version": None if to_version is None else int(to_version),
        "actor": actor,
        "reason": reason,
        "moved_at": moved_at.isoformat(timespec="microseconds"),
    }
    folder = history_dir()
    folder.mkdir(parents=True, exist_ok=True)
    # the name sorts by time; the random part keeps two moves in one microsecond apart
    stem = f"{moved_at.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"
    partial = folder / f".{stem}.tmp"
    partial.write_text(json.dumps(row))
    os.replace(partial, folder / f"{stem}.json")
    return row


def move_alias(name: str, alias: str, version: int | str | None, *, actor: str, reason: str):
    """Point `alias` of `name` at `version` (None deletes the alias) and record the move.

    Returns the version the alias pointed to before (None when it did not exist)."""
    import mlflow

    before = get_aliases(name).get(alias)
    if version is None:
        if before is not None:
            mlflow.MlflowClient().delete_registered_model_alias(model_name(name), alias)
    else:
        set_alias(name, alias, version)
    record_alias_move(name, alias, before, None if version is None else int(version), actor, reason)
    return before


def alias_history(model: str | None = None, alias: str | None = None) -> pd.DataFrame:
    """The history, oldest first, optionally of one model and alias; `moved_at` as UTC times."""
    rows = [json.loads(path.read_text()) for path in sorted(history_dir().glob("*.json"))]
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    if model is not None:
        frame = frame[frame["model"] == model_name(model)]
    if alias is not None:
        frame = frame[frame["alias"] == alias]
    frame = frame.assign(moved_at=pd.to_datetime(frame["moved_at"], utc=True, format="ISO8601"))
    for column in ("from_version", "to_version"):
        frame[column] = frame[column].astype("Int64")
    return frame.sort_values("moved_at", kind="stable").reset_index(drop=True)


def versions_at(model: str, times: Sequence, alias: str = CHAMPION) -> pd.Series:
    """The version `alias` pointed to at each of `times` (by the history; <NA> before the
    first recorded move or while the alias did not exist)."""
    moves = alias_history(model, alias)[["moved_at", "to_version"]]
    stamps = pd.to_datetime(pd.Series(list(times)), utc=True)
    if moves.empty:
        return pd.Series(pd.array([pd.NA] * len(stamps), dtype="Int64"))
    order = stamps.sort_values(kind="stable")
    joined = pd.merge_asof(
        pd.DataFrame({"at": order.to_numpy(), "position": order.index}),
        moves.rename(columns={"moved_at": "at"}),
        on="at",
    )
    result = pd.Series(pd.array([pd.NA] * len(stamps), dtype="Int64"))
    result.iloc[joined["position"].to_numpy()] = joined["to_version"].to_numpy()
    return result


def version_at(model: str, when, alias: str = CHAMPION) -> int | None:
    """Which version `alias` (the champion by default) pointed to at time `when`."""
    value = versions_at(model, [when], alias).iloc[0]
    return None if pd.isna(value) else int(value)
