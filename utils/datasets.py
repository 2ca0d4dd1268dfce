"""Datasets the chapters use, generated with a fixed seed so every run sees the same rows.

Bank customer churn follows the schema of the classic public bank-churn table. Features are
drawn from documented distributions (`data/README.md`) and churn from a logistic model in
which, as in real bank data, older customers, inactive members, German customers, women and
customers with one product or with three or more products churn more. A model trained on it
learns something real (test AUC about 0.85) while nothing is downloaded.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from utils.monitoring.schema import REQUEST_ID

CHURN_ID_COLUMNS = ["RowNumber", "CustomerId", "Surname"]
CHURN_LABEL = "Exited"
CHURN_CATEGORICAL = ["Geography", "Gender"]
CHURN_NUMERIC = [
    "CreditScore",
    "Age",
    "Tenure",
    "Balance",
    "NumOfProducts",
    "HasCrCard",
    "IsActiveMember",
    "EstimatedSalary",
]
CHURN_FEATURES = [
    "CreditScore",
    "Geography",
    "Gender",
    "Age",
    "Tenure",
    "Balance",
    "NumOfProducts",
    "HasCrCard",
    "IsActiveMember",
    "EstimatedSalary",
]
CHURN_COLUMNS = CHURN_ID_COLUMNS + CHURN_FEATURES + [CHURN_LABEL]
CHURN_RATE = 0.204  # share of churners in the public table this one imitates
FIRST_CUSTOMER_ID = 15_565_700

_SURNAMES = (
    "Smith Jones Taylor Brown Williams Wilson Johnson Davies Robinson Wright Thompson Evans "
    "Walker White Roberts Green Hall Wood Jackson Clarke Martin Bernard Dubois Thomas Robert "
    "Richard Petit Durand Leroy Moreau Simon Laurent Lefebvre Michel Garcia Fernandez Lopez "
    "Martinez Sanchez Perez Gomez Ruiz Hernandez Diaz Moreno Alvarez Romero Alonso Navarro "
    "Muller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Koch Richter "
    "Klein Wolf Neumann Schwarz Zimmermann Braun Hartmann Lange Chen Wang Li Zhang Liu "
    "Nguyen Tran Le Pham Kumar Singh Patel Sharma Okafor Mensah Abara Onwuka Rossi Russo "
    "Ferrari Esposito Bianchi Romano Colombo Ricci Marino Greco Bruno Gallo Conti Kelly "
    "Murphy Walsh Byrne Ryan "
).split()


def _churn_logit(df: pd.DataFrame) -> np.ndarray:
    """Churn log-odds before the intercept: the documented effects in one place."""
    age = df["Age"].to_numpy(float)
    # Risk climbs with age up to the late fifties, then falls again for retirees.
    age_effect = 0.1 * (age - 40) - 0.18 * np.clip(age - 58, 0, None)
    products = df["NumOfProducts"].to_numpy()
    product_effect = np.select(
        [products == 1, products == 2, products == 3, products >= 4], [0.0, -1.5, 2.0, 4.0]
    )
    return (
        age_effect
        + 1.1 * (df["IsActiveMember"].to_numpy() == 0)
        + 0.8 * (df["Geography"].to_numpy() == "Germany")
        + 0.5 * (df["Gender"].to_numpy() == "Female")
        + 0.25 * (df["Balance"].to_numpy() > 0)
        - 0.0012 * (df["CreditScore"].to_numpy(float) - 650)
        + product_effect
    )


def _intercept_for_rate(logit: np.ndarray, rate: float) -> float:
    """Intercept that makes the mean churn probability equal `rate` (bisection)."""
    low, high = -15.0, 15.0
    for _ in range(60):
        mid = (low + high) / 2
        if np.mean(1 / (1 + np.exp(-(logit + mid)))) < rate:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _churn_features(size: int, rng: np.random.Generator, first_row: int) -> pd.DataFrame:
    """Id and feature columns of `size` customers, drawn from the documented distributions."""
    geography = rng.choice(["France", "Germany", "Spain"], size=size, p=[0.50, 0.25, 0.25])
    has_balance = np.where(geography == "Germany", True, rng.random(size) > 0.47)
    balance = np.where(has_balance, np.clip(rng.normal(119_800, 30_000, size), 3_768, 250_898), 0)
    # Customers without a balance hold two products more often, as in the real table.
    p_products_empty, p_products_holding = [0.37, 0.60, 0.025, 0.005], [0.60, 0.35, 0.04, 0.01]
    num_products = np.where(
        balance > 0,
        rng.choice([1, 2, 3, 4], size=size, p=p_products_holding),
        rng.choice([1, 2, 3, 4], size=size, p=p_products_empty),
    )
    rows = np.arange(first_row, first_row + size)
    return pd.DataFrame(
        {
            "RowNumber": rows.astype("int64"),
            "CustomerId": (FIRST_CUSTOMER_ID + rows).astype("int64"),
            "Surname": rng.choice(_SURNAMES, size=size),
            "CreditScore": np.clip(rng.normal(650, 97, size), 350, 850).round().astype("int64"),
            "Geography": geography,
            "Gender": rng.choice(["Male", "Female"], size=size, p=[0.55, 0.45]),
            "Age": np.clip(18 + rng.gamma(4.5, 4.7, size), 18, 92).astype("int64"),
            "Tenure": rng.integers(0, 11, size).astype("int64"),
            "Balance": balance.round(2),
            "NumOfProducts": num_products.astype("int64"),
            "HasCrCard": (rng.random(size) < 0.706).astype("int64"),
            "IsActiveMember": (rng.random(size) < 0.515).astype("int64"),
            "EstimatedSalary": rng.uniform(11.58, 199_992.48, size).round(2),
        }
    )


@lru_cache(maxsize=1)
def _reference_intercept() -> float:
    """Intercept fixed on a large reference sample, so every sample size shares one model."""
    reference = _churn_features(50_000, np.random.default_rng(0), first_row=1)
    return _intercept_for_rate(_churn_logit(reference), CHURN_RATE)


def make_churn(size: int = 10_000, seed: int = 42, first_row: int = 1) -> pd.DataFrame:
    """Bank customer churn rows with the classic schema (see `CHURN_COLUMNS`).

    `first_row` numbers the rows (and so the CustomerIds) from that value, so batches made
    with different `first_row` never share a key.
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"size must be a positive whole number of rows, got {size!r}")
    rng = np.random.default_rng(seed)
    df = _churn_features(int(size), rng, first_row)
    probability = 1 / (1 + np.exp(-(_churn_logit(df) + _reference_intercept())))
    df[CHURN_LABEL] = (rng.random(len(df)) < probability).astype("int64")
    return df


def split_features_label(
    df: pd.DataFrame, label: str = CHURN_LABEL, drop: list[str] | None = None
) -> tuple[pd.DataFrame, pd.Series]:
    """Features (all columns but the label and `drop`) and the label of a frame."""
    drop = CHURN_ID_COLUMNS if drop is None else drop
    return df.drop(columns=[label, *[c for c in drop if c in df.columns]]), df[label]


def drop_landing_batch(folder: str | Path, batch: int, rows: int, seed: int = 7) -> Path:
    """Write one batch of new customers as a Parquet file into a landing folder.

    Batch `n` holds rows numbered from `10_000_000 + n * 1_000_000`, so batches never repeat a
    CustomerId. The file appears atomically (written under a hidden name, then renamed), so a
    stream never reads half a file.
    """
    if rows > 1_000_000:
        raise ValueError(f"rows per landing batch must be at most 1,000,000, got {rows}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    df = make_churn(rows, seed=seed + batch, first_row=10_000_000 + batch * 1_000_000)
    final = folder / f"batch_{batch:05d}.parquet"
    hidden = folder / f".{final.name}.tmp"
    df.to_parquet(hidden, index=False)
    os.replace(hidden, final)
    return final


def simulate_churn_traffic(
    size: int, seed: int, first_row: int, age_shift: int = 0, prefix: str = "req"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Requests to the churn model (features + `request_id`) and, kept apart, their truth
    (chapter 09's production traffic and its late labels).

    `age_shift` makes the customers look older than the churn they show: the population
    drifts (the Age feature) and the model's old relationship stops holding (accuracy drops).
    """
    customers = make_churn(size, seed=seed, first_row=first_row)
    customers[REQUEST_ID] = [f"{prefix}-{n}" for n in customers["RowNumber"]]
    if age_shift:
        customers["Age"] = (customers["Age"] + age_shift).clip(18, 92)
    return customers[[REQUEST_ID, *CHURN_FEATURES]], customers[[REQUEST_ID, CHURN_LABEL]]

