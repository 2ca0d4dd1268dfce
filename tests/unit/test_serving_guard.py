"""utils.serving.guard: the guard in front of MLflow's scoring app, and micro-batching."""

from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pandas as pd
import pytest

from utils.serving.guard import MicroBatcher, ScoringGuard, json_depth

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "body,depth",
    [
        (b"1", 0),
        (b"[]", 1),
        (b'{"dataframe_split": {"columns": ["a"], "data": [[1], [2]]}}', 4),
        (b'{"a": "[[[[[[[[[[ not counted"}', 1),
        (b'{"a": "escaped \\" quote [[[[", "b": [[1]]}', 3),
        (b"[" * 200 + b"]" * 200, 200),
        (b"[" * 50, 50),  # truncated JSON still counts what it opened
    ],
)
def test_json_depth(body, depth):
    assert json_depth(body) == depth


class Recorder:
    """An ASGI app that records the body it received and answers 200."""

    def __init__(self):
        self.bodies = []

    async def __call__(self, scope, receive, send):
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def call(app, body: bytes, headers=None, path="/invocations", chunk: int | None = None):
    """Drive an ASGI app with one request; return (status, decoded body)."""
    headers = {"content-type": "application/json", **(headers or {})}
    if chunk is None:
        headers["content-length"] = str(len(body))
        chunks = [body]
    else:
        chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "path": path,
        "method": "POST",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(app(scope, receive, send))
    status = sent[0]["status"]
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return status, (json.loads(payload) if status != 200 else payload), messages


def test_a_valid_body_reaches_the_app_intact():
    inner = Recorder()
    body = b'{"dataframe_split": {"columns": ["a"], "data": [[1]]}}'
    assert call(ScoringGuard(inner), body, chunk=7)[0] == 200
    assert inner.bodies == [body]


def test_a_body_over_the_limit_gets_413_and_is_read_to_the_end():
    inner = Recorder()
    guard = ScoringGuard(inner, max_body_bytes=100)
    status, answer, unread = call(guard, b"x" * 1000)
    assert status == 413 and answer["error_code"] == "PAYLOAD_TOO_LARGE"
    status, answer, unread = call(guard, b"x" * 300, chunk=64)  # no content-length: counted
    assert status == 413 and unread == []  # drained, so the client is never cut off mid-send
    assert inner.bodies == []


def test_deep_nesting_gets_400_with_the_depth_and_the_limit():
    status, answer, _ = call(ScoringGuard(Recorder(), max_json_depth=10), b"[" * 11 + b"]" * 11)
    assert status == 400 and answer["error_code"] == "MALFORMED_REQUEST"
    assert "nests 11 levels" in answer["message"] and "at most 10" in answer["message"]


@pytest.mark.parametrize(
    "body,status",
    [
        (b"[" * 10 + b"]" * 10, 200),  # exactly the limit
        (b'{"dataframe_split": {"columns": ["a"], "data": [' + b"[1]," * 30 + b"[1]]}}", 200),
        (b'{"a": "' + b"[" * 30 + b'"}', 200),  # brackets inside a string do not nest
        (b'{"a": "[[[[[[[[[[", "b": ' + b"[" * 11 + b"]" * 11 + b"}", 400),
    ],
)
def test_depth_limit_holds_however_many_brackets_a_body_has(body, status):
    assert call(ScoringGuard(Recorder(), max_json_depth=10), body)[0] == status


def test_small_bodies_skip_the_depth_scan(monkeypatch):
    def must_not_scan(body):
        raise AssertionError("scanned a body with fewer brackets than the limit")

    monkeypatch.setattr("utils.serving.guard.json_depth", must_not_scan)
    one_row = b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}'
    assert call(ScoringGuard(Recorder(), max_json_depth=10), one_row)[0] == 200


def test_csv_bodies_are_not_depth_checked():
    status, _, _ = call(
        ScoringGuard(Recorder(), max_json_depth=1),
        b"a\n[[[\n",
        headers={"content-type": "text/csv"},
    )
    assert status == 200


def test_token_is_required_except_for_health_checks():
    guard = ScoringGuard(Recorder(), token="t0k")
    status, answer, _ = call(guard, b"{}")
    assert status == 401 and answer["error_code"] == "UNAUTHENTICATED"
    assert call(guard, b"{}", headers={"authorization": "Bearer wrong"})[0] == 401
    assert call(guard, b"{}", headers={"authorization": "Basic t0k"})[0] == 401
    assert call(guard, b"{}", headers={"authorization": "Bearer t0k"})[0] == 200
    assert call(guard, b"", path="/ping")[0] == 200


class CountingModel:
    """Doubles column x; counts predict calls; refuses negative values."""

    metadata = None

    def __init__(self):
        self.calls = 0
        self.gate = threading.Event()

    def predict(self, data, params=None):
        self.gate.wait(5)  # hold the first call so that the others queue up behind it
        self.calls += 1
        if (data["x"] < 0).any():
            raise ValueError("negative x")
        return pd.Series(data["x"] * 2, name="prediction")


def run_concurrently(batcher, frames):
    results = [None] * len(frames)

    def worker(i):
        try:
            results[i] = batcher.predict(frames[i])
        except ValueError as error:
            results[i] = error

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(frames))]
    for t in threads:
        t.start()
    return threads, results


def test_micro_batcher_scores_queued_requests_together_and_splits_answers():
    model = CountingModel()
    batcher = MicroBatcher(model)
    frames = [pd.DataFrame({"x": [i, i + 100]}) for i in range(6)]
    threads, results = run_concurrently(batcher, frames)
    model.gate.set()
    for t in threads:
        t.join(10)
    for frame, result in zip(frames, results, strict=True):
        assert result.tolist() == (frame["x"] * 2).tolist()
    assert model.calls < len(frames)  # at least some requests shared a call


def test_one_bad_request_fails_alone():
    model = CountingModel()
    batcher = MicroBatcher(model)
    frames = [pd.DataFrame({"x": [1]}), pd.DataFrame({"x": [-1]}), pd.DataFrame({"x": [3]})]
    threads, results = run_concurrently(batcher, frames)
    model.gate.set()
    for t in threads:
        t.join(10)
    assert results[0].tolist() == [2] and results[2].tolist() == [6]
    assert isinstance(results[1], ValueError)


def test_non_frames_and_params_bypass_the_queue():
    model = CountingModel()
    model.gate.set()
    batcher = MicroBatcher(model)
    with pytest.raises(IndexError):
        batcher.predict(np.array([1.0]))  # passed straight to the model, which cannot index it
    assert batcher.predict(pd.DataFrame({"x": [4]}), params={"p": 1}).tolist() == [8]
