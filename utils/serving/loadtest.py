"""Drive a scoring endpoint with concurrent keep-alive clients and summarise the latencies.

Each client is a thread with one persistent `http.client` connection: opening a connection
per request, or a heavier client library, would put the client's own cost into the figures.
Runs are bounded by a request count, a duration, or both. Used by chapter 04's latency
section, the reliability tests and `benchmarks/serving_latency.py`.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


@dataclass
class LoadResult:
    """What a run saw: per-request latency, status counts, connection errors, answers."""

    concurrency: int
    seconds: float
    latencies_ms: np.ndarray
    statuses: Counter
    errors: list[str] = field(default_factory=list)
    answers: list[bytes] = field(default_factory=list, repr=False)

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def ok(self) -> bool:
        """Every request answered 2xx and no connection failed."""
        return not self.errors and all(200 <= s < 300 for s in self.statuses)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.requests else float("nan")

    def summary(self) -> dict[str, float]:
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "p50_ms": round(self.percentile(50), 2),
            "p95_ms": round(self.percentile(95), 2),
            "p99_ms": round(self.percentile(99), 2),
            "rps": round(self.rps, 1),
            "non_2xx": sum(n for s, n in self.statuses.items() if not 200 <= s < 300),
            "connection_errors": len(self.errors),
        }


def run_load(
    url: str,
    bodies: bytes | Sequence[bytes],
    *,
    content_type: str = "application/json",
    concurrency: int = 1,
    requests: int | None = None,
    seconds: float | None = None,
    headers: Mapping[str, str] | None = None,
    warmup: int = 5,
    keep_answers: bool = False,
    timeout: float = 30.0,
) -> LoadResult:
    """POST `bodies` (one, or a list used in turn) to `url` from `concurrency` clients until
    `requests` have been sent or `seconds` have passed, whichever comes first."""
    if requests is None and seconds is None:
        raise ValueError("Bound the run: give `requests`, `seconds` or both.")
    bodies = [bodies] if isinstance(bodies, bytes) else list(bodies)
    parts = urlsplit(url)
    path = parts.path or "/invocations"
    sent_headers = {"Content-Type": content_type, **(headers or {})}
    lock = threading.Lock()
    state = {"next": 0}
    latencies: list[float] = []
    statuses: Counter = Counter()
    errors: list[str] = []
    answers: list[tuple[int, bytes]] = []
    deadline = [float("inf")]

    def take() -> int | None:
        with lock:
            index = state["next"]
            if (requests is not None and index >= requests) or time.perf_counter() > deadline[0]:
                return None
            state["next"] += 1
            return index

    def connect() -> http.client.HTTPConnection:
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)

    def post(conn, body: bytes) -> tuple[int, bytes]:
        conn.request("POST", path, body, sent_headers)
        response = conn.getresponse()
        return response.status, response.read()

    def client() -> None:
        conn = connect()
        for i in range(warmup):  # not counted: first requests pay for imports and caches
            try:
                post(conn, bodies[i % len(bodies)])
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = connect()
        barrier.wait()
        mine, my_statuses, my_errors, my_answers = [], Counter(), [], []
        while (index := take()) is not None:
            start = time.perf_counter()
            try:
                status, answer = post(conn, bodies[index % len(bodies)])
            except (OSError, http.client.HTTPException) as error:
                my_errors.append(f"{type(error).__name__}: {error}")
                conn.close()
                conn = connect()
                continue
            mine.append((time.perf_counter() - start) * 1000)
            my_statuses[status] += 1
            if keep_answers:
                my_answers.append((index, answer))
        conn.close()
        with lock:
            latencies.extend(mine)
            statuses.update(my_statuses)
            errors.extend(my_errors)
            answers.extend(my_answers)

    barrier = threading.Barrier(concurrency + 1)
    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    deadline[0] = started + seconds if seconds is not None else float("inf")
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return LoadResult(
        concurrency=concurrency,
        seconds=elapsed,
        latencies_ms=np.asarray(latencies),
        statuses=statuses,
        errors=errors,
        answers=[answer for _, answer in sorted(answers)],
    )
