"""Feature lookups: Feast online lookup latency, materialization speed, and what lookups add to
a served model.

Measures, in one run on this machine, with the chapter 11 feature repository over generated
tables (Parquet files written with pandas; no Spark needed):
  (a) `materialize` of the whole history into the SQLite online store: rows read per second
      and customers written per second;
  (b) `get_online_features` for the chapter's feature service, in process: 1 key and 100 keys;
  (c) the lookup model against the same classifier without lookups (all features in the
      request), in process and served (`utils.serving.serve_model`, one worker each), one-row
      requests taking turns over keep-alive connections; the difference is the lookups' cost.
Writes benchmarks/results/feature_lookups.{md,json}.

    MLDEPLOY_WORK_DIR=/tmp/bench .venv/bin/python benchmarks/feature_lookups.py [--requests 300]
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

# Run as a script, this folder is on sys.path, not the repository root: add it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results  # noqa: E402
from utils.environments.requirements import pinned_requirements  # noqa: E402
from utils.features.feast_repo import FEATURE_SERVICE, define_features, open_store  # noqa: E402
from utils.features.lookup_model import (  # noqa: E402
    LOOKUP_REQUIREMENTS,
    MODEL_FILE,
    code_paths,
    lookup_model_config,
    lookup_signature,
    save_classifier,
)
from utils.features.skew import timed_ms  # noqa: E402
from utils.features.training_sets import MODEL_FEATURES, fit_on, label_events  # noqa: E402
from utils.features.transactions import (  # noqa: E402
    CUSTOMER_KEY,
    activity_snapshots,
    make_bank,
    new_customers,
    profile_rows,
)
from utils.serving import score_model, serve_model  # noqa: E402
from utils.tracking import setup_mlflow  # noqa: E402


def build_store(folder: Path, customers: int, days: int):
    bank = make_bank(customers, days)
    activity = activity_snapshots(bank)
    profile = pd.concat([profile_rows(bank), new_customers(bank)], ignore_index=True)
    for name, frame in (("profile", profile), ("activity", activity)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        frame.to_parquet(folder / name / "part-0.parquet", index=False)
    store = open_store(folder / "repo")
    repo = define_features(str(folder / "profile"), str(folder / "activity"))
    store.apply(repo.objects)
    return bank, store, len(activity) + len(profile)


def interleaved_ms(calls: dict, n: int) -> dict[str, np.ndarray]:
    """Milliseconds per call, the calls taking turns, so that a busy machine slows each alike."""
    for call in calls.values():
        timed_ms(call, 1, warmup=5)
    times = {name: [] for name in calls}
    for _ in range(n):
        for name, call in calls.items():
            times[name].append(float(timed_ms(call, 1, warmup=0)[0]))
    return {name: np.asarray(values) for name, values in times.items()}


def plain_model_class():
    """The same classifier without lookups: every feature arrives in the request."""
    import mlflow

    class PlainChurnModel(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            self.classifier = mlflow.sklearn.load_model(context.artifacts["classifier"])

        def predict(self, context, model_input, params=None):
            out = pd.DataFrame({CUSTOMER_KEY: model_input[CUSTOMER_KEY].to_numpy()})
            out["churn_probability"] = self.classifier.predict_proba(model_input[MODEL_FEATURES])[
                :, 1
            ]
            return out

    return PlainChurnModel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    import mlflow

    load_at_start = os.getloadavg()[0]
    setup_mlflow("benchmark_feature_lookups")
    folder = Path(tempfile.mkdtemp(prefix="feature-lookups-"))
    bank, store, source_rows = build_store(folder, args.customers, args.days)
    service = store.get_feature_service(FEATURE_SERVICE)

    start = time.perf_counter()
    store.materialize(start_date=bank.day(0), end_date=pd.Timestamp.now(tz="UTC"))
    materialize_s = time.perf_counter() - start
    entities = args.customers + len(new_customers(bank))

    staying = bank.customers[bank.customers["churn_day"] < 0]
    keys = staying[CUSTOMER_KEY].sample(100, random_state=0).tolist()
    rotating = itertools.cycle(keys)  # a different key each call: no cache can help
    one = timed_ms(
        lambda: store.get_online_features(
            features=service, entity_rows=[{CUSTOMER_KEY: next(rotating), "num_products": 1}]
        ),
        args.requests * 2,
    )
    hundred = timed_ms(
        lambda: store.get_online_features(
            features=service, entity_rows=[{CUSTOMER_KEY: k, "num_products": 1} for k in keys]
        ),
        max(args.requests // 5, 20),
    )

    labels = label_events(bank, 45, args.days - 45, per_customer=1)
    training = store.get_historical_features(entity_df=labels, features=service).to_df()
    fitted = fit_on("point-in-time", training)
    artifacts = save_classifier(fitted.pipeline, folder)
    requirements = pinned_requirements(*LOOKUP_REQUIREMENTS)
    with mlflow.start_run(run_name="benchmark"):
        lookup_uri = mlflow.pyfunc.log_model(
            name="lookup",
            python_model=str(MODEL_FILE),
            artifacts=artifacts,
            code_paths=code_paths(),
            model_config=lookup_model_config(folder / "repo"),
            signature=lookup_signature(),
            pip_requirements=requirements,
        ).model_uri
        plain_uri = mlflow.pyfunc.log_model(
            name="plain",
            python_model=plain_model_class(),
            artifacts=artifacts,
            pip_requirements=requirements,
        ).model_uri

    key_request = pd.DataFrame({CUSTOMER_KEY: [keys[0]], "num_products": [1]})
    in_process = mlflow.pyfunc.load_model(lookup_uri)
    plain_in_process = mlflow.pyfunc.load_model(plain_uri)
    # The plain model gets in the request exactly what the lookup model looks up.
    looked_up = in_process.predict(key_request)
    full_request = looked_up.assign(num_products=1)[[CUSTOMER_KEY, *MODEL_FEATURES]]
    local = interleaved_ms(
        {
            "plain": lambda: plain_in_process.predict(full_request),
            "lookup": lambda: in_process.predict(key_request),
        },
        args.requests,
    )
    with (
        serve_model(plain_uri, name="bench-plain") as plain_server,
        serve_model(lookup_uri, name="bench-lookup") as lookup_server,
    ):
        served = interleaved_ms(
            {
                "plain": lambda: score_model(plain_server.url, full_request),
                "lookup": lambda: score_model(lookup_server.url, key_request),
            },
            args.requests,
        )

    p50 = {name: float(np.median(times)) for name, times in served.items()}
    in_process_lookup = local["lookup"]
    figures = {
        "lookup_p50_ms_1key": round(float(np.median(one)), 3),
        "lookup_p99_ms_1key": round(float(np.percentile(one, 99)), 3),
        "lookup_p50_ms_100keys": round(float(np.median(hundred)), 3),
        "lookup_p99_ms_100keys": round(float(np.percentile(hundred, 99)), 3),
        "inprocess_lookup_model_p50_ms": round(float(np.median(in_process_lookup)), 3),
        "inprocess_plain_model_p50_ms": round(float(np.median(local["plain"])), 3),
        "inprocess_lookup_overhead_ms": round(
            float(np.median(in_process_lookup) - np.median(local["plain"])), 3
        ),
        "served_p50_ms_without_lookups": round(p50["plain"], 3),
        "served_p50_ms_with_lookups": round(p50["lookup"], 3),
        "served_lookup_overhead_ms": round(p50["lookup"] - p50["plain"], 3),
        "served_lookup_goal_met": bool(p50["lookup"] - p50["plain"] <= 5.0),
        "materialize_s": round(materialize_s, 2),
        "materialize_rows_per_s": round(source_rows / materialize_s),
        "materialize_entities_per_s": round(entities / materialize_s),
        "customers": args.customers,
        "source_rows": source_rows,
    }
    rows = [
        ["online lookup, 1 key (in process)", *np.percentile(one, [50, 99]).round(2)],
        ["online lookup, 100 keys (in process)", *np.percentile(hundred, [50, 99]).round(2)],
        [
            "plain model predict, all features (in process)",
            *np.percentile(local["plain"], [50, 99]).round(2),
        ],
        [
            "lookup model predict, 1 key (in process)",
            *np.percentile(in_process_lookup, [50, 99]).round(2),
        ],
        ["served, all features in the request", *np.percentile(served["plain"], [50, 99]).round(2)],
        [
            "served, key + request feature (lookups)",
            *np.percentile(served["lookup"], [50, 99]).round(2),
        ],
    ]
    notes = [
        f"Load average when the run started: {load_at_start:.1f} on {os.cpu_count()} cores "
        "(other work shares this machine); the two models are timed taking turns.",
        f"Materialization read {source_rows:,} offline rows and wrote {entities:,} customers "
        f"per view in {materialize_s:.1f} s.",
        "Goal: lookups add at most 5 ms p50 for one key to the served model: "
        + ("met." if figures["served_lookup_goal_met"] else "NOT met on this run."),
        "Where the added time goes: the Feast read is the `online lookup, 1 key` row; the rest "
        "is turning its answer into columns, building the classifier's frame, and a larger "
        "response (the lookup model's answer lists the features it used).",
    ]
    write_results("feature_lookups", ["what", "p50 ms", "p99 ms"], rows, figures, notes)
    shutil.rmtree(folder, ignore_errors=True)  # the generated tables and the feature store


if __name__ == "__main__":
    main()
