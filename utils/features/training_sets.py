"""Labels over time, the two ways of joining features to them, and what each costs.

A label says whether a customer closed their account in the 30 days after a moment (the
label time). A **point-in-time** training set joins to each label the feature values as they
were at that moment (Feast's `get_historical_features` does the as-of join). A **naive** one
joins the latest values: for a churner those already show the account emptied, so the model
learns the future. Both are scored on later labels with the values the online store would
have served then, which is what production sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from utils.features import LOOKUPKIT_PARENT  # noqa: F401  (puts `lookupkit` on sys.path)
from utils.features.model_code.lookupkit.ondemand import balance_per_product
from utils.features.transactions import (
    ACTIVITY_FEATURES,
    CUSTOMER_KEY,
    EVENT_TIME,
    LABEL,
    PROFILE_FEATURES,
    REQUEST_FEATURE,
    WINDOW_DAYS,
    Bank,
)

ON_DEMAND_FEATURES = ["balance_per_product"]
MODEL_FEATURES = [*PROFILE_FEATURES, *ACTIVITY_FEATURES, *ON_DEMAND_FEATURES, REQUEST_FEATURE]
CATEGORICAL = ["geography"]
SKOPS_TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]


def label_events(
    bank: Bank, first_day: int, last_day: int, per_customer: int = 1, seed: int = 0
) -> pd.DataFrame:
    """Labelled moments: for customers still active at a label time between `first_day` and
    `last_day` (noon), whether they churn within the next 30 days. Columns: key, event time,
    the request-time feature as the application knew it, the label."""
    if last_day + WINDOW_DAYS > bank.days:
        raise ValueError(f"labels at day {last_day} need {WINDOW_DAYS} more days of history")
    rng = np.random.default_rng(seed)
    customers = bank.customers.loc[bank.customers.index.repeat(per_customer)]
    day = rng.integers(first_day, last_day + 1, len(customers))
    churn_day = customers["churn_day"].to_numpy()
    active = (churn_day < 0) | (churn_day > day)
    churned = (churn_day >= 0) & (churn_day <= day + WINDOW_DAYS)
    frame = pd.DataFrame(
        {
            CUSTOMER_KEY: customers[CUSTOMER_KEY].to_numpy(),
            EVENT_TIME: [bank.day(int(d)) + pd.Timedelta(hours=12) for d in day],
            REQUEST_FEATURE: customers[REQUEST_FEATURE].to_numpy(),
            LABEL: churned.astype("int64"),
        }
    )[active]
    return frame.drop_duplicates([CUSTOMER_KEY, EVENT_TIME]).reset_index(drop=True)


def naive_training_set(
    labels: pd.DataFrame, profile: pd.DataFrame, activity: pd.DataFrame
) -> pd.DataFrame:
    """The tempting join: every label gets the customer's *latest* feature values."""
    latest = activity.sort_values(EVENT_TIME).groupby(CUSTOMER_KEY).tail(1)
    frame = labels.merge(profile.drop(columns=[EVENT_TIME]), on=CUSTOMER_KEY, how="left")
    frame = frame.merge(latest.drop(columns=[EVENT_TIME]), on=CUSTOMER_KEY, how="left")
    frame["balance_per_product"] = [
        balance_per_product(b, n)
        for b, n in zip(frame["balance"], frame[REQUEST_FEATURE], strict=True)
    ]
    return frame


def build_classifier(seed: int = 42) -> Pipeline:
    """One-hot geography, scale the numbers, gradient-boosted trees."""
    numeric = [f for f in MODEL_FEATURES if f not in CATEGORICAL]
    preprocess = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
            ("numeric", StandardScaler(), numeric),
        ]
    )
    classifier = GradientBoostingClassifier(n_estimators=80, max_depth=3, random_state=seed)
    return Pipeline([("preprocess", preprocess), ("classifier", classifier)])


@dataclass
class FittedSet:
    """A classifier fitted on one training set, with its offline (holdout) AUC."""

    name: str
    pipeline: Pipeline
    offline_auc: float
    rows: int
    positives: int


def fit_on(name: str, training_set: pd.DataFrame, seed: int = 42) -> FittedSet:
    """Fit `build_classifier` on 75 % of a training set; AUC on the held-out 25 %."""
    complete = training_set.dropna(subset=MODEL_FEATURES)
    train, test = train_test_split(
        complete, test_size=0.25, random_state=seed, stratify=complete[LABEL]
    )
    pipeline = build_classifier(seed).fit(train[MODEL_FEATURES], train[LABEL])
    auc = roc_auc_score(test[LABEL], pipeline.predict_proba(test[MODEL_FEATURES])[:, 1])
    return FittedSet(name, pipeline, float(auc), len(complete), int(complete[LABEL].sum()))


def auc_on(fitted: FittedSet, scored: pd.DataFrame) -> float:
    """AUC of a fitted set's classifier on labelled rows with features."""
    complete = scored.dropna(subset=MODEL_FEATURES)
    return float(
        roc_auc_score(
            complete[LABEL], fitted.pipeline.predict_proba(complete[MODEL_FEATURES])[:, 1]
        )
    )


def leak_table(fitted: list[FittedSet], later: pd.DataFrame) -> pd.DataFrame:
    """Offline AUC (holdout of its own training set) against AUC on later labels."""
    rows = [
        {
            "training set": f.name,
            "rows": f.rows,
            "offline_auc": round(f.offline_auc, 3),
            "later_auc": round(auc_on(f, later), 3),
        }
        for f in fitted
    ]
    table = pd.DataFrame(rows).set_index("training set")
    table["gap"] = (table["offline_auc"] - table["later_auc"]).round(3)
    return table


def plot_leak(table: pd.DataFrame):
    """Bars: offline vs later AUC for each training set."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = np.arange(len(table))
    ax.bar(x - 0.2, table["offline_auc"], 0.4, label="offline (own holdout)")
    ax.bar(x + 0.2, table["later_auc"], 0.4, label="later labels (production)")
    ax.set_xticks(x, table.index)
    ax.set_ylim(0.4, 1.0)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_ylabel("AUC")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("What the offline score promised vs what later labels show")
    fig.tight_layout()
    return fig
