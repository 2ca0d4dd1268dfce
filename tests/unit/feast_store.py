"""A small real Feast store over generated feature tables, for the chapter 11 unit tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from utils.features.feast_repo import define_features, open_store
from utils.features.transactions import (
    Bank,
    activity_snapshots,
    make_bank,
    new_customers,
    profile_rows,
)

END = pd.Timestamp("2026-03-01", tz="UTC")


@dataclass
class SmallStore:
    store: object
    bank: Bank
    repo: object
    directory: Path
    activity: pd.DataFrame
    newcomers: pd.DataFrame


def build_small_store(folder: Path, size: int = 40, days: int = 70) -> SmallStore:
    """Parquet feature tables written with pandas, a repository applied and materialized up to
    the end of the timeline."""
    bank = make_bank(size, days, end=END)
    activity = activity_snapshots(bank)
    newcomers = new_customers(bank)
    profile = pd.concat([profile_rows(bank), newcomers], ignore_index=True)
    (folder / "profile").mkdir(parents=True)
    (folder / "activity").mkdir()
    profile.to_parquet(folder / "profile" / "part-0.parquet", index=False)
    activity.to_parquet(folder / "activity" / "part-0.parquet", index=False)
    directory = folder / "repo"
    store = open_store(directory)
    repo = define_features(str(folder / "profile"), str(folder / "activity"))
    store.apply(repo.objects)
    store.materialize(start_date=bank.day(0), end_date=bank.end)
    return SmallStore(store, bank, repo, directory, activity, newcomers)
