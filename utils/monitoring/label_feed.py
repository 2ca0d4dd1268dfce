"""The label feed of the retraining job: a folder where another system drops Parquet files of
labels (`labels_*.parquet`: request id, label, when it was labelled).

`read_label_feed` reads the files that are new, one per delivery. A file that cannot be read,
or lacks a column, is moved to `unreadable/` with a note saying why, so one bad delivery does
not fail every later run and is not lost either. After the labels are merged,
`mark_merged` moves the files to `merged/`, so each run reads only what arrived since the last
one. A run that dies between the merge and the move reads those files again next time, which
is harmless: the merge is idempotent.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from utils.monitoring.schema import ACTUAL_LABEL, LABELLED_AT, REQUEST_ID

FEED_PATTERN = "labels_*.parquet"
MERGED_DIR, UNREADABLE_DIR = "merged", "unreadable"
FEED_COLUMNS = (REQUEST_ID, ACTUAL_LABEL, LABELLED_AT)


@dataclass
class LabelFeed:
    labels: pd.DataFrame | None  # one row per request id, the latest label; None: nothing new
    files: list[Path] = field(default_factory=list)  # the files read
    unreadable: dict[str, str] = field(default_factory=dict)  # file name -> why, set aside


def read_label_feed(folder: str | Path) -> LabelFeed:
    """The labels in the new files of `folder`; a label delivered twice counts once (the
    latest `LABELLED_AT` wins). Unreadable files are moved to `folder/unreadable/`."""
    folder = Path(folder)
    frames, files, unreadable = [], [], {}
    for path in sorted(folder.glob(FEED_PATTERN)):
        try:
            frame = pd.read_parquet(path)
            missing = [c for c in FEED_COLUMNS if c not in frame.columns]
            if missing:
                raise ValueError(f"lacks columns {missing}; a feed file needs {list(FEED_COLUMNS)}")
        except Exception as error:  # pyarrow raises several types for a damaged file
            unreadable[path.name] = f"{type(error).__name__}: {error}"[:500]
            _move(path, folder / UNREADABLE_DIR)
            (folder / UNREADABLE_DIR / f"{path.name}.why.txt").write_text(unreadable[path.name])
            continue
        frames.append(frame[list(FEED_COLUMNS)])
        files.append(path)
    if not frames:
        return LabelFeed(None, files, unreadable)
    labels = (
        pd.concat(frames, ignore_index=True)
        .sort_values(LABELLED_AT, kind="stable")
        .drop_duplicates(REQUEST_ID, keep="last")
        .reset_index(drop=True)
    )
    return LabelFeed(labels, files, unreadable)


def mark_merged(files: Sequence[Path]) -> None:
    """Move feed files whose labels are merged to `merged/` beside them."""
    for path in files:
        _move(path, path.parent / MERGED_DIR)


def _move(path: Path, folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    shutil.move(path, folder / path.name)  # a rename where it can; copy and delete elsewhere
