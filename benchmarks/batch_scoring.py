"""Batch scoring throughput: the champion as an in-process pyfunc against `spark_udf`.

Measures rows per second at 100k and 1M rows in one run on one machine, for Spark with its
default settings and with the settings this project uses (see `TUNED` and the notes written
to the results). The first Spark call (Python workers starting, the model loading) is timed
separately from warm calls.

    .venv/bin/python benchmarks/batch_scoring.py [--rows 100000 1000000] [--repeats 3]

Writes benchmarks/results/batch_scoring.md and .json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

# Run as a script, this folder is on sys.path, not the repository root: add it, so
# `benchmarks.common` and `utils` import.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_results  # noqa: E402

# What closes most of the gap (measured with this script, see the notes in the results):
# large Arrow batches amortise the per-batch pandas/MLflow overhead; one partition per core
# keeps every core busy without tiny tasks; cached input keeps file reading out of the timing.
TUNED = {"spark.sql.execution.arrow.maxRecordsPerBatch": "100000"}
DEFAULT = {"spark.sql.execution.arrow.maxRecordsPerBatch": "10000"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3, help="warm calls per setting (best kept)")
    args = parser.parse_args()
    os.environ.setdefault("MLDEPLOY_WORK_DIR", tempfile.mkdtemp(prefix="bench-batch-"))

    import mlflow
    from pyspark.sql import functions as F

    from utils.batch.scoring import force_count, model_input_columns, timed
    from utils.datasets import make_churn, split_features_label
    from utils.spark import get_spark
    from utils.tracking import model_uri, setup_mlflow
    from utils.training import ensure_champion

    setup_mlflow("benchmarks")
    ensure_champion("bench_churn")
    uri = model_uri("bench_churn")
    columns = list(model_input_columns(uri))
    spark = get_spark()
    cores = spark.sparkContext.defaultParallelism
    model = mlflow.pyfunc.load_model(uri)
    base, _ = split_features_label(make_churn(100_000, seed=5))

    rows_out, figures = [], {}
    for rows in args.rows:
        pdf = base.sample(rows, replace=rows > len(base), random_state=1).reset_index(drop=True)
        model.predict(pdf.head(1_000))  # warm the in-process path too (imports, first call)
        inprocess = max(
            (timed(lambda pdf=pdf: len(model.predict(pdf))) for _ in range(args.repeats)),
            key=lambda t: t.rows_per_s,
        )
        rows_out.append(
            (rows, "in-process pyfunc (1 core)", inprocess.rows_per_s, inprocess.rows_per_s)
        )
        label = f"{rows // 1000}k" if rows < 1_000_000 else f"{rows // 1_000_000}m"
        figures[f"inprocess_rows_per_s_{label}"] = round(inprocess.rows_per_s)

        # Each step adds one change to the one before, so the table shows what each buys.
        steps = (
            ("default", "default settings", DEFAULT, None, False),
            ("cached", "+ cached input", DEFAULT, None, True),
            ("partitioned", "+ one partition per core", DEFAULT, cores, True),
            ("tuned", "+ Arrow batches of 100k (tuned)", TUNED, cores, True),
        )
        for kind, name, conf, partitions, cache in steps:
            for key, value in conf.items():
                spark.conf.set(key, value)
            frame = spark.createDataFrame(pdf)
            if partitions:
                frame = frame.repartition(partitions)
            if cache:
                frame = frame.cache()
                frame.count()
            # A fresh UDF per setting, so its first call pays worker start and model load.
            predict = mlflow.pyfunc.spark_udf(spark, uri, result_type="long", env_manager="local")
            scored = frame.select(predict(F.struct(*columns)).alias("prediction"))
            cold = timed(lambda scored=scored: force_count(scored))
            warm = max(
                (timed(lambda scored=scored: force_count(scored)) for _ in range(args.repeats)),
                key=lambda t: t.rows_per_s,
            )
            frame.unpersist()
            rows_out.append(
                (rows, f"spark_udf {name}, first call", cold.rows_per_s, cold.rows_per_s / cores)
            )
            rows_out.append(
                (rows, f"spark_udf {name}, warm", warm.rows_per_s, warm.rows_per_s / cores)
            )
            figures[f"spark_{kind}_cold_rows_per_s_{label}"] = round(cold.rows_per_s)
            figures[f"spark_{kind}_warm_rows_per_s_{label}"] = round(warm.rows_per_s)
        figures[f"spark_vs_inprocess_per_core_{label}"] = round(
            figures[f"spark_tuned_warm_rows_per_s_{label}"] / cores / inprocess.rows_per_s, 3
        )

    header = ["rows", "method", "rows/s", "rows/s per core"]
    table = [[f"{r:,}", m, f"{v:,.0f}", f"{c:,.0f}"] for r, m, v, c in rows_out]
    notes = [
        f"Spark: local[{cores}] (all cores); in-process: one Python thread. The goal is warm "
        "Spark at least half the in-process throughput per core at 1M rows "
        "(`spark_vs_inprocess_per_core_1m` >= 0.5).",
        "Each Spark row adds one change to the row above. Only the run's very first Spark call "
        "is truly cold (Python workers start, the model is unpacked and loaded): "
        "`spark_default_cold_rows_per_s_100k`. Later 'first call' rows reuse the running "
        "workers and only load the model of their new UDF.",
        "What helped (measured 2026-11-21, 2 cores): caching the input alone changed little, "
        "because the input is a local pandas frame that is cheap to re-read. One partition per "
        "core was the big step, about x9 at 1M rows: `createDataFrame` on a 1M-row pandas frame "
        "gives 100 partitions of 10k rows, and per-task overhead (task scheduling, a fresh Arrow "
        "stream, the model fetched from the worker's cache) dominated. Arrow batches of 100k rows "
        "(default 10k) added about 10 % more by amortising per-batch pandas and MLflow work.",
        "The model gets one struct column: the UDF then receives a pandas DataFrame per batch "
        "(no per-row conversion), and MLflow keeps one loaded model per Python worker.",
    ]
    write_results("batch_scoring", header, table, figures, notes)


if __name__ == "__main__":
    main()
