"""Judges and scorers for the chatbot, their agreement with people, and the promotion rule.

LLM judges are MLflow `make_judge` judges addressed as `openai:/<model>`: MLflow sends them to
`$OPENAI_API_BASE/chat/completions` with a JSON-schema `response_format`, so one setting
(`point_judges_at`) moves them from the local endpoint to any OpenAI-compatible service.
The local endpoint generates their replies under the reply's JSON schema (`utils.rag.llm`),
so a reply is always valid JSON; a judge that still fails on a row (endpoint down, a value
outside the rubric) is counted in `judge_error_rate`, never dropped. Deterministic scorers need
no model but MiniLM: similarity to the reference, token count and the ARI readability grade
the seed's MLflow 2 evaluation reported. Evaluation rows look like

    {"inputs": {"question_id": ..., "question": ...},
     "outputs": "the chatbot's answer",
     "expectations": {"expected_response": ..., "passage_id": ...}}
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from utils.rag.client import api_key_for

CORRECTNESS, PROFESSIONALISM = "correctness", "professionalism"
CORRECTNESS_SCALE = "correctness_1_5"  # the seed's answer_correctness grade
# Tokens per judge reply. MLflow asks for the verdict before the rationale, so a short cap
# keeps the verdict and bounds the explanation (unbounded, the local endpoint allows ~400
# characters of it). The local endpoint reads a judge's fixed instructions once
# (`utils.rag.prefix_cache`); most of a call is then the reply, 20-40 ms a token on one core
# depending on the CPU, its JSON grammar included (`utils.rag.grammar_sampler`). 96 leaves the
# local endpoint room for a 32-character rationale (`llm_guard.string_budget`): a third less
# reply than 128 tokens' 64 characters, and Gemma 3 270M's rationales mostly restate the answer.
JUDGE_MAX_TOKENS = 96

CORRECTNESS_INSTRUCTIONS = """\
Decide whether the chatbot's answer in {{ outputs }} to the question in {{ inputs }} is correct.
Compare it with the reference answer in {{ expectations }}: answer "yes" when it states the
reference's main fact (other wording is fine), "no" when it is wrong, contradicts the
reference, or does not give the main fact."""

CORRECTNESS_SCALE_INSTRUCTIONS = """\
Grade how correct the chatbot's answer in {{ outputs }} to the question in {{ inputs }} is,
compared with the reference answer in {{ expectations }}. Rubric (as MLflow 2's
answer_correctness metric):
5 = states the reference's main fact, nothing wrong added.
4 = states the main fact with a minor inaccuracy or omission.
3 = partly correct: some of the fact, or the fact mixed with errors.
2 = mostly wrong, with a trace of the right fact.
1 = wrong, contradicts the reference, or gives no fact."""

PROFESSIONALISM_INSTRUCTIONS = """\
Rate how professional the chatbot's answer in {{ outputs }} is as a reply to {{ inputs }}.
Judge tone and form, not correctness. Rubric:
5 = courteous, clear complete sentences, neutral tone.
4 = clear and polite, slightly awkward or terse.
3 = understandable but sloppy: fragments, odd phrasing, some repetition.
2 = unprofessional: rambling, heavy repetition, slang or filler.
1 = rude, mocking, or not an answer at all.
Graded examples:
- "An alias is a movable name that points at one model version, such as champion." -> 5
- "alias alias the name the name of of model model" -> 2
- "Figure it out yourself, it's in the docs." -> 1"""


def judge_model_uri(model: str) -> str:
    """The MLflow judge URI for a model behind an OpenAI-compatible endpoint."""
    return f"openai:/{model}"


def point_judges_at(base_url: str, api_key: str | None = None) -> None:
    """Send `openai:/...` judges to `base_url` (e.g. `http://127.0.0.1:8800/v1`, or a
    Databricks workspace's `https://<host>/serving-endpoints`). A local endpoint accepts any
    key; a remote one without a key raises `MissingAPIKeyError` saying where to put it (keep
    real keys in a secret store, not in the notebook)."""
    key = api_key_for(base_url, api_key)  # before changing anything: refused means unchanged
    os.environ["OPENAI_API_BASE"] = base_url
    os.environ["OPENAI_BASE_URL"] = base_url
    os.environ["OPENAI_API_KEY"] = key


def correctness_judge(model: str, max_tokens: int = JUDGE_MAX_TOKENS):
    from mlflow.genai.judges import make_judge

    return make_judge(
        name=CORRECTNESS,
        instructions=CORRECTNESS_INSTRUCTIONS,
        feedback_value_type=Literal["yes", "no"],
        model=judge_model_uri(model),
        inference_params={"max_tokens": max_tokens},
    )


def correctness_scale_judge(model: str, max_tokens: int = JUDGE_MAX_TOKENS):
    from mlflow.genai.judges import make_judge

    return make_judge(
        name=CORRECTNESS_SCALE,
        instructions=CORRECTNESS_SCALE_INSTRUCTIONS,
        feedback_value_type=Literal[1, 2, 3, 4, 5],
        model=judge_model_uri(model),
        inference_params={"max_tokens": max_tokens},
    )


def professionalism_judge(model: str, max_tokens: int = JUDGE_MAX_TOKENS):
    from mlflow.genai.judges import make_judge

    return make_judge(
        name=PROFESSIONALISM,
        instructions=PROFESSIONALISM_INSTRUCTIONS,
        feedback_value_type=Literal[1, 2, 3, 4, 5],
        model=judge_model_uri(model),
        inference_params={"max_tokens": max_tokens},
    )


# --------------------------------------------------------------------------- deterministic


_TOKEN = re.compile(r"\w+|[^\w\s]")


def answer_text(outputs: Any) -> str:
    """The answer in a row's outputs (a dict from the chatbot, or plain text)."""
    if isinstance(outputs, Mapping):
        return str(outputs.get("answer") or "")
    return "" if outputs is None else str(outputs)


def count_tokens(text: str) -> int:
    """Words and punctuation marks: a model-independent length (LLM tokenizers differ)."""
    return len(_TOKEN.findall(text))


def ari_grade(text: str) -> float:
    """Automated Readability Index: the US school grade needed to read `text` (the seed's
    `ari_grade_level`); needs no syllable dictionary, so it runs offline."""
    import textstat

    return float(textstat.automated_readability_index(text)) if text.strip() else 0.0


def deterministic_scorers() -> list:
    """MLflow scorers that need no judge: semantic_similarity, token_count, readability_grade
    (chapter 10 writes `retrieval_hit` in a cell of its own)."""
    from mlflow.genai.scorers import scorer

    from utils.rag.retriever import cosine_similarity

    @scorer
    def semantic_similarity(outputs, expectations) -> float:
        """Cosine similarity of the answer's and the reference's MiniLM embeddings."""
        return round(cosine_similarity(answer_text(outputs), expectations["expected_response"]), 4)

    @scorer
    def token_count(outputs) -> int:
        return count_tokens(answer_text(outputs))

    @scorer
    def readability_grade(outputs) -> float:
        """ARI school grade: lower is easier (8-9 plain English; above 14 hard)."""
        return round(ari_grade(answer_text(outputs)), 1)

    return [semantic_similarity, token_count, readability_grade]


# --------------------------------------------------------------------------- reading results


class JudgeValueError(ValueError):
    """A judge result that is not one of the values its rubric allows."""


_YES = {"yes", "true", "correct", "1", "pass"}
_NO = {"no", "false", "incorrect", "0", "fail"}


def correctness_value(value: Any) -> int:
    """1 for a correct verdict, 0 for an incorrect one (yes/no, true/false, enum values)."""
    text = str(getattr(value, "value", value)).strip().strip('"').lower()
    if text in _YES:
        return 1
    if text in _NO:
        return 0
    raise JudgeValueError(f"Correctness result {value!r} is neither yes nor no.")


def grade_value(value: Any) -> int:
    """The 1-5 grade in a judge result such as 4, "4", "4.0" or "4/5"."""
    text = str(getattr(value, "value", value))
    match = re.fullmatch(r"\s*([1-5])(?:\.0+)?(?:\s*/\s*5)?\s*", text)
    if not match:
        raise JudgeValueError(f"Result {value!r} is not a grade from 1 to 5.")
    return int(match.group(1))


def _cell(row: Mapping[str, Any], column: str) -> Any:
    value = row.get(column)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


# evaluate's result_df shows the rows' expectations as `<name>/value` columns too
EXPECTATION_NAMES = frozenset({"expected_response", "passage_id", "expected_facts", "guidelines"})
READERS = {
    CORRECTNESS: correctness_value,
    CORRECTNESS_SCALE: grade_value,
    PROFESSIONALISM: grade_value,
}


def scores_frame(result_df: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluated question from `mlflow.genai.evaluate(...).result_df`, keyed by
    `trace_id` (and `question_id` when the inputs carry one).

    Judge results become numbers (correct 1/0, grades 1-5); a judge that failed on a row
    (endpoint error, a reply MLflow could not parse, a value outside the rubric) leaves the
    number empty and its message in `<judge>_error`, so one bad reply costs one cell, not the
    evaluation. Other scorers' values are copied as they are.
    """
    judges = [j for j in READERS if f"{j}/value" in result_df or f"{j}/error_message" in result_df]
    scorers = [c[: -len("/value")] for c in result_df.columns if c.endswith("/value")
               and c[: -len("/value")] not in {*READERS, *EXPECTATION_NAMES}]
    rows = []
    for _, row in result_df.iterrows():
        request = row.get("request") if isinstance(row.get("request"), Mapping) else {}
        response = row.get("response")
        out: dict[str, Any] = {
            "trace_id": row.get("trace_id"),
            "question_id": request.get("question_id"),
            "question": request.get("question"),
            "answer": answer_text(response) if response is not None else None,
        }
        for judge in judges:
            value, error = _cell(row, f"{judge}/value"), _cell(row, f"{judge}/error_message")
            if value is not None and error is None:
                try:
                    value = READERS[judge](value)
                except JudgeValueError as problem:
                    value, error = None, str(problem)
            elif error is None:
                error = "no result"
            out[judge], out[f"{judge}_error"] = value, error
            out[f"{judge}_rationale"] = _cell(row, f"{judge}/rationale")
        for name in scorers:
            out[name] = _cell(row, f"{name}/value")
        rows.append(out)
    frame = pd.DataFrame(rows)
    for judge in judges:
        frame[judge] = frame[judge].astype("Int64")
    return frame


def summary_metrics(scores: pd.DataFrame) -> dict[str, float]:
    """Rates and means the promotion rule reads (judge errors counted, not hidden)."""
    rows = max(len(scores), 1)
    judged = [j for j in READERS if j in scores]
    failed = pd.Series(False, index=scores.index)
    for judge in judged:
        failed |= scores[f"{judge}_error"].notna()

    def mean(column: str) -> float:
        return float(scores[column].astype(float).mean()) if column in scores else math.nan

    return {
        "rows": len(scores),
        "answer_errors": int(scores["answer"].isna().sum()) if "answer" in scores else 0,
        "correctness_rate": mean(CORRECTNESS),
        "correctness_1_5_mean": mean(CORRECTNESS_SCALE),
        "professionalism_mean": mean(PROFESSIONALISM),
        "semantic_similarity_mean": mean("semantic_similarity"),
        "retrieval_hit_rate": mean("retrieval_hit"),
        "token_count_mean": mean("token_count"),
        "readability_grade_mean": mean("readability_grade"),
        "judge_errors": int(failed.sum()),
        "judge_error_rate": float(failed.sum() / rows),
    }


# --------------------------------------------------------------------------- calibration


def agreement(human: Sequence[float], judge: Sequence[float], kind: str) -> dict[str, Any]:
    """How well a judge agrees with people on the rows both graded.

    `kind="binary"`: Cohen's kappa (0 = chance, 1 = perfect). `kind="ordinal"`: Spearman rank
    correlation and quadratic-weighted kappa. Rows the judge could not grade are left out and
    counted. A judge that gives every row the same value has undefined agreement (NaN): it
    cannot tell answers apart.
    """
    from scipy.stats import spearmanr
    from sklearn.metrics import cohen_kappa_score

    pairs = [(h, j) for h, j in zip(human, judge, strict=True) if j is not None and not pd.isna(j)]
    result: dict[str, Any] = {"graded": len(pairs), "not_graded": len(human) - len(pairs)}
    if len(pairs) < 2:
        return result | {"exact_agreement": math.nan, "kappa": math.nan}
    h, j = (list(map(int, side)) for side in zip(*pairs, strict=True))
    result["exact_agreement"] = sum(a == b for a, b in pairs) / len(pairs)
    constant = len(set(j)) == 1 or len(set(h)) == 1
    if kind == "binary":
        result["kappa"] = math.nan if constant else float(cohen_kappa_score(h, j))
    elif kind == "ordinal":
        result["kappa"] = (
            math.nan if constant else float(cohen_kappa_score(h, j, weights="quadratic"))
        )
        result["spearman"] = math.nan if constant else float(spearmanr(h, j).statistic)
    else:
        raise ValueError(f"kind must be 'binary' or 'ordinal', got {kind!r}.")
    return result


def trust_verdict(stats: Mapping[str, Any], strong: float = 0.6, weak: float = 0.2) -> str:
    """Plain words for an agreement figure (kappa or Spearman, whichever is given)."""
    figure = stats.get("spearman")
    if figure is None or pd.isna(figure):
        figure = stats.get("kappa")
    if figure is None or pd.isna(figure):
        return "cannot tell answers apart (one value for everything): do not use it"
    if figure >= strong:
        return f"agrees well with people ({figure:.2f}): usable as a gate"
    if figure >= weak:
        return f"agrees only loosely ({figure:.2f}): a hint, not a gate"
    return f"no better than chance ({figure:.2f}): do not use it as a gate"


def calibration_table(joined: pd.DataFrame, similarity_cut: float = 0.7) -> pd.DataFrame:
    """LLM judges and deterministic scorers side by side, each against the hand grades.

    `joined` has `human_correctness` (yes/no), `human_professionalism` (1-5) and whatever
    scorer columns were computed. Correctness is compared as yes/no (the 1-5 judge counts 4-5
    as yes, the similarity scorer counts `similarity_cut` or more as yes); professionalism as
    an ordinal grade.
    """
    human_correct = (joined["human_correctness"] == "yes").astype(int).tolist()
    candidates = {
        CORRECTNESS: ("LLM judge, yes/no", lambda c: c),
        CORRECTNESS_SCALE: ("LLM judge, 1-5 (4-5 = yes)", lambda c: c.map(
            lambda g: None if pd.isna(g) else int(g >= 4))),
        "semantic_similarity": (f"deterministic, similarity >= {similarity_cut}",
                                lambda c: c.map(lambda v: None if pd.isna(v)
                                                else int(float(v) >= similarity_cut))),
    }
    rows = []
    for column, (how, to_binary) in candidates.items():
        if column in joined:
            stats = agreement(human_correct, to_binary(joined[column]).tolist(), "binary")
            rows.append({"grade": "correctness", "scorer": column, "how": how, **stats})
    if PROFESSIONALISM in joined:
        stats = agreement(joined["human_professionalism"].astype(int).tolist(),
                          joined[PROFESSIONALISM].tolist(), "ordinal")
        rows.append({"grade": "professionalism", "scorer": PROFESSIONALISM,
                     "how": "LLM judge, 1-5", **stats})
    table = pd.DataFrame(rows)
    table["verdict"] = [trust_verdict(r) for r in table.to_dict("records")]
    return table


def try_align(judge, traces: Sequence, reflection_model: str | None = None):
    """(aligned judge or None, what happened): `judge.align(traces)` with MLflow's default
    optimizer (MemAlign), its reflection model pointed at `reflection_model`. Alignment needs
    DSPy and LiteLLM installed, an embeddings endpoint, and a reflection model that can write
    instructions; where one is missing the reason is returned instead of raised."""
    try:
        from mlflow.genai.judges.optimizers import MemAlignOptimizer

        optimizer = MemAlignOptimizer(reflection_lm=reflection_model or judge.model)
        return judge.align(traces, optimizer), "aligned"
    except Exception as error:  # report any failure: alignment is optional here
        return None, f"{type(error).__name__}: {str(error).splitlines()[0][:300]}"


# --------------------------------------------------------------------------- promotion


@dataclass
class PromotionDecision:
    promote: bool
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)


def promotion_decision(
    metrics: Mapping[str, float],
    minimums: Mapping[str, float],
    maximums: Mapping[str, float] | None = None,
) -> PromotionDecision:
    """Pass only when every metric meets its minimum (or maximum); say which did not."""
    checks, reasons = {}, []
    bounds = [(name, limit, ">=") for name, limit in minimums.items()]
    bounds += [(name, limit, "<=") for name, limit in (maximums or {}).items()]
    for name, limit, op in bounds:
        value = metrics.get(name)
        if value is None or pd.isna(value):
            ok = False
            reasons.append(f"{name} was not measured (needs {op} {limit})")
        else:
            ok = value >= limit if op == ">=" else value <= limit
            if not ok:
                reasons.append(f"{name} = {value:.3f}, needs {op} {limit}")
        checks[name] = {"value": value, "limit": limit, "rule": op, "passed": ok}
    return PromotionDecision(not reasons, reasons, checks)
