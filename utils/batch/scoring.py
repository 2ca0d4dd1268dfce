"""Checks and measurements around scoring a registered model on a table (chapters 02-03).

The `spark_udf` call itself stays in the notebooks (it is the lesson); this module makes the
raw table to score when it is missing, checks that the data fits the model's signature before
Spark starts a job, and times scoring paths.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from utils import tables
from utils.datasets import make_churn

# Spark SQL types that feed each MLflow column type without loss.
_COMPATIBLE = {
    "long": {"bigint", "int", "smallint", "tinyint"},
    "integer": {"int", "smallint", "tinyint"},
    "double": {"double", "float", "bigint", "int", "smallint", "tinyint"},
    "float": {"float", "int", "smallint", "tinyint"},
    "string": {"string"},
    "boolean": {"boolean"},
    "datetime": {"timestamp", "date", "timestamp_ntz"},
    "binary": {"binary"},
}
_PANDAS_TO_SPARK = {
    "int64": "bigint",
    "int32": "int",
    "int16": "smallint",
    "int8": "tinyint",
    "float64": "double",
    "float32": "float",
    "object": "string",
    "string": "string",
    "bool": "boolean",
    "datetime64[ns]": "timestamp",
}


class ScoringSchemaError(ValueError):
    """Rows to score do not have the columns or types the model's signature asks for."""


def model_input_columns(model_uri: str) -> dict[str, str]:
    """The model's input columns and MLflow types from its signature, in order."""
    import mlflow

    signature = mlflow.models.get_model_info(model_uri).signature
    if signature is None:
        raise ScoringSchemaError(
            f"Model {model_uri} was logged without a signature; log it with one "
            "(mlflow.models.infer_signature) so scoring can check its input."
        )
    return {spec.name: spec.type.name for spec in signature.inputs.inputs}


def _column_types(data) -> dict[str, str]:
    """Column name to Spark SQL type name, for a Spark or pandas DataFrame."""
    if hasattr(data, "dtypes") and isinstance(data.dtypes, list):  # Spark: [(name, type)]
        return dict(data.dtypes)
    return {c: _PANDAS_TO_SPARK.get(str(t), str(t)) for c, t in data.dtypes.items()}


def check_scoring_columns(data, expected: Mapping[str, str]) -> list[str]:
    """Check `data` has every expected column with a compatible type; return the column list
    to pass to the model. The error names the columns, what the model expects and what it got."""
    given = _column_types(data)
    missing = [c for c in expected if c not in given]
    if missing:
        raise ScoringSchemaError(
            f"Scoring data is missing column(s) {missing} that the model expects. "
            f"Expected: {dict(expected)}; given: {given}."
        )
    wrong = {
        c: f"expected {t}, given {given[c]}"
        for c, t in expected.items()
        if given[c] not in _COMPATIBLE.get(t, {t})
    }
    if wrong:
        raise ScoringSchemaError(
            f"Scoring data has column(s) of the wrong type: {wrong}. Cast them first, "
            "e.g. df.withColumn(name, col(name).cast('bigint'))."
        )
    return list(expected)


@dataclass(frozen=True)
class Throughput:
    rows: int
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")


def timed(score: Callable[[], int]) -> Throughput:
    """Time one scoring call that returns how many rows it scored."""
    start = time.perf_counter()
    rows = score()
    return Throughput(rows, time.perf_counter() - start)


def force_count(df) -> int:
    """Score every row of a Spark DataFrame without collecting it: Spark only runs the model
    for columns it needs, so this counts rows where the prediction is not null."""
    from pyspark.sql import functions as F

    return df.select(F.count("prediction")).first()[0]


# Customers to score are new ones: another seed, and ids after any training set's ids.
UNSEEN_SEED = 2_024
UNSEEN_FIRST_ROW = 1_000_001


def ensure_churn_table(
    name: str, size: int = 10_000, seed: int = UNSEEN_SEED, first_row: int = UNSEEN_FIRST_ROW
) -> str:
    """Create the raw churn table `name` from `make_churn(size, seed, first_row)` when it does
    not exist: by default customers no model was trained on (training uses seed 42, rows 1..n).

    Returns the table name. An existing table is left as it is (chapters can run in any order).
    """
    if not tables.table_exists(name):
        tables.write_table(make_churn(size, seed, first_row=first_row), name)
    return name
