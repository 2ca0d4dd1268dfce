"""Reliability of local serving, on loopback and bounded in time and count.

- load: concurrent clients for a fixed time against the served champion and the A/B router:
  no errors on valid input, servers still alive;
- bad input: more than 20 malformed requests, each answered with a 4xx whose message says what
  was wrong (no 5xx, no hang), and valid requests still answered afterwards;
- the router's traffic split over 2,000 requests within 3 points of the configured share.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import requests

from utils.abtest.experiment import log_router
from utils.abtest.router import REQUEST_ID
from utils.datasets import CHURN_FEATURES, make_churn
from utils.serving import build_payload, error_from_response, score_model, serve_model
from utils.serving.loadtest import run_load
from utils.tracking import model_uri, setup_mlflow
from utils.training import ensure_champion

pytestmark = pytest.mark.slow  # real servers under load for several seconds each

MODEL = "reliability_churn"
LOAD_SECONDS = 4.0
WEIGHTS = {"champion": 80, "challenger": 20}


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return make_churn(50, seed=7)[CHURN_FEATURES]


@pytest.fixture(scope="module")
def champion_server():
    setup_mlflow("reliability")
    ensure_champion(MODEL, with_challenger=True, size=2_000)
    with serve_model(model_uri(MODEL), workers=2, name="reliability-champion") as server:
        yield server


@pytest.fixture(scope="module")
def router_server(champion_server):
    import mlflow

    with mlflow.start_run(run_name="reliability-router"):
        router = log_router(MODEL, WEIGHTS)
    with serve_model(router.model_uri, workers=2, name="reliability-router") as server:
        yield server


def test_load_on_the_served_model(champion_server, rows):
    body, _ = build_payload(rows.head(1))
    result = run_load(champion_server.invocations_url, body, concurrency=8, seconds=LOAD_SECONDS)
    assert result.ok, result.summary()
    assert result.requests > 20
    assert champion_server.is_alive()


def test_load_on_the_router(router_server, rows):
    bodies = [
        build_payload(rows.iloc[[i % len(rows)]].assign(**{REQUEST_ID: f"load-{i}"}))[0]
        for i in range(200)
    ]
    result = run_load(router_server.invocations_url, bodies, concurrency=8, seconds=LOAD_SECONDS)
    assert result.ok, result.summary()
    assert result.requests > 20
    assert router_server.is_alive()


def _bad_requests(rows: pd.DataFrame) -> dict[str, tuple[bytes, str, str]]:
    """name -> (body, content type, words the error message must contain)."""
    good = json.loads(build_payload(rows.head(2))[0])
    columns = good["dataframe_split"]["columns"]
    first = good["dataframe_split"]["data"][0]

    def split(values, cols=columns) -> bytes:
        return json.dumps({"dataframe_split": {"columns": cols, "data": [values]}}).encode()

    def put(column, value) -> list:
        values = list(first)
        values[columns.index(column)] = value
        return values

    marker = 123456.789  # replaced in the text by tokens that JSON libraries refuse to write
    nan_body = split(put("Balance", marker)).replace(b"123456.789", b"NaN")
    inf_body = split(put("Balance", marker)).replace(b"123456.789", b"Infinity")
    overflow = split(put("Balance", marker)).replace(b"123456.789", b"1e999")
    js, csv = "application/json", "text/csv"
    return {
        "truncated JSON": (json.dumps(good).encode()[:50], js, "valid json"),
        "empty body": (b"", js, "valid json"),
        "not JSON": (b"hello model", js, "valid json"),
        "invalid UTF-8": (b'{"dataframe_split": "\xff\xfe"}', js, "utf-8"),
        "bare list (MLflow 1)": (b"[1, 2, 3]", js, "received a list"),
        "unknown key": (json.dumps({"data": good["dataframe_split"]}).encode(), js, "input fields"),
        "two format keys": (json.dumps({**good, "inputs": {}}).encode(), js, "exactly one"),
        "Azure input_data": (
            json.dumps({"input_data": good["dataframe_split"]}).encode(),
            js,
            "input fields",
        ),
        "missing column": (split(first[:-1], columns[:-1]), js, "missing inputs"),
        "unicode column name": (split(first, [*columns[:-1], "Éstimated☃"]), js, "missing inputs"),
        "string for number": (split(put("Age", "forty")), js, "column age"),
        "null for integer": (split(put("Age", None)), js, "column age"),
        "huge integer": (split(put("Age", 10**30)), js, "column age"),
        "list in a cell": (split(put("Age", [1, 2])), js, "column age"),
        "NaN": (nan_body, js, "nan"),
        "Infinity": (inf_body, js, "infinity"),
        "float overflow": (overflow, js, "infinity"),
        "row wider than columns": (
            json.dumps({"dataframe_split": {"columns": columns, "data": [[*first, 1]]}}).encode(),
            js,
            "split",
        ),
        "data not a list": (
            json.dumps({"dataframe_split": {"columns": columns, "data": "x"}}).encode(),
            js,
            "split",
        ),
        "records not a list": (b'{"dataframe_records": 5}', js, "list of records"),
        "nested junk": (b'{"dataframe_split": ' + b"[" * 5000 + b"]" * 5000 + b"}", js, "nests"),
        "20 MB body": (
            json.dumps(
                {"dataframe_split": {"columns": columns, "data": [first] * 350_000}}
            ).encode(),
            js,
            "at most 16 mb",
        ),
        "wrong content type": (json.dumps(good).encode(), "text/plain", "content types"),
        "MLflow 1 content type": (
            json.dumps(good).encode(),
            "application/json; format=pandas-split",
            "format",
        ),
        "latin-1 charset": (
            json.dumps(good).encode(),
            "application/json; charset=latin-1",
            "utf-8",
        ),
        "CSV garbage": (b'a,b\n1,2,3,4\n"', csv, "csv"),
        "CSV missing columns": (b"Age\n42\n", csv, "missing inputs"),
    }


def test_every_malformed_request_gets_a_4xx_that_says_why(champion_server, rows):
    cases = _bad_requests(rows)
    assert len(cases) >= 20
    answers = {}
    for name, (body, content_type, words) in cases.items():
        response = requests.post(
            champion_server.invocations_url,
            data=body,
            headers={"Content-Type": content_type},
            timeout=60,
        )
        error = error_from_response(response.status_code, response.content)
        answers[name] = (response.status_code, error.message[:200])
        assert 400 <= response.status_code < 500, (name, answers[name])
        assert words in error.message.lower(), (name, answers[name])
    assert answers["20 MB body"][0] == 413
    assert champion_server.is_alive()
    expected = score_model(champion_server.url, rows.head(5))["prediction"]
    assert len(expected) == 5  # valid requests are still answered afterwards


def test_router_split_over_2000_requests_is_within_3_points(router_server, rows):
    bodies = [
        build_payload(rows.iloc[[i % len(rows)]].assign(**{REQUEST_ID: f"split-{i}"}))[0]
        for i in range(2000)
    ]
    result = run_load(
        router_server.invocations_url,
        bodies,
        concurrency=8,
        requests=len(bodies),
        warmup=0,
        keep_answers=True,
    )
    assert result.ok and result.requests == 2000, result.summary()
    variants = pd.Series([json.loads(a)["predictions"][0]["variant"] for a in result.answers])
    shares = variants.value_counts(normalize=True)
    for variant, weight in WEIGHTS.items():
        configured = weight / sum(WEIGHTS.values())
        assert abs(shares[variant] - configured) <= 0.03, shares.to_dict()
