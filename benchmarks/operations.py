"""Operations (chapter 12): shadow mode, canary rollback rates, and the cost of /metrics.

In one run on this machine:
  (a) the same fixed one-row requests to the router with shadow off and on (one client):
      byte-identical answers, p50 of each; then with a challenger that raises and one that
      sleeps past its timeout: answers and statuses unchanged;
  (b) the canary controller, in process over the same router code, >= 20 runs with a good
      challenger (a retrain) and >= 20 with a bad one (label inverted): how often each is
      rolled back;
  (c) requests per second at 8 clients with and without `/metrics`, and a scrape parsed by
      prometheus_client's own parser.
Writes benchmarks/results/operations.{md,json}.

    MLDEPLOY_WORK_DIR=/tmp/bench-ops .venv/bin/python benchmarks/operations.py [--runs 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mlflow  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.common import write_results  # noqa: E402
from utils.abtest.experiment import log_router  # noqa: E402
from utils.abtest.router import REQUEST_ID  # noqa: E402
from utils.datasets import CHURN_FEATURES, CHURN_LABEL, make_churn  # noqa: E402
from utils.env import work_path  # noqa: E402
from utils.operations import canary, metrics  # noqa: E402
from utils.operations.alias_history import move_alias  # noqa: E402
from utils.serving import build_payload, serve_model  # noqa: E402
from utils.serving.loadtest import run_load  # noqa: E402
from utils.tracking import CHALLENGER, get_aliases, register_model, setup_mlflow  # noqa: E402
from utils.training import ensure_champion, log_churn_model, train_churn_model  # noqa: E402

MODEL = "bank_churn_ops_bench"


class Raising(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        raise RuntimeError("the challenger is broken")


class Sleeping(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        time.sleep(1.0)
        return pd.Series([0] * len(model_input), name="prediction")


def register(model=None, seed=0, invert=False) -> int:
    with mlflow.start_run():
        if model is None:
            data = make_churn(5_000, seed=seed)
            if invert:
                data[CHURN_LABEL] = 1 - data[CHURN_LABEL]
            info = log_churn_model(train_churn_model(data))
        else:
            example = make_churn(3, seed=1)[CHURN_FEATURES]
            info = mlflow.pyfunc.log_model(
                name="model", python_model=model, input_example=example,
                pip_requirements=["mlflow", "pandas"],
            )  # fmt: skip
    return int(register_model(info.model_uri, MODEL).version)


def router_with(challenger: int) -> str:
    move_alias(MODEL, CHALLENGER, challenger, actor="benchmark", reason="set up")
    with mlflow.start_run():
        info = log_router(MODEL, {"champion": 100, "challenger": 0})
    return info.model_uri


def shadow_section(requests: int):
    traffic = make_churn(requests, seed=77)
    traffic[REQUEST_ID] = [f"bench-{i}" for i in range(requests)]
    bodies = [build_payload(traffic.iloc[[i]][[*CHURN_FEATURES, REQUEST_ID]])[0]
              for i in range(requests)]  # fmt: skip
    logs = work_path("bench_ops_logs")
    rows, figures = [], {}
    reference = None
    for label, challenger in (("good", GOOD), ("raising", RAISING), ("sleeping", SLEEPING)):
        uri = router_with(challenger)
        for shadow_on in ((False, True) if label == "good" else (True,)):
            config = {"log_dir": str(logs / f"{label}-{shadow_on}")}
            if shadow_on:
                config["shadow"] = {"share": 0.5 if label != "good" else 0.2, "timeout_ms": 50}
            with serve_model(uri, model_config=config, name=f"ops-{label}") as server:
                load = run_load(server.invocations_url, bodies, requests=requests, warmup=20,
                                keep_answers=True)  # fmt: skip
            answers = load.answers
            reference = answers if reference is None else reference
            identical = sum(a == b for a, b in zip(answers, reference, strict=True))
            rows.append([label, shadow_on, round(load.percentile(50), 3),
                         round(load.percentile(99), 3), dict(load.statuses), identical])
            state = "on" if shadow_on else "off"
            figures[f"p50_ms_{label}_{state}"] = round(load.percentile(50), 3)
            figures[f"identical_{label}_{state}"] = identical
            figures[f"non_200_{label}_{state}"] = sum(
                n for status, n in load.statuses.items() if status != 200
            )
    delta = figures["p50_ms_good_on"] - figures["p50_ms_good_off"]
    figures["shadow_p50_delta_ms"] = round(delta, 3)
    figures["shadow_identical_responses"] = min(v for k, v in figures.items()
                                                 if k.startswith("identical_"))  # fmt: skip
    figures["shadow_requests"] = requests
    return rows, figures


def canary_section(runs: int, window: int):
    policy = canary.CanaryPolicy(window=window)
    outcomes = {"good": [], "bad": []}
    for label, challenger in (("good", GOOD), ("bad", BAD)):
        uri = router_with(challenger)
        weights = work_path("bench_ops", f"{label}-weights.json")
        router = mlflow.pyfunc.load_model(uri, model_config={"weights_file": str(weights)})
        for run in range(runs):
            live = make_churn(window * len(policy.steps), seed=10_000 + run)
            live[REQUEST_ID] = [f"{label}-{run}-{i}" for i in range(len(live))]
            truth = live.set_index(REQUEST_ID)[CHURN_LABEL]
            traffic = canary.RouterTraffic(live[[*CHURN_FEATURES, REQUEST_ID]], weights,
                                           model=router)  # fmt: skip
            controller = canary.CanaryController(
                MODEL, traffic, policy, labels=canary.labels_after_delay(truth, window)
            )
            result = controller.run()
            outcomes[label].append(result)
            move_alias(MODEL, "champion", CHAMPION_V, actor="benchmark", reason="reset")
    rows = [[label, len(results), sum(r.outcome == "rolled_back" for r in results),
             pd.Series([r.step for r in results if r.outcome == "rolled_back"]).value_counts()
             .to_dict()] for label, results in outcomes.items()]  # fmt: skip
    figures = {
        "canary_runs_each": runs,
        "canary_bad_rolled_back_rate": np.mean(
            [r.outcome == "rolled_back" for r in outcomes["bad"]]
        ),
        "canary_good_false_rollback_rate": np.mean(
            [r.outcome == "rolled_back" for r in outcomes["good"]]
        ),
    }
    return rows, figures


def metrics_section(seconds: float):
    uri = router_with(GOOD)
    body = build_payload(make_churn(1, seed=3)[CHURN_FEATURES])[0]
    rps = {False: [], True: []}
    scraped = ""
    for _ in range(2):  # alternate, so a change in machine load hits both
        for with_metrics in (False, True):
            with serve_model(uri, metrics=with_metrics, name="ops-metrics") as server:
                load = run_load(server.invocations_url, body, concurrency=8, seconds=seconds,
                                warmup=10)  # fmt: skip
                rps[with_metrics].append(load.rps)
                if with_metrics:
                    scraped = metrics.scrape(server.url)
    parsed = metrics.parse_metrics(scraped)
    ratio = float(np.mean(rps[True]) / np.mean(rps[False]))
    rows = [["without /metrics", round(float(np.mean(rps[False])), 1)],
            ["with /metrics", round(float(np.mean(rps[True])), 1)]]  # fmt: skip
    return rows, {"metrics_rps_ratio": round(ratio, 3), "metrics_series_parsed": len(parsed)}


def main() -> None:
    global GOOD, BAD, RAISING, SLEEPING, CHAMPION_V
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    setup_mlflow("benchmark_operations")
    ensure_champion(MODEL)
    CHAMPION_V = get_aliases(MODEL)["champion"]
    GOOD, BAD = register(seed=1201), register(seed=1202, invert=True)
    RAISING, SLEEPING = register(Raising()), register(Sleeping())
    shadow_rows, shadow_figures = shadow_section(args.requests)
    canary_rows, canary_figures = canary_section(args.runs, args.window)
    metric_rows, metric_figures = metrics_section(args.seconds)
    rows = [["shadow", *r] for r in shadow_rows]
    rows += [["canary", r[0], f"{r[2]}/{r[1]} rolled back", f"steps {r[3]}", "", ""]
             for r in canary_rows]  # fmt: skip
    rows += [["metrics 8 clients", r[0], f"{r[1]} rps", "", "", ""] for r in metric_rows]
    write_results(
        "operations",
        ["section", "case", "p50 ms / result", "p99 ms", "statuses", "identical answers"],
        rows,
        {**shadow_figures, **canary_figures, **metric_figures},
        notes=[
            f"shadow: {args.requests} fixed one-row requests, one client; the good challenger "
            "mirrors 20 %, the raising and sleeping (1 s, timeout 50 ms) ones 50 %",
            f"canary: {args.runs} runs each, steps 5/25/50/100 %, {args.window} requests per "
            "step, labels one window late, in process through the router's weights file",
            f"metrics: {args.seconds} s per server at 8 clients, twice each, alternating",
        ],
    )


if __name__ == "__main__":
    main()
