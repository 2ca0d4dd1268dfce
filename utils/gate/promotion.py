"""Promotion and rollback behind the validation gate (chapter 08 shows the registry calls).

`promote` moves the `champion` alias only when every check of `validate_candidate` passed,
keeps the old champion under `previous` and writes the report as version tags, so the registry
itself says why a version was (not) promoted. `rollback` moves `champion` back to `previous`.
Every alias move is appended to the alias history (`utils.operations.alias_history`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from utils.gate.checks import (
    ValidationPolicy,
    ValidationReport,
    clip_tag_value,
    validate_candidate,
)
from utils.operations.alias_history import move_alias
from utils.tracking import CHAMPION, get_aliases, model_name

PREVIOUS = "previous"


class PromotionError(RuntimeError):
    """An alias cannot be moved (for example a rollback with no `previous` version)."""


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
) -> PromotionResult:
    """Validate `version` (or use `report`), tag it with the outcome, and move `alias` to it
    only when every check passed; the version it replaces keeps the `previous_alias`.
    `actor` is who or what promotes, as the alias history will say."""
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
    write_report_tags(report)
    aliases = get_aliases(name)
    current = aliases.get(alias)
    if not report.passed:
        return PromotionResult(False, int(version), current, aliases.get(previous_alias), report)
    if current is not None and int(current) != int(version):
        move_alias(
            name, previous_alias, current, actor=actor,
            reason=f"version {current} kept as {previous_alias} when {version} became {alias}",
        )  # fmt: skip
    move_alias(
        name, alias, version, actor=actor,
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
    move_alias(name, alias, restored, actor=actor, reason=why)
    move_alias(name, previous_alias, None, actor=actor, reason=why)
    if current is not None and int(current) != int(restored):
        when = datetime.now(UTC).isoformat(timespec="seconds")
        client.set_model_version_tag(name, str(current), "rolled_back_at", when)
        client.set_model_version_tag(
            name, str(current), "rollback_reason", clip_tag_value(reason or "unspecified")
        )
    return RollbackResult(int(restored), int(current) if current is not None else int(restored))


def report_from_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """The validation tags of a model version, e.g. to show in a table."""
    return {k: v for k, v in tags.items() if k.startswith("validat")}

