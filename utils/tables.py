"""Every table read, write, stream and merge the chapters do, one function each.

Tables are Spark catalog tables: Delta where the Delta connector is on the classpath
(Databricks), Parquet otherwise. `merge_table` gives the same rows in both formats: Delta runs
`MERGE INTO`; Parquet rewrites only the partitions the merge touches, staging the new content
first so that a failure half-way loses nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from utils.env import uc_name
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


def table_exists(name: str) -> bool:
    return get_spark().catalog.tableExists(full_name(name))


def list_tables() -> list[str]:
    return sorted(t.name for t in get_spark().catalog.listTables())


def _require_table(name: str, created_by: str | None = None) -> str:
    qualified = full_name(name)
    if get_spark().catalog.tableExists(qualified):
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
    """Write a pandas or Spark DataFrame as table `name` (overwrite or append)."""
    if mode not in ("overwrite", "append"):
        raise ValueError(f"mode must be 'overwrite' or 'append', got {mode!r}")
    sdf = _to_spark(df)
    missing = [c for c in partition_by or [] if c not in sdf.columns]
    if missing:
        raise SchemaMismatchError(
            f"Cannot partition table '{name}' by {missing}: the rows have columns {sdf.columns}."
        )
    writer = sdf.write.format(table_format()).mode(mode)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    qualified = full_name(name)
    writer.saveAsTable(qualified)
    return qualified


def append_table(
    df,
    name: str,
    keys: Sequence[str] | None = None,
    partition_by: Sequence[str] | None = None,
) -> MergeResult | None:
    """Append rows to `name`, creating it when missing.

    With `keys`, the append is idempotent: rows whose key is already in the table replace
    it (an upsert through `merge_table`), so writing the same batch twice leaves no duplicates.
    """
    if keys:
        return merge_table(df, name, keys, partition_by=partition_by)
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
    duplicates = source.groupBy(*keys).count().filter("count > 1")
    example = duplicates.limit(3).collect()
    if example:
        shown = [{k: row[k] for k in keys} for row in example]
        raise SchemaMismatchError(
            f"Source rows repeat merge keys {keys} ({duplicates.count()} keys, e.g. {shown}); "
            "keep one row per key before merging."
        )


def merge_table(
    source,
    name: str,
    keys: Sequence[str],
    when_matched: str = "update",
    when_not_matched: str = "insert",
    partition_by: Sequence[str] | None = None,
) -> MergeResult:
    """Merge `source` rows into table `name` by `keys`.

    `when_matched`: "update" sets the source's columns on matching rows, "ignore" keeps them.
    `when_not_matched`: "insert" adds rows with new keys, "ignore" only counts them (for
    example labels arriving for unknown request ids). A missing table is created from the
    source when inserting. Running the same merge twice changes nothing the second time.
    """
    if when_matched not in ("update", "ignore") or when_not_matched not in ("insert", "ignore"):
        raise ValueError(
            "when_matched is 'update' or 'ignore'; when_not_matched 'insert' or 'ignore'"
        )
    keys = list(keys)
    source = _to_spark(source)
    insert = when_not_matched == "insert"
    if not table_exists(name):
        if not insert:
            _require_table(name)
        missing = [k for k in keys if k not in source.columns]
        if missing:
            raise SchemaMismatchError(f"Merge key {missing} is missing from the source rows.")
        _check_merge_inputs(source, source, keys, insert)
        count = source.count()
        write_table(source, name, partition_by=partition_by)
        return MergeResult(inserted=count, updated=0, unmatched=count, source_rows=count)

    qualified = full_name(name)
    spark = get_spark()
    target = spark.table(qualified)
    _check_merge_inputs(source, target, keys, insert)
    types = dict(target.dtypes)
    source = cached(source.select(*[source[c].cast(types[c]).alias(c) for c in source.columns]))
    try:
        source_rows = source.count()
        matched = source.join(target.select(*keys).distinct(), keys, "left_semi").count()
        result = MergeResult(
            inserted=source_rows - matched if insert else 0,
            updated=matched if when_matched == "update" else 0,
            unmatched=source_rows - matched,
            source_rows=source_rows,
        )
        if result.inserted or result.updated:
            if table_format() == "delta":
                _merge_delta(source, qualified, keys, when_matched, insert)
            else:
                _merge_parquet(source, qualified, keys, when_matched, insert)
        return result
    finally:
        source.unpersist()


def _merge_delta(source, qualified: str, keys: list[str], when_matched: str, insert: bool) -> None:
    view = f"merge_source_{uuid.uuid4().hex[:8]}"
    source.createOrReplaceTempView(view)
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    clauses = []
    updates = [c for c in source.columns if c not in keys]
    if when_matched == "update" and updates:
        clauses.append(
            "WHEN MATCHED THEN UPDATE SET " + ", ".join(f"t.`{c}` = s.`{c}`" for c in updates)
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
    """Rewrite only the partitions a merge touches: stage their new content, then overwrite
    them with dynamic partition overwrite and drop partitions left empty."""
    spark = get_spark()
    target = spark.table(qualified)
    columns = target.columns
    parts = _partition_columns(qualified)
    source_keys = source.select(*keys)

    pieces = []
    if when_matched == "update":
        replaced = [c for c in source.columns if c not in keys]
        pieces.append(target.drop(*replaced).join(source, keys, "inner").select(*columns))
    if insert:
        pieces.append(source.join(target.select(*keys), keys, "left_anti").select(*columns))
    changed = pieces[0]
    for piece in pieces[1:]:
        changed = changed.unionByName(piece)

    if parts:
        old_rows = target.join(source_keys, keys, "left_semi") if when_matched == "update" else None
        affected = changed.select(*parts)
        if old_rows is not None:
            affected = affected.unionByName(old_rows.select(*parts))
        affected = affected.distinct()
        kept = target.join(
            affected, [target[p].eqNullSafe(affected[p]) for p in parts], "left_semi"
        )
    else:
        kept = target
    if when_matched == "update":
        kept = kept.join(source_keys, keys, "left_anti")
    new_content = kept.select(*columns).unionByName(changed)

    staging = f"{qualified}__merge_{uuid.uuid4().hex[:8]}"
    new_content.write.format("parquet").saveAsTable(staging)
    try:
        staged = spark.table(staging).select(*columns)
        affected_values = [tuple(r) for r in affected.collect()] if parts else []
        staged.write.insertInto(qualified, overwrite=True)
        if parts:
            present = {tuple(r) for r in staged.select(*parts).distinct().collect()}
            for values in set(affected_values) - present:
                spec = ", ".join(
                    f"`{p}` = {_sql_literal(v)}" for p, v in zip(parts, values, strict=True)
                )
                spark.sql(f"ALTER TABLE {qualified} DROP IF EXISTS PARTITION ({spec})")
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {staging}")
        spark.catalog.refreshTable(qualified)


def _sql_literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "\\'") + "'"


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
):
    """Write a stream into table `name` with a checkpoint, each micro-batch through
    `append_table` (an upsert by `keys` when given, so a replayed batch adds no duplicates).

    With `available_now` the query processes what is there and stops; this call waits for it.
    Otherwise it runs every `processing_time` until stopped; the query is returned.
    """

    def write_batch(batch, batch_id: int) -> None:
        # The batch's own session: on Spark Connect this function runs in another process.
        with batch_session(batch):
            # Cached so the source is read (and the model run) once, however many actions follow.
            rows = cached(transform(batch) if transform else batch)
            try:
                append_table(rows, name, keys=keys, partition_by=partition_by)
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
    get_spark().sql(f"DROP TABLE IF EXISTS {full_name(name)}")


def stream_input_rows(query) -> int:
    """Rows a streaming query read across all its micro-batches in this run."""
    return sum(int(progress.get("numInputRows", 0)) for progress in query.recentProgress)
