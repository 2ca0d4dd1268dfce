"""utils.operations.metrics: counts, latencies, sizes and rejections around the guard; the
scrape in Prometheus' format, read back with prometheus_client's own parser."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry

from tests.asgi import asgi_request
from utils.abtest.experiment import read_inference_log
from utils.operations.metrics import ServingMetrics, parse_metrics, variant_label
from utils.serving.guard import ScoringGuard

pytestmark = pytest.mark.unit


async def router_app(scope, receive, send):
    """Stands in for MLflow's app serving the router: answers rows as the router does."""
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if b"bad" in body:
        answer, status = {"error_code": "BAD_REQUEST", "message": "column x is missing"}, 400
    else:
        answer, status = {"predictions": [{"prediction": 1, "variant": "challenger"}]}, 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


def call(app, path="/invocations", body=b"{}", token=None, method="POST"):
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    answer = asgi_request(app, body, headers, path=path, method=method)
    return answer.status, answer.body


@pytest.fixture
def served(tmp_path):
    metrics = ServingMetrics(registry=CollectorRegistry(), rejected_log_dir=tmp_path)
    guarded = ScoringGuard(metrics.endpoint(router_app), max_body_bytes=1000, token="s3cret")
    return metrics.recorder(guarded), tmp_path


def test_variant_label():
    assert variant_label(b'[{"variant": "champion"}, {"variant": "champion"}]') == "champion"
    assert variant_label(b'[{"variant": "a"}, {"variant": "b"}]') == "mixed"
    assert variant_label(b'{"predictions": [0, 1]}') == "none"


def test_requests_rejections_and_sizes_are_counted_and_scraped(served):
    app, log_dir = served
    for _ in range(3):
        assert call(app, token="s3cret")[0] == 200
    assert call(app, body=b'{"bad": 1}', token="s3cret")[0] == 400
    assert call(app)[0] == 401  # no token
    assert call(app, body=b"x" * 5000, token="s3cret")[0] == 413
    status, text = call(app, path="/metrics", token="s3cret", method="GET")
    assert status == 200
    values = parse_metrics(text.decode())
    assert values["mldeploy_requests_total{status=200,variant=challenger}"] == 3
    assert values["mldeploy_requests_total{status=401,variant=none}"] == 1
    assert values["mldeploy_rejected_requests_total{reason=UNAUTHENTICATED}"] == 1
    assert values["mldeploy_rejected_requests_total{reason=PAYLOAD_TOO_LARGE}"] == 1
    assert values["mldeploy_rejected_requests_total{reason=BAD_REQUEST}"] == 1
    assert values["mldeploy_request_latency_seconds_count{variant=challenger}"] == 3
    assert values["mldeploy_request_bytes_count"] == 6
    rejected = read_inference_log(log_dir)
    assert sorted(rejected["status"]) == [400, 401, 413]
    assert set(rejected["rejected_reason"]) == {
        "BAD_REQUEST", "UNAUTHENTICATED", "PAYLOAD_TOO_LARGE",
    }  # fmt: skip
    assert "column x is missing" in rejected["message"].tolist()


def test_a_scrape_without_the_token_is_refused_and_not_counted_as_traffic(served):
    app, _ = served
    status, body = call(app, path="/metrics", method="GET")
    assert status == 401 and b"Bearer" in body
    assert call(app, token="s3cret")[0] == 200  # traffic unaffected
