"""How fast the chapter 10 chatbot is answered and judged on this machine (llama.cpp endpoint).

Starts the local endpoint (llama.cpp's OpenAI server over the packaged Gemma 3 270M GGUF,
behind `utils.rag.llm.LLMGuard`) and measures, in one run:

- `load_s`: from start to `/health` answering, warm install (the GGUF assembled already);
- the three ways to prompt a base model for an answer, on the same questions: chat with the
  `plain` format (what the chatbot uses), `/v1/completions` with the same prompt, and chat with
  the GGUF's own chat template (a second server): median latency and mean MiniLM similarity
  to the reference answer;
- `answer_p50_s` and `judge_p50_s` (one judge call, correctness or professionalism), and
  `judge_error_rate` (a judge reply that failed or fell outside the rubric);
- `questions_per_min`: `mlflow.genai.evaluate` with a `predict_fn` (answer) and both judges
  plus the deterministic scorers, end to end; then the same evaluation against endpoints
  without the prompt prefix cache (`--prefix-prompts 0`), with the reply's grammar tested on
  the whole vocabulary as llama-cpp-python does (`--grammar-candidates 0`), with prompts read
  by one thread instead of two (`--batch-threads 1`), and with two threads generating as well,
  side by side (`--variants 0` skips them);
- `peak_rss_mb` of the endpoint process, sampled every 0.2 s;
- `chapter_default_s` and `chapter_test_parameters_s`: chapter 10 run as `make run` does (a
  fresh kernel, kernel start included) on a fresh work dir, with its default parameters and
  with its notebook test's (`--chapter 0` skips them; goals 120 s and 90 s).

The previous endpoint (a hand-written `transformers` server, removed in this version) is not
installable any more; its last committed figures are printed beside the new ones.

    MLDEPLOY_WORK_DIR=/tmp/bench-rag python benchmarks/rag_eval.py [--questions N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

# Run as a script, this folder is on sys.path, not the repository root: add it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, write_results  # noqa: E402

PREVIOUS = {  # benchmarks/results/rag_eval.json before this version (transformers endpoint)
    "questions_per_min": 1.75, "load_s": 16.0, "peak_rss_mb": 3317.0, "answer_p50_s": 23.12,
    "judge_p50_s": 3.3, "judge_error_rate": 0.0,
}


class PeakRss(threading.Thread):
    """Peak resident memory of one process, sampled every 0.2 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self._done = pid, 0, threading.Event()

    def run(self) -> None:
        import psutil

        while not self._done.wait(0.2):
            try:
                self.peak = max(self.peak, psutil.Process(self.pid).memory_info().rss)
            except psutil.Error:
                return

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.peak / 2**20


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - start


def prompt_styles(questions, retriever, model: str, plain_url: str, template_url: str):
    """Median seconds and mean similarity to the reference for each way of prompting."""
    import requests

    from utils.rag.chatbot import build_prompt
    from utils.rag.client import chat, reply_text
    from utils.rag.retriever import cosine_similarity

    def completion(url, prompt):
        body = {"model": model, "prompt": prompt, "max_tokens": 48, "stop": ["\n"],
                "temperature": 0}
        answer = requests.post(f"{url}/completions", json=body, timeout=300)
        answer.raise_for_status()
        return answer.json()["choices"][0]["text"].strip()

    def chatted(url, prompt):
        messages = [{"role": "user", "content": prompt}]
        return reply_text(chat(url, model, messages, max_tokens=48, stop=["\n"]))

    styles = {"chat, plain format (used)": (chatted, plain_url),
              "completions endpoint": (completion, plain_url),
              "chat, GGUF chat template": (chatted, template_url)}
    rows = []
    for name, (ask, url) in styles.items():
        seconds, similarity = [], []
        for record in questions.to_dict("records"):
            passages = [p for p, _ in retriever.search(record["question"], 2)]
            answer, spent = timed(ask, url, build_prompt(record["question"], passages))
            seconds.append(spent)
            similarity.append(cosine_similarity(answer, record["reference_answer"]))
        rows.append([name, round(statistics.median(seconds), 2),
                     round(statistics.mean(similarity), 3)])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=20, help="0 = the whole set")
    parser.add_argument("--variants", type=int, default=1,
                        help="1: also evaluate without each speed-up and with 2 threads")
    parser.add_argument("--chapter", type=int, default=1,
                        help="1: also run chapter 10 with its default and its test parameters")
    args = parser.parse_args()

    import mlflow

    from utils.rag import evaluation, judges
    from utils.rag.chatbot import DEFAULT_CONFIG, answer_question
    from utils.rag.llm import gguf_file, start_llm_server
    from utils.rag.retriever import Retriever, chunk_corpus, load_documents
    from utils.tracking import setup_mlflow

    setup_mlflow("benchmark_rag_eval")
    model = DEFAULT_CONFIG["model"]
    gguf_file()  # warm install: the GGUF is assembled once, before timing
    server, load_s = timed(start_llm_server, model_name=model)
    memory = PeakRss(server.pid)
    memory.start()
    passages = chunk_corpus(load_documents())
    retriever = Retriever.build(passages)
    questions = evaluation.load_questions(
        passage_ids=[p.passage_id for p in passages], limit=args.questions
    )

    with start_llm_server(model_name=model, chat_format="gguf") as template_server:
        style_rows = prompt_styles(questions, retriever, model, server.base_url,
                                   template_server.base_url)

    judges.point_judges_at(server.base_url)
    correctness, professionalism = (judges.correctness_judge(model),
                                    judges.professionalism_judge(model))
    answer_s, judge_s, judge_failures = [], [], 0
    for record in questions.to_dict("records"):
        reply, spent = timed(answer_question, record["question"], retriever, server.base_url,
                             model)
        answer_s.append(spent)
        for judge, read in ((correctness, judges.correctness_value),
                            (professionalism, judges.grade_value)):
            feedback, spent = timed(judge, inputs={"question": record["question"]},
                                    outputs=reply.answer,
                                    expectations={"expected_response":
                                                  record["reference_answer"]})
            judge_s.append(spent)
            try:
                if feedback.error is not None:
                    raise judges.JudgeValueError(str(feedback.error))
                read(feedback.value)
            except judges.JudgeValueError:
                judge_failures += 1

    def evaluate(base_url: str):
        judges.point_judges_at(base_url)
        start = time.perf_counter()
        result = mlflow.genai.evaluate(
            data=evaluation.evaluation_data(questions),
            predict_fn=evaluation.chatbot_predict_fn(_Chatbot(retriever, base_url, model)),
            scorers=[correctness, professionalism, *judges.deterministic_scorers()],
        )
        return judges.summary_metrics(judges.scores_frame(result.result_df)), \
            time.perf_counter() - start

    metrics, evaluate_s = evaluate(server.base_url)
    server.stop()
    peak_rss_mb = memory.stop()
    variants = {}
    if args.variants:
        for name, options in (("no_prefix_cache", {"prefix_prompts": 0}),
                              ("whole_vocabulary_grammar", {"grammar_candidates": 0}),
                              ("one_batch_thread", {"batch_threads": 1}),
                              ("two_threads", {"threads": 2})):
            with start_llm_server(model_name=model, **options) as variant:
                variants[name] = evaluate(variant.base_url)[1]

    chapter_runs = chapter_seconds() if args.chapter else {}
    n = len(questions)
    figures = {
        "questions_per_min": round(n / evaluate_s * 60, 2),
        "load_s": round(load_s, 2),
        "peak_rss_mb": round(peak_rss_mb),
        "answer_p50_s": round(statistics.median(answer_s), 2),
        "judge_p50_s": round(statistics.median(judge_s), 2),
        "judge_error_rate": round(judge_failures / len(judge_s), 3),
        "evaluate_judge_error_rate": round(metrics["judge_error_rate"], 3),
        "questions": n,
        "retrieval_hit_rate_top2": _hit_rate(questions, retriever),
        **{f"questions_per_min_{name}": round(n / seconds * 60, 2)
           for name, seconds in variants.items()},
        **chapter_runs,
    }
    rows = [[name, figures[name], PREVIOUS.get(name, "")] for name in figures]
    write_results(
        "rag_eval", ["figure", "llama.cpp endpoint (now)", "transformers endpoint (before)"],
        rows, figures,
        notes=["Ways to prompt the base model for an answer (median s, mean similarity):",
               *(f"{r[0]}: {r[1]} s, similarity {r[2]}" for r in style_rows),
               "The 'before' column is the committed result of the removed transformers "
               "endpoint (2026-11-21); it cannot run side by side any more.",
               "The machine is shared: read the load average in the header before comparing."],
    )
    (RESULTS / "rag_eval_styles.json").write_text(json.dumps(style_rows, indent=1) + "\n")


def chapter_seconds() -> dict[str, float]:
    """Chapter 10 end to end in a fresh kernel and work dir, at its default parameters and at
    its notebook test's: seconds each (the run must succeed)."""
    import tempfile

    from tests.notebooks.test_10_rag_evaluation import PARAMETERS
    from utils.chapters import NOTEBOOKS_DIR, run_notebook
    from utils.env import WORK_DIR_ENV

    seconds = {}
    for name, parameters in (("chapter_default_s", {}), ("chapter_test_parameters_s", PARAMETERS)):
        with tempfile.TemporaryDirectory(prefix="bench-ch10-") as work_dir:
            result = run_notebook(NOTEBOOKS_DIR / "10_rag_evaluation.ipynb", parameters,
                                  output_dir=Path(work_dir) / "executed",
                                  env={WORK_DIR_ENV: work_dir})
        if not result.ok:
            raise RuntimeError(f"chapter 10 failed with {parameters or 'defaults'}: "
                               f"{result.error}")
        seconds[name] = round(result.seconds, 1)
    return seconds


class _Chatbot:
    """The chatbot's steps without MLflow model logging (what the pyfunc's predict does)."""

    def __init__(self, retriever, base_url: str, model: str):
        self.retriever, self.base_url, self.model = retriever, base_url, model

    def predict(self, frame):
        import pandas as pd

        from utils.rag.chatbot import OUTPUT_COLUMNS, answer_question

        rows = []
        for question in frame["question"]:
            reply = answer_question(question, self.retriever, self.base_url, self.model)
            rows.append([reply.answer, reply.passage_ids, reply.warning])
        return pd.DataFrame(rows, columns=OUTPUT_COLUMNS)


def _hit_rate(questions, retriever) -> float:
    hits = [r["passage_id"] in [p.passage_id for p, _ in retriever.search(r["question"], 2)]
            for r in questions.to_dict("records")]
    return round(sum(hits) / len(hits), 3)


if __name__ == "__main__":
    main()
