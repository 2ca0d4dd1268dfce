"""Table helpers on a real local Spark session (Parquet tables; Delta runs on Databricks)."""

import pandas as pd
import pytest

from utils import tables
from utils.datasets import drop_landing_batch
from utils.tables import SchemaMismatchError, TableNotFoundError, merge_table

pytestmark = pytest.mark.spark


def rows(table):
    frame = tables.read_table(table).toPandas()[
        ["id", "day", "value"]
    ]  # partition columns come last
    return frame.sort_values(["id", "day"]).reset_index(drop=True)


def reference_upsert(target: pd.DataFrame, source: pd.DataFrame, keys) -> pd.DataFrame:
    """What a merge must produce, computed with pandas."""
    kept = target.merge(source[keys], on=keys, how="left", indicator=True)
    kept = kept[kept["_merge"] == "left_only"].drop(columns="_merge")
    return pd.concat([kept, source]).sort_values(["id", "day"]).reset_index(drop=True)


@pytest.fixture
def target():
    frame = pd.DataFrame(
        {"id": [1, 2, 3, 4], "day": ["d1", "d1", "d2", "d2"], "value": [10.0, 20.0, 30.0, 40.0]}
    )
    tables.write_table(frame, "t_target", partition_by=["day"])
    return frame


def test_write_and_read(target):
    pd.testing.assert_frame_equal(rows("t_target"), target, check_dtype=False)


def test_missing_table_names_table_and_producer():
    tables.register_producer("t_missing", "chapter 42 (utils.example.make_it)")
    with pytest.raises(
        TableNotFoundError, match=r"'t_missing' does not exist\. It is created by chapter 42"
    ):
        tables.read_table("t_missing")
    with pytest.raises(TableNotFoundError, match="Existing tables"):
        tables.read_table("t_other_missing")


def test_upsert_matches_pandas_reference_and_touches_only_affected_partitions(target):
    source = pd.DataFrame({"id": [2, 5], "day": ["d1", "d1"], "value": [21.0, 50.0]})
    result = merge_table(source, "t_target", ["id", "day"], partition_by=["day"])
    assert (result.inserted, result.updated, result.unmatched) == (1, 1, 1)
    expected = reference_upsert(target, source, ["id", "day"])
    pd.testing.assert_frame_equal(rows("t_target"), expected, check_dtype=False)


def test_same_batch_twice_leaves_no_duplicates(target):
    source = pd.DataFrame({"id": [7, 8], "day": ["d3", "d3"], "value": [1.0, 2.0]})
    tables.append_table(source, "t_target", keys=["id", "day"])
    again = tables.append_table(source, "t_target", keys=["id", "day"])
    assert again.inserted == 0 and again.updated == 2
    assert len(rows("t_target")) == 6


def test_row_moving_partition_leaves_no_stale_copy(target):
    moved = pd.DataFrame({"id": [1], "day": ["d9"], "value": [11.0]})
    merge_table(moved, "t_target", ["id"])
    stored = rows("t_target")
    assert stored["id"].is_unique
    assert stored.set_index("id").loc[1, "day"] == "d9"
    assert len(stored) == 4


def test_update_only_counts_unknown_keys_and_changes_nothing_for_them(target):
    labels = pd.DataFrame({"id": [3, 99], "day": ["d2", "d2"], "value": [33.0, 0.0]})
    result = merge_table(labels, "t_target", ["id", "day"], when_not_matched="ignore")
    assert (result.inserted, result.updated, result.unmatched) == (0, 1, 1)
    stored = rows("t_target")
    assert len(stored) == 4 and stored.set_index("id").loc[3, "value"] == 33.0
    second = merge_table(labels, "t_target", ["id", "day"], when_not_matched="ignore")
    pd.testing.assert_frame_equal(rows("t_target"), stored)
    assert second.unmatched == 1


def test_partial_columns_update_keeps_other_columns():
    frame = pd.DataFrame(
        {"id": [1, 2], "day": ["d1", "d1"], "value": [1.0, 2.0], "label": [None, None]}
    )
    frame["label"] = frame["label"].astype("float64")
    tables.write_table(frame, "t_partial")
    merge_table(
        pd.DataFrame({"id": [2], "label": [1.0]}), "t_partial", ["id"], when_not_matched="ignore"
    )
    stored = tables.read_table("t_partial").toPandas().set_index("id")
    assert (
        stored.loc[2, "label"] == 1.0
        and stored.loc[2, "value"] == 2.0
        and pd.isna(stored.loc[1, "label"])
    )


def test_merge_refuses_repeated_keys_and_missing_key(target):
    with pytest.raises(SchemaMismatchError, match="repeat merge keys"):
        merge_table(
            pd.DataFrame({"id": [1, 1], "day": ["d1", "d1"], "value": [1.0, 2.0]}),
            "t_target",
            ["id", "day"],
        )
    with pytest.raises(
        SchemaMismatchError, match=r"Merge key \['day'\] is missing from the source"
    ):
        merge_table(pd.DataFrame({"id": [1], "value": [1.0]}), "t_target", ["id", "day"])
    with pytest.raises(SchemaMismatchError, match=r"lack table columns \['value'\]"):
        merge_table(pd.DataFrame({"id": [1], "day": ["d1"]}), "t_target", ["id", "day"])


def test_merge_into_missing_table_creates_it():
    tables.drop_table("t_new")
    result = merge_table(pd.DataFrame({"id": [1], "day": ["d"], "value": [1.0]}), "t_new", ["id"])
    assert result.inserted == 1 and tables.table_exists("t_new")


def test_stream_from_folder_is_exactly_once_across_restarts(tmp_path):
    landing, checkpoint = tmp_path / "landing", tmp_path / "checkpoint"
    tables.drop_table("t_stream")
    drop_landing_batch(landing, 0, 50)

    def run():
        stream = tables.read_stream(str(landing)).select("CustomerId", "Age")
        return tables.write_stream(stream, "t_stream", str(checkpoint), keys=["CustomerId"])

    assert tables.stream_input_rows(run()) == 50
    drop_landing_batch(landing, 1, 30)
    assert tables.stream_input_rows(run()) == 30
    assert tables.stream_input_rows(run()) == 0
    stored = tables.read_table("t_stream").toPandas()
    assert len(stored) == 80 and stored["CustomerId"].is_unique


def test_stream_from_a_parquet_table(target, tmp_path):
    stream = tables.read_stream("t_target")
    assert stream.isStreaming and set(stream.columns) == {"id", "day", "value"}
    tables.drop_table("t_target_copy")
    tables.write_stream(stream, "t_target_copy", str(tmp_path / "cp"), keys=["id", "day"])
    pd.testing.assert_frame_equal(rows("t_target_copy"), target, check_dtype=False)


def test_empty_landing_folder_needs_a_schema(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="drop a first batch there or pass schema="):
        tables.read_stream(str(tmp_path / "empty"))


# --- Delta's merge rules, and failures that must lose nothing --------------------------------


def test_null_and_repeated_keys_go_to_quarantine_once_with_the_reason(target):
    batch = pd.DataFrame(
        {"id": [1, 5, 5, None, 6], "day": ["d1"] * 5, "value": [11.0, 50.0, 51.0, 0.0, 60.0]}
    )
    first = merge_table(batch, "t_target", ["id"], quarantine="t_target_quarantine")
    assert (first.updated, first.inserted, first.source_rows) == (1, 1, 2)
    merge_table(batch, "t_target", ["id"], quarantine="t_target_quarantine")  # a replay
    stored = rows("t_target")
    assert stored["id"].tolist() == [1, 2, 3, 4, 6] and stored["id"].is_unique
    aside = tables.read_table("t_target_quarantine").toPandas()
    assert len(aside) == 3
    reasons = aside.set_index("value")["quarantine_reason"]
    assert reasons[0.0].startswith("NULL merge key") and "repeated 2 times" in reasons[50.0]
    with pytest.raises(SchemaMismatchError, match="NULL keys or repeat merge keys"):
        merge_table(batch, "t_target", ["id"])


def test_update_non_null_keeps_stored_values_where_the_new_one_is_null():
    frame = pd.DataFrame({"id": [1, 2], "label": [1.0, 0.0], "score": [0.5, 0.6]})
    tables.write_table(frame, "t_labels")
    update = pd.DataFrame({"id": [1, 2], "label": [None, 1.0], "score": [0.7, 0.8]})
    merge_table(update, "t_labels", ["id"], when_matched="update_non_null")
    stored = tables.read_table("t_labels").toPandas().set_index("id").sort_index()
    assert stored["label"].tolist() == [1.0, 1.0] and stored["score"].tolist() == [0.7, 0.8]


def _cancel_the_next_spark_job(spark):
    """A failure raised inside a Spark job: the first job started from now on is cancelled."""
    import threading
    import time

    def watch():
        tracker = spark.sparkContext.statusTracker()
        for _ in range(20_000):
            if tracker.getActiveJobsIds():
                spark.sparkContext.cancelAllJobs()
                return
            time.sleep(0.001)

    threading.Thread(target=watch, daemon=True).start()


@pytest.mark.parametrize("partitioned", [False, True])
def test_a_write_job_failing_inside_spark_leaves_the_table_as_it_was(partitioned):
    from pyspark.sql import functions as F

    name = f"t_fail_{int(partitioned)}"
    frame = pd.DataFrame({"id": range(1_000), "day": ["d1", "d2"] * 500, "value": 1.0})
    tables.write_table(frame, name, partition_by=["day"] if partitioned else None)
    spark = tables.get_spark()
    update = spark.createDataFrame(frame.assign(value=2.0)).withColumn("value", F.col("value"))
    _cancel_the_next_spark_job(spark)
    with pytest.raises(Exception, match="(?i)cancel"):
        merge_table(update, name, ["id"])
    stored = tables.read_table(name).toPandas()
    assert len(stored) == 1_000 and set(stored["value"]) == {1.0}
    assert tables.leftovers() == []


def test_a_write_interrupted_after_its_commit_is_finished_by_the_next_table_call(monkeypatch):
    from utils import table_commits

    frame = pd.DataFrame({"id": range(100), "value": 1.0})
    tables.write_table(frame, "t_torn")

    def fail_after_first_move(stage):
        if stage == "moved":
            raise OSError("disk went away")

    monkeypatch.setattr(table_commits, "_fault_point", fail_after_first_move)
    with pytest.raises(OSError, match="disk went away"):
        merge_table(frame.assign(value=2.0, id=frame["id"] + 50), "t_torn", ["id"])
    assert tables.leftovers() != []  # the journal says what is left to do
    monkeypatch.setattr(table_commits, "_fault_point", lambda stage: None)
    stored = tables.read_table("t_torn").toPandas()  # recovers first
    assert len(stored) == 150 and stored["id"].is_unique
    assert stored.set_index("id")["value"].to_dict() == {
        i: 1.0 if i < 50 else 2.0 for i in range(150)
    }
    assert tables.leftovers() == []


def test_a_stream_batch_of_new_keys_adds_files_and_rewrites_none(tmp_path):
    from utils import table_commits

    landing, checkpoint = tmp_path / "landing", tmp_path / "checkpoint"
    tables.drop_table("t_stream_files")
    drop_landing_batch(landing, 0, 40)

    def run():
        stream = tables.read_stream(str(landing)).select("CustomerId", "Age")
        tables.write_stream(stream, "t_stream_files", str(checkpoint), keys=["CustomerId"])

    run()
    location = table_commits.table_location("t_stream_files", tables.get_spark())
    before = {p: p.stat().st_mtime_ns for p in table_commits.data_files(location)}
    drop_landing_batch(landing, 1, 40)
    run()
    after = {p: p.stat().st_mtime_ns for p in table_commits.data_files(location)}
    assert before.items() <= after.items() and len(after) > len(before)
    assert len(tables.read_table("t_stream_files").toPandas()) == 80


def test_a_stream_rewriting_files_each_batch_never_reads_a_replaced_file(tmp_path):
    """Micro-batches run in a clone of the session: a commit from one session must not leave
    the other reading files it replaced (both batches and the notebook's read below did)."""
    landing, checkpoint = tmp_path / "landing", tmp_path / "checkpoint"
    tables.drop_table("t_stream_rewrites")
    tables.write_table(pd.DataFrame({"id": range(40), "value": 0.0}), "t_stream_rewrites")
    assert tables.read_table("t_stream_rewrites").count() == 40  # this session lists the files
    landing.mkdir()
    for number in (1, 2):  # each file updates every key: each batch replaces every file
        frame = pd.DataFrame({"id": range(40), "value": float(number)})
        frame.to_parquet(landing / f".batch-{number}.parquet")
        (landing / f".batch-{number}.parquet").rename(landing / f"batch-{number}.parquet")
    stream = tables.read_stream(str(landing), max_files_per_trigger=1)
    query = tables.write_stream(stream, "t_stream_rewrites", str(checkpoint), keys=["id"])
    assert [p["numInputRows"] for p in query.recentProgress if p["numInputRows"]] == [40, 40]
    stored = tables.read_table("t_stream_rewrites").toPandas()
    assert len(stored) == 40 and stored["id"].is_unique and set(stored["value"]) == {2.0}
