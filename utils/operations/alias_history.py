"""Alias history: who moved which alias of which model from which version to which, why, when.

MLflow keeps only where an alias points now (a history has been an open MLflow request since
2019), so every alias move made by this project's helpers (`utils.gate.promotion.promote` and
`rollback`, the canary controller) goes through `move_alias`, which moves the alias and appends
one row to the history. Locally the history is a SQLite table in the work dir (appends are
transactions, so a crash never leaves half a row); on Databricks, a catalog table. A move made
outside these helpers (the UI, a bare `set_registered_model_alias`) is not seen.

`version_at(model, when)` answers "which version was champion at time T", and
`versions_at` does it for a column of timestamps, so predictions can be joined to the champion
of their time (chapters 05 and 09).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

import pandas as pd

from utils.env import is_databricks, work_path
from utils.tracking import CHAMPION, get_aliases, model_name, set_alias

HISTORY_TABLE = "alias_history"
HISTORY_COLUMNS = ("model", "alias", "from_version", "to_version", "actor", "reason", "moved_at")


def history_db():
    """The local SQLite file that holds the history table."""
    return work_path("registry", "alias_history.db")


def _connect() -> sqlite3.Connection:
    path = history_db()
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=30)
    connection.execute(
        f"CREATE TABLE IF NOT EXISTS {HISTORY_TABLE} (model TEXT NOT NULL, alias TEXT NOT NULL, "
        "from_version INTEGER, to_version INTEGER, actor TEXT NOT NULL, reason TEXT NOT NULL, "
        "moved_at TEXT NOT NULL)"
    )
    return connection


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
    row = {
        "model": model_name(model),
        "alias": alias,
        "from_version": None if from_version is None else int(from_version),
        "to_version": None if to_version is None else int(to_version),
        "actor": actor,
        "reason": reason,
        "moved_at": (moved_at or datetime.now(UTC)).isoformat(timespec="microseconds"),
    }
    if is_databricks():
        from utils import tables

        tables.append_table(pd.DataFrame([row]), HISTORY_TABLE)
        return row
    with _connect() as connection:  # one transaction: the row is there whole or not at all
        connection.execute(
            f"INSERT INTO {HISTORY_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)",
            [row[c] for c in HISTORY_COLUMNS],
        )
    connection.close()
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
    if is_databricks():
        from utils import tables

        if not tables.table_exists(HISTORY_TABLE):
            frame = pd.DataFrame(columns=list(HISTORY_COLUMNS))
        else:
            frame = tables.read_table(HISTORY_TABLE).toPandas()
    else:
        with _connect() as connection:
            frame = pd.read_sql_query(f"SELECT * FROM {HISTORY_TABLE} ORDER BY rowid", connection)
        connection.close()
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
