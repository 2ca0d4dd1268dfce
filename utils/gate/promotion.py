"""Promotion and rollback behind the validation gate (chapter 08 shows the registry calls).

`promote` moves the `champion` alias only when every check of `validate_candidate` passed,
keeps the old champion under `previous` and writes the report as version tags, so the registry
itself says why a version was (not) promoted. `rollback` moves `champion` back to `previous`.
Every alias move is appended to the alias history (`utils.operations.alias_history`).

Promotion is compare-and-set: a report stands for the registry as it was when it was made, so
`promote` refuses a report older than `max_report_age_s` or made against another champion
than the current one, and re-reads each alias right before moving it. MLflow has no atomic
compare-and-set on aliases, so this narrows the race to one registry call rather than closing
it; two promoters that both pass the re-check still need a person (or one job) to own
promotion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd

from utils.gate.checks import (
    ROLLBACK_REASON_TAG,
    PromotionError,
    ValidationPolicy,
    ValidationReport,
    clip_tag_value,
    validate_candidate,
)
from utils.operations.alias_history import move_alias
from utils.tracking import CHAMPION, get_aliases, model_name

PREVIOUS = "previous"
MAX_REPORT_AGE_S = 1800.0

__all__ = [
    "MAX_REPORT_AGE_S",
    "PREVIOUS",
    "PromotionError",
    "PromotionResult",
    "RollbackResult",
    "promote",
    "report_from_tags",
    "rollback",
    "write_report_tags",
]


@dataclass(frozen=True)
class PromotionResult:
    promoted: bool
    version: int
    champion_version: int | None  # after the call
    previous_version: int | None  # after the call
    report: ValidationReport


def write_report_tags(report: ValidationReport) -> dict[str, str]:
    """Write `report` as tags of the version it describes; returns the tags."""
    import mlflow

    client = mlflow.MlflowClient()
    tags = report.as_tags()
    for key, value in tags.items():
        client.set_model_version_tag(report.model_name, str(report.version), key, value)
    return tags


def refuse_stale_report(
    report: ValidationReport, current: int | None, max_age_s: float, alias: str = CHAMPION
) -> None:
    """Raise PromotionError when `report` is older than `max_age_s` or was made against another
    `alias` version than `current` (None in a report: no champion, or the version itself)."""
    age = datetime.now(UTC) - datetime.fromisoformat(report.validated_at)
    if age > timedelta(seconds=max_age_s):
        raise PromotionError(
            f"The report on {report.model_name} version {report.version} is "
            f"{age.total_seconds():.0f} s old (limit {max_age_s:.0f} s); validate again."
        )
    expected = report.champion_version
    unchanged = current == expected or (expected is None and current == report.version)
    if not unchanged:
        raise PromotionError(
            f"The report on version {report.version} compared it with {alias} version "
            f"{expected}, but the {alias} is now version {current}; validate again."
        )


def _move_alias_if(name: str, alias: str, expected: int | None, version: int | None, **why):
    """`move_alias` only if `alias` still points at `expected` (re-read just before)."""
    now = get_aliases(name).get(alias)
    if now != expected:
        raise PromotionError(
            f"The '{alias}' alias of {name} moved from {expected} to {now} while this call ran; "
            "nothing more was changed. Look at the aliases and decide again."
        )
    move_alias(name, alias, version, **why)


def promote(
    name: str,
    version: int | str,
    X_holdout: pd.DataFrame | None = None,
    y_holdout: pd.Series | None = None,
    policy: ValidationPolicy | None = None,
    report: ValidationReport | None = None,
    alias: str = CHAMPION,
    previous_alias: str = PREVIOUS,
    actor: str = "utils.gate.promote",
    max_report_age_s: float = MAX_REPORT_AGE_S,
) -> PromotionResult:
    """Validate `version` (or use `report`), tag it with the outcome, and move `alias` to it
    only when every check passed; the version it replaces keeps the `previous_alias`.
    `actor` is who or what promotes, as the alias history will say.

    Raises PromotionError, changing nothing, when the report is older than
    `max_report_age_s` or the champion changed since it was made, and when an alias moves
    while this call runs."""
    name = model_name(name)
    if report is None:
        if X_holdout is None or y_holdout is None:
            raise ValueError(
                "promote needs a holdout (X_holdout, y_holdout) or a ValidationReport."
            )
        report = validate_candidate(name, version, X_holdout, y_holdout, policy, alias)
    elif (report.model_name, report.version) != (name, int(version)):
        raise ValueError(
            f"The report is about {report.model_name} version {report.version}, "
            f"not {name} version {version}."
        )
    aliases = get_aliases(name)
    current = aliases.get(alias)
    refuse_stale_report(report, current, max_report_age_s, alias)
    write_report_tags(report)
    if not report.passed:
        return PromotionResult(False, int(version), current, aliases.get(previous_alias), report)
    if current is not None and int(current) != int(version):
        _move_alias_if(
            name, previous_alias, aliases.get(previous_alias), current, actor=actor,
            reason=f"version {current} kept as {previous_alias} when {version} became {alias}",
        )  # fmt: skip
    _move_alias_if(
        name, alias, current, version, actor=actor,
        reason=f"passed the validation gate ({len(report.checks)} checks)",
    )  # fmt: skip
    after = get_aliases(name)
    return PromotionResult(True, int(version), after.get(alias), after.get(previous_alias), report)


@dataclass(frozen=True)
class RollbackResult:
    champion_version: int
    rolled_back_version: int


def rollback(
    name: str,
    reason: str = "",
    alias: str = CHAMPION,
    previous_alias: str = PREVIOUS,
    actor: str = "utils.gate.rollback",
) -> RollbackResult:
    """Point `alias` back at the `previous_alias` version and drop `previous_alias` (it has
    done its job; a second rollback would need a decision, not a reflex). The version rolled
    back from is tagged with when and why."""
    import mlflow

    name = model_name(name)
    aliases = get_aliases(name)
    if previous_alias not in aliases:
        raise PromotionError(
            f"Model '{name}' has no '{previous_alias}' alias to roll back to (aliases: "
            f"{aliases or 'none'}). Set one with utils.tracking.set_alias(name, "
            f"'{previous_alias}', version)."
        )
    restored, current = aliases[previous_alias], aliases.get(alias)
    client = mlflow.MlflowClient()
    why = f"rollback: {reason or 'unspecified'}"
    _move_alias_if(name, alias, current, restored, actor=actor, reason=why)
    move_alias(name, previous_alias, None, actor=actor, reason=why)
    if current is not None and int(current) != int(restored):
        when = datetime.now(UTC).isoformat(timespec="seconds")
        client.set_model_version_tag(name, str(current), "rolled_back_at", when)
        client.set_model_version_tag(
            name, str(current), ROLLBACK_REASON_TAG, clip_tag_value(reason or "unspecified")
        )
    return RollbackResult(int(restored), int(current) if current is not None else int(restored))


def report_from_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The validation tags of a model version, e.g. to show in a table."""
    return {k: v for k, v in tags.items() if k.startswith("validat")}

