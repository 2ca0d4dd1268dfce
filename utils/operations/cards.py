"""Model cards: one Markdown page per registered version, built from what the registry already
holds (description, tags, signature, requirements, the validation gate's checks with their
values, slice metrics, the training data logged with `mlflow.log_input`, canary outcome, alias
history), and a diff card for champion vs challenger. `log_model_card` stores the card as an
artifact of the version's run and points a version tag at it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from utils.operations.alias_history import alias_history
from utils.tracking import get_aliases, model_name

CARD_SECTIONS = (
    "Description", "Aliases and their history", "Tags", "Signature", "Requirements",
    "Validation gate", "Slice metrics", "Training data", "Canary",
)  # fmt: skip


@dataclass
class VersionFacts:
    """Everything a card says about one version, gathered from the registry."""

    name: str
    version: int
    description: str
    tags: dict[str, str]
    aliases: list[str]
    inputs: list[str]
    outputs: list[str]
    requirements: list[str]
    datasets: list[dict[str, str]]
    run_id: str | None
    created: str


def version_facts(name: str, version: int | str) -> VersionFacts:
    """Read one version's facts from the registry (raises ModelNotFoundError when missing)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from utils.tracking import ModelNotFoundError

    name = model_name(name)
    client = mlflow.MlflowClient()
    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException:
        raise ModelNotFoundError(
            f"Model '{name}' has no version {version}; its aliases: {get_aliases(name)}."
        ) from None
    info = mlflow.models.get_model_info(f"models:/{name}/{version}")
    signature = info.signature
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    requirements_file = local / "requirements.txt"
    requirements = [
        line for line in (requirements_file.read_text().splitlines()
                          if requirements_file.exists() else [])
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip
    datasets = []
    if mv.run_id:
        try:
            run = client.get_run(mv.run_id)
            for item in run.inputs.dataset_inputs:
                d = item.dataset
                datasets.append({"name": d.name, "digest": d.digest, "source": d.source_type,
                                 "context": ", ".join(t.value for t in item.tags)})  # fmt: skip
        except MlflowException:
            pass
    aliases = [a for a, v in get_aliases(name).items() if int(v) == int(version)]
    created = pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC").isoformat(timespec="seconds")
    return VersionFacts(
        name, int(version), mv.description or "", dict(mv.tags), sorted(aliases),
        [str(c) for c in (signature.inputs.inputs if signature else [])],
        [str(c) for c in (signature.outputs.inputs if signature and signature.outputs else [])],
        requirements, datasets, mv.run_id, created,
    )  # fmt: skip


def _table(rows: list[list[str]], header: list[str]) -> str:
    if not rows:
        return "_none_"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _history_rows(name: str, version: int) -> list[list[str]]:
    history = alias_history(name)
    mine = history[(history["to_version"] == version) | (history["from_version"] == version)]
    return [
        [r.moved_at.isoformat(timespec="seconds"), r.alias,
         "-" if pd.isna(r.from_version) else r.from_version,
         "-" if pd.isna(r.to_version) else r.to_version, r.actor, r.reason]
        for r in mine.itertuples()
    ]  # fmt: skip


def model_card(name: str, version: int | str) -> str:
    """The Markdown card of one registered version."""
    f = version_facts(name, version)
    gate = {k.split(".", 1)[1]: v for k, v in f.tags.items() if k.startswith("validation.")}
    plain_tags = {
        k: v for k, v in f.tags.items()
        if not k.startswith(("validation", "validated", "canary_", "rolled_back", "rollback_"))
    }  # fmt: skip
    canary = {k: v for k, v in f.tags.items() if k.startswith("canary_")}
    slices = {k: v for k, v in gate.items() if k.startswith("slice")}
    parts = [
        f"# Model card: {f.name} version {f.version}",
        f"Registered {f.created}; run `{f.run_id}`; aliases now: "
        f"{', '.join(f.aliases) or 'none'}.",
        "## Description", f.description or "_No description: the validation gate refuses that._",
        "## Aliases and their history",
        _table(_history_rows(f.name, f.version), ["when", "alias", "from", "to", "by", "why"]),
        "## Tags", _table([[k, v] for k, v in sorted(plain_tags.items())], ["tag", "value"]),
        "## Signature",
        "Inputs: " + (", ".join(f"`{c}`" for c in f.inputs) or "_none_"),
        "\nOutputs: " + (", ".join(f"`{c}`" for c in f.outputs) or "_none_"),
        "## Requirements", "\n".join(f"- `{r}`" for r in f.requirements) or "_none_",
        "## Validation gate",
        f"Status: **{f.tags.get('validation_status', 'not validated')}** "
        f"(against version {f.tags.get('validated_against', '-')}, "
        f"{f.tags.get('validated_at', '-')}).",
        _table([[k, v] for k, v in gate.items()], ["check", "result (value, threshold)"]),
        "## Slice metrics",
        _table([[k, v] for k, v in slices.items()], ["check", "per-slice values"]),
        "## Training data",
        _table([[d["name"], d["digest"], d["source"], d["context"]] for d in f.datasets],
               ["dataset", "digest", "source", "context"])
        if f.datasets else "_No dataset was logged with `mlflow.log_input` for this run._",
        "## Canary", _table([[k, v] for k, v in sorted(canary.items())], ["tag", "value"]),
    ]  # fmt: skip
    return "\n\n".join(parts) + "\n"


def log_model_card(name: str, version: int | str) -> str:
    """Write the card as an artifact of the version's run (`model_cards/vN.md`) and tag the
    version with where it is; returns the card."""
    import mlflow

    card = model_card(name, version)
    client = mlflow.MlflowClient()
    run_id = client.get_model_version(model_name(name), str(version)).run_id
    path = f"model_cards/v{version}.md"
    if run_id:
        client.log_text(run_id, card, path)
        client.set_model_version_tag(model_name(name), str(version), "model_card", path)
    return card


def diff_card(name: str, champion: int | str, challenger: int | str) -> str:
    """Champion vs challenger, side by side: only what differs, plus the gate's checks."""
    a, b = version_facts(name, champion), version_facts(name, challenger)
    rows = []
    if a.description != b.description:
        rows.append(["description", a.description[:80], b.description[:80]])
    for key in sorted(set(a.tags) | set(b.tags)):
        if a.tags.get(key) != b.tags.get(key):
            rows.append([f"tag `{key}`", a.tags.get(key, "-"), b.tags.get(key, "-")])
    if a.inputs != b.inputs or a.outputs != b.outputs:
        rows.append(["signature", ", ".join(a.inputs + a.outputs), ", ".join(b.inputs + b.outputs)])
    added = sorted(set(b.requirements) - set(a.requirements))
    removed = sorted(set(a.requirements) - set(b.requirements))
    rows.append(["aliases", ", ".join(a.aliases) or "-", ", ".join(b.aliases) or "-"])
    return "\n\n".join([
        f"# Diff card: {a.name} version {a.version} vs version {b.version}",
        _table(rows, ["field", f"version {a.version}", f"version {b.version}"]),
        "## Requirements",
        "\n".join([*(f"- added `{r}`" for r in added), *(f"- removed `{r}`" for r in removed)])
        or "_identical_",
    ]) + "\n"  # fmt: skip
