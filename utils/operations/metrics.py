"""Prometheus metrics for the scoring server, and a log of the requests it rejected.

Runs inside the server process (`utils.serving.guard.create_app` wires it in when
`serve_model(..., metrics=True)`): `ServingMetrics.recorder` wraps the guard, so it sees every
request, the guard's own rejections (401, 413, 400) included; `ServingMetrics.endpoint` sits
behind the guard and answers `GET /metrics`, so a server started with a token wants it there too.

Recorded per request to `/invocations`: a count by status and variant, the latency by variant
(histogram), request and response sizes (histograms), rows predicted by variant, and rejected
requests by reason (the `error_code` of the answer). The variant is read from the answer of
the A/B router ("none" for a plain model, "mixed" when one request was split). A rejected
(4xx) request is also appended to the inference log folder (`requests-<pid>-rejected.jsonl`,
read by `read_inference_log` with the answered ones), with its status and reason.

With several server workers each is its own process: prometheus_client's multiprocess mode
(`PROMETHEUS_MULTIPROC_DIR`, set by `serve_model`) lets one scrape add them up.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

METRICS_PATH = "/metrics"
INVOCATIONS_PATH = "/invocations"
_VARIANT = re.compile(rb'"variant":\s*"([^"\\]{1,64})"')
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SIZE_BUCKETS = tuple(256 * 4**i for i in range(9))  # 256 B .. 16 MB


def variant_label(body: bytes) -> str:
    """The variant named in a router answer: one name, "mixed", or "none"."""
    names = set(_VARIANT.findall(body[:65536]))
    if not names:
        return "none"
    return names.pop().decode() if len(names) == 1 else "mixed"


def rejection_reason(body: bytes) -> tuple[str, str]:
    """`error_code` and message of an MLflow-style error answer."""
    try:
        payload = json.loads(body[:65536])
        return str(payload.get("error_code", "UNKNOWN")), str(payload.get("message", ""))[:300]
    except (ValueError, AttributeError):
        return "UNKNOWN", body[:300].decode("utf-8", "replace")


class RejectedLog:
    """Appends one JSON line per rejected request to `<log_dir>/requests-<pid>-rejected.jsonl`."""

    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir)
        self._file = None
        self._pid = None

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None or self._pid != os.getpid():
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._pid = os.getpid()
            self._file = open(self.log_dir / f"requests-{self._pid}-rejected.jsonl", "a")  # noqa: SIM115
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()


class ServingMetrics:
    """The metrics of one server process and the two ASGI layers that fill and serve them."""

    def __init__(self, registry=None, rejected_log_dir: str | Path | None = None):
        from prometheus_client import REGISTRY, Counter, Histogram

        self.registry = registry or REGISTRY
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")) and registry is None
        kw = {"registry": self.registry}
        self.requests = Counter(
            "mldeploy_requests", "Scoring requests by HTTP status and variant",
            ["status", "variant"], **kw,
        )  # fmt: skip
        self.latency = Histogram(
            "mldeploy_request_latency_seconds", "Time to answer a scoring request",
            ["variant"], buckets=_LATENCY_BUCKETS, **kw,
        )  # fmt: skip
        self.request_bytes = Histogram(
            "mldeploy_request_bytes", "Request body size", buckets=_SIZE_BUCKETS, **kw
        )
        self.response_bytes = Histogram(
            "mldeploy_response_bytes", "Response body size", buckets=_SIZE_BUCKETS, **kw
        )
        self.rejected = Counter(
            "mldeploy_rejected_requests", "Requests answered 4xx, by error code", ["reason"], **kw
        )
        self.rejected_log = RejectedLog(rejected_log_dir) if rejected_log_dir else None

    def recorder(self, app):
        """ASGI layer (outermost): measure every request to /invocations."""

        async def record(scope, receive, send):
            if scope["type"] != "http" or scope["path"] != INVOCATIONS_PATH:
                await app(scope, receive, send)
                return
            start = time.perf_counter()
            seen = {"status": 500, "in": 0, "out": 0, "body": b""}

            async def counting_receive():
                message = await receive()
                seen["in"] += len(message.get("body", b""))
                return message

            async def capturing_send(message):
                if message["type"] == "http.response.start":
                    seen["status"] = message["status"]
                elif message["type"] == "http.response.body":
                    body = message.get("body", b"")
                    seen["out"] += len(body)
                    if len(seen["body"]) < 65536:
                        seen["body"] += body[:65536]
                await send(message)

            try:
                await app(scope, counting_receive, capturing_send)
            finally:
                self.observe(seen["status"], seen["in"], seen["out"], seen["body"],
                             time.perf_counter() - start)  # fmt: skip

        return record

    def observe(self, status: int, in_bytes: int, out_bytes: int, body: bytes, seconds: float):
        variant = variant_label(body) if status == 200 else "none"
        self.requests.labels(str(status), variant).inc()
        self.latency.labels(variant).observe(seconds)
        self.request_bytes.observe(in_bytes)
        self.response_bytes.observe(out_bytes)
        if 400 <= status < 500:
            code, message = rejection_reason(body)
            self.rejected.labels(code).inc()
            if self.rejected_log is not None:
                self.rejected_log.write({
                    "timestamp": datetime.now(UTC).isoformat(),
                    "status": status, "rejected_reason": code, "message": message,
                    "request_bytes": in_bytes,
                })  # fmt: skip

    def endpoint(self, app):
        """ASGI layer (behind the guard): answer GET /metrics in Prometheus' text format."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        async def serve(scope, receive, send):
            if scope["type"] != "http" or scope["path"] != METRICS_PATH:
                await app(scope, receive, send)
                return
            if self.multiprocess:  # add up every worker's files
                from prometheus_client import multiprocess

                registry = CollectorRegistry()
                multiprocess.MultiProcessCollector(registry)
            else:
                registry = self.registry
            body = generate_latest(registry)
            headers = [(b"content-type", CONTENT_TYPE_LATEST.encode()),
                       (b"content-length", str(len(body)).encode())]  # fmt: skip
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        return serve


def parse_metrics(text: str) -> dict[str, float]:
    """A scrape as {"name{label=value,...}": value}, read with prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def scrape(url: str, token: str | None = None, timeout: float = 10.0) -> str:
    """GET `<url>/metrics` (with the bearer token when given); raises on a non-200 answer."""
    import requests

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.get(f"{url.rstrip('/')}{METRICS_PATH}", headers=headers, timeout=timeout)
    if response.status_code != 200:
        message = f"GET {METRICS_PATH} answered {response.status_code}: {response.text[:200]}"
        raise PermissionError(message) if response.status_code == 401 else RuntimeError(message)
    return response.text
