"""The validation gate's checks for a registered model version (chapter 08).

`validate_candidate` runs every check on one version and returns a report: each check passed
or failed, with the value measured, the threshold and the reason. The checks are plain
functions of measured values, so each one can be read and tested alone; `validate_candidate`
measures the values from the registry and a labelled holdout.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from utils.tracking import CHAMPION, ModelNotFoundError, get_aliases, model_name

# Unity Catalog limits tag values to 256 characters; keep every tag we write under that.
TAG_VALUE_LIMIT = 250


PLACEHOLDER_DESCRIPTIONS = {"todo", "tbd", "test", "model", "n/a", "none", "wip", "fixme"}


# `name==version` and nothing else: no wildcards, no markers, no pip options (`-e`, `-r`,
# `--extra-index-url` would install from wherever the line says).
_PINNED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]*\])?==[A-Za-z0-9.!+_-]+$")


class PromotionError(RuntimeError):
    """The gate refuses to act: an alias moved, a report is stale, or there is nothing to roll
    back to. The message says what changed and what to do."""


def _unmeasured(value: float | None) -> bool:
    return value is None or math.isnan(value)


@dataclass(frozen=True)
class ValidationPolicy:
    """Thresholds of the gate. The defaults suit the churn classifier of these chapters."""

    min_description_words: int = 8
    required_tags: tuple[str, ...] = ("owner_team", "training_rows")
    metric: str = "auc"  # "auc", "accuracy" or "f1"
    tolerance: float = 0.01  # how much worse than the champion a candidate may be
    slice_column: str | None = "Geography"
    slice_floor: float = 0.75
    min_slice_rows: int = 50  # smaller slices are reported but not judged: too noisy
    latency_budget_ms: float = 50.0
    latency_repeats: int = 30
    measure_timeout_s: float = 600.0  # the child process that loads and measures the models


@dataclass(frozen=True)
class CheckResult:
    """One check: did it pass, what was measured, against what, and why it failed."""

    check: str
    passed: bool
    value: Any
    threshold: Any
    reason: str


@dataclass
class ValidationReport:
    """Every check of one model version, and the champion it was compared with."""

    model_name: str
    version: int
    champion_version: int | None
    checks: list[CheckResult] = field(default_factory=list)
    validated_at: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds")
    )

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def check(self, name: str) -> CheckResult:
        for result in self.checks:
            if result.check == name:
                return result
        raise KeyError(f"No check {name!r}; checks: {[c.check for c in self.checks]}")

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    @property
    def reasons(self) -> list[str]:
        return [f"{c.check}: {c.reason}" for c in self.failures]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "check": c.check,
                    "passed": c.passed,
                    "value": _show(c.value),
                    "threshold": _show(c.threshold),
                    "reason": c.reason,
                }
                for c in self.checks
            ]
        )

    def as_tags(self) -> dict[str, str]:
        """The report as model version tags: a status, the reasons, one tag per check."""
        status = "passed" if self.passed else "failed"
        summary = "; ".join(self.reasons) or f"all {len(self.checks)} checks passed"
        tags = {
            "validation_status": status,
            "validation_reasons": clip_tag_value(summary),
            "validated_at": self.validated_at,
            "validated_against": str(self.champion_version) if self.champion_version else "none",
        }
        for c in self.checks:
            verdict = "pass" if c.passed else "fail"
            tags[f"validation.{c.check}"] = clip_tag_value(
                f"{verdict}: {_show(c.value)} (threshold {_show(c.threshold)})"
            )
        return tags

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "version": self.version,
            "champion_version": self.champion_version,
            "passed": self.passed,
            "validated_at": self.validated_at,
            "checks": [c.__dict__ for c in self.checks],
        }

    def __str__(self) -> str:
        against = (
            f", compared with champion version {self.champion_version}"
            if self.champion_version
            else ""
        )
        head = (
            f"{self.model_name} version {self.version}: "
            f"{'PASSED' if self.passed else 'REFUSED'} "
            f"({len(self.checks) - len(self.failures)}/{len(self.checks)} checks passed{against})"
        )
        return "\n".join([head, *[f"  - {r}" for r in self.reasons]])


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_show(v)}" for k, v in value.items())
    return str(value)


def clip_tag_value(text: str) -> str:
    return text if len(text) <= TAG_VALUE_LIMIT else text[: TAG_VALUE_LIMIT - 3] + "..."


def check_description(description: str | None, min_words: int = 8) -> CheckResult:
    """A description must exist, say something (not a placeholder) and have `min_words` words."""
    text = (description or "").strip()
    words = len(text.split())
    if not text:
        reason = "no description; say what the model predicts, from what data, and for whom"
    elif text.lower().strip(".! ") in PLACEHOLDER_DESCRIPTIONS:
        reason = f"description {text!r} is a placeholder"
    elif words < min_words:
        reason = f"description has {words} words; write at least {min_words}"
    else:
        return CheckResult("description", True, words, f">= {min_words} words", "")
    return CheckResult("description", False, words, f">= {min_words} words", reason)


def check_tags(tags: Mapping[str, str], required: Sequence[str]) -> CheckResult:
    """Every required tag must be present with a non-empty value."""
    missing = [t for t in required if not str(tags.get(t, "")).strip()]
    value = ", ".join(sorted(k for k in tags if not k.startswith("validation"))) or "none"
    if missing:
        return CheckResult("tags", False, value, ", ".join(required), f"missing tags {missing}")
    return CheckResult("tags", True, value, ", ".join(required), "")


def check_signature(signature) -> CheckResult:
    """The model must carry a signature with both inputs and outputs (serving enforces it)."""
    inputs = getattr(signature, "inputs", None)
    outputs = getattr(signature, "outputs", None)
    counts = [len(spec.inputs) if spec else 0 for spec in (inputs, outputs)]
    value = f"inputs: {counts[0]}, outputs: {counts[1]}"
    if signature is None:
        return CheckResult(
            "signature",
            False,
            "none",
            "inputs and outputs",
            "no signature; log the model with signature=infer_signature(X, y_pred)",
        )
    missing = [part for part, spec in (("inputs", inputs), ("outputs", outputs)) if not spec]
    if missing:
        return CheckResult(
            "signature",
            False,
            value,
            "inputs and outputs",
            f"the signature has no {' and no '.join(missing)}",
        )
    return CheckResult("signature", True, value, "inputs and outputs", "")


def check_input_example(has_example: bool) -> CheckResult:
    """An input example lets serving endpoints show a sample request."""
    if has_example:
        return CheckResult("input_example", True, "present", "present", "")
    return CheckResult(
        "input_example",
        False,
        "absent",
        "present",
        "no input example; log the model with input_example=X.head(5)",
    )


def check_requirements(lines: Sequence[str] | None) -> CheckResult:
    """Every requirement must be pinned `name==version`, so the model loads the same later."""
    if lines is None:
        return CheckResult(
            "requirements",
            False,
            "no requirements.txt",
            "all pinned (==)",
            "the model has no requirements.txt",
        )
    wanted = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    unpinned = [ln for ln in wanted if not _PINNED.match(ln)]
    value = f"{len(wanted) - len(unpinned)}/{len(wanted)} pinned"
    if not wanted:
        return CheckResult(
            "requirements", False, value, "all pinned (==)", "requirements.txt is empty"
        )
    if unpinned:
        return CheckResult(
            "requirements",
            False,
            value,
            "all pinned (==)",
            f"unpinned {unpinned}; pass pip_requirements=pinned_requirements(...)",
        )
    return CheckResult("requirements", True, value, "all pinned (==)", "")


# The tag a rollback writes on the version it rolled back from (utils.gate.promotion.rollback
# and chapter 08's four registry calls).
ROLLBACK_REASON_TAG = "rollback_reason"


def check_not_rolled_back(rolled_back: Mapping[int, str]) -> CheckResult:
    """The candidate must not be, or carry the same artifacts as, a version rolled back from:
    a rollback was a decision, and undoing it takes one too (deleting that version's
    `rollback_reason` tag), not a re-registration of the same model."""
    name, threshold = "not_rolled_back", "no rolled-back version with these artifacts"
    if not rolled_back:
        return CheckResult(name, True, "none", threshold, "")
    shown = "; ".join(f"version {v}: {reason}" for v, reason in sorted(rolled_back.items()))
    return CheckResult(
        name,
        False,
        ", ".join(str(v) for v in sorted(rolled_back)),
        threshold,
        f"these artifacts were rolled back ({shown}); to promote them again, delete the "
        f"{ROLLBACK_REASON_TAG} tag of that version first",
    )


def rolled_back_with_same_artifacts(name: str, candidate) -> dict[int, str]:
    """{version: rollback reason} of the versions of `name` that are `candidate` (a
    ModelVersion) or were registered from the same artifacts (`source`) and rolled back from."""
    import mlflow

    client = mlflow.MlflowClient()
    found = {}
    for other in client.search_model_versions(f"name='{name}'"):
        if other.version != candidate.version and other.source != candidate.source:
            continue
        # Unity Catalog's search leaves tags out: read them from the version itself.
        tags = other.tags or client.get_model_version(name, other.version).tags or {}
        if ROLLBACK_REASON_TAG in tags:
            found[int(other.version)] = tags[ROLLBACK_REASON_TAG]
    return found


def check_metric_vs_champion(
    candidate: float | None, champion: float | None, metric: str = "auc", tolerance: float = 0.01
) -> CheckResult:
    """The candidate may be at most `tolerance` worse than the champion on the same holdout.

    `champion` None means there is no champion; a champion whose metric could not be measured
    is NaN, and fails like an unmeasured candidate."""
    name = f"{metric}_vs_champion"
    if _unmeasured(candidate) or (champion is not None and math.isnan(champion)):
        who = "the candidate's" if _unmeasured(candidate) else "the champion's"
        return CheckResult(
            name,
            False,
            "not measured" if _unmeasured(candidate) else round(candidate, 4),
            "a number",
            f"{who} {metric} could not be measured on the holdout (one class, or NaN "
            "scores); use a holdout with both classes and check the model's output",
        )
    if champion is None:
        return CheckResult(name, True, round(candidate, 4), "no champion yet", "")
    floor = champion - tolerance
    if candidate < floor:
        return CheckResult(
            name,
            False,
            round(candidate, 4),
            f">= {floor:.4f}",
            f"{metric} {candidate:.4f} is worse than the champion's {champion:.4f} "
            f"by more than {tolerance}",
        )
    return CheckResult(name, True, round(candidate, 4), f">= {floor:.4f}", "")


def check_slices(
    scores: Mapping[str, float | None], floor: float, metric: str = "auc"
) -> CheckResult:
    """No judged slice may score below `floor`. A None score (slice too small) is not judged."""
    name = f"{metric}_by_slice"
    judged = {k: v for k, v in scores.items() if v is not None}
    value = {k: round(v, 4) for k, v in judged.items()}
    if not judged:
        return CheckResult(
            name,
            False,
            "no slice large enough",
            f">= {floor}",
            "no slice had enough rows to judge; use a larger holdout",
        )
    unmeasured = sorted(k for k, v in judged.items() if math.isnan(v))
    if unmeasured:
        return CheckResult(
            name, False, value, f">= {floor}", f"slices scored NaN: {', '.join(unmeasured)}"
        )
    low = {k: v for k, v in judged.items() if v < floor}
    if low:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in low.items())
        return CheckResult(name, False, value, f">= {floor}", f"slices below the floor: {shown}")
    return CheckResult(name, True, value, f">= {floor}", "")


def check_latency(p50_ms: float, budget_ms: float) -> CheckResult:
    """Single-row predict latency (median) must stay within the budget."""
    if _unmeasured(p50_ms):
        return CheckResult(
            "latency_p50_ms",
            False,
            "not measured",
            f"<= {budget_ms}",
            "latency could not be measured",
        )
    if p50_ms > budget_ms:
        return CheckResult(
            "latency_p50_ms",
            False,
            round(p50_ms, 2),
            f"<= {budget_ms}",
            f"single-row p50 {p50_ms:.1f} ms is over the {budget_ms} ms budget",
        )
    return CheckResult("latency_p50_ms", True, round(p50_ms, 2), f"<= {budget_ms}", "")


def _scores(model, X: pd.DataFrame):
    """Positive-class probabilities when the underlying model has them, else predictions."""
    try:
        raw = model.get_raw_model()
    except (AttributeError, NotImplementedError):  # a plain pyfunc has no raw model
        raw = model
    if hasattr(raw, "predict_proba"):
        return raw.predict_proba(X)[:, 1]
    predicted = model.predict(X)
    return predicted.iloc[:, 0] if isinstance(predicted, pd.DataFrame) else predicted


def score_metric(model, X: pd.DataFrame, y: pd.Series, metric: str = "auc") -> float | None:
    """`metric` of a model on labelled rows; None when undefined (AUC on one class)."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    if metric == "auc":
        if pd.Series(y).nunique() < 2:
            return None
        return float(roc_auc_score(y, _scores(model, X)))
    predicted = model.predict(X)
    predicted = predicted.iloc[:, 0] if isinstance(predicted, pd.DataFrame) else predicted
    if metric == "accuracy":
        return float(accuracy_score(y, predicted))
    if metric == "f1":
        return float(f1_score(y, predicted))
    raise ValueError(f"metric must be 'auc', 'accuracy' or 'f1', got {metric!r}")


def slice_metrics(
    model, X: pd.DataFrame, y: pd.Series, column: str, metric: str = "auc", min_rows: int = 50
) -> dict[str, float | None]:
    """`metric` per value of `column`; None for slices with fewer than `min_rows` rows."""
    if column not in X.columns:
        raise ValueError(
            f"Slice column {column!r} is not in the holdout; columns: {list(X.columns)}"
        )
    y = pd.Series(y, index=X.index)
    return {
        str(value): score_metric(model, X[mask], y[mask], metric)
        if mask.sum() >= min_rows
        else None
        for value, mask in ((v, X[column] == v) for v in sorted(X[column].dropna().unique()))
    }


def single_row_latency_ms(model, X: pd.DataFrame, repeats: int = 30) -> float:
    """Median milliseconds of `model.predict` on one row, after one warm-up call."""
    row = X.head(1)
    model.predict(row)
    timings = []
    for i in range(repeats):
        row = X.iloc[[i % len(X)]]
        start = time.perf_counter()
        model.predict(row)
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


@dataclass
class _DownloadedVersion:
    version: Any  # mlflow ModelVersion
    path: Path  # the model's artifacts, downloaded (not loaded: loading runs its code)
    info: Any  # mlflow.models.Model, read from the MLmodel file (YAML, no code runs)
    requirements: list[str] | None


def _download_version(name: str, version: int | str, into: Path) -> _DownloadedVersion:
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    client = mlflow.MlflowClient()
    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException:
        raise ModelNotFoundError(f"Model '{name}' has no version {version}.") from None
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(into))
    )
    requirements = local / "requirements.txt"
    return _DownloadedVersion(
        version=mv,
        path=local,
        info=Model.load(str(local)),
        requirements=requirements.read_text().splitlines() if requirements.exists() else None,
    )


# The holdout's label column in the file the measuring child reads.
LABEL_COLUMN = "__gate_label__"

# The measuring child gets no registry: any MLflow client call in a model's code fails at once.
_NO_REGISTRY = {
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
    "MLFLOW_REGISTRY_URI": "http://127.0.0.1:9",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
}
_REGISTRY_CREDENTIALS = {
    "DATABRICKS_HOST",
    "DATABRICKS_TOKEN",
    "DATABRICKS_CLIENT_SECRET",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
}


def measure_in_child(request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run `utils.gate.measure` on `request` in a child process; its figures as a dict."""
    import utils

    repo_root = str(Path(utils.__file__).resolve().parents[1])  # Databricks: not installed
    env = {k: v for k, v in os.environ.items() if k not in _REGISTRY_CREDENTIALS}
    env |= _NO_REGISTRY | {
        "PYTHONPATH": os.pathsep.join(filter(None, [repo_root, env.get("PYTHONPATH")]))
    }
    with tempfile.TemporaryDirectory(prefix="gate-measure-") as tmp:
        request_path, result_path = Path(tmp, "request.json"), Path(tmp, "result.json")
        request_path.write_text(json.dumps(request))
        child = subprocess.Popen(
            [sys.executable, "-m", "utils.gate.measure", str(request_path), str(result_path)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a timeout stops all it started
        )
        try:
            output, _ = child.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            raise PromotionError(
                f"Measuring the model took over {timeout_s:.0f} s; the child was stopped. "
                "Raise ValidationPolicy.measure_timeout_s or use a smaller holdout."
            ) from None
        if child.returncode != 0 or not result_path.exists():
            tail = output.decode("utf-8", "replace")[-1500:]
            raise PromotionError(f"Loading or measuring the model failed:\n{tail}")
        return json.loads(result_path.read_text())


def _moved_aliases(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, str]:
    return {
        alias: f"{before.get(alias)} -> {after.get(alias)}"
        for alias in sorted(set(before) | set(after))
        if before.get(alias) != after.get(alias)
    }


def validate_candidate(
    name: str,
    version: int | str,
    X_holdout: pd.DataFrame,
    y_holdout: pd.Series,
    policy: ValidationPolicy | None = None,
    champion_alias: str = CHAMPION,
) -> ValidationReport:
    """Run every check of `policy` on version `version` of model `name`.

    The candidate and the current `champion_alias` version are scored on the same labelled
    holdout, in a child process (loading a model runs its code). Nothing is changed in the
    registry: `promote` writes the outcome. Raises PromotionError when any alias of the model
    moved while the models were loaded and measured: the report would describe a registry
    that no longer exists, or the candidate's code moved it.
    """
    policy = policy or ValidationPolicy()
    name = model_name(name)
    if len(X_holdout) != len(y_holdout) or len(X_holdout) == 0:
        raise ValueError(
            f"The holdout needs as many labels as rows and at least one row; got "
            f"{len(X_holdout)} rows and {len(y_holdout)} labels."
        )
    aliases_before = get_aliases(name)
    champion_version = aliases_before.get(champion_alias)
    if champion_version is not None and int(champion_version) == int(version):
        champion_version = None  # a version is not compared with itself
    with tempfile.TemporaryDirectory(prefix="gate-") as tmp:
        candidate = _download_version(name, version, Path(tmp, "candidate"))
        champion = (
            _download_version(name, champion_version, Path(tmp, "champion"))
            if champion_version is not None
            else None
        )
        holdout = Path(tmp, "holdout.parquet")
        X_holdout.reset_index(drop=True).assign(
            **{LABEL_COLUMN: pd.Series(y_holdout).to_numpy()}
        ).to_parquet(holdout)
        request = {
            "candidate": str(candidate.path),
            "champion": str(champion.path) if champion else None,
            "holdout": str(holdout),
            "metric": policy.metric,
            "slice_column": policy.slice_column,
            "min_slice_rows": policy.min_slice_rows,
            "latency_repeats": policy.latency_repeats,
        }
        try:
            figures = measure_in_child(request, policy.measure_timeout_s)
        finally:  # even when measuring failed: a moved alias is the bigger news
            moved = _moved_aliases(aliases_before, get_aliases(name))
            if moved:
                raise PromotionError(
                    f"Aliases of {name} moved while version {version} was being validated "
                    f"({moved}). Check who moved them (a candidate's code runs when it is "
                    "loaded), then validate again."
                )
    champion_score = figures["champion_score"]
    if champion is not None and champion_score is None:
        champion_score = math.nan  # a champion that cannot be measured is no pass
    checks = [
        check_description(candidate.version.description, policy.min_description_words),
        check_tags(candidate.version.tags, policy.required_tags),
        check_signature(candidate.info.signature),
        check_input_example(candidate.info.saved_input_example_info is not None),
        check_requirements(candidate.requirements),
        check_not_rolled_back(rolled_back_with_same_artifacts(name, candidate.version)),
        check_metric_vs_champion(
            figures["candidate_score"], champion_score, policy.metric, policy.tolerance
        ),
    ]
    if policy.slice_column:
        checks.append(check_slices(figures["slices"], policy.slice_floor, policy.metric))
    checks.append(check_latency(figures["latency_p50_ms"], policy.latency_budget_ms))
    return ValidationReport(
        name, int(version), int(champion_version) if champion_version else None, checks
    )


def dumps(report: ValidationReport) -> str:
    return json.dumps(report.to_dict(), indent=2, default=str)
