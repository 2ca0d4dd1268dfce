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
import sysconfig
import time
from collections import defaultdict
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import numpy as np

# Run as a script, this folder is on sys.path, not the repository root: add it, so
# `benchmarks.common` and `utils` import.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine_info, write_json  # noqa: E402
from utils.abtest.experiment import log_router  # noqa: E402
from utils.abtest.router import REQUEST_ID  # noqa: E402
from utils.datasets import CHURN_FEATURES, make_churn  # noqa: E402
from utils.serving import build_payload, serve_model  # noqa: E402
from utils.serving.loadtest import run_load  # noqa: E402
from utils.tracking import model_uri, setup_mlflow
from utils.training import ensure_champion  # noqa: E402

MODEL = "bank_churn"
CONCURRENCY = (1, 8, 32)
# uvicorn without uvloop and httptools, as with a plain `pip install uvicorn` (read by uvicorn's
# command and by utils.serving.guard alike)
ASYNCIO_H11 = {"UVICORN_LOOP": "asyncio", "UVICORN_HTTP": "h11"}


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


def asgi_caller(app, body: bytes):
    """One POST /invocations through an ASGI app in this process: everything a served request
    does except the HTTP bytes, the socket and the client."""
    import asyncio

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/invocations",
        "raw_path": b"/invocations",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }

    async def once() -> None:
        delivered = asyncio.Event()
        answer: list[dict] = []

        async def receive():
            if not delivered.is_set():
                delivered.set()
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)  # the client never leaves mid-request

        async def send(message):
            answer.append(message)

        await app(dict(scope), receive, send)
        assert answer[0]["status"] == 200, answer

    import uvloop

    loop = uvloop.new_event_loop()
    return lambda: loop.run_until_complete(once())


IN_PROCESS_LAYERS = (  # each includes the one before; their differences are what a layer adds
    "model predict (scikit-learn)",
    "in-process pyfunc predict",
    "all of MLflow's invocations()",
    "MLflow's ASGI app, no HTTP",
)


def profile_one_request(
    uri: str, row, body: bytes, columnar_body: bytes
) -> tuple[dict[str, float], dict[str, float], str]:
    """Where the time of one request goes inside MLflow's scoring server, step by step, and
    through the ASGI layers above it (without HTTP): median per step, and median of what each
    layer adds over the one below, paired within a round."""
    import mlflow
    from mlflow.models.utils import _enforce_schema
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model(uri)
    schema = model.metadata.get_input_schema()
    parsed = scoring_server._parse_json_data(body, model.metadata, schema).data
    enforced = _enforce_schema(parsed, schema)
    prediction = model._model_impl.predict(enforced)
    mlflow_app = scoring_server.init(model)
    n = 600
    steps = {
        "parse JSON into a DataFrame": lambda: scoring_server._parse_json_data(
            body, model.metadata, schema
        ),
        "enforce the signature": lambda: _enforce_schema(parsed, schema),
        "model predict (scikit-learn)": lambda: model._model_impl.predict(enforced),
        "in-process pyfunc predict": lambda: model.predict(row),
        "write the JSON answer": lambda: scoring_server.predictions_to_json(
            prediction, io.StringIO()
        ),
        "all of MLflow's invocations()": lambda: scoring_server.invocations(
            body, "application/json", model, schema
        ),
        "the same for the `inputs` payload": lambda: scoring_server.invocations(
            columnar_body, "application/json", model, schema
        ),
        "MLflow's ASGI app, no HTTP": asgi_caller(mlflow_app, body),
    }
    # Interleaved rounds, median of round medians: neighbouring layers differ by tenths of a
    # millisecond, less than the drift between two long back-to-back measurements.
    rounds: dict[str, list[float]] = defaultdict(list)
    for _ in range(6):
        for name, fn in steps.items():
            rounds[name].append(float(np.median(timed(fn, n // 6))))
    figures = {name: float(np.median(values)) for name, values in rounds.items()}
    adds = {
        upper: float(np.median(np.subtract(rounds[upper], rounds[lower])))
        for lower, upper in pairwise(IN_PROCESS_LAYERS)
    }
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(200):
        scoring_server.invocations(body, "application/json", model, schema)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(18)
    # file names relative to where they are installed: no machine's paths in the results
    listing = text.getvalue()
    for root in sorted(
        {sysconfig.get_paths()[k] for k in ("purelib", "platlib", "stdlib")}, key=len, reverse=True
    ):
        listing = listing.replace(root + os.sep, "")
    lines = [ln for ln in listing.splitlines() if ln.strip()]
    return figures, adds, "\n".join(lines[:40])


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
    # The same row as `inputs` (columnar), measured at one client for the two main servers:
    # MLflow parses it without casting column by column (see the request steps below).
    columnar_bodies = {
        "serve_model, 2 workers": build_payload(row, format="inputs")[0],
        "router, 2 workers": [
            build_payload(row.assign(**{REQUEST_ID: f"bench-{i}"}), format="inputs")[0]
            for i in range(1000)
        ],
    }

    in_process = mlflow.pyfunc.load_model(champion_uri)
    configs = {
        "mlflow models serve, 1 worker": dict(guard=False, workers=1),
        "mlflow models serve, 1 worker, asyncio + h11": dict(
            guard=False, workers=1, env=ASYNCIO_H11
        ),
        "mlflow models serve, 2 workers": dict(guard=False, workers=2),
        "mlflow models serve, 2 workers, asyncio + h11": dict(
            guard=False, workers=2, env=ASYNCIO_H11
        ),
        "serve_model, 1 worker": dict(workers=1),
        "serve_model, 2 workers": dict(workers=2),
        "serve_model, 2 workers, asyncio + h11": dict(workers=2, env=ASYNCIO_H11),
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
                if label in columnar_bodies:
                    result = run_load(
                        server.invocations_url,
                        columnar_bodies[label],
                        concurrency=1,
                        requests=args.requests_c1,
                    )
                    into = pooled[(f"{label}, inputs payload", 1)]
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
    steps, layer_adds, profile_text = profile_one_request(
        champion_uri, row, body, columnar_bodies["serve_model, 2 workers"]
    )

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
        "served_p50_ms_c1_inputs": by[("serve_model, 2 workers, inputs payload", 1)]["p50_ms"],
        "p50_overhead_ms_c1_inputs": round(
            by[("serve_model, 2 workers, inputs payload", 1)]["p50_ms"] - p(inprocess, 50), 2
        ),
        "rps_c8": by[("serve_model, 2 workers, micro-batch", 8)]["rps"],
        "rps_c8_no_batching": by[("serve_model, 2 workers", 8)]["rps"],
        "rps_c32": by[("serve_model, 2 workers, micro-batch", 32)]["rps"],
        "micro_batch_p50_ms_c1": by[("serve_model, 2 workers, micro-batch", 1)]["p50_ms"],
        "router_p50_ms_c1": by[("router, 2 workers", 1)]["p50_ms"],
        "router_overhead_ratio": round(
            by[("router, 2 workers", 1)]["p50_ms"] / served["p50_ms"], 3
        ),
        "router_overhead_ratio_inputs": round(
            by[("router, 2 workers, inputs payload", 1)]["p50_ms"]
            / by[("serve_model, 2 workers, inputs payload", 1)]["p50_ms"],
            3,
        ),
        "router_rps_c8": by[("router, 2 workers, micro-batch", 8)]["rps"],
        "stock_1_worker_p50_ms_c1": by[("mlflow models serve, 1 worker", 1)]["p50_ms"],
        "stock_2_workers_p50_ms_c1": by[("mlflow models serve, 2 workers", 1)]["p50_ms"],
        "stock_2_workers_rps_c8": by[("mlflow models serve, 2 workers", 8)]["rps"],
        "asyncio_h11_p50_ms_c1": by[("serve_model, 2 workers, asyncio + h11", 1)]["p50_ms"],
        "asyncio_h11_rps_c8": by[("serve_model, 2 workers, asyncio + h11", 8)]["rps"],
        "stock_1_worker_asyncio_h11_p50_ms_c1": by[
            ("mlflow models serve, 1 worker, asyncio + h11", 1)
        ]["p50_ms"],
        "stock_2_workers_asyncio_h11_p50_ms_c1": by[
            ("mlflow models serve, 2 workers, asyncio + h11", 1)
        ]["p50_ms"],
        "new_connection_p50_ms_c1": by[("new connection per request", 1)]["p50_ms"],
        "mlflow_invocations_p50_ms": round(steps["all of MLflow's invocations()"], 2),
        "mlflow_asgi_app_p50_ms": round(steps["MLflow's ASGI app, no HTTP"], 2),
        # the same app and uvicorn with and without the guard, one worker, one client
        "guard_adds_ms_c1": round(
            by[("serve_model, 1 worker", 1)]["p50_ms"]
            - by[("mlflow models serve, 1 worker", 1)]["p50_ms"],
            2,
        ),
    }
    machine = {
        **machine_info(),
        "uvicorn": __import__("uvicorn").__version__,
        "uvloop": __import__("uvloop").__version__,
        "httptools": __import__("httptools").__version__,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "rounds": args.rounds,
    }
    when = datetime.now(UTC).isoformat(timespec="seconds")
    write_json(
        "serving_latency",
        figures,
        machine,
        load=rows,
        request_steps_ms=steps,
        layer_adds_ms=layer_adds,
    )
    plot(rows, figures)
    write_markdown(rows, figures, steps, layer_adds, profile_text, machine, when)
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
    for axis, ylabel, title in (
        (left, "p50 latency (ms)", "one-row request latency"),
        (right, "requests per second", "throughput"),
    ):
        axis.set(xscale="log", xlabel="concurrent clients", ylabel=ylabel, title=title)
        axis.set_xticks(list(CONCURRENCY), [str(c) for c in CONCURRENCY])
    left.set_yscale("log")
    right.axhline(300, color="grey", linewidth=1, linestyle=":")
    right.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(RESULTS / "serving_latency.png", dpi=110)


def goal_lines(figures: dict) -> str:
    """The issue's three goals against this run's figures."""
    goals = [
        (
            "server adds at most 2 ms p50 over in-process predict, one client "
            "(`dataframe_split` / `inputs` payload)",
            f"{figures['p50_overhead_ms_c1']} / {figures['p50_overhead_ms_c1_inputs']} ms",
            (figures["p50_overhead_ms_c1"] <= 2, figures["p50_overhead_ms_c1_inputs"] <= 2),
        ),
        (
            "at least 300 requests/s at 8 clients (micro-batching / without)",
            f"{figures['rps_c8']} / {figures['rps_c8_no_batching']}",
            (figures["rps_c8"] >= 300, figures["rps_c8_no_batching"] >= 300),
        ),
        (
            "router at most 15 % over the champion served alone, one client "
            "(`dataframe_split` / `inputs`)",
            f"{(figures['router_overhead_ratio'] - 1) * 100:.0f} / "
            f"{(figures['router_overhead_ratio_inputs'] - 1) * 100:.0f} %",
            (
                figures["router_overhead_ratio"] <= 1.15,
                figures["router_overhead_ratio_inputs"] <= 1.15,
            ),
        ),
    ]
    lines = ["| goal | measured | met |", "|---|---|---|"]
    for goal, measured, met in goals:
        lines.append(f"| {goal} | {measured} | {' / '.join('yes' if m else 'no' for m in met)} |")
    return "\n".join(lines)


def write_markdown(rows, figures, steps, layer_adds, profile_text, machine, when) -> None:
    by = {(r["server"], r["concurrency"]): r for r in rows}
    layers = [
        ("model predict alone (scikit-learn, no MLflow)", "model predict (scikit-learn)"),
        ("in-process pyfunc `predict` (signature + model): the floor", "in-process pyfunc predict"),
        (
            "MLflow's `invocations()`: parse the JSON, predict, write the answer",
            "all of MLflow's invocations()",
        ),
        (
            "MLflow's ASGI app without HTTP: FastAPI, its timeout middleware, the thread hop",
            "MLflow's ASGI app, no HTTP",
        ),
    ]
    layer_lines = [
        f"| {label} | {steps[step]:.2f} | "
        f"{'' if step not in layer_adds else f'{layer_adds[step]:+.2f}'} |"
        for label, step in layers
    ]
    served_adds = figures["served_p50_ms_c1"] - steps["MLflow's ASGI app, no HTTP"]
    layer_lines.append(
        f"| served over HTTP to one keep-alive client (2 workers; load run) | "
        f"{figures['served_p50_ms_c1']:.2f} | {served_adds:+.2f} |"
    )
    step_lines = "\n".join(
        f"| {name} | {ms:.2f} |"
        for name, ms in steps.items()
        if name not in IN_PROCESS_LAYERS[1:] or name == "all of MLflow's invocations()"
    )
    figure_lines = "\n".join(f"| `{k}` | {v} |" for k, v in figures.items())
    no_uvloop = by[("serve_model, 2 workers, asyncio + h11", 1)]
    text = f"""# Serving latency

Measured {when} on {machine["cores"]} cores ({machine["platform"]}), MLflow {machine["mlflow"]},
uvicorn {machine["uvicorn"]} with uvloop {machine["uvloop"]} and httptools
{machine["httptools"]}. Load average before/after: {machine["load_average_before"]} /
{machine["load_average_after"]}. Every server was measured in {machine["rounds"]} short turns
spread over the run and the turns pooled, so drift on a shared machine hits all alike; all
servers stay up during the run (idle ones cost the measured one ~0.1 ms).

One-row churn request, `dataframe_split` unless the row says `inputs`, keep-alive clients,
{CONCURRENCY} clients.

## Goals

{goal_lines(figures)}

## Key figures

| figure | value |
|---|---|
{figure_lines}

## All runs

{table(rows)}

![latency and throughput](serving_latency.png)

## Where the time of one request goes (median ms)

Layer by layer in this process, in interleaved rounds: "adds" is the median over rounds of a
layer minus the one below it, measured side by side. The ASGI row also holds the test
harness's own event-loop calls, so HTTP's share (the last row, from the load run) is, if
anything, understated here:

| layer | ms | adds |
|---|---|---|
{chr(10).join(layer_lines)}

Inside MLflow's `invocations()`:

| step | ms |
|---|---|
{step_lines}

- **Parsing `dataframe_split` is the largest server cost.** MLflow builds the DataFrame, then
  casts it to the signature one column at a time (`cast_df_types_according_to_schema`: a pandas
  `astype` and a column assignment per column), and the pyfunc enforces the same signature
  again before predict. An `inputs` (columnar) payload skips the column-by-column cast:
  `invocations()` takes {steps["the same for the `inputs` payload"]:.2f} ms for it against
  {figures["mlflow_invocations_p50_ms"]:.2f} ms, and served p50 is
  {figures["served_p50_ms_c1_inputs"]} ms against {figures["served_p50_ms_c1"]} ms. Every
  format returns the same predictions (chapter 04 checks that).
- **MLflow's FastAPI app** (routing, the `BaseHTTPMiddleware` that enforces the request
  timeout, `asyncio.to_thread` for the model call) adds the next slice.
- **HTTP itself is small**: the socket round trip, httptools and the `http.client` client.
- The model's own predict stays the biggest part of a request: scikit-learn's per-call work on
  a one-row DataFrame (the ColumnTransformer selecting, validating and encoding columns), which
  costs about the same for 1 row as for 30. That is why micro-batching pays.

<details><summary>cProfile of 200 calls of MLflow's invocations()</summary>

```
{profile_text}
```
</details>

## What was changed, and what it bought (this run's numbers)

1. **uvloop and httptools** (`uvicorn[standard]` in the `serving` extra; uvicorn takes them
   over asyncio and h11 when installed, for `mlflow models serve` too). On a quiet machine
   the gain per request is small: 2 workers, one client, p50 {no_uvloop["p50_ms"]} ms with
   asyncio and h11, {figures["served_p50_ms_c1"]} ms with uvloop and httptools; 8 clients
   {figures["asyncio_h11_rps_c8"]} against {figures["rps_c8_no_batching"]} req/s. The large
   effect is on stock `mlflow models serve -w 2`: uvicorn creates its listening socket with
   protocol 0, asyncio then leaves Nagle's algorithm on (Kludex/uvicorn#3149) and every
   keep-alive request waits for a delayed ACK: p50
   {figures["stock_2_workers_asyncio_h11_p50_ms_c1"]} ms. uvloop sets TCP_NODELAY on accepted
   connections itself: {figures["stock_2_workers_p50_ms_c1"]} ms.
2. **Our own TCP listener** (`utils.serving.guard.tcp_listener`) closes the same stall where
   uvloop is missing (Windows, or a plain `pip install uvicorn`): `serve_model` with 2 workers
   on asyncio and h11 answers in {no_uvloop["p50_ms"]} ms.
3. **The guard skips its nesting scan when a body has fewer brackets than the limit.** The
   numpy scan cost about 0.2 ms on a one-row body. Now, one worker and one client, the same
   app and uvicorn with the guard minus without it: {figures["guard_adds_ms_c1"]:+.2f} ms
   (noise either way). Bodies that could nest too deep are still scanned in full.
4. **Micro-batching** (`serve_model(micro_batch=True)`): requests that arrive while the model
   is busy are scored in one `predict` call. At 8 clients {figures["rps_c8_no_batching"]}
   req/s without, {figures["rps_c8"]} with; at 32 clients {figures["rps_c32"]}. Nothing waits
   for a batch to fill, but the hand-off to the batching thread is not free (one client: p50
   {figures["micro_batch_p50_ms_c1"]} ms with it, {figures["served_p50_ms_c1"]} ms without),
   and a model whose answer depends on the other rows must not use it: so it is opt-in.
5. **The router does less per request.** It enforces the signature once and calls each
   variant's implementation directly. It answers with records (a list of dicts), which
   MLflow writes to JSON as they are; a DataFrame answer was first converted row by row
   (`DataFrame.to_dict`), about 0.15 ms of a one-row request. The variant table is computed
   at load, ids arrive as text from the signature, and the features are a view without the
   id column. In process, the router's `invocations()` went from about 0.55 ms over the
   champion's to about 0.3 ms; what is left is MLflow's PythonModel wrapper and an eleventh
   column to parse and check. Router p50 {figures["router_p50_ms_c1"]} ms against
   {figures["served_p50_ms_c1"]} ms for the champion alone.
6. **Keep-alive clients.** A new connection per request: p50
   {figures["new_connection_p50_ms_c1"]} ms, against {figures["served_p50_ms_c1"]} ms on a kept
   connection (`score_model` keeps one session per thread; `utils.loadtest` one connection per
   client).

Not changed: MLflow's scoring app itself (the issue rules out a new server). What is left
for `dataframe_split` is mostly its parse-time cast. Tried in process (MLflow 3.17.2, by
replacing `cast_df_types_according_to_schema` for the measurement only): one
`DataFrame.astype` mapping instead of a column at a time saves ~0.06 ms; skipping the cast
for plain scalar columns, which `predict` converts again when it enforces the signature,
saves ~0.6 ms and makes `dataframe_split` as cheap as `inputs`. That is an upstream change
(the per-column cost of signature enforcement is the open MLflow issue
https://github.com/mlflow/mlflow/issues/7948); a pure ASGI request timeout instead of
`BaseHTTPMiddleware` would be another.
"""
    (RESULTS / "serving_latency.md").write_text(text)


if __name__ == "__main__":
    main()
