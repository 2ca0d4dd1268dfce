"""The guard in front of llama.cpp's server: request checks and limits, the response-format
translation, and the ASGI layer (a recording ASGI app stands in for llama.cpp's app here; the
real server is exercised in test_rag_llm_server.py)."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from utils.processes import free_port
from utils.rag.llm import LLMServerError, start_llm_server
from utils.rag.llm_guard import (
    Limits,
    LLMGuard,
    RequestError,
    bounded_strings,
    checked_request,
    json_depth,
    message_text,
    translated_response_format,
)

pytestmark = pytest.mark.unit

CHAT = "/v1/chat/completions"
JUDGE_SCHEMA = {
    "type": "object",
    "properties": {"result": {"type": "string", "enum": ["yes", "no"]},
                   "rationale": {"type": "string"}},
    "required": ["result", "rationale"],
    "additionalProperties": False,
}


def chat_body(**extra):
    return {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **extra}


def test_openai_json_schema_becomes_llama_json_object_with_bounded_strings():
    rf = {"type": "json_schema", "json_schema": {"name": "J", "schema": JUDGE_SCHEMA,
                                                  "strict": True}}
    out = translated_response_format(rf, Limits(max_string_chars=300), max_tokens=512)
    assert out["type"] == "json_object"
    props = out["schema"]["properties"]
    assert props["rationale"]["maxLength"] == 300
    short = translated_response_format(rf, Limits(), max_tokens=96)["schema"]["properties"]
    assert short["rationale"]["maxLength"] == 96 - 64  # fits the token budget
    assert "maxLength" not in props["result"]  # enum values keep their own length
    assert props["result"]["enum"] == ["yes", "no"]


def test_bounded_strings_keeps_a_tighter_limit_and_walks_lists():
    schema = {"anyOf": [{"type": "string", "maxLength": 5}, {"type": "string"}]}
    assert bounded_strings(schema, 50)["anyOf"] == [
        {"type": "string", "maxLength": 5}, {"type": "string", "maxLength": 50}]


@pytest.mark.parametrize("rf, words", [
    ("json", "must be an object"),
    ({"type": "xml"}, "not one of"),
    ({"type": "json_schema", "json_schema": "x"}, "'schema' object"),
    ({"type": "json_schema", "json_schema": {"schema": {"enum": list(range(100))}}}, "enum"),
])
def test_bad_response_formats_are_refused_with_a_reason(rf, words):
    with pytest.raises(RequestError, match=words) as caught:
        checked_request(chat_body(response_format=rf), CHAT)
    assert caught.value.status == 400


def test_defaults_and_limits_for_tokens_and_stop_strings():
    assert checked_request(chat_body(), CHAT)["max_tokens"] == Limits().default_max_tokens
    assert checked_request(chat_body(stop="\n"), CHAT)["stop"] == ["\n"]
    for bad in ({"max_tokens": 0}, {"max_tokens": True}, {"max_tokens": 10_000},
                {"stop": 5}, {"stop": ["a"] * 5}, {"stop": ["x" * 100]}, {"stream": True},
                {"grammar": "root ::= \"a\""}):
        with pytest.raises(RequestError):
            checked_request(chat_body(**bad), CHAT)


@pytest.mark.parametrize("messages", [None, [], "hi", [5], [{"content": "x"}],
                                      [{"role": "user", "content": [{"type": "text", "text": 3}]}],
                                      [{"role": "user", "content": {"a": 1}}]])
def test_malformed_messages_are_400_not_500(messages):
    with pytest.raises(RequestError) as caught:
        checked_request({"messages": messages}, CHAT)
    assert caught.value.status == 400 and caught.value.param


def test_prompt_length_is_checked_in_characters_before_any_tokenizing():
    long = {"role": "user", "content": "word " * 10_000}
    with pytest.raises(RequestError, match="characters") as caught:
        checked_request({"messages": [long]}, CHAT)
    assert caught.value.code == "context_length_exceeded"
    assert message_text({"role": "user", "content": [{"type": "text", "text": "a"},
                                                     {"type": "text", "text": "b"}]}, 0) == "a\nb"


def test_completions_take_one_string_prompt():
    assert checked_request({"prompt": ["Q: hi\nA:"]}, "/v1/completions")["prompt"] == "Q: hi\nA:"
    with pytest.raises(RequestError, match="prompt"):
        checked_request({"prompt": ["a", "b"]}, "/v1/completions")


def test_json_depth():
    assert json_depth(1, 32) == 0
    assert json_depth({"a": [1, {"b": []}]}, 32) == 4
    deep: list = []
    for _ in range(50):
        deep = [deep]
    assert json_depth(deep, 10) == 11  # stops counting past the limit


class Recorder:
    """An ASGI app that records the body it got and answers 200."""

    def __init__(self):
        self.bodies: list[dict] = []

    async def __call__(self, scope, receive, send):
        message = await receive()
        self.bodies.append(json.loads(message["body"]) if message.get("body") else {})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"ok": true}'})


@pytest.fixture
def guarded():
    inner = Recorder()
    return inner, TestClient(LLMGuard(inner, "tiny", Limits(max_body_bytes=10_000)))


def test_guard_answers_health_itself_and_hides_the_docs(guarded):
    inner, client = guarded
    assert client.get("/health").json() == {"status": "ok", "model": "tiny"}
    assert client.get("/docs").status_code == 404
    assert client.get("/openapi.json").status_code == 404
    assert inner.bodies == []


def test_guard_passes_a_translated_body(guarded):
    inner, client = guarded
    rf = {"type": "json_schema", "json_schema": {"name": "J", "schema": JUDGE_SCHEMA}}
    assert client.post(CHAT, json=chat_body(response_format=rf)).status_code == 200
    assert inner.bodies[0]["response_format"]["type"] == "json_object"
    assert inner.bodies[0]["max_tokens"] == Limits().default_max_tokens


def test_guard_refuses_with_openai_error_shapes(guarded):
    inner, client = guarded
    plain = client.post(CHAT, content=json.dumps(chat_body()), headers={
        "content-type": "text/plain"})
    assert plain.status_code == 415
    big = client.post(CHAT, json=chat_body(user="x" * 20_000))
    assert big.status_code == 413 and "bytes" in big.json()["error"]["message"]
    deep = client.post(CHAT, content="[" * 5000 + "]" * 5000,
                       headers={"content-type": "application/json"})
    assert deep.status_code == 400 and "nests" in deep.json()["error"]["message"]
    broken = client.post(CHAT, content="{", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]
    stops = client.post(CHAT, json=chat_body(stop=["a", "b", "c", "d", "e"]))
    assert stops.status_code == 400 and stops.json()["error"]["param"] == "stop"
    assert inner.bodies == []


def test_python_parser_recursion_is_a_400_not_a_500():
    inner = Recorder()
    client = TestClient(LLMGuard(inner, "tiny", Limits(max_json_depth=100_000)))
    body = "[" * 200_000 + "]" * 200_000
    answer = client.post(CHAT, content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400


def test_start_refuses_a_busy_port_a_missing_file_and_negative_counts(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(LLMServerError, match="busy"):
            start_llm_server(port=sock.getsockname()[1])
    with pytest.raises(LLMServerError, match="no GGUF file"):
        start_llm_server(port=free_port(), gguf=tmp_path / "missing.gguf")
    with pytest.raises(ValueError, match="counts"):
        start_llm_server(port=free_port(), grammar_candidates=-1)
    with pytest.raises(ValueError, match="at least 1"):
        start_llm_server(port=free_port(), batch_threads=0)
