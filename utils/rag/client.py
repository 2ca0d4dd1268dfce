"""Calling an OpenAI-compatible chat endpoint: the local one from `utils.rag.llm`, a Databricks
foundation-model endpoint (`https://<workspace>/serving-endpoints`), or any other service.

Two values choose the endpoint: its base URL (what OpenAI clients call `OPENAI_API_BASE`,
ending in `/v1` for most services) and the model name. The key comes from `OPENAI_API_KEY`
(any value works for an endpoint on this machine; a remote one without a key is refused here,
with what to set, rather than answering 401).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

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


class MissingAPIKeyError(ValueError):
    """A remote endpoint was given no key; the message says where to put one."""


LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def api_key_for(base_url: str, api_key: str | None = None) -> str:
    """The key to send: `api_key`, else `OPENAI_API_KEY`, else (only for an endpoint on this
    machine, which accepts any key) a placeholder."""
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if key:
        return key
    if urlsplit(base_url).hostname in LOCAL_HOSTS:
        return "local"
    raise MissingAPIKeyError(
        f"No API key for {base_url}: a remote endpoint needs one. On Databricks set "
        "LLM_SECRET_SCOPE and LLM_SECRET_KEY to the secret holding a token (the chapter reads "
        "it with dbutils.secrets.get); elsewhere set the OPENAI_API_KEY environment variable."
    )


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
    headers = {"Authorization": f"Bearer {api_key_for(base_url, api_key)}"}
    try:
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

    headers = {"Authorization": f"Bearer {api_key_for(base_url)}"}
    try:
        response = requests.get(f"{base_url.rstrip('/')}/models", timeout=timeout, headers=headers)
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
