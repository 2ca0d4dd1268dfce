"""A progressive canary that rolls itself back (chapter 12).

The controller moves the challenger's share of live traffic through steps (5 -> 25 -> 50 ->
100 % by default). Each step sends a window of requests and judges everything seen so far
against guardrails: the challenger's error rate, its p99 latency against the champion's, and,
once labels have arrived, its accuracy against the champion's by a one-sided two-proportion
test whose false-alarm rate is split over the steps (Bonferroni), so repeated looks at growing
data do not inflate the chance of rolling back a good model.

- A breach rolls back by itself: the traffic goes back to the champion, the `canary` alias is
  removed, and the step and reason are written as tags of the candidate version.
- All steps passed: the candidate is promoted through the chapter 08 gate (`promote`).
- A step that needs labels when none have arrived raises `NoLabelsError`; any other failure
  of the controller mid-step (`CanaryCrash`) puts the traffic and the aliases back as they
  were before the step and appends a row saying so to the alias history.

Traffic is anything with `set_share(share)` and `window(n) -> frame` (columns `request_id`,
`variant`, `ok`, `latency_ms`, `prediction`); `RouterTraffic` drives the A/B router through its
weights file, over HTTP or in process. Labels come from a callable that returns the labels
known now for a list of request ids (missing ones: not known yet).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Protocol
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from utils.operations.alias_history import move_alias, record_alias_move
from utils.tracking import CHALLENGER, CHAMPION, get_aliases, model_name

CANARY = "canary"
CHAMPION_VARIANT, CHALLENGER_VARIANT = CHAMPION, CHALLENGER
OBSERVATION_COLUMNS = ("request_id", "variant", "ok", "latency_ms", "prediction")


class CanaryError(RuntimeError):
    """The canary cannot start or go on (missing alias, bad policy)."""


class NoLabelsError(CanaryError):
    """A step that must judge accuracy found no labels for the challenger's requests yet."""


class CanaryCrash(CanaryError):
    """The controller failed mid-step; traffic and aliases were put back as before the step."""


@dataclass(frozen=True)
class CanaryPolicy:
    """Steps, window size and guardrails. The defaults suit the churn model on one machine."""

    steps: tuple[float, ...] = (0.05, 0.25, 0.5, 1.0)
    window: int = 200  # requests per step
    max_error_rate_increase: float = 0.02  # challenger error rate over the champion's
    min_errors: int = 3  # fewer challenger errors than this never breach (one-off blips)
    max_p99_ratio: float = 3.0  # challenger p99 latency / champion p99 latency
    min_p99_increase_ms: float = 20.0  # ... and at least this much slower in absolute terms
    min_latency_samples: int = 20
    alpha: float = 0.02  # chance of rolling back a model as accurate as the champion, all steps
    accuracy_margin: float = 0.0  # accuracy the challenger may lose before it counts as worse
    min_labelled: int = 20  # labelled requests per variant before accuracy is judged
    labels_required_from: float = 0.5  # steps at or above this share need labels

    def __post_init__(self):
        steps = list(self.steps)
        if not steps or any(not 0 < s <= 1 for s in steps) or steps != sorted(set(steps)):
            raise ValueError(
                f"Canary steps must be increasing shares in (0, 1], got {self.steps}; "
                "for example (0.05, 0.25, 0.5, 1.0)."
            )
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha}.")


@dataclass(frozen=True)
class Verdict:
    """One step's judgement: breached or not, why, and the figures it was based on."""

    breached: bool
    reason: str
    figures: dict[str, Any]


def two_proportion_z(successes_a: int, n_a: int, successes_b: int, n_b: int, margin: float = 0.0):
    """z and one-sided p-value for "b is worse than a by more than `margin`" (unpooled)."""
    p_a, p_b = successes_a / n_a, successes_b / n_b
    se = math.sqrt(max(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b, 1e-12))
    z = (p_b - p_a + margin) / se
    return z, NormalDist().cdf(z)


def judge(observed: pd.DataFrame, share: float, policy: CanaryPolicy) -> Verdict:
    """Judge all requests seen so far (`observed`, with an `actual_label` column that may be
    empty) against the guardrails."""
    champion = observed[observed["variant"] == CHAMPION_VARIANT]
    challenger = observed[observed["variant"] == CHALLENGER_VARIANT]
    figures: dict[str, Any] = {"share": share, "requests": len(observed)}
    figures["challenger_requests"] = len(challenger)
    errors = int((~challenger["ok"]).sum())
    rate = errors / len(challenger) if len(challenger) else 0.0
    base = float((~champion["ok"]).mean()) if len(champion) else 0.0
    figures.update(challenger_error_rate=rate, champion_error_rate=base)
    if errors >= policy.min_errors and rate > base + policy.max_error_rate_increase:
        return Verdict(True, f"error rate {rate:.1%} vs champion {base:.1%}", figures)
    fast_ch = challenger.loc[challenger["ok"], "latency_ms"]
    fast_c = champion.loc[champion["ok"], "latency_ms"]
    if min(len(fast_ch), len(fast_c)) >= policy.min_latency_samples:
        p99_ch, p99_c = float(np.percentile(fast_ch, 99)), float(np.percentile(fast_c, 99))
        figures.update(challenger_p99_ms=p99_ch, champion_p99_ms=p99_c)
        if (
            p99_ch > policy.max_p99_ratio * p99_c
            and p99_ch - p99_c > policy.min_p99_increase_ms
        ):
            return Verdict(
                True, f"p99 latency {p99_ch:.1f} ms vs champion {p99_c:.1f} ms", figures
            )
    labelled = observed[observed["ok"] & observed["actual_label"].notna()]
    correct = labelled["prediction"] == labelled["actual_label"]
    n_ch = int((labelled["variant"] == CHALLENGER_VARIANT).sum())
    n_c = int((labelled["variant"] == CHAMPION_VARIANT).sum())
    figures.update(challenger_labelled=n_ch, champion_labelled=n_c)
    if n_ch == 0 and share >= policy.labels_required_from:
        raise NoLabelsError(
            f"The step to {share:.0%} needs the challenger's accuracy, and none of its "
            f"{len(challenger)} requests has a label yet. Merge labels first (chapter 09), "
            "or wait: the controller left traffic and aliases as they were before this step."
        )
    if min(n_ch, n_c) >= policy.min_labelled:
        acc_ch = float(correct[labelled["variant"] == CHALLENGER_VARIANT].mean())
        acc_c = float(correct[labelled["variant"] == CHAMPION_VARIANT].mean())
        z, p = two_proportion_z(
            round(acc_c * n_c), n_c, round(acc_ch * n_ch), n_ch, policy.accuracy_margin
        )
        level = policy.alpha / len(policy.steps)  # Bonferroni over the looks
        figures.update(challenger_accuracy=acc_ch, champion_accuracy=acc_c, z=z, p_value=p)
        if p < level:
            return Verdict(
                True,
                f"accuracy {acc_ch:.3f} vs champion {acc_c:.3f} (one-sided p={p:.2g} < "
                f"{level:.2g})",
                figures,
            )
    return Verdict(False, "all guardrails held", figures)


class Traffic(Protocol):
    def set_share(self, share: float) -> None: ...

    def window(self, requests: int) -> pd.DataFrame: ...


@dataclass
class CanaryResult:
    """How a canary ended: `promoted`, `rolled_back` or `refused_by_gate`, at which step."""

    outcome: str
    step: float | None
    reason: str
    verdicts: list[Verdict] = field(default_factory=list)
    observed: pd.DataFrame | None = field(default=None, repr=False)


class CanaryController:
    """Runs the canary of `model`'s `challenger` version against its `champion`.

    `promote` is called when every step passed (the chapter 08 gate, e.g. `lambda version:
    promote(model, version, X, y, actor="canary")`); `labels` returns the labels known now
    for a Series of request ids (NaN where not known yet).
    """

    def __init__(
        self,
        model: str,
        traffic: Traffic,
        policy: CanaryPolicy | None = None,
        labels: Callable[[pd.Series], pd.Series] | None = None,
        promote: Callable[[int], Any] | None = None,
        actor: str = "canary",
    ):
        self.model, self.traffic, self.policy = model, traffic, policy or CanaryPolicy()
        self.labels, self.promote, self.actor = labels, promote, actor
        aliases = get_aliases(model)
        missing = [a for a in (CHAMPION, CHALLENGER) if a not in aliases]
        if missing:
            raise CanaryError(
                f"Model {model_name(model)} has no {missing} alias (aliases: {aliases}); set "
                "champion and challenger before a canary."
            )
        self.champion, self.candidate = aliases[CHAMPION], aliases[CHALLENGER]
        self.share = 0.0
        self.observed = pd.DataFrame(columns=list(OBSERVATION_COLUMNS))
        self.verdicts: list[Verdict] = []

    def start(self) -> None:
        steps = " -> ".join(f"{s:.0%}" for s in self.policy.steps)
        self.traffic.set_share(0.0)
        move_alias(
            self.model, CANARY, self.candidate, actor=self.actor,
            reason=f"canary started: {steps} of traffic to version {self.candidate}",
        )  # fmt: skip
        self._tag(status="running")

    def step(self, share: float) -> Verdict:
        """One step: move the share, send a window, judge. Restores the state from before the
        step when it cannot judge (NoLabelsError) or fails (CanaryCrash)."""
        before_share, before_aliases = self.share, get_aliases(self.model)
        try:
            self.traffic.set_share(share)
            self.share = share
            window = self.traffic.window(self.policy.window)
            observed = (
                window.reset_index(drop=True)
                if self.observed.empty
                else pd.concat([self.observed, window], ignore_index=True)
            )
            observed["actual_label"] = self._known_labels(observed["request_id"])
            verdict = judge(observed, share, self.policy)
        except NoLabelsError:
            self._restore(before_share, before_aliases)
            raise
        except Exception as error:
            self._restore(before_share, before_aliases)
            record_alias_move(
                self.model, CANARY, self.candidate, self.candidate, self.actor,
                f"controller crashed at step {share:.0%} ({type(error).__name__}: {error}); "
                f"traffic back to {before_share:.0%}, aliases left as before the step",
            )  # fmt: skip
            self._tag(status="crashed", step=share, reason=f"{type(error).__name__}: {error}")
            raise CanaryCrash(
                f"The canary controller failed at step {share:.0%}: {error}. Traffic and "
                "aliases are as they were before the step; run the step again to continue."
            ) from error
        self.observed = observed
        self.verdicts.append(verdict)
        return verdict

    def run(self) -> CanaryResult:
        """Every step in turn; roll back on the first breach, promote after the last."""
        self.start()
        for share in self.policy.steps:
            verdict = self.step(share)
            if verdict.breached:
                self.rollback(share, verdict.reason)
                return CanaryResult("rolled_back", share, verdict.reason, self.verdicts,
                                    self.observed)  # fmt: skip
        return self._finish()

    def rollback(self, share: float, reason: str) -> None:
        """Traffic back to the champion, the `canary` alias removed, step and reason tagged."""
        self.traffic.set_share(0.0)
        self.share = 0.0
        move_alias(
            self.model, CANARY, None, actor=self.actor,
            reason=f"rolled back at step {share:.0%}: {reason}",
        )  # fmt: skip
        self._tag(status="rolled_back", step=share, reason=reason)

    def _finish(self) -> CanaryResult:
        last = self.policy.steps[-1]
        result = self.promote(self.candidate) if self.promote else None
        promoted = bool(getattr(result, "promoted", result is None))
        if not promoted:
            reasons = "; ".join(getattr(getattr(result, "report", None), "reasons", []) or [])
            self.rollback(last, f"the validation gate refused the candidate: {reasons}")
            return CanaryResult("refused_by_gate", last, reasons, self.verdicts, self.observed)
        move_alias(
            self.model, CANARY, None, actor=self.actor,
            reason=f"canary passed every step; version {self.candidate} promoted",
        )  # fmt: skip
        self._tag(status="promoted", step=last, reason="all guardrails held")
        return CanaryResult("promoted", last, "all guardrails held", self.verdicts, self.observed)

    def _known_labels(self, request_ids: pd.Series) -> pd.Series:
        if self.labels is None:
            return pd.Series(np.nan, index=request_ids.index)
        known = pd.Series(self.labels(request_ids.reset_index(drop=True)), dtype="float64")
        return pd.Series(known.to_numpy(), index=request_ids.index)

    def _restore(self, share: float, aliases: dict[str, int]) -> None:
        """Traffic and aliases as they were before the step (best effort on the traffic)."""
        with contextlib.suppress(Exception):  # the aliases are restored all the same
            self.traffic.set_share(share)
        self.share = share
        now = get_aliases(self.model)
        for alias in set(aliases) | set(now):
            if now.get(alias) != aliases.get(alias):
                move_alias(
                    self.model, alias, aliases.get(alias), actor=self.actor,
                    reason="restored to its state before the failed canary step",
                )  # fmt: skip

    def _tag(self, status: str, step: float | None = None, reason: str = "") -> None:
        import mlflow

        from utils.gate.checks import clip_tag_value

        client = mlflow.MlflowClient()
        tags = {"canary_status": status}
        if step is not None:
            tags["canary_step"] = f"{step:.0%}"
        if reason:
            tags["canary_reason"] = clip_tag_value(reason)
        for key, value in tags.items():
            client.set_model_version_tag(model_name(self.model), str(self.candidate), key, value)


def write_weights(path: str | Path, share: float) -> None:
    """Write the router's weights file for a challenger `share`, atomically (a reader sees the
    old split or the new one, never half a file)."""
    if not 0 <= share <= 1:
        raise ValueError(f"A traffic share must be in [0, 1], got {share}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    weights = {CHAMPION_VARIANT: round(1 - share, 6), CHALLENGER_VARIANT: round(share, 6)}
    temporary.write_text(json.dumps(weights))
    os.replace(temporary, path)


class RouterTraffic:
    """Live traffic through the A/B router: `set_share` writes its weights file; `window`
    sends the next requests of `requests` (one row each, with a `request_id`), over HTTP
    when `url` is given, else to `model` (the router loaded in process)."""

    def __init__(
        self,
        requests: pd.DataFrame,
        weights_file: str | Path,
        *,
        url: str | None = None,
        model=None,
        features: Sequence[str] | None = None,
    ):
        if (url is None) == (model is None):
            raise ValueError("Give the router's `url` (HTTP) or its loaded `model`, not both.")
        self.requests = requests.reset_index(drop=True)
        self.features = list(features or [c for c in requests.columns if c != "request_id"])
        self.weights_file, self.url, self.model = weights_file, url, model
        self.position = 0
        self._connection: http.client.HTTPConnection | None = None

    def set_share(self, share: float) -> None:
        write_weights(self.weights_file, share)
        if self.model is not None:  # the file is read on the next request; no wait needed
            return
        time.sleep(0.02)  # mtime granularity: let every server worker see a new stamp

    def window(self, requests: int) -> pd.DataFrame:
        if self.position + requests > len(self.requests):
            raise CanaryError(
                f"Out of requests: {len(self.requests)} given, {self.position + requests} "
                "needed. Give RouterTraffic more rows."
            )
        rows = self.requests.iloc[self.position : self.position + requests]
        self.position += requests
        return pd.DataFrame([self._send(rows.iloc[[i]]) for i in range(len(rows))])

    def _send(self, row: pd.DataFrame) -> dict[str, Any]:
        from utils.abtest.router import VariantTable

        request_id = str(row["request_id"].iloc[0])
        start = time.perf_counter()
        try:
            answer = self._post(row) if self.url else self.model.predict(row)[0]
            ok, variant, prediction = True, answer["variant"], answer["prediction"]
        except Exception:
            weights = json.loads(Path(self.weights_file).read_text())
            variant = str(VariantTable(weights).choose([request_id])[0])  # where it was routed
            ok, prediction = False, None
        latency = (time.perf_counter() - start) * 1000
        return {"request_id": request_id, "variant": variant, "ok": ok,
                "latency_ms": latency, "prediction": prediction}  # fmt: skip

    def _post(self, row: pd.DataFrame) -> dict[str, Any]:
        from utils.serving.client import build_payload

        if self._connection is None:
            parts = urlsplit(self.url)
            self._connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        body, content_type = build_payload(row[[*self.features, "request_id"]])
        try:
            self._connection.request(
                "POST", "/invocations", body, {"Content-Type": content_type}
            )
            response = self._connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            self._connection.close()
            self._connection = None
            raise
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        return json.loads(payload)["predictions"][0]


def labels_after_delay(truth: pd.Series, hold_back: int) -> Callable[[pd.Series], pd.Series]:
    """Labels that arrive late: of the request ids seen so far (oldest first), the last
    `hold_back` have no label yet; the others get theirs from `truth` (indexed by request id).
    With `hold_back` = the window size, a step is judged on the labels of the steps before it."""

    def known(request_ids: pd.Series) -> pd.Series:
        labels = request_ids.map(truth).astype("float64")
        if hold_back > 0:
            labels.iloc[-hold_back:] = np.nan
        return labels

    return known
