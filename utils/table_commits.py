"""Crash-safe writes to local Parquet tables: staged files, one journal file as the commit.

Spark's own overwrite of an unpartitioned Parquet table deletes the table's folder before its
job writes the new files, so a failed or killed job leaves the table empty. Here every local
write goes through four steps instead, the way Delta's transaction log works:

1. **stage**: Spark writes the new files under `work/table-commits/<id>/`, outside the table, so
   readers never see them; they are flushed to disk.
2. **commit**: one small JSON journal `<id>.json` is written and renamed into place. A rename
   is atomic, so this is the single moment the write happens. It lists the staged files to move
   into the table and the table files they replace.
3. **apply**: move the staged files in, then delete the replaced files (never the other way
   round), then sync the metastore's partition list once and refresh Spark's file listing.
4. **clean**: delete the journal and the staging folder.

A crash before step 2 leaves the table as it was plus a staging folder; a crash after it leaves
a journal. `recover()` deletes the first and finishes the second (every apply step can run
twice), and every helper in `utils.tables` calls it before touching a table, so a restarted
process sees either the old table or the new one, never a mix. Only one writer per work dir is
assumed: Spark's embedded Derby metastore admits one process per work dir, and a lock
serialises the threads of that process.

Every step takes the Spark session the writer reads the table through, not "the active one":
inside a stream's `foreachBatch` that is the micro-batch's own session (a clone with its own
table cache), while PySpark's `getActiveSession()` still returns the notebook's session there.
Refreshing the wrong session left the stream a file listing of files the commit had deleted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from utils.env import work_path

log = logging.getLogger(__name__)

# One writer at a time in this process (a stream's micro-batch thread and a notebook cell).
WRITE_LOCK = threading.RLock()
_ACTIVE: set[str] = set()  # commit ids being staged by this process: recovery leaves them alone
_SKIPPED_NAMES = ("_SUCCESS", "._SUCCESS.crc")


def _fault_point(stage: str) -> None:
    """No-op seam where fault-injection tests kill the process (`stage`: staged, committed,
    moved, applied)."""


def commits_dir() -> Path:
    return work_path("table-commits")


def local_path(uri: str) -> Path:
    """A filesystem path from a Spark location or `input_file_name()` (`file:/a%20b`)."""
    parsed = urlparse(uri)
    return Path(unquote(parsed.path) if parsed.scheme in ("file", "") else uri)


def table_location(qualified: str, spark) -> Path:
    """The folder of table `qualified`, as session `spark` sees it."""
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {qualified}").collect()
    for row in rows:
        if row.col_name == "Location":
            return local_path(row.data_type)
    raise LookupError(f"Table '{qualified}' has no storage location.")


def data_files(folder: Path) -> list[Path]:
    """Every file a table reads under `folder` (hidden `_`/`.` names skipped, as Spark does)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(("_", "."))]
        found += [Path(root, f) for f in files if not f.startswith(("_", "."))]
    return sorted(found)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class Commit:
    """One staged write to one table, applied by `apply` (also after a crash)."""

    id: str
    table: str
    schema: str  # Spark schema as JSON: creates the table when it is missing
    partition_by: list[str]
    recreate: bool = False  # drop and create the table first (an overwrite that changes schema)
    moves: list[str] = field(default_factory=list)  # staged paths relative to the staging folder
    deletes: list[str] = field(default_factory=list)  # table files this write replaces

    @property
    def staging(self) -> Path:
        return commits_dir() / self.id

    @property
    def journal(self) -> Path:
        return commits_dir() / f"{self.id}.json"


def stage(
    rows,
    table: str,
    partition_by: Sequence[str],
    replaces: Iterable[Path] = (),
    recreate: bool = False,
) -> Commit:
    """Write `rows` to a staging folder (step 1); nothing in the table changes yet."""
    commit = Commit(
        id=f"{table.replace('.', '_')}-{uuid.uuid4().hex[:12]}",
        table=table,
        schema=rows.schema.json(),
        partition_by=list(partition_by),
        recreate=recreate,
        deletes=[str(p) for p in replaces],
    )
    _ACTIVE.add(commit.id)
    writer = rows.write.format("parquet").mode("overwrite")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(str(commit.staging))
    for path in commit.staging.rglob("*"):
        if path.is_file() and path.name not in _SKIPPED_NAMES:
            _fsync(path)
            commit.moves.append(str(path.relative_to(commit.staging)))
    commit.moves.sort()
    _fault_point("staged")
    return commit


def commit_and_apply(commit: Commit, spark) -> None:
    """Write the journal (the commit point, step 2), then apply and clean up (steps 3-4) in
    `spark`, the session the writer reads the table through."""
    try:
        temporary = commit.journal.with_suffix(".tmp")
        temporary.write_text(json.dumps(commit.__dict__))
        _fsync(temporary)
        os.replace(temporary, commit.journal)
        _fsync(commits_dir())
        _fault_point("committed")
        apply(commit, spark)
    finally:
        _ACTIVE.discard(commit.id)


def discard(commit: Commit) -> None:
    """Drop a staged write that failed before its commit (the table never changed)."""
    _ACTIVE.discard(commit.id)
    shutil.rmtree(commit.staging, ignore_errors=True)


def _create_table(commit: Commit, spark) -> None:
    from pyspark.sql.types import StructType

    schema = StructType.fromJson(json.loads(commit.schema))
    writer = spark.createDataFrame([], schema).write.format("parquet")
    if commit.partition_by:
        writer = writer.partitionBy(*commit.partition_by)
    writer.saveAsTable(commit.table)


def apply(commit: Commit, spark) -> None:
    """Steps 3-4 of a committed write in session `spark`; safe to run again after a crash at
    any point."""
    exists = spark.catalog.tableExists(commit.table)
    if exists and commit.recreate:
        spark.sql(f"DROP TABLE {commit.table}")
        exists = False
    if not exists:
        _create_table(commit, spark)
    location = table_location(commit.table, spark)
    for relative in commit.moves:  # new files in first: a crash here duplicates, never loses
        source, target = commit.staging / relative, location / relative
        if source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source, target)
            _fault_point("moved")
    for name in commit.deletes:
        path = Path(name)
        path.unlink(missing_ok=True)
        path.with_name(f".{path.name}.crc").unlink(missing_ok=True)
        if path.parent != location and path.parent.is_dir() and not any(path.parent.iterdir()):
            path.parent.rmdir()  # an emptied partition folder: SYNC below drops the partition
    _fault_point("applied")
    if commit.partition_by:
        spark.sql(f"MSCK REPAIR TABLE {commit.table} SYNC PARTITIONS")
    # Drops this session's file listing and re-caches cached DataFrames reading the table
    # (their cache is shared by all sessions). Other sessions keep no listing to go stale:
    # local sessions do not cache table relations (utils.spark).
    spark.catalog.refreshTable(commit.table)
    commit.journal.unlink(missing_ok=True)
    shutil.rmtree(commit.staging, ignore_errors=True)


@dataclass(frozen=True)
class RecoveryReport:
    """What `recover` found: writes finished after a crash, staged writes thrown away."""

    completed: list[str]
    discarded: list[str]

    def __bool__(self) -> bool:
        return bool(self.completed or self.discarded)


def recover(spark) -> RecoveryReport:
    """Finish every committed write (in session `spark`) and delete every uncommitted
    staging folder."""
    folder = commits_dir()
    if not folder.is_dir():
        return RecoveryReport([], [])
    completed, discarded = [], []
    with WRITE_LOCK:
        for journal in sorted(folder.glob("*.json")):
            commit = Commit(**json.loads(journal.read_text()))
            apply(commit, spark)
            completed.append(commit.table)
            log.warning(
                "Finished a write to table '%s' that was interrupted after its commit.",
                commit.table,
            )
        for entry in sorted(folder.iterdir()):
            if entry.stem in _ACTIVE or entry.suffix == ".json":
                continue
            if entry.suffix == ".tmp":  # a journal cut off while being written: not committed
                entry.unlink(missing_ok=True)
                continue
            shutil.rmtree(entry, ignore_errors=True)
            discarded.append(entry.name)
            log.warning(
                "Deleted the staging folder of a write interrupted before its commit (%s); "
                "its table was never changed.",
                entry.name,
            )
    return RecoveryReport(completed, discarded)


def leftovers() -> list[str]:
    """Anything an interrupted write left behind: journals, staging folders, old-style
    `__merge_` staging tables, Spark's own `.spark-staging-*`/`_temporary` folders."""
    found = []
    folder = commits_dir()
    if folder.is_dir():
        found += [f"table-commits/{e.name}" for e in folder.iterdir() if e.stem not in _ACTIVE]
    warehouse = work_path("spark-warehouse")
    for root, dirs, _ in os.walk(warehouse):
        for name in dirs:
            if name.startswith((".spark-staging", "_temporary")) or "__merge_" in name:
                found.append(str(Path(root, name).relative_to(warehouse.parent)))
    return sorted(found)
