"""Serving latency: in-process predict vs MLflow's scoring server vs the A/B router.

Measures, in one run on this machine, for a one-row churn request:
  (a) in-process pyfunc `predict` (the floor a server adds to);
  (b) the scoring server: plain `mlflow models serve` and `utils.serving.serve_model` (guarded),
      1 and 2 workers, and 2 workers with micro-batching;
  (c) the A/B router model served the same way;
at concurrency 1, 8 and 32 with keep-alive clients (`utils.loadtest`), plus one request
profiled end to end. Writes benchmarks/results/serving_latency.{md,json,png}.

    MLDEPLOY_WORK_DIR=/tmp/bench .venv/bin/python benchmarks/serving_latency.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

# Run as a script, this folder comes first on sys.path, where sibling scripts could shadow real
# packages (a `packaging.py` here hides the `packaging` library MLflow imports): the repo instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from benchmarks.common import machine_info  # noqa: E402
from utils.datasets import CHURN_FEATURES, make_churn  # noqa: E402
from utils.loadtest import run_load  # noqa: E402
from utils.serving import build_payload, serve_model  # noqa: E402
from utils.tracking import ensure_champion, model_uri, setup_mlflow  # noqa: E402
from utils.traffic import REQUEST_ID, log_router  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "bank_churn"
CONCURRENCY = (1, 8, 32)


def timed(fn, n: int) -> np.ndarray:
    for _ in range(20):
        fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return np.asarray(out)


def http_caller(server, body: bytes, new_connection: bool = False):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port)
    headers = {"Content-Type": "application/json"}

    def call():
        nonlocal conn
        if new_connection:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", server.port)
        conn.request("POST", "/invocations", body, headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status

    return call


def profile_one_request(uri: str, body: bytes) -> tuple[dict[str, float], str]:
    """Where the time of one request goes inside MLflow's scoring server, step by step."""
    import mlflow
    from mlflow.models.utils import _enforce_schema
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model(uri)
    schema = model.metadata.get_input_schema()
    parsed = scoring_server._parse_json_data(body, model.metadata, schema).data
    enforced = _enforce_schema(parsed, schema)
    prediction = model._model_impl.predict(enforced)
    n = 300
    steps = {
        "parse JSON into a DataFrame": lambda: scoring_server._parse_json_data(
            body, model.metadata, schema
        ),
        "enforce the signature": lambda: _enforce_schema(parsed, schema),
        "model predict (scikit-learn)": lambda: model._model_impl.predict(enforced),
        "write the JSON answer": lambda: scoring_server.predictions_to_json(
            prediction, io.StringIO()
        ),
        "all of MLflow's invocations()": lambda: scoring_server.invocations(
            body, "application/json", model, schema
        ),
    }
    figures = {name: float(np.median(timed(fn, n))) for name, fn in steps.items()}
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(200):
        scoring_server.invocations(body, "application/json", model, schema)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(18)
    lines = [ln for ln in text.getvalue().splitlines() if ln.strip()]
    return figures, "\n".join(lines[:40])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="passes over every server")
    parser.add_argument("--seconds", type=float, default=1.5, help="per round, 8 and 32 clients")
    parser.add_argument("--requests-c1", type=int, default=100, help="per round, one client")
    args = parser.parse_args()
    load_before = os.getloadavg()

    import mlflow

    setup_mlflow("benchmark-serving")
    ensure_champion(MODEL, with_challenger=True)
    with mlflow.start_run(run_name="benchmark-router"):
        router = log_router(MODEL, {"champion": 90, "challenger": 10})
    champion_uri = model_uri(MODEL)
    row = make_churn(50, seed=1)[CHURN_FEATURES].head(1)
    body, _ = build_payload(row)
    router_bodies = [
        build_payload(row.assign(**{REQUEST_ID: f"bench-{i}"}))[0] for i in range(1000)
    ]

    in_process = mlflow.pyfunc.load_model(champion_uri)
    configs = {
        "mlflow models serve, 1 worker": dict(guard=False, workers=1),
        "mlflow models serve, 2 workers": dict(guard=False, workers=2),
        "serve_model, 1 worker": dict(workers=1),
        "serve_model, 2 workers": dict(workers=2),
        "serve_model, 2 workers, micro-batch": dict(workers=2, micro_batch=True),
    }
    rows, servers = [], {}
    try:
        for label, options in configs.items():
            servers[label] = serve_model(champion_uri, name="bench", **options)
        servers["router, 2 workers"] = serve_model(router.model_uri, workers=2, name="bench-r")
        servers["router, 2 workers, micro-batch"] = serve_model(
            router.model_uri, workers=2, micro_batch=True, name="bench-r"
        )
        direct = servers["serve_model, 2 workers"]
        # Other jobs share this machine and its load drifts: every server gets a short turn in
        # each of several rounds, so drift spreads over all of them alike; turns are pooled.
        pooled: dict = defaultdict(lambda: {"lat": [], "n": 0, "s": 0.0, "bad": 0})
        for round_ in range(args.rounds):
            print(f"round {round_ + 1}/{args.rounds}", flush=True)
            for label, call in (
                ("in process", lambda: in_process.predict(row)),
                ("new connection per request", http_caller(direct, body, new_connection=True)),
            ):
                latencies = timed(call, args.requests_c1)
                into = pooled[(label, 1)]
                into["lat"].extend(latencies)
                into["n"] += len(latencies)
                into["s"] += latencies.sum() / 1000
            for label, server in servers.items():
                bodies = router_bodies if label.startswith("router") else body
                for concurrency in CONCURRENCY:
                    bound = (
                        {"requests": args.requests_c1}
                        if concurrency == 1
                        else {"seconds": args.seconds}
                    )
                    result = run_load(
                        server.invocations_url, bodies, concurrency=concurrency, **bound
                    )
                    into = pooled[(label, concurrency)]
                    into["lat"].extend(result.latencies_ms)
                    into["n"] += result.requests
                    into["s"] += result.seconds
                    into["bad"] += result.summary()["non_2xx"] + len(result.errors)
        for (label, concurrency), into in pooled.items():
            lat = np.asarray(into["lat"])
            rows.append(
                {
                    "server": label,
                    "concurrency": concurrency,
                    "requests": into["n"],
                    "p50_ms": round(float(np.percentile(lat, 50)), 2),
                    "p95_ms": round(float(np.percentile(lat, 95)), 2),
                    "p99_ms": round(float(np.percentile(lat, 99)), 2),
                    "rps": round(into["n"] / into["s"], 1),
                    "errors": into["bad"],
                }
            )
            assert into["bad"] == 0, (label, concurrency, into["bad"])
    finally:
        for server in servers.values():
            server.stop()
    print("profiling one request ...", flush=True)
    steps, profile_text = profile_one_request(champion_uri, body)

    def p(values, q):
        return round(float(np.percentile(values, q)), 2)

    by = {(r["server"], r["concurrency"]): r for r in rows}
    inprocess = np.asarray(pooled[("in process", 1)]["lat"])
    served = by[("serve_model, 2 workers", 1)]
    figures = {
        "inprocess_p50_ms": p(inprocess, 50),
        "inprocess_p99_ms": p(inprocess, 99),
        "served_p50_ms_c1": served["p50_ms"],
        "p50_overhead_ms_c1": round(served["p50_ms"] - p(inprocess, 50), 2),
        "p99_ms_c1": served["p99_ms"],
        "rps_c8": by[("serve_model, 2 workers, micro-batch", 8)]["rps"],
        "rps_c8_no_batching": by[("serve_model, 2 workers", 8)]["rps"],
        "rps_c32": by[("serve_model, 2 workers, micro-batch", 32)]["rps"],
        "micro_batch_p50_ms_c1": by[("serve_model, 2 workers, micro-batch", 1)]["p50_ms"],
        "router_p50_ms_c1": by[("router, 2 workers", 1)]["p50_ms"],
        "router_overhead_ratio": round(
            by[("router, 2 workers", 1)]["p50_ms"] / served["p50_ms"], 3
        ),
        "router_rps_c8": by[("router, 2 workers, micro-batch", 8)]["rps"],
        "stock_1_worker_p50_ms_c1": by[("mlflow models serve, 1 worker", 1)]["p50_ms"],
        "stock_2_workers_p50_ms_c1": by[("mlflow models serve, 2 workers", 1)]["p50_ms"],
        "stock_2_workers_rps_c8": by[("mlflow models serve, 2 workers", 8)]["rps"],
        "new_connection_p50_ms_c1": by[("new connection per request", 1)]["p50_ms"],
        "mlflow_invocations_p50_ms": round(steps["all of MLflow's invocations()"], 2),
    }
    machine = {
        **machine_info(),
        "uvicorn": __import__("uvicorn").__version__,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "rounds": args.rounds,
    }
    when = datetime.now(UTC).isoformat(timespec="seconds")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serving_latency.json").write_text(
        json.dumps(
            {
                "figures": figures,
                "machine": machine,
                "when": when,
                "load": rows,
                "request_steps_ms": steps,
            },
            indent=2,
        )
    )
    plot(rows, figures)
    write_markdown(rows, figures, steps, profile_text, machine, when)
    print(table(rows))
    print(json.dumps(figures, indent=2))


def table(rows: list[dict]) -> str:
    lines = ["| server | clients | p50 ms | p95 ms | p99 ms | req/s |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['server']} | {r['concurrency']} | {r['p50_ms']} | {r['p95_ms']} | "
            f"{r['p99_ms']} | {r['rps']} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], figures: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    servers = list(dict.fromkeys(r["server"] for r in rows))
    for i, server in enumerate(servers):
        mine = [r for r in rows if r["server"] == server]
        x = [r["concurrency"] for r in mine]
        style = "--" if server.startswith("mlflow") else "-"
        left.plot(x, [r["p50_ms"] for r in mine], style, marker="o", color=f"C{i}", label=server)
        right.plot(x, [r["rps"] for r in mine], style, marker="o", color=f"C{i}", label=server)
    left.axhline(figures["inprocess_p50_ms"], color="black", linewidth=1, linestyle=":")
    left.text(1, figures["inprocess_p50_ms"] * 0.8, "in-process predict p50", fontsize=8)
    left.set(
        xscale="log",
        yscale="log",
        xlabel="concurrent clients",
        ylabel="p50 latency (ms)",
        title="one-row request latency",
        xticks=list(CONCURRENCY),
    )
    left.set_xticklabels([str(c) for c in CONCURRENCY])
    right.set(
        xscale="log",
        xlabel="concurrent clients",
        ylabel="requests per second",
        title="throughput",
        xticks=list(CONCURRENCY),
    )
    right.set_xticklabels([str(c) for c in CONCURRENCY])
    right.axhline(300, color="grey", linewidth=1, linestyle=":")
    right.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(RESULTS / "serving_latency.png", dpi=110)


def write_markdown(rows, figures, steps, profile_text, machine, when) -> None:
    one_worker = next(
        r["p50_ms"]
        for r in rows
        if r["server"] == "serve_model, 1 worker" and r["concurrency"] == 1
    )
    step_lines = "\n".join(f"| {name} | {ms:.2f} |" for name, ms in steps.items())
    figure_lines = "\n".join(f"| `{k}` | {v} |" for k, v in figures.items())
    text = f"""# Serving latency

Measured {when} on {machine["cores"]} cores ({machine["platform"]}), MLflow {machine["mlflow"]},
uvicorn {machine["uvicorn"]}. Load average before/after: {machine["load_average_before"]} /
{machine["load_average_after"]} (other jobs shared the machine: absolute numbers are noisy;
every server was measured in {machine["rounds"]} short turns spread over the run and the
turns pooled, so drift hits all alike).

One-row churn request (`dataframe_split`), keep-alive clients, {CONCURRENCY} clients.

## Key figures

| figure | value |
|---|---|
{figure_lines}

## All runs

{table(rows)}

![latency and throughput](serving_latency.png)

## Where the time of one request goes (inside MLflow's scoring server, median ms)

| step | ms |
|---|---|
{step_lines}

The model's own predict is most of a request: for this pipeline, scikit-learn's per-call work
(the ColumnTransformer selecting, validating and encoding columns of a one-row DataFrame), not
arithmetic; it costs about the same for 1 row as for 30, which is why micro-batching pays.
Parsing the JSON into a DataFrame comes next; signature enforcement and writing the answer are
small. The rest of a served request (served p50 {figures["served_p50_ms_c1"]} ms minus
MLflow's `invocations()` {figures["mlflow_invocations_p50_ms"]} ms, steps measured at another
moment of the same run) is HTTP, uvicorn, FastAPI's middleware, the thread hop and the client.

<details><summary>cProfile of 200 calls of MLflow's invocations()</summary>

```
{profile_text}
```
</details>

## What was changed, and what it bought (this run's numbers)

1. **TCP_NODELAY with several workers.** uvicorn {machine["uvicorn"]} binds the listening
   socket with protocol 0 when it runs several workers, and asyncio then leaves Nagle's
   algorithm on (Kludex/uvicorn#3149): each keep-alive request waits for a delayed ACK.
   At one client, `mlflow models serve -w 2`: p50 {figures["stock_2_workers_p50_ms_c1"]} ms
   (`-w 1`: {figures["stock_1_worker_p50_ms_c1"]} ms);
   `serve_model(workers=2)`, which creates the listener as a TCP socket
   (`utils.scoring_app.tcp_listener`): {figures["served_p50_ms_c1"]} ms.
2. **Micro-batching** (`serve_model(micro_batch=True)`): requests that arrive while the model
   is busy are scored in one `predict` call. For this pipeline the per-call cost dominates
   (column selection, encoding), so at 8 clients: {figures["rps_c8_no_batching"]} req/s
   without, {figures["rps_c8"]} req/s with; at 32 clients {figures["rps_c32"]} req/s.
   Nothing waits for a batch to fill, but the hand-off to the batching thread is not free: at
   one client p50 {figures["micro_batch_p50_ms_c1"]} ms with it, {figures["served_p50_ms_c1"]}
   ms without. That, and models whose answer depends on the batch, is why it is opt-in. The
   router behind micro-batching: {figures["router_rps_c8"]} req/s at 8 clients (its own
   per-call work is smaller, so it gains less).
3. **The router enforces the signature once.** It calls each variant's implementation
   directly after its own signature check, saving the second enforcement
   ({steps["enforce the signature"]:.2f} ms per request here). Router p50
   {figures["router_p50_ms_c1"]} ms vs {figures["served_p50_ms_c1"]} ms for the champion
   served alone: ratio {figures["router_overhead_ratio"]}.
4. **Keep-alive clients.** A new connection per request: p50
   {figures["new_connection_p50_ms_c1"]} ms, against {figures["served_p50_ms_c1"]} ms on a kept
   connection (`score_model` keeps one session per thread; `utils.loadtest` one connection per
   client).

Goals from the issue, on 2 shared cores: server overhead over in-process p50 at one client
<= 2 ms (measured {figures["p50_overhead_ms_c1"]} ms); >= 300 req/s at 8 clients (measured
{figures["rps_c8"]}); router overhead <= 15 % (measured
{(figures["router_overhead_ratio"] - 1) * 100:.0f} %). Read them against the load average
above: with other jobs on the same two cores, this process got a fraction of the CPU.

Not changed, and where the remaining overhead is: MLflow's `invocations()` takes
{figures["mlflow_invocations_p50_ms"]} ms in process against {figures["inprocess_p50_ms"]} ms
for the bare predict (parsing, signature, the pyfunc wrapper, writing the answer); the other
~{figures["served_p50_ms_c1"] - figures["mlflow_invocations_p50_ms"]:.1f} ms of a served
request are uvicorn, FastAPI's `BaseHTTPMiddleware` (MLflow's timeout middleware), the
`asyncio.to_thread` hop and the client. Those are MLflow's scoring app, which this project
serves as it is; the guard itself costs nothing measurable (`mlflow models serve -w 1`
{figures["stock_1_worker_p50_ms_c1"]} ms vs `serve_model` 1 worker
{one_worker} ms at one client).
"""
    (RESULTS / "serving_latency.md").write_text(text)


if __name__ == "__main__":
    main()
