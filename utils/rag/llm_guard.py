"""The guard in front of llama.cpp's OpenAI-compatible app (`utils.rag.llm` serves both):
request checks and limits, OpenAI's `json_schema` response format translated to llama.cpp's
grammar-constrained `json_object`, and an ASGI layer that answers `/health` itself.

Every refusal is a 4xx in OpenAI's error shape (`{"error": {"message", "type", "param",
"code"}}`), never a 500: body over the size limit (413), not `application/json` (415, so a web
page cannot post to the endpoint as text/plain), JSON nested too deep or not JSON, too many
messages, a prompt over the character limit (checked before anything is tokenized), too many
or too long stop strings, a response schema with too many enum values (judge values),
`max_tokens` out of range, and malformed shapes (400).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CONTEXT_TOKENS = 2048  # prompt + reply per request; Gemma 3 allows more, two CPU cores do not
GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
JSON_OVERHEAD_TOKENS = 64  # braces, keys, enum values and the whitespace the grammar allows
HIDDEN_PATHS = frozenset({"/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"})


class RequestError(ValueError):
    """A request the endpoint refuses; `status` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request",
                 param: str | None = None):
        self.status, self.code, self.param = status, code, param
        super().__init__(message)


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the endpoint (each limit answers 4xx, never 500)."""

    max_body_bytes: int = 1 << 20
    max_json_depth: int = 32
    max_prompt_chars: int = 24_000  # checked before tokenizing; ~3 characters per token
    max_messages: int = 64
    max_tokens: int = 512  # per reply; the default when a request names none is 256
    default_max_tokens: int = 256
    max_stop_strings: int = 4  # as OpenAI's API
    max_stop_chars: int = 64
    max_schema_bytes: int = 16_384
    max_enum_values: int = 64  # judge values, all enums of a schema together
    max_string_chars: int = 400  # length given to schema strings that have none


# --------------------------------------------------------------------------- request checks


def json_depth(value: Any, limit: int) -> int:
    """How deeply lists and objects nest in parsed JSON (counting stops past `limit`)."""
    depth, level = 0, [value]
    while depth <= limit:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            return depth
        depth += 1
        level = [c for v in containers for c in (v.values() if isinstance(v, dict) else v)]
    return depth


def message_text(message: Any, index: int) -> str:
    """The text of one chat message: a string, or a list of `{"type": "text", "text": ...}`."""
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise RequestError(f"{where} must be an object with 'role' and 'content'.", param=where)
    if not isinstance(message.get("role"), str):
        raise RequestError(f"{where}.role must be a string such as 'user'.", param=where)
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return "\n".join(p["text"] for p in content)
    raise RequestError(
        f"{where}.content must be a string or a list of {{'type': 'text', 'text': '...'}} "
        "parts (this endpoint reads text only).", param=where,
    )


def _count_enum_values(schema: Any) -> int:
    if isinstance(schema, dict):
        own = len(schema["enum"]) if isinstance(schema.get("enum"), list) else 0
        return own + sum(_count_enum_values(v) for v in schema.values())
    if isinstance(schema, list):
        return sum(_count_enum_values(v) for v in schema)
    return 0


def bounded_strings(schema: Any, max_chars: int) -> Any:
    """A copy of a JSON schema where every free string has a `maxLength` (at most `max_chars`),
    so grammar-constrained generation closes the JSON instead of running out of tokens."""
    if isinstance(schema, list):
        return [bounded_strings(v, max_chars) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded_strings(v, max_chars) if k != "enum" else v for k, v in schema.items()}
    if out.get("type") == "string" and "enum" not in out and "const" not in out:
        out["maxLength"] = min(int(out.get("maxLength", max_chars)), max_chars)
    return out


def _count_free_strings(schema: Any) -> int:
    if isinstance(schema, list):
        return sum(_count_free_strings(v) for v in schema)
    if not isinstance(schema, dict):
        return 0
    own = int(schema.get("type") == "string" and "enum" not in schema and "const" not in schema)
    return own + sum(_count_free_strings(v) for k, v in schema.items() if k != "enum")


def string_budget(schema: Any, max_tokens: int, limits: Limits) -> int:
    """Characters each free string of a reply schema may have so the whole reply fits in
    `max_tokens` even at one token per character (digits are single tokens in Gemma), with
    room for the JSON around them."""
    strings = max(_count_free_strings(schema), 1)
    return max(8, min(limits.max_string_chars, (max_tokens - JSON_OVERHEAD_TOKENS) // strings))


def translated_response_format(response_format: Any, limits: Limits,
                               max_tokens: int | None = None) -> dict[str, Any]:
    """OpenAI's `json_schema` response format as llama.cpp's `json_object` + `schema`."""
    if not isinstance(response_format, dict) or not isinstance(response_format.get("type"), str):
        raise RequestError(
            "response_format must be an object such as {'type': 'json_schema', 'json_schema': "
            "{'name': 'reply', 'schema': {...}}}.", param="response_format",
        )
    kind = response_format["type"]
    if kind == "text":
        return {"type": "text"}
    if kind == "json_object":
        schema = response_format.get("schema")
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise RequestError("response_format.json_schema must hold a 'schema' object.",
                               param="response_format")
        schema = spec["schema"]
    else:
        raise RequestError(f"response_format.type {kind!r} is not one of text, json_object, "
                           "json_schema.", param="response_format")
    if schema is None:
        return {"type": "json_object"}
    if not isinstance(schema, dict):
        raise RequestError("The response schema must be a JSON object.", param="response_format")
    size = len(json.dumps(schema))
    if size > limits.max_schema_bytes:
        raise RequestError(f"The response schema is {size} bytes; at most "
                           f"{limits.max_schema_bytes} are accepted.", param="response_format")
    values = _count_enum_values(schema)
    if values > limits.max_enum_values:
        raise RequestError(f"The response schema allows {values} enum values; at most "
                           f"{limits.max_enum_values} are accepted.", param="response_format")
    budget = string_budget(schema, max_tokens or limits.default_max_tokens, limits)
    return {"type": "json_object", "schema": bounded_strings(schema, budget)}


def _checked_stop(stop: Any, limits: Limits) -> list[str] | None:
    if stop is None:
        return None
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise RequestError("stop must be a string or a list of strings.", param="stop")
    if len(stops) > limits.max_stop_strings:
        raise RequestError(f"stop has {len(stops)} strings; at most {limits.max_stop_strings} "
                           "are accepted.", param="stop")
    if any(len(s) > limits.max_stop_chars for s in stops):
        raise RequestError(f"Each stop string may have at most {limits.max_stop_chars} "
                           "characters.", param="stop")
    return stops


def checked_request(body: Any, path: str, limits: Limits = Limits()) -> dict[str, Any]:
    """The request body llama.cpp's app gets: shape and limits checked (RequestError, 4xx,
    otherwise), `response_format` translated, `max_tokens` bounded."""
    if not isinstance(body, dict):
        raise RequestError("The body must be a JSON object such as {'model': ..., 'messages': "
                           "[{'role': 'user', 'content': '...'}]}.")
    body = dict(body)
    if path == "/v1/chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages must be a non-empty list of {'role', 'content'} "
                               "objects.", param="messages")
        if len(messages) > limits.max_messages:
            raise RequestError(f"{len(messages)} messages; at most {limits.max_messages} are "
                               "accepted.", param="messages")
        prompt_chars = sum(len(message_text(m, i)) for i, m in enumerate(messages))
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = body["prompt"] = prompt[0]
        if not isinstance(prompt, str):
            raise RequestError("prompt must be a string (one prompt per request).",
                               param="prompt")
        prompt_chars = len(prompt)
    if prompt_chars > limits.max_prompt_chars:
        raise RequestError(
            f"The prompt has {prompt_chars} characters; at most {limits.max_prompt_chars} are "
            f"accepted (the model reads {CONTEXT_TOKENS} tokens). Send a shorter prompt.",
            code="context_length_exceeded", param="messages",
        )
    max_tokens = body.get("max_tokens", body.pop("max_completion_tokens", None))
    if max_tokens is None:
        max_tokens = limits.default_max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not (
        1 <= max_tokens <= limits.max_tokens
    ):
        raise RequestError(f"max_tokens must be a whole number from 1 to {limits.max_tokens}.",
                           param="max_tokens")
    body["max_tokens"] = max_tokens
    if "stop" in body:
        body["stop"] = _checked_stop(body["stop"], limits)
    if body.get("stream"):
        raise RequestError("Streaming is not offered by this endpoint; send stream=false.",
                           param="stream")
    if body.get("response_format") is not None:
        body["response_format"] = translated_response_format(body["response_format"], limits,
                                                             max_tokens)
    for unsupported in ("grammar", "logit_bias", "tools", "functions"):
        if body.get(unsupported) is not None:
            raise RequestError(f"'{unsupported}' is not accepted by this endpoint.",
                               param=unsupported)
    return body


# --------------------------------------------------------------------------- the ASGI guard


def _error_body(error: RequestError) -> bytes:
    return json.dumps({"error": {"message": str(error), "type": "invalid_request_error",
                                 "param": error.param, "code": error.code}}).encode()


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None once it passes `limit` bytes (the rest is read and dropped)."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        more = message.get("more_body", False)
        if size <= limit:
            chunks.append(chunk)
        elif size > 4 * limit:  # a client still sending far past the limit: stop reading
            break
    return b"".join(chunks) if size <= limit else None


class LLMGuard:
    """ASGI middleware in front of llama.cpp's app: `/health`, limits, response formats."""

    def __init__(self, app: ASGIApp, model_name: str, limits: Limits = Limits()):
        self.app, self.model_name, self.limits = app, model_name, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/health":
            body = json.dumps({"status": "ok", "model": self.model_name}).encode()
            await _respond(send, 200, body)
            return
        if path in HIDDEN_PATHS:
            await _respond(send, 404, _error_body(RequestError("Not found.", 404, "not_found")))
            return
        if path not in GENERATION_PATHS or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._checked_body(scope, receive)
        except RequestError as error:
            await _respond(send, error.status, _error_body(error))
            return
        await self.app(self._with_length(scope, len(body)), _replay(body, receive), send)

    async def _checked_body(self, scope: Scope, receive: Receive) -> bytes:
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type != b"application/json":
            raise RequestError("Send the request as JSON with 'Content-Type: application/json'.",
                               415, "unsupported_media_type")
        raw = await _read_body(receive, self.limits.max_body_bytes)
        if raw is None:
            raise RequestError(f"The request body is over {self.limits.max_body_bytes} bytes; "
                               "send a shorter prompt.", 413, "payload_too_large")
        try:
            body = json.loads(raw)
        except RecursionError:
            body = None  # nested past Python's parser: the depth check below says so
            depth = self.limits.max_json_depth + 1
        except ValueError as error:
            raise RequestError(f"The body is not valid JSON ({error}).") from None
        else:
            depth = json_depth(body, self.limits.max_json_depth)
        if depth > self.limits.max_json_depth:
            raise RequestError(f"The JSON body nests more than {self.limits.max_json_depth} "
                               "levels deep; send a flat request.")
        return json.dumps(checked_request(body, scope["path"], self.limits)).encode()

    @staticmethod
    def _with_length(scope: Scope, length: int) -> Scope:
        headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-length"]
        return {**scope, "headers": [*headers, (b"content-length", str(length).encode())]}


def _replay(body: bytes, receive_next: Receive) -> Receive:
    """A `receive` that gives the checked body once, then the client's own messages (so the
    app still sees a real disconnect, and nothing else)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await receive_next()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
