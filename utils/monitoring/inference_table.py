"""The inference table: every scored request with its id, features, prediction, the model
version that made it and when, and an `actual_label` that stays empty until the truth is known.

Labels arrive later in batches and are merged by request id through `utils.tables.merge_table`
(updates only: a label for a request we never scored is counted, reported and kept aside, never
inserted as a row). From the labelled rows comes accuracy by model version and time window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from utils import tables
from utils.monitoring.schema import (
    ACTUAL_LABEL,
    LABELLED_AT,
    MODEL_VERSION,
    PREDICTION,
    REQUEST_ID,
    SCORED_AT,
    SCORED_DATE,
)
from utils.spark import cached


def inference_rows(
    requests: pd.DataFrame,
    predictions: Sequence,
    model_version: int | str,
    scored_at: datetime | None = None,
    id_column: str = REQUEST_ID,
) -> pd.DataFrame:
    """Scored requests as inference-table rows (without the empty label columns)."""
    if id_column not in requests.columns:
        raise ValueError(
            f"The requests have no {id_column!r} column to key the inference table by; "
            f"columns: {list(requests.columns)}."
        )
    if len(predictions) != len(requests):
        raise ValueError(f"{len(predictions)} predictions for {len(requests)} requests.")
    scored_at = scored_at or datetime.now(UTC).replace(tzinfo=None)
    rows = requests.copy()
    rows[id_column] = rows[id_column].astype(str)
    values = np.asarray(predictions)
    rows[PREDICTION] = values.ravel() if values.ndim > 1 and values.shape[1] == 1 else values
    rows[MODEL_VERSION] = int(model_version)
    rows[SCORED_AT] = pd.Timestamp(scored_at)
    rows[SCORED_DATE] = pd.Timestamp(scored_at).strftime("%Y-%m-%d")
    return rows


def log_inferences(rows: pd.DataFrame, table: str, id_column: str = REQUEST_ID) -> int:
    """Append scored rows to the inference table, with `actual_label` and `labelled_at` empty.

    Keyed by request id, so logging the same requests twice keeps one row each; a row logged
    again (a retried request, a replayed batch) keeps the label already merged into it.
    """
    from pyspark.sql import functions as F

    sdf = (
        tables.get_spark()
        .createDataFrame(rows)
        .withColumn(ACTUAL_LABEL, F.lit(None).cast("long"))
        .withColumn(LABELLED_AT, F.lit(None).cast("timestamp"))
    )
    tables.append_table(
        sdf, table, keys=[id_column], partition_by=[SCORED_DATE], when_matched="update_non_null"
    )
    return len(rows)


def score_and_log(
    model_uri: str,
    requests: pd.DataFrame,
    table: str,
    features: Sequence[str],
    scored_at: datetime | None = None,
    id_column: str = REQUEST_ID,
) -> pd.DataFrame:
    """Score `requests` with the model behind `model_uri` and log them with its version."""
    from utils.tracking import load_model, resolve_model_uri

    version = resolve_model_uri(model_uri).version
    predictions = load_model(model_uri).predict(requests[list(features)])
    if isinstance(predictions, pd.DataFrame):
        predictions = predictions.iloc[:, 0]
    rows = inference_rows(requests, predictions, version, scored_at, id_column)
    log_inferences(rows, table, id_column)
    return rows


def label_batches(
    truth: pd.DataFrame,
    label_column: str,
    batches: int = 3,
    coverage: float = 1.0,
    unknown_per_batch: int = 0,
    id_column: str = REQUEST_ID,
    first_arrival: datetime | None = None,
    seed: int = 0,
) -> list[pd.DataFrame]:
    """The truth about scored requests, arriving in `batches` (as a label feed would).

    A share `coverage` of the requests ever gets a label; each batch also carries
    `unknown_per_batch` labels for request ids that were never scored (a feed is never clean).
    Each batch has the columns `id_column`, `actual_label`, `labelled_at`.
    """
    if not 0 < coverage <= 1 or batches < 1:
        raise ValueError(f"coverage must be in (0, 1] and batches >= 1; got {coverage}, {batches}")
    rng = np.random.default_rng(seed)
    labelled = truth.sample(frac=coverage, random_state=seed).reset_index(drop=True)
    first_arrival = first_arrival or datetime.now(UTC).replace(tzinfo=None)
    out = []
    for number, part in enumerate(np.array_split(labelled.index.to_numpy(), batches)):
        batch = pd.DataFrame(
            {
                id_column: labelled.loc[part, id_column].astype(str).to_numpy(),
                ACTUAL_LABEL: labelled.loc[part, label_column].astype("int64").to_numpy(),
            }
        )
        unknown = pd.DataFrame(
            {
                id_column: [f"unknown-{number}-{i}" for i in range(unknown_per_batch)],
                ACTUAL_LABEL: rng.integers(0, 2, unknown_per_batch).astype("int64"),
            }
        )
        batch = pd.concat([batch, unknown], ignore_index=True)
        batch[LABELLED_AT] = pd.Timestamp(first_arrival) + pd.Timedelta(hours=number)
        out.append(batch)
    return out


@dataclass(frozen=True)
class LabelMergeReport:
    """What one label batch did to the inference table."""

    received: int
    labelled: int  # rows whose label was set or corrected
    unchanged: int  # the table already had this very label (a re-delivered batch)
    unknown: int  # labels for request ids the table does not have
    unknown_examples: list[str] = field(default_factory=list)
    empty: int = 0  # feed rows with no label value: they never erase a stored label

    def __str__(self) -> str:
        text = (
            f"{self.received} labels received: {self.labelled} merged, {self.unchanged} "
            f"already there, {self.unknown} for unknown request ids"
        )
        text += f" (e.g. {self.unknown_examples})" if self.unknown else ""
        return text + (f"; {self.empty} rows without a label ignored" if self.empty else "")


def merge_labels(
    labels,
    table: str,
    id_column: str = REQUEST_ID,
    unknown_table: str | None = None,
) -> LabelMergeReport:
    """Merge a batch of labels into the inference table by request id.

    Labels the table already holds are left out before the merge, so a batch delivered twice
    rewrites nothing the second time. Labels for unknown ids are not inserted (that would
    invent requests); they are counted, shown, and appended to `unknown_table` when given.
    A feed row without a label value is ignored and counted, and other empty columns keep the
    stored value (`COALESCE`): a gap in a feed never erases a label.
    """
    spark = tables.get_spark()
    source = spark.createDataFrame(labels) if isinstance(labels, pd.DataFrame) else labels
    missing = [c for c in (id_column, ACTUAL_LABEL) if c not in source.columns]
    if missing:
        raise tables.SchemaMismatchError(
            f"The labels lack {missing}; they need {id_column!r} and {ACTUAL_LABEL!r} "
            f"(columns: {source.columns})."
        )
    target = tables.read_table(table)
    types = dict(target.dtypes)
    source = source.select(*[source[c].cast(types.get(c, t)).alias(c) for c, t in source.dtypes])
    source = cached(source)
    try:
        received = source.count()
        labelled = source.where(f"{ACTUAL_LABEL} IS NOT NULL")
        empty = received - labelled.count()
        already = target.select(id_column, ACTUAL_LABEL).where(f"{ACTUAL_LABEL} IS NOT NULL")
        to_apply = labelled.join(already, [id_column, ACTUAL_LABEL], "left_anti")
        unknown_rows = to_apply.join(target.select(id_column), [id_column], "left_anti")
        examples = [r[id_column] for r in unknown_rows.select(id_column).limit(5).collect()]
        if examples and unknown_table:
            tables.append_table(unknown_rows, unknown_table, keys=[id_column])
        result = tables.merge_table(
            to_apply,
            table,
            [id_column],
            when_matched="update_non_null",
            when_not_matched="ignore",
        )
    finally:
        source.unpersist()
    return LabelMergeReport(
        received=received,
        labelled=result.updated,
        unchanged=received - empty - result.source_rows,
        unknown=result.unmatched,
        unknown_examples=examples,
        empty=empty,
    )


def label_status(table: str) -> dict[str, int]:
    """Rows in the inference table, and how many have a label."""
    from pyspark.sql import functions as F

    row = (
        tables.read_table(table)
        .agg(F.count("*").alias("rows"), F.count(ACTUAL_LABEL).alias("labelled"))
        .first()
    )
    return {"rows": int(row["rows"]), "labelled": int(row["labelled"])}


def accuracy_by_version(table: str, window: str = "1 day") -> pd.DataFrame:
    """Per model version and time window (of `scored_at`): rows scored, rows labelled, and
    accuracy on the labelled ones."""
    from pyspark.sql import functions as F

    correct = F.when(F.col(ACTUAL_LABEL).isNotNull(), (F.col(PREDICTION) == F.col(ACTUAL_LABEL)))
    frame = (
        tables.read_table(table)
        .groupBy(MODEL_VERSION, F.window(SCORED_AT, window).alias("window"))
        .agg(
            F.count("*").alias("scored"),
            F.count(ACTUAL_LABEL).alias("labelled"),
            F.avg(correct.cast("double")).alias("accuracy"),
        )
        .select(
            MODEL_VERSION,
            F.col("window.start").alias("window_start"),
            "scored",
            "labelled",
            "accuracy",
        )
        .orderBy("window_start", MODEL_VERSION)
        .toPandas()
    )
    return frame


def plot_accuracy(frame: pd.DataFrame, title: str = "Accuracy by model version"):
    """Accuracy per window, one line per model version (from `accuracy_by_version`)."""
    import matplotlib.pyplot as plt

    labelled = frame[frame["labelled"] > 0]
    windows = sorted(labelled["window_start"].unique())
    position = {w: i for i, w in enumerate(windows)}
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(windows) + 2), 3.4))
    for version, part in labelled.groupby(MODEL_VERSION):
        x = [position[w] for w in part["window_start"]]
        ax.plot(x, part["accuracy"], marker="o", label=f"version {version}")
    ax.set_xticks(range(len(windows)), [window_label(w) for w in windows])
    ax.set_ylabel("accuracy on labelled rows")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def window_label(start) -> str:
    stamp = pd.Timestamp(start)
    return (
        stamp.strftime("%Y-%m-%d") if stamp == stamp.normalize() else stamp.strftime("%m-%d %H:%M")
    )
