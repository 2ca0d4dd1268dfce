"""The real endpoint: llama.cpp's server over the packaged Gemma GGUF behind the guard. One
server for the module; each test sends real requests over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
import requests

from utils.env import REPO_ROOT
from utils.rag.client import EndpointError, chat, check_endpoint, reply_text
from utils.rag.llm import start_llm_server

pytestmark = pytest.mark.integration

MODEL = "gemma-3-270m"
VERDICT = {"type": "object", "properties": {"result": {"type": "string", "enum": ["yes", "no"]},
                                            "rationale": {"type": "string"}},
           "required": ["result", "rationale"], "additionalProperties": False}


@pytest.fixture(scope="module")
def server():
    with start_llm_server(model_name=MODEL) as running:
        yield running
    assert not running.is_alive()


def test_answers_in_the_openai_shape(server):
    assert check_endpoint(server.base_url, MODEL)["served"] == [MODEL]
    response = chat(server.base_url, MODEL, [{"role": "user", "content": (
        "Passage: Batch scoring is the cheapest way to serve a model.\n"
        "Question: Which way is the cheapest?\nAnswer:")}], max_tokens=16, stop=["\n"])
    assert response["choices"][0]["finish_reason"] in {"stop", "length"}
    assert "\n" not in reply_text(response)


def test_json_schema_replies_are_valid_json_from_the_schema(server):
    response = chat(server.base_url, MODEL, [{"role": "user", "content": "Is 2 + 2 = 4?"}],
                    max_tokens=96, response_format={
                        "type": "json_schema", "json_schema": {"name": "v", "schema": VERDICT}})
    reply = json.loads(reply_text(response))
    assert reply["result"] in {"yes", "no"} and isinstance(reply["rationale"], str)


def test_health_answers_while_a_request_generates(server):
    done = {}

    def generate():
        done["response"] = chat(server.base_url, MODEL,
                                [{"role": "user", "content": "Tell a long story."}],
                                max_tokens=48)

    worker = threading.Thread(target=generate)
    worker.start()
    time.sleep(0.3)
    start = time.perf_counter()
    assert server.health()["status"] == "ok"
    assert time.perf_counter() - start < 1.0
    worker.join(120)
    assert done["response"]["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize("body, status", [
    ({"messages": [{"role": "user", "content": "hi"}], "stop": 5}, 400),
    ({"messages": [{"role": "user", "content": "hi"}], "response_format": "json"}, 400),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]}, 400),
    ({"messages": [{"role": "user", "content": "x " * 13_000}]}, 400),  # characters
    ({"messages": [{"role": "user", "content": "word " * 4_000}]}, 400),  # tokens (llama.cpp)
    ({"messages": [{"role": "user", "content": "hi"}], "user": "x" * (2 << 20)}, 413),
])
def test_over_limit_and_malformed_requests_get_4xx(server, body, status):
    answer = requests.post(f"{server.base_url}/chat/completions", json=body, timeout=60)
    assert answer.status_code == status, answer.text[:300]
    assert answer.json()["error"]["message"]


def test_client_raises_a_named_error_with_the_endpoint_message(server):
    with pytest.raises(EndpointError, match="stop") as caught:
        chat(server.base_url, MODEL, [{"role": "user", "content": "hi"}], stop=list("abcde"))
    assert caught.value.status == 400


def test_self_test_generates_in_a_process_of_its_own():
    """What `make` runs after installing, to catch a llama.cpp build for another CPU."""
    done = subprocess.run([sys.executable, "-m", "utils.rag.llm", "--self-test"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("llama.cpp generates on this CPU: 'The capital of France is")
