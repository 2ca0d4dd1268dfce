"""Every table read, write, stream and merge the chapters do, one function each.

Tables are Spark catalog tables: Delta where the Delta connector is on the classpath
(Databricks), Parquet otherwise. `merge_table` gives the same rows in both formats: Delta runs
`MERGE INTO`; Parquet rewrites only the files holding a matched key and adds new keys as new
files, through a staged commit (`utils.table_commits`) that never deletes data before its
replacement is on disk, so a crash or a failed job at any point loses nothing.

Merge rules, the same in both formats:
- keys match with `=`, as in Delta: a NULL key never matches. Such a row would be inserted
  again on every replay, so it is set aside with the reason (`quarantine=`) or refused;
- a key repeated inside one batch (Delta refuses the whole MERGE) is set aside the same way:
  which of its rows is right is unknown;
- `when_matched="update_non_null"` updates a column only where the new value is not NULL
  (`COALESCE(new, old)`): re-logging a request or a label feed with gaps keeps stored labels.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from utils import table_commits
from utils.env import is_databricks, uc_name
from utils.spark import batch_session, cached, get_spark, table_format

# What creates the tables chapters read, for error messages; chapters add their own names.
TABLE_PRODUCERS: dict[str, str] = {}


class TableNotFoundError(LookupError):
    """A table a chapter reads does not exist yet."""


class SchemaMismatchError(ValueError):
    """Rows to write do not fit the table or the keys they are written by."""


@dataclass(frozen=True)
class MergeResult:
    """What a merge did: rows inserted, rows updated, source rows whose key had no match."""

    inserted: int
    updated: int
    unmatched: int
    source_rows: int


def full_name(name: str) -> str:
    """The name Spark should use: `catalog.schema.name` on Databricks for a bare name."""
    return uc_name(name)


def register_producer(name: str, producer: str) -> None:
    """Say what creates table `name` (shown when someone reads it before it exists)."""
    TABLE_PRODUCERS[name] = producer


def _local_parquet() -> bool:
    return not is_databricks() and table_format() == "parquet"


def recover_tables() -> table_commits.RecoveryReport:
    """Finish local writes a crash interrupted after their commit and delete the staging of
    those interrupted before it. Every helper here runs it first; it is cheap when clean."""
    if not _local_parquet():
        return table_commits.RecoveryReport([], [])
    return table_commits.recover(get_spark())


def leftovers() -> list[str]:
    """What interrupted local writes left in the work dir (empty after `recover_tables`)."""
    return table_commits.leftovers() if _local_parquet() else []


def table_exists(name: str) -> bool:
    recover_tables()
    return get_spark().catalog.tableExists(full_name(name))


def list_tables() -> list[str]:
    return sorted(t.name for t in get_spark().catalog.listTables())


def _require_table(name: str, created_by: str | None = None) -> str:
    qualified = full_name(name)
    if table_exists(name):
        return qualified
    producer = created_by or TABLE_PRODUCERS.get(name)
    how = (
        f"It is created by {producer}."
        if producer
        else "Run the chapter that writes it, or create it with utils.tables.write_table."
    )
    raise TableNotFoundError(
        f"Table '{qualified}' does not exist. {how} Existing tables: {list_tables() or 'none'}."
    )


def read_table(name: str, created_by: str | None = None):
    """The Spark DataFrame of table `name`; a missing table names what creates it."""
    return get_spark().table(_require_table(name, created_by))


def _to_spark(df):
    if isinstance(df, pd.DataFrame):
        return get_spark().createDataFrame(df)
    return df


def write_table(
    df, name: str, mode: str = "overwrite", partition_by: Sequence[str] | None = None
) -> str:
    """Write a pandas or Spark DataFrame as table `name` (overwrite or append).

    Locally the new files are staged and committed in one step (`utils.table_commits`): an
    overwrite deletes the old files only once the new ones are on disk.
    """
    if mode not in ("overwrite", "append"):
        raise ValueError(f"mode must be 'overwrite' or 'append', got {mode!r}")
    sdf = _to_spark(df)
    missing = [c for c in partition_by or [] if c not in sdf.columns]
    if missing:
        raise SchemaMismatchError(
            f"Cannot partition table '{name}' by {missing}: the rows have columns {sdf.columns}."
        )
    qualified = full_name(name)
    if not _local_parquet():
        writer = sdf.write.format(table_format()).mode(mode)
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.saveAsTable(qualified)
        return qualified
    with table_commits.WRITE_LOCK:
        if not table_exists(name):
            _commit(sdf, qualified, list(partition_by or []))
            return qualified
        parts = _partition_columns(qualified)
        if mode == "append":
            _commit(_conform(sdf, qualified), qualified, parts)
            return qualified
        partition_by = list(partition_by or [])
        wanted = [c for c in sdf.columns if c not in partition_by] + partition_by
        table = get_spark().table(qualified)
        same_shape = partition_by == parts and [(f.name, f.dataType) for f in table.schema] == [
            (f.name, f.dataType) for f in sdf.select(*wanted).schema
        ]
        location = table_commits.table_location(qualified, get_spark())
        _commit(
            sdf,
            qualified,
            list(partition_by or []),
            replaces=table_commits.data_files(location),
            recreate=not same_shape,
        )
    return qualified


def _conform(rows, qualified: str):
    """`rows` with the table's columns, order and types (partition columns last)."""
    table = get_spark().table(qualified)
    extra = [c for c in rows.columns if c not in table.columns]
    absent = [c for c in table.columns if c not in rows.columns]
    if extra or absent:
        raise SchemaMismatchError(
            f"Rows to append to '{qualified}' do not fit it: extra columns {extra}, missing "
            f"{absent} (table columns: {table.columns})."
        )
    return rows.select(*[rows[f.name].cast(f.dataType).alias(f.name) for f in table.schema])


def _commit(rows, qualified: str, parts: list[str], replaces=(), recreate=False) -> None:
    staged = table_commits.stage(rows, qualified, parts, replaces=replaces, recreate=recreate)
    try:
        table_commits.commit_and_apply(staged, get_spark())
    except BaseException:
        if not staged.journal.exists():  # not committed: the table is as it was
            table_commits.discard(staged)
        raise


def append_table(
    df,
    name: str,
    keys: Sequence[str] | None = None,
    partition_by: Sequence[str] | None = None,
    when_matched: str = "update",
    quarantine: str | None = None,
) -> MergeResult | None:
    """Append rows to `name`, creating it when missing.

    With `keys`, the append is idempotent: rows whose key is already in the table replace
    it (an upsert through `merge_table`), so writing the same batch twice leaves no duplicates.
    """
    if keys:
        return merge_table(
            df,
            name,
            keys,
            when_matched=when_matched,
            partition_by=partition_by,
            quarantine=quarantine,
        )
    write_table(df, name, mode="append", partition_by=partition_by)
    return None


def _check_merge_inputs(source, target, keys: Sequence[str], insert: bool) -> None:
    for side, frame in (("source rows", source), ("table", target)):
        missing = [k for k in keys if k not in frame.columns]
        if missing:
            raise SchemaMismatchError(
                f"Merge key {missing} is missing from the {side}; it has {frame.columns}."
            )
    extra = [c for c in source.columns if c not in target.columns]
    if extra:
        raise SchemaMismatchError(
            f"Source columns {extra} are not in the table (table columns: {target.columns})."
        )
    if insert:
        absent = [c for c in target.columns if c not in source.columns]
        if absent:
            raise SchemaMismatchError(
                f"Rows to insert lack table columns {absent}; pass when_not_matched='ignore' "
                "to only update existing rows."
            )


QUARANTINE_REASON, QUARANTINE_ID, QUARANTINED_AT = (
    "quarantine_reason",
    "quarantine_id",
    "quarantined_at",
)


def _set_aside(source, keys: list[str], quarantine: str | None):
    """`source` without rows whose key is NULL or repeated in the batch; those go to table
    `quarantine` with the reason (idempotent: a replayed batch adds nothing), or are refused."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    null_key = F.lit(False)
    for key in keys:
        null_key = null_key | F.col(key).isNull()
    copies = F.count(F.lit(1)).over(Window.partitionBy(*keys))
    reason = F.when(
        null_key, F.lit("NULL merge key: it never matches, so every replay would insert it again")
    ).when(
        copies > 1,
        F.concat(
            F.lit("merge key repeated "),
            copies.cast("string"),
            F.lit(" times in one batch: which row is right is unknown"),
        ),
    )
    judged = cached(source.withColumn(QUARANTINE_REASON, reason))
    rejected = judged.where(F.col(QUARANTINE_REASON).isNotNull())
    examples = rejected.limit(3).collect()
    if not examples:
        judged.unpersist()
        return source
    if quarantine is None:
        shown = [{k: row[k] for k in keys} for row in examples]
        judged.unpersist()
        raise SchemaMismatchError(
            f"Source rows have NULL keys or repeat merge keys {keys} (e.g. {shown}); keep one "
            "row per non-NULL key before merging, or pass quarantine='<table>' to set such "
            "rows aside with the reason."
        )
    content = F.sha2(F.to_json(F.struct(*[F.col(c) for c in judged.columns])), 256)
    occurrence = F.row_number().over(Window.partitionBy(content).orderBy(content))
    aside = rejected.withColumn(
        QUARANTINE_ID, F.concat(content, F.lit("-"), occurrence.cast("string"))
    ).withColumn(QUARANTINED_AT, F.current_timestamp())
    merge_table(aside, quarantine, [QUARANTINE_ID], when_matched="ignore")
    kept = judged.where(F.col(QUARANTINE_REASON).isNull()).drop(QUARANTINE_REASON)
    return kept


MATCHED_ACTIONS = ("update", "update_non_null", "ignore")


def merge_table(
    source,
    name: str,
    keys: Sequence[str],
    when_matched: str = "update",
    when_not_matched: str = "insert",
    partition_by: Sequence[str] | None = None,
    quarantine: str | None = None,
) -> MergeResult:
    """Merge `source` rows into table `name` by `keys`.

    `when_matched`: "update" sets the source's columns on matching rows, "update_non_null" only
    those whose new value is not NULL (`COALESCE(source, table)`), "ignore" keeps them.
    `when_not_matched`: "insert" adds rows with new keys, "ignore" only counts them (for
    example labels arriving for unknown request ids). Rows with a NULL key or a key repeated in
    the batch go to table `quarantine` with the reason when given, else the merge is refused
    (see the module docstring). A missing table is created from the source when inserting.
    Running the same merge twice changes nothing the second time.
    """
    if when_matched not in MATCHED_ACTIONS or when_not_matched not in ("insert", "ignore"):
        raise ValueError(
            f"when_matched is one of {MATCHED_ACTIONS}; when_not_matched 'insert' or 'ignore'"
        )
    keys = list(keys)
    source = _to_spark(source)
    insert = when_not_matched == "insert"
    with table_commits.WRITE_LOCK:
        if not table_exists(name):
            if not insert:
                _require_table(name)
            _check_merge_inputs(source, source, keys, insert)
            source = _set_aside(source, keys, quarantine)
            count = source.count()
            write_table(source, name, partition_by=partition_by)
            return MergeResult(inserted=count, updated=0, unmatched=count, source_rows=count)

        qualified = full_name(name)
        target = get_spark().table(qualified)
        _check_merge_inputs(source, target, keys, insert)
        types = dict(target.dtypes)
        source = source.select(*[source[c].cast(types[c]).alias(c) for c in source.columns])
        source = cached(_set_aside(source, keys, quarantine))
        try:
            source_rows = source.count()
            matched = source.join(target.select(*keys).distinct(), keys, "left_semi").count()
            result = MergeResult(
                inserted=source_rows - matched if insert else 0,
                updated=matched if when_matched != "ignore" else 0,
                unmatched=source_rows - matched,
                source_rows=source_rows,
            )
            if result.inserted or result.updated:
                if _local_parquet():
                    _merge_parquet(source, qualified, keys, when_matched, insert)
                else:
                    _merge_delta(source, qualified, keys, when_matched, insert)
            return result
        finally:
            source.unpersist()


def _merge_delta(source, qualified: str, keys: list[str], when_matched: str, insert: bool) -> None:
    view = f"merge_source_{uuid.uuid4().hex[:8]}"
    source.createOrReplaceTempView(view)
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    clauses = []
    updates = [c for c in source.columns if c not in keys]
    if when_matched != "ignore" and updates:
        value = "COALESCE(s.`{c}`, t.`{c}`)" if when_matched == "update_non_null" else "s.`{c}`"
        clauses.append(
            "WHEN MATCHED THEN UPDATE SET "
            + ", ".join(f"t.`{c}` = " + value.format(c=c) for c in updates)
        )
    if insert:
        cols = ", ".join(f"`{c}`" for c in source.columns)
        clauses.append(
            f"WHEN NOT MATCHED THEN INSERT ({cols}) "
            f"VALUES ({', '.join(f's.`{c}`' for c in source.columns)})"
        )
    try:
        get_spark().sql(f"MERGE INTO {qualified} t USING {view} s ON {on} " + " ".join(clauses))
    finally:
        get_spark().catalog.dropTempView(view)


def _partition_columns(qualified: str) -> list[str]:
    return [c.name for c in get_spark().catalog.listColumns(qualified) if c.isPartition]


def _merge_parquet(
    source, qualified: str, keys: list[str], when_matched: str, insert: bool
) -> None:
    """Stage the new content of the files holding a matched key plus the new keys' rows, and
    commit it replacing exactly those files: work in proportion to the batch and the files it
    touches (the key columns of the table are read to find them), not to the table."""
    from pyspark.sql import functions as F

    spark = get_spark()
    target = spark.table(qualified)
    columns, parts = target.columns, _partition_columns(qualified)
    file_column = "__table_file"
    hits = (
        target.select(*keys, F.input_file_name().alias(file_column))
        .join(source.select(*keys), keys, "inner")
        .cache()
    )
    try:
        pieces, touched = [], []
        if when_matched != "ignore":
            touched = [r[0] for r in hits.select(file_column).distinct().collect()]
        if touched:
            location = table_commits.table_location(qualified, spark)
            old = (
                spark.read.format("parquet")
                .schema(target.schema)
                .option("basePath", str(location))
                .load([str(table_commits.local_path(f)) for f in touched])
            )
            pieces.append(old.join(source.select(*keys), keys, "left_anti").select(*columns))
            incoming = source.select(
                *keys, *[F.col(c).alias(f"__new_{c}") for c in source.columns if c not in keys]
            )

            def updated(column: str):
                if column in keys or column not in source.columns:
                    return F.col(column)
                new = F.col(f"__new_{column}")
                return F.coalesce(new, F.col(column)) if when_matched == "update_non_null" else new

            pieces.append(
                old.join(incoming, keys, "inner").select(*[updated(c).alias(c) for c in columns])
            )
        if insert:
            pieces.append(source.join(hits.select(*keys), keys, "left_anti").select(*columns))
        new_content = pieces[0]
        for piece in pieces[1:]:
            new_content = new_content.unionByName(piece)
        _commit(
            new_content,
            qualified,
            parts,
            replaces=[table_commits.local_path(f) for f in touched],
        )
    finally:
        hits.unpersist()


def table_location(name: str) -> str:
    """Storage location of a table (for file-based streaming of Parquet tables)."""
    rows = get_spark().sql(f"DESCRIBE TABLE EXTENDED {_require_table(name)}").collect()
    for row in rows:
        if row.col_name == "Location":
            return row.data_type
    raise TableNotFoundError(f"Table '{name}' has no storage location.")


def read_stream(
    source: str, file_format: str = "parquet", schema=None, max_files_per_trigger: int | None = None
):
    """A streaming DataFrame over a table name or over a folder where files land.

    A Delta table streams its commits; a Parquet table streams the files of its location. A
    folder needs a schema for streaming: given, or read once from the files already there.
    """
    spark = get_spark()
    if "/" not in source:
        qualified = _require_table(source)
        if table_format() == "delta":
            return spark.readStream.table(qualified)
        schema = spark.table(qualified).schema
        source, file_format = table_location(source), "parquet"
    if schema is None:
        try:
            schema = spark.read.format(file_format).load(source).schema
        except Exception as exc:
            raise FileNotFoundError(
                f"No {file_format} files to read a schema from in '{source}'; drop a first "
                "batch there or pass schema=."
            ) from exc
    reader = spark.readStream.format(file_format).schema(schema)
    if max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", max_files_per_trigger)
    return reader.load(source)


def write_stream(
    stream,
    name: str,
    checkpoint: str,
    keys: Sequence[str] | None = None,
    partition_by: Sequence[str] | None = None,
    available_now: bool = True,
    processing_time: str = "10 seconds",
    transform: Callable | None = None,
    quarantine: str | None = None,
):
    """Write a stream into table `name` with a checkpoint, each micro-batch through
    `append_table` (an upsert by `keys` when given, so a replayed batch adds no duplicates).

    With `keys`, rows whose key is NULL or repeated within a micro-batch go to table
    `quarantine` (default `<name>_quarantine`) with the reason, instead of failing the query
    on every restart. Each micro-batch writes new files for new keys and rewrites only the
    files holding keys it updates.

    With `available_now` the query processes what is there and stops; this call waits for it.
    Otherwise it runs every `processing_time` until stopped; the query is returned.
    """

    set_aside_to = (quarantine or f"{name}_quarantine") if keys else None

    def write_batch(batch, batch_id: int) -> None:
        # The batch's own session: on Spark Connect this function runs in another process.
        with batch_session(batch):
            # Cached so the source is read (and the model run) once, however many actions follow.
            rows = cached(transform(batch) if transform else batch)
            try:
                append_table(
                    rows, name, keys=keys, partition_by=partition_by, quarantine=set_aside_to
                )
            finally:
                rows.unpersist()

    writer = stream.writeStream.foreachBatch(write_batch).option(
        "checkpointLocation", str(checkpoint)
    )
    writer = (
        writer.trigger(availableNow=True)
        if available_now
        else writer.trigger(processingTime=processing_time)
    )
    query = writer.start()
    if available_now:
        query.awaitTermination()
        if query.exception():
            raise RuntimeError(f"Stream into '{name}' failed: {query.exception()}")
    return query


def drop_table(name: str) -> None:
    """Drop table `name` if it exists (data included for managed tables)."""
    recover_tables()
    get_spark().sql(f"DROP TABLE IF EXISTS {full_name(name)}")


def stream_input_rows(query) -> int:
    """Rows a streaming query read across all its micro-batches in this run."""
    return sum(int(progress.get("numInputRows", 0)) for progress in query.recentProgress)
