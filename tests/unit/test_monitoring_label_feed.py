"""utils.monitoring.label_feed: only new files are read, a bad file is set aside with the
reason (never failing the run), and merged files move out of the way."""

import pandas as pd
import pytest

from utils.monitoring.label_feed import mark_merged, read_label_feed
from utils.monitoring.schema import ACTUAL_LABEL, LABELLED_AT, REQUEST_ID

pytestmark = pytest.mark.unit


def _deliver(folder, name, rows):
    pd.DataFrame(rows, columns=[REQUEST_ID, ACTUAL_LABEL, LABELLED_AT]).to_parquet(
        folder / name, index=False
    )


def test_new_files_are_read_bad_ones_set_aside_and_merged_ones_not_read_again(tmp_path):
    early, late = pd.Timestamp("2026-12-01 08:00"), pd.Timestamp("2026-12-01 09:00")
    _deliver(tmp_path, "labels_1.parquet", [("a", 1, early), ("b", 1, early)])
    _deliver(tmp_path, "labels_2.parquet", [("a", 0, late)])  # "a" again, corrected
    (tmp_path / "labels_3.parquet").write_bytes(b"PAR1 cut off in transit")
    pd.DataFrame({REQUEST_ID: ["c"]}).to_parquet(tmp_path / "labels_4.parquet")  # no label
    (tmp_path / "notes.txt").write_text("not a feed file")

    feed = read_label_feed(tmp_path)
    assert [p.name for p in feed.files] == ["labels_1.parquet", "labels_2.parquet"]
    assert feed.labels.set_index(REQUEST_ID)[ACTUAL_LABEL].to_dict() == {"a": 0, "b": 1}
    assert set(feed.unreadable) == {"labels_3.parquet", "labels_4.parquet"}
    assert "lacks columns ['actual_label', 'labelled_at']" in feed.unreadable["labels_4.parquet"]
    kept = tmp_path / "unreadable"
    assert (kept / "labels_3.parquet").read_bytes() == b"PAR1 cut off in transit"  # not lost
    assert "labels_3" not in " ".join(p.name for p in tmp_path.glob("labels_*"))
    assert (kept / "labels_4.parquet.why.txt").read_text() == feed.unreadable["labels_4.parquet"]

    mark_merged(feed.files)
    assert sorted(p.name for p in (tmp_path / "merged").iterdir()) == [
        "labels_1.parquet", "labels_2.parquet"]  # fmt: skip
    again = read_label_feed(tmp_path)
    assert again.labels is None and again.files == [] and again.unreadable == {}
    assert (tmp_path / "notes.txt").exists()
    _deliver(tmp_path, "labels_5.parquet", [("d", 1, late)])
    assert read_label_feed(tmp_path).labels[REQUEST_ID].tolist() == ["d"]
