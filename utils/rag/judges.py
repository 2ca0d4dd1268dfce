"""Judges and scorers for the chatbot, their agreement with people, and the promotion rule.

LLM judges are MLflow `make_judge` judges addressed as `openai:/<model>`: MLflow sends them to
`$OPENAI_API_BASE/chat/completions` with a JSON-schema `response_format`, so one setting
(`point_judges_at`) moves them from the local endpoint to any OpenAI-compatible service.
Deterministic scorers need no model but MiniLM: similarity to the reference, retrieval hit,
token count and readability. Evaluation rows look like

    {"inputs": {"question": ...},
     "outputs": {"answer": ..., "passage_ids": [...]},
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

CORRECTNESS, PROFESSIONALISM = "correctness", "professionalism"

CORRECTNESS_INSTRUCTIONS = """\
Decide whether the chatbot's answer in {{ outputs }} to the question in {{ inputs }} is correct.
Compare it with the reference answer in {{ expectations }}: answer "yes" when it states the
reference's main fact (other wording is fine), "no" when it is wrong, contradicts the
reference, or does not give the main fact."""

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
    key; keep real keys in a secret store, not in the notebook."""
    os.environ["OPENAI_API_BASE"] = base_url
    os.environ["OPENAI_BASE_URL"] = base_url
    if api_key:
        os.environ["OPENAI_API_KEY"] = api_key
    else:
        os.environ.setdefault("OPENAI_API_KEY", "local")


def correctness_judge(model: str):
    from mlflow.genai.judges import make_judge

    return make_judge(
        name=CORRECTNESS,
        instructions=CORRECTNESS_INSTRUCTIONS,
        feedback_value_type=Literal["yes", "no"],
        model=judge_model_uri(model),
    )


def professionalism_judge(model: str):
    from mlflow.genai.judges import make_judge

    return make_judge(
        name=PROFESSIONALISM,
        instructions=PROFESSIONALISM_INSTRUCTIONS,
        feedback_value_type=Literal[1, 2, 3, 4, 5],
        model=judge_model_uri(model),
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


def flesch_reading_ease(text: str) -> float:
    """Flesch reading ease (higher is easier: 60-70 plain English, below 30 hard).

    Word and sentence counts come from `textstat`; syllables from `pyphen`'s English
    hyphenation dictionary, because textstat 0.7's own English syllable counter downloads
    NLTK's cmudict on first use, and these chapters run offline.
    """
    import textstat
    from pyphen import Pyphen

    words = re.findall(r"[A-Za-z']+", text)
    if not words:
        return 0.0
    hyphenator = Pyphen(lang="en_US")
    syllables = sum(len(hyphenator.positions(w)) + 1 for w in words)
    words_per_sentence = textstat.lexicon_count(text) / max(textstat.sentence_count(text), 1)
    return 206.835 - 1.015 * words_per_sentence - 84.6 * syllables / len(words)


def deterministic_scorers() -> list:
    """MLflow scorers that need no judge: semantic_similarity, retrieval_hit, token_count,
    readability."""
    from mlflow.genai.scorers import scorer

    from utils.rag.retriever import cosine_similarity

    @scorer
    def semantic_similarity(outputs, expectations) -> float:
        """Cosine similarity of the answer's and the reference's MiniLM embeddings."""
        return round(cosine_similarity(answer_text(outputs), expectations["expected_response"]), 4)

    @scorer
    def retrieval_hit(outputs, expectations) -> bool:
        """Was the passage that answers the question among those given to the model?"""
        return expectations["passage_id"] in (outputs.get("passage_ids") or [])

    @scorer
    def token_count(outputs) -> int:
        return count_tokens(answer_text(outputs))

    @scorer
    def readability(outputs) -> float:
        """Flesch reading ease: higher is easier (60-70 plain English; below 30 hard)."""
        return round(flesch_reading_ease(answer_text(outputs)), 1)

    return [semantic_similarity, retrieval_hit, token_count, readability]


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


def professionalism_value(value: Any) -> int:
    """The 1-5 grade in a judge result such as 4, "4", "4.0" or "4/5"."""
    match = re.fullmatch(r"\s*([1-5])(?:\.0+)?(?:\s*/\s*5)?\s*", str(value))
    if not match:
        raise JudgeValueError(f"Professionalism result {value!r} is not a grade from 1 to 5.")
    return int(match.group(1))


def _cell(row: Mapping[str, Any], column: str) -> Any:
    value = row.get(column)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def scores_frame(result_df: pd.DataFrame) -> pd.DataFrame:
    """One row per evaluated question from `mlflow.genai.evaluate(...).result_df`.

    Judge results become numbers (correct 1/0, professionalism 1-5); a judge that failed on a
    row (endpoint error, a reply MLflow could not parse, a value outside the rubric) leaves the
    number empty and its message in `<judge>_error`, so one bad reply costs one cell, not the
    evaluation.
    """
    readers = {CORRECTNESS: correctness_value, PROFESSIONALISM: professionalism_value}
    rows = []
    for _, row in result_df.iterrows():
        out: dict[str, Any] = {"question": (row.get("request") or {}).get("question")}
        for judge, read in readers.items():
            value, error = _cell(row, f"{judge}/value"), _cell(row, f"{judge}/error_message")
            if value is not None and error is None:
                try:
                    value = read(value)
                except JudgeValueError as problem:
                    value, error = None, str(problem)
            elif error is None:
                error = "no result"
            out[judge], out[f"{judge}_error"] = value, error
            out[f"{judge}_rationale"] = _cell(row, f"{judge}/rationale")
        for name in ("semantic_similarity", "retrieval_hit", "token_count", "readability"):
            out[name] = _cell(row, f"{name}/value")
        rows.append(out)
    frame = pd.DataFrame(rows)
    for judge in readers:
        frame[judge] = frame[judge].astype("Int64")
    return frame


def summary_metrics(scores: pd.DataFrame) -> dict[str, float]:
    """Rates and means the promotion rule reads (judge errors counted, not hidden)."""
    rows = max(len(scores), 1)
    failed = scores[f"{CORRECTNESS}_error"].notna() | scores[f"{PROFESSIONALISM}_error"].notna()
    return {
        "rows": len(scores),
        "correctness_rate": float(scores[CORRECTNESS].astype(float).mean()),
        "professionalism_mean": float(scores[PROFESSIONALISM].astype(float).mean()),
        "semantic_similarity_mean": float(scores["semantic_similarity"].astype(float).mean()),
        "retrieval_hit_rate": float(scores["retrieval_hit"].astype(float).mean()),
        "token_count_mean": float(scores["token_count"].astype(float).mean()),
        "readability_mean": float(scores["readability"].astype(float).mean()),
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
    figure = stats.get("spearman", stats.get("kappa"))
    if figure is None or pd.isna(figure):
        return "cannot tell answers apart (one value for everything): do not use it"
    if figure >= strong:
        return f"agrees well with people ({figure:.2f}): usable as a gate"
    if figure >= weak:
        return f"agrees only loosely ({figure:.2f}): a hint, not a gate"
    return f"no better than chance ({figure:.2f}): do not use it as a gate"


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
