"""The local OpenAI-compatible endpoint: request parsing, response shape, errors, lifecycle
checks that need no model (a fake backend stands in for Gemma inside these unit tests)."""

from __future__ import annotations

import json
import socket

import pytest
from fastapi.testclient import TestClient

from utils.rag import client
from utils.rag.llm import (
    Choice,
    Completion,
    LLMServerError,
    RequestError,
    allowed_results,
    choice_message,
    create_app,
    messages_to_prompt,
    start_llm_server,
)

pytestmark = pytest.mark.integration


class FakeBackend:
    def __init__(self):
        self.prompts: list[str] = []

    def complete(self, prompt, max_tokens, stop):
        self.prompts.append(prompt)
        return Completion("An alias names one version.", 12, 6, "stop")

    def choose(self, prompt, candidates):
        self.prompts.append(prompt)
        return Choice(candidates[-1], {str(c): 1 / len(candidates) for c in candidates}, 30)


def make_client(loader):
    app = create_app(loader, model_name="tiny")
    app.state.loader.join(5)
    return TestClient(app)


@pytest.fixture
def backend():
    return FakeBackend()


@pytest.fixture
def http(backend):
    return make_client(lambda: backend)


def schema_with(result: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "R", "schema": {
        "type": "object", "properties": {"result": result, "rationale": {"type": "string"}}}}}


def test_completion_has_the_openai_shape(http, backend):
    response = http.post("/v1/chat/completions", json={
        "model": "tiny",
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Passage: x\nQuestion: y\nAnswer:"}],
        "max_tokens": 20, "stop": ["\n"]})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    assert body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "An alias names one version."}
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}
    # a base model gets one completion prompt: messages joined, no role markers
    assert backend.prompts == ["Be brief.\n\nPassage: x\nQuestion: y\nAnswer:"]


def test_judge_request_gets_a_result_among_the_allowed_values(http):
    response = http.post("/v1/chat/completions", json={
        "model": "tiny", "messages": [{"role": "user", "content": "Rate it."}],
        "response_format": schema_with({"type": "integer", "enum": [1, 2, 3, 4, 5]})})
    reply = json.loads(response.json()["choices"][0]["message"]["content"])
    assert reply["result"] == 5
    assert "likelihood" in reply["rationale"]


def test_builtin_judge_values_are_read_from_the_prompt():
    prompt = 'Decide.\n{\n  "rationale": "why",\n  "result": "yes|no"\n}'
    plain = schema_with({"type": "string"})
    assert allowed_results(plain, prompt) == ["yes", "no"]
    assert allowed_results(schema_with({"type": "boolean"}), "") == [True, False]
    assert allowed_results(plain, "no values here") is None
    assert allowed_results(None, prompt) is None  # no response_format: free text


def test_choice_message_is_what_mlflow_parses():
    from mlflow.genai.judges.utils.parsing_utils import _strip_markdown_code_blocks

    text = choice_message(Choice("yes", {"yes": 0.8, "no": 0.2}, 10))
    parsed = json.loads(_strip_markdown_code_blocks(text))
    assert parsed["result"] == "yes" and "yes: 0.80" in parsed["rationale"]


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"model": "other", "messages": [{"role": "user", "content": "hi"}]}, 404,
         "model_not_found"),
        ({"model": "tiny", "messages": []}, 400, "invalid_request"),
        ({"model": "tiny", "messages": [{"role": "user"}]}, 400, "invalid_request"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
         400, "invalid_request"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": True},
         400, "unsupported"),
    ],
)
def test_bad_requests_get_openai_style_errors(http, body, status, code):
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def test_body_that_is_not_json(http):
    response = http.post("/v1/chat/completions", content=b"{not json",
                         headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def test_health_while_loading_and_after_a_failed_load():
    import threading

    release = threading.Event()

    def slow():
        release.wait(5)
        return FakeBackend()

    app = create_app(slow, model_name="tiny")
    loading = TestClient(app)
    assert loading.get("/health").status_code == 503
    busy = loading.post("/v1/chat/completions",
                        json={"messages": [{"role": "user", "content": "x"}]})
    assert busy.status_code == 503
    release.set()
    app.state.loader.join(5)
    assert loading.get("/health").json() == {"status": "ok", "model": "tiny"}

    def broken():
        raise OSError("weights are corrupt")

    failed = make_client(broken)
    health = failed.get("/health")
    assert health.status_code == 500 and "weights are corrupt" in health.json()["error"]["message"]


def test_models_lists_the_served_name(http):
    assert [m["id"] for m in http.get("/v1/models").json()["data"]] == ["tiny"]


def test_messages_to_prompt_keeps_text_parts():
    text_parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    parts = [{"role": "user", "content": text_parts}]
    assert messages_to_prompt(parts) == "a\nb"
    with pytest.raises(RequestError, match="empty"):
        messages_to_prompt([])


def test_busy_port_is_refused_before_anything_starts():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(LLMServerError, match=f"Port {port} .* busy"):
            start_llm_server(port=port)


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(LLMServerError, match="no GGUF file"):
        start_llm_server(gguf=tmp_path / "missing.gguf")


def test_client_says_how_to_start_an_endpoint_that_is_down():
    from utils.serving import free_port

    with pytest.raises(client.EndpointUnavailableError, match="start_llm_server"):
        url = f"http://127.0.0.1:{free_port()}/v1"
        client.chat(url, "tiny", [{"role": "user", "content": "x"}])


def test_client_reads_error_bodies():
    error = client.error_from_response(404, json.dumps(
        {"error": {"message": "no such model", "code": "model_not_found"}}))
    assert (error.status, error.code, error.message) == (404, "model_not_found", "no such model")
    assert client.error_from_response(502, "<html>bad gateway</html>").code == "error"
    assert client.error_from_response(400, '{"error": "plain"}').message == "plain"
