"""The Databricks counterparts of chapter 03's streams, built here and run only there.

- The landing folder: Auto Loader (`cloudFiles`) instead of the plain file source. It keeps
  the files it has seen in the checkpoint (no directory listing of everything on each run),
  infers and tracks the schema at `cloudFiles.schemaLocation`, and runs with the same
  `availableNow` trigger (set by `utils.tables.write_stream`).
- A table that receives updates (the inference table, whose labels arrive by `MERGE`): a
  plain Delta stream fails on the first commit that rewrites rows. `skipChangeCommits` reads
  appends only and skips rewrites; Change Data Feed (`readChangeFeed`) reads every change
  with `_change_type`, and needs `delta.enableChangeDataFeed` on the table.
"""

from __future__ import annotations

from typing import Any

TABLE_UPDATE_MODES = ("skip_changes", "change_feed")


def auto_loader_options(
    schema_location: str, file_format: str = "parquet", max_files_per_trigger: int | None = None
) -> dict[str, str]:
    """The `cloudFiles` options for a landing folder of `file_format` files."""
    if not schema_location:
        raise ValueError("Auto Loader needs a schema location (a folder next to the checkpoint).")
    options = {"cloudFiles.format": file_format, "cloudFiles.schemaLocation": str(schema_location)}
    if max_files_per_trigger:
        options["cloudFiles.maxFilesPerTrigger"] = str(int(max_files_per_trigger))
    return options


def read_auto_loader(spark, path: str, schema_location: str, **options: Any):
    """A streaming DataFrame over the files landing in `path`, read by Auto Loader."""
    reader = spark.readStream.format("cloudFiles").options(
        **auto_loader_options(schema_location, **options)
    )
    return reader.load(str(path))


def table_update_options(mode: str = "skip_changes") -> dict[str, str]:
    """Options for streaming from a Delta table that also receives updates and deletes."""
    if mode == "skip_changes":
        return {"skipChangeCommits": "true"}
    if mode == "change_feed":
        return {"readChangeFeed": "true"}
    raise ValueError(f"mode must be one of {TABLE_UPDATE_MODES}, got {mode!r}")


def read_table_updates(spark, table: str, mode: str = "skip_changes"):
    """A stream from Delta table `table` (a full Unity Catalog name) that survives the MERGEs
    that fill in labels: new rows only, or every change with Change Data Feed."""
    return spark.readStream.options(**table_update_options(mode)).table(table)
