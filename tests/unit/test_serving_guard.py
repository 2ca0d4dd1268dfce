"""utils.serving.guard: the guard in front of MLflow's scoring app, and micro-batching."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import mlflow
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.asgi import asgi_request
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
    """One request with a JSON content type (and its length unless chunked); return (status,
    decoded body, request messages the app never read)."""
    headers = {"content-type": "application/json", **(headers or {})}
    if chunk is None:
        headers["content-length"] = str(len(body))
    pairs = [(k.encode(), v.encode()) for k, v in headers.items()]
    answer = asgi_request(app, body, pairs, path=path, chunk=chunk)
    payload = answer.body
    return answer.status, (json.loads(payload) if answer.status != 200 else payload), answer.unread


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


# --- headers, deadlines, echo, and a scan that cannot stall the server ----------------------


def test_a_missing_content_type_gets_415_and_conflicting_duplicates_400():
    inner = Recorder()
    guard = ScoringGuard(inner)
    scope_headers = [(b"content-length", b"2")]
    status, answer, _ = call_raw(guard, b"{}", scope_headers)
    assert status == 415 and "Content-Type" in answer["message"]
    twice = [(b"content-type", b"application/json"), (b"content-type", b"text/csv")]
    status, answer, _ = call_raw(guard, b"[[1]]", twice)
    assert status == 400 and "'content-type' more than once" in answer["message"]
    same_twice = [(b"content-type", b"application/json"), (b"content-type", b"application/json")]
    assert call_raw(guard, b"{}", same_twice)[0] == 200
    assert inner.bodies == [b"{}"]


def test_a_non_ascii_token_gets_401_not_500():
    guard = ScoringGuard(Recorder(), token="t0k")
    headers = [(b"content-type", b"application/json"), (b"authorization", "Bearer é".encode())]
    assert call_raw(guard, b"{}", headers)[0] == 401


def call_raw(app, body: bytes, headers, receive=None):
    """Drive an ASGI app with exactly these header pairs (repeats included)."""
    answer = asgi_request(app, body, headers, receive=receive)
    try:
        payload = json.loads(answer.body) if answer.status != 200 else answer.body
    except ValueError:  # MLflow answers some errors in plain text
        payload = answer.body
    return answer.status, payload, answer.sent


def test_a_body_that_stops_arriving_gets_408_within_the_deadline():
    async def stalls():
        await asyncio.sleep(60)

    guard = ScoringGuard(Recorder(), body_timeout_s=0.2)
    status, answer, _ = call_raw(guard, b"", [(b"content-type", b"text/csv")], receive=stalls)
    assert status == 408 and answer["error_code"] == "REQUEST_TIMEOUT"


def test_error_answers_quote_a_short_prefix_and_keep_the_cause():
    async def echoing_app(scope, receive, send):
        message = "Invalid input. Input: \n" + "x" * 100_000
        body = json.dumps(
            {
                "error_code": "BAD_REQUEST",
                "message": message,
                "stack_trace": "Traceback\n  /srv/app/x.py\nValueError: bad x",
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})

    status, answer, sent = call_raw(
        ScoringGuard(echoing_app), b"{}", [(b"content-type", b"application/json")]
    )
    assert status == 400 and len(answer["message"]) < 700
    assert answer["message"].endswith("Cause: ValueError: bad x") and "stack_trace" not in answer
    declared = dict(sent[0]["headers"])[b"content-length"]
    assert int(declared) == len(sent[1]["body"])


def test_health_checks_answer_while_a_hostile_body_is_scanned():
    """The body that froze the old regex scan (unterminated string of escapes), 8 MB."""
    hostile = b"[" * 40 + b'"' + b'\\"' * 4_000_000

    async def ping_app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"pong"})

    guard = ScoringGuard(ping_app)

    async def request(body: bytes, path: str) -> float:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message):
            pass

        scope = {
            "type": "http",
            "path": path,
            "method": "POST",
            "headers": [(b"content-type", b"application/json")],
        }
        started = time.perf_counter()
        await guard(scope, receive, send)
        return time.perf_counter() - started

    async def both():
        scan = asyncio.create_task(request(hostile, "/invocations"))
        await asyncio.sleep(0.01)
        ping = await request(b"", "/ping")
        return ping, await scan

    ping_s, scan_s = asyncio.run(both())
    assert ping_s < 1.0
    assert scan_s < 30.0  # linear: the regex scan needed hours for 8 MB


# --- properties: any body, the guard agrees with the parser and never fails ------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=40,
)


def true_depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((true_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((true_depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=150, deadline=None)
@given(json_values, st.booleans())
def test_depth_scan_matches_the_parsed_depth(value, ascii_only):
    body = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert json_depth(body) == true_depth(value)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2_000) | st.text(alphabet='[]{}"\\ a,:').map(str.encode))
def test_depth_scan_takes_any_bytes(body):
    depth = json_depth(body)
    assert 0 <= depth <= body.count(b"[") + body.count(b"{")


class EchoModel(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


@pytest.fixture(scope="module")
def guarded_mlflow_app(tmp_path_factory):
    """MLflow's real scoring app (its own parser) behind the guard, driven in process."""
    from mlflow.pyfunc import scoring_server

    path = tmp_path_factory.mktemp("echo") / "model"
    mlflow.pyfunc.save_model(path, python_model=EchoModel(), pip_requirements=["mlflow"])
    return ScoringGuard(scoring_server.init(mlflow.pyfunc.load_model(str(path))))


bodies = (
    json_values.map(lambda v: json.dumps(v).encode())
    | json_values.map(lambda v: json.dumps({"dataframe_records": [v]}).encode())
    | st.tuples(json_values, st.integers(0, 50)).map(lambda p: json.dumps(p[0]).encode()[: p[1]])
    | st.integers(0, 3_000).map(lambda n: b"[" * n + b"]" * n)
    | st.integers(0, 3_000).map(lambda n: b"[[[[" + b'"' + b'\\"' * n)
    | st.binary(max_size=500)
)
header_sets = st.lists(
    st.sampled_from(
        [
            (b"content-type", b"application/json"),
            (b"content-type", b"text/csv"),
            (b"content-type", b"application/json; format=pandas-split"),
            (b"content-type", b"text/plain"),
            (b"content-length", b"3"),
            (b"authorization", "Bearer é".encode()),
        ]
    ),
    max_size=3,
)


@settings(max_examples=150, deadline=None)
@given(bodies, header_sets)
def test_no_body_or_header_set_gets_a_5xx(guarded_mlflow_app, body, headers):
    status, _, _ = call_raw(guarded_mlflow_app, body, headers)
    assert status < 500, (body[:80], headers)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet='[]{}"\\ a', max_size=600), st.sampled_from([1, 2, 3, 7, 64]))
def test_depth_scan_carries_its_state_across_blocks(text, block):
    import utils.serving.guard as guard

    body = text.encode()
    whole = json_depth(body)
    original, guard._SCAN_BLOCK = guard._SCAN_BLOCK, block
    try:
        assert json_depth(body) == whole
    finally:
        guard._SCAN_BLOCK = original
