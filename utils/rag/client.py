"""Calling an OpenAI-compatible chat endpoint: the local one from `utils.rag.llm`, a Databricks
foundation-model endpoint (`https://<workspace>/serving-endpoints`), or any other service.

Two values choose the endpoint: its base URL (what OpenAI clients call `OPENAI_API_BASE`,
ending in `/v1` for most services) and the model name. The key comes from `OPENAI_API_KEY`
(any value works locally).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

START_HINT = (
    "Start the local endpoint in the notebook with `server = utils.rag.llm.start_llm_server()` "
    "(or in a terminal: `python -m utils.rag.llm --port 8800`), or point LLM_BASE_URL and "
    "LLM_MODEL at a running OpenAI-compatible endpoint."
)


class EndpointUnavailableError(ConnectionError):
    """Nothing answers at the endpoint's address; the message says how to start one."""


class EndpointError(RuntimeError):
    """The endpoint answered with an error: HTTP status, error code and message."""

    def __init__(self, status: int, code: str, message: str):
        self.status, self.code, self.message = status, code, message
        super().__init__(f"HTTP {status} {code}: {message}")


def _api_key(api_key: str | None) -> str:
    return api_key or os.environ.get("OPENAI_API_KEY") or "local"


def chat(
    base_url: str,
    model: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    max_tokens: int = 64,
    stop: Sequence[str] | None = None,
    response_format: Mapping[str, Any] | None = None,
    temperature: float = 0.0,
    timeout: float = 300.0,
    api_key: str | None = None,
) -> dict[str, Any]:
    """POST `/chat/completions` and return the response JSON (an OpenAI chat completion)."""
    import requests

    body: dict[str, Any] = {
        "model": model,
        "messages": list(messages),
        "max_tokens": max_tokens,
        "temperature": temperature,
    }
    if stop:
        body["stop"] = list(stop)
    if response_format:
        body["response_format"] = dict(response_format)
    url = f"{base_url.rstrip('/')}/chat/completions"
    try:
        headers = {"Authorization": f"Bearer {_api_key(api_key)}"}
        response = requests.post(url, json=body, timeout=timeout, headers=headers)
    except requests.ConnectionError as error:
        raise EndpointUnavailableError(
            f"No language-model endpoint answers at {base_url} ({type(error).__name__}). "
            + START_HINT
        ) from None
    if response.status_code != 200:
        raise error_from_response(response.status_code, response.text)
    return response.json()


def error_from_response(status: int, text: str) -> EndpointError:
    """An EndpointError from an OpenAI-style error body (or the raw text when it is not)."""
    import json

    try:
        error = json.loads(text).get("error", {})
        if isinstance(error, str):  # some services send {"error": "message"}
            error = {"message": error}
        return EndpointError(status, error.get("code") or "error", error.get("message") or text)
    except (ValueError, AttributeError):
        return EndpointError(status, "error", text[:500])


def reply_text(response: Mapping[str, Any]) -> str:
    """The assistant's text in a chat completion."""
    return (response["choices"][0]["message"].get("content") or "").strip()


def check_endpoint(base_url: str, model: str, timeout: float = 10.0) -> dict[str, Any]:
    """Ask the endpoint which models it serves; raise when it is down or lacks `model`."""
    import requests

    try:
        response = requests.get(
            f"{base_url.rstrip('/')}/models",
            timeout=timeout,
            headers={"Authorization": f"Bearer {_api_key(None)}"},
        )
    except requests.ConnectionError:
        raise EndpointUnavailableError(
            f"No language-model endpoint answers at {base_url}. " + START_HINT
        ) from None
    if response.status_code != 200:
        raise error_from_response(response.status_code, response.text)
    served = [m.get("id") for m in response.json().get("data", [])]
    if served and model not in served:
        raise EndpointError(404, "model_not_found", f"{base_url} serves {served}, not '{model}'.")
    return {"base_url": base_url, "model": model, "served": served}
