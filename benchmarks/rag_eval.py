"""How fast the chapter 10 chatbot is answered and judged on this machine.

Starts the local Gemma 3 270M endpoint twice (first from the GGUF file, converting it, then
from the converted cache), answers the evaluation set with the retriever + endpoint, judges
every answer with the correctness and professionalism judges plus the deterministic scorers
through `mlflow.genai.evaluate`, and samples the endpoint's memory all along.

    MLDEPLOY_WORK_DIR=/tmp/bench-rag python benchmarks/rag_eval.py [--questions N]

Figures: `questions_per_min` (answered and judged), `load_s` (first start, GGUF conversion
included), `load_cached_s`, `peak_rss_mb` (endpoint process), `answer_s_median`,
`judge_s_per_question`. Writes benchmarks/results/rag_eval.md and rag_eval.json.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

# Run as a script, this folder is on sys.path, not the repository root: add it, so
# `benchmarks.common` and `utils` import.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine_info, write_json  # noqa: E402


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


def timed_start(**kwargs):
    from utils.rag.llm import start_llm_server

    start = time.perf_counter()
    server = start_llm_server(wait=False, **kwargs)
    memory = PeakRss(server.process.pid)
    memory.start()
    server.wait_ready(1200)
    return server, time.perf_counter() - start, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=0, help="0 = the whole set")
    args = parser.parse_args()

    import mlflow
    import pandas as pd

    from utils.env import work_path
    from utils.rag import evaluation
    from utils.rag.chatbot import DEFAULT_CONFIG, answer_question
    from utils.rag.judges import (
        correctness_judge,
        deterministic_scorers,
        point_judges_at,
        professionalism_judge,
        scores_frame,
        summary_metrics,
    )
    from utils.rag.retriever import Retriever, chunk_corpus, load_documents
    from utils.tracking import setup_mlflow

    setup_mlflow("benchmark_rag_eval")
    model = DEFAULT_CONFIG["model"]
    shutil.rmtree(work_path("models", "gemma-3-270m-hf"), ignore_errors=True)  # a cold start
    server, load_s, memory = timed_start(model_name=model)
    server.stop()
    first_peak = memory.stop()
    server, load_cached_s, memory = timed_start(model_name=model)
    print(f"endpoint ready: {load_s:.1f} s from GGUF, {load_cached_s:.1f} s from the cache")

    passages = chunk_corpus(load_documents())
    retriever = Retriever.build(passages)
    questions = evaluation.load_questions(
        passage_ids=[p.passage_id for p in passages], limit=args.questions
    )
    answers, seconds = [], []
    start = time.perf_counter()
    for record in questions.to_dict("records"):
        t = time.perf_counter()
        reply = answer_question(record["question"], retriever, server.base_url, model)
        seconds.append(time.perf_counter() - t)
        answers.append(
            {
                "question_id": record["question_id"],
                "question": record["question"],
                "answer": reply.answer,
                "passage_ids": reply.passage_ids,
            }
        )
    answer_s = time.perf_counter() - start

    point_judges_at(server.base_url)
    rows = evaluation.evaluation_rows(pd.DataFrame(answers), questions)
    scorers = [correctness_judge(model), professionalism_judge(model), *deterministic_scorers()]
    start = time.perf_counter()
    result = mlflow.genai.evaluate(data=rows, scorers=scorers)
    judge_s = time.perf_counter() - start
    metrics = summary_metrics(scores_frame(result.result_df))
    server.stop()
    peak_rss_mb = max(first_peak, memory.stop())

    n = len(questions)
    figures = {
        "questions_per_min": round(n / (answer_s + judge_s) * 60, 2),
        "load_s": round(load_s, 1),
        "load_cached_s": round(load_cached_s, 1),
        "peak_rss_mb": round(peak_rss_mb, 0),
        "answer_s_median": round(statistics.median(seconds), 2),
        "judge_s_per_question": round(judge_s / n, 2),
        "questions": n,
        "retrieval_hit_rate": round(metrics["retrieval_hit_rate"], 3),
        "judge_error_rate": round(metrics["judge_error_rate"], 3),
    }
    machine = machine_info()
    write_json("rag_eval", figures, machine)
    lines = ["| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in figures.items())]
    table = "\n".join(lines)
    (RESULTS / "rag_eval.md").write_text(
        "# RAG evaluation: answered and judged per minute\n\n"
        f"Gemma 3 270M (local endpoint) answering and judging, {machine['cores']} cores, "
        f"load average at the end {machine.get('load_avg_1m', '?')}.\n\n{table}\n"
    )
    print(table)


if __name__ == "__main__":
    main()
