"""Generated customers, their transactions over time, and the feature table built from them.

Chapter 11 needs features that change over time, so that *when* a value is read matters. The
customers are chapter 01's churn customers (`utils.datasets.make_churn`); each has a daily
transaction rate, and those who churn (`Exited`) close their account on a day of the timeline:
in the weeks before they transact less and withdraw more (a real, weak warning), and on the
day itself they withdraw their whole balance and stop (what a leaky training set sees).

The feature table holds one row per customer and day: aggregates over the 30 days before the
snapshot, stamped with the snapshot's event time. Every number is drawn from a seeded
generator; the timeline ends at midnight UTC today, so the newest features are hours old.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from utils.datasets import make_churn

CUSTOMER_KEY = "customer_id"
EVENT_TIME = "event_timestamp"
LABEL = "churned_30d"
REQUEST_FEATURE = "num_products"  # known by the calling application at request time
PROFILE_FEATURES = ["age", "credit_score", "tenure", "is_active_member", "geography"]
ACTIVITY_FEATURES = [
    "txn_count_30d",
    "deposits_30d",
    "withdrawals_30d",
    "balance",
    "days_since_last_txn",
]
WINDOW_DAYS = 30
WARNING_DAYS = 45  # how long before closing their account churners start to fade


@dataclass(frozen=True)
class Bank:
    """Everything generated for one timeline: customers (profile and churn day), the
    transactions, and the newest day (`end`, midnight UTC)."""

    customers: pd.DataFrame
    transactions: pd.DataFrame
    end: pd.Timestamp
    days: int

    def day(self, index: int) -> pd.Timestamp:
        """The timestamp of day `index` (0 = first day of the timeline, `days` = `end`)."""
        return self.end - pd.Timedelta(days=self.days - index)


def midnight_utc(now: pd.Timestamp | None = None) -> pd.Timestamp:
    """Today's midnight in UTC (the end of the generated timeline)."""
    return (now or pd.Timestamp.now(tz="UTC")).tz_convert("UTC").floor("D")


def make_customers(size: int, days: int, seed: int = 42) -> pd.DataFrame:
    """Churn customers with snake_case profile columns, a daily transaction rate, and the day
    (0..days) on which churners close their account (-1 for customers who stay)."""
    raw = make_churn(size, seed=seed)
    rng = np.random.default_rng(seed + 1)
    customers = pd.DataFrame(
        {
            CUSTOMER_KEY: raw["CustomerId"].astype("int64"),
            "age": raw["Age"].astype("int64"),
            "credit_score": raw["CreditScore"].astype("int64"),
            "tenure": raw["Tenure"].astype("int64"),
            "is_active_member": raw["IsActiveMember"].astype("int64"),
            "geography": raw["Geography"].astype(str),
            REQUEST_FEATURE: raw["NumOfProducts"].astype("int64"),
            "opening_balance": raw["Balance"].astype(float),
        }
    )
    customers["daily_rate"] = rng.gamma(2.0, 0.25, size) * (1 + customers["is_active_member"])
    # Churners close on a day spread over the timeline, after a first month of history.
    churn_day = rng.integers(WINDOW_DAYS, days, size)
    customers["churn_day"] = np.where(raw["Exited"].to_numpy() == 1, churn_day, -1)
    return customers


def make_transactions(customers: pd.DataFrame, days: int, end: pd.Timestamp, seed: int = 42):
    """One row per transaction: customer, event time, signed amount (deposits > 0)."""
    rng = np.random.default_rng(seed + 2)
    rate = customers["daily_rate"].to_numpy()[:, None] * np.ones((1, days))
    churn_day = customers["churn_day"].to_numpy()[:, None]
    day_index = np.arange(days)[None, :]
    churning = churn_day >= 0
    fading = churning & (day_index >= churn_day - WARNING_DAYS) & (day_index < churn_day)
    rate = np.where(fading, rate * 0.5, rate)
    rate = np.where(churning & (day_index >= churn_day), 0.0, rate)
    counts = rng.poisson(rate)
    rows, day = np.nonzero(counts)
    repeat = counts[rows, day]
    rows, day = np.repeat(rows, repeat), np.repeat(day, repeat)
    withdraw_share = np.where(fading[rows, day], 0.75, 0.45)
    sign = np.where(rng.random(len(rows)) < withdraw_share, -1.0, 1.0)
    amount = (sign * rng.lognormal(5.0, 0.8, len(rows))).round(2)
    seconds = rng.integers(0, 86_400, len(rows))
    start = end - pd.Timedelta(days=days)
    frame = pd.DataFrame(
        {
            CUSTOMER_KEY: customers[CUSTOMER_KEY].to_numpy()[rows],
            "day": day,
            EVENT_TIME: start + pd.to_timedelta(day * 86_400 + seconds, unit="s"),
            "amount": amount,
        }
    )
    # Closing the account: on the churn day the whole remaining balance goes out.
    closing = _closing_withdrawals(customers, frame, start)
    frame = pd.concat([frame, closing], ignore_index=True)
    return frame.sort_values([EVENT_TIME, CUSTOMER_KEY], kind="stable").reset_index(drop=True)


def _closing_withdrawals(customers: pd.DataFrame, frame: pd.DataFrame, start) -> pd.DataFrame:
    churners = customers[customers["churn_day"] >= 0]
    before = frame.merge(churners[[CUSTOMER_KEY, "churn_day"]], on=CUSTOMER_KEY)
    flows = before[before["day"] < before["churn_day"]].groupby(CUSTOMER_KEY)["amount"].sum()
    balance = churners.set_index(CUSTOMER_KEY)["opening_balance"].add(flows, fill_value=0)
    return pd.DataFrame(
        {
            CUSTOMER_KEY: churners[CUSTOMER_KEY].to_numpy(),
            "day": churners["churn_day"].to_numpy(),
            EVENT_TIME: start
            + pd.to_timedelta(churners["churn_day"].to_numpy() * 86_400 + 86_399, unit="s"),
            "amount": -balance.loc[churners[CUSTOMER_KEY]].clip(lower=0).round(2).to_numpy(),
        }
    )


def make_bank(size: int = 2_000, days: int = 240, seed: int = 42, end=None) -> Bank:
    """Customers and a transactions stream over `days` days ending at `end` (default: today's
    midnight UTC)."""
    if days <= 2 * WINDOW_DAYS:
        raise ValueError(f"days must exceed {2 * WINDOW_DAYS} (history plus a label window)")
    end = midnight_utc() if end is None else pd.Timestamp(end)
    customers = make_customers(size, days, seed)
    return Bank(customers, make_transactions(customers, days, end, seed), end, days)


def activity_snapshots(bank: Bank, first_day: int = WINDOW_DAYS) -> pd.DataFrame:
    """The activity feature table: one row per customer and day from `first_day` to `end`,
    aggregating the transactions of the 30 days before the snapshot's event time."""
    customers = bank.customers
    index = pd.Index(customers[CUSTOMER_KEY])
    n, days = len(customers), bank.days
    tx = bank.transactions
    row = index.get_indexer(tx[CUSTOMER_KEY])
    day = tx["day"].to_numpy()
    count, deposits, withdrawals = (np.zeros((n, days + 1)) for _ in range(3))
    np.add.at(count, (row, day + 1), 1)
    np.add.at(deposits, (row, day + 1), tx["amount"].clip(lower=0).to_numpy())
    np.add.at(withdrawals, (row, day + 1), (-tx["amount"]).clip(lower=0).to_numpy())
    # Column d of a cumulative sum covers transactions of days < d, i.e. before snapshot d.
    count, deposits, withdrawals = (np.cumsum(a, axis=1) for a in (count, deposits, withdrawals))
    snap = np.arange(first_day, days + 1)
    window = np.clip(snap - WINDOW_DAYS, 0, None)
    last_day = _last_transaction_day(count)
    balance = customers["opening_balance"].to_numpy()[:, None] + deposits - withdrawals
    frame = pd.DataFrame(
        {
            CUSTOMER_KEY: np.repeat(customers[CUSTOMER_KEY].to_numpy(), len(snap)),
            EVENT_TIME: np.tile([bank.day(int(d)) for d in snap], n),
            "txn_count_30d": (count[:, snap] - count[:, window]).ravel().astype("int64"),
            "deposits_30d": (deposits[:, snap] - deposits[:, window]).ravel().round(2),
            "withdrawals_30d": (withdrawals[:, snap] - withdrawals[:, window]).ravel().round(2),
            "balance": balance[:, snap].clip(min=0).ravel().round(2),
            "days_since_last_txn": (snap[None, :] - last_day[:, snap]).ravel().astype("int64"),
        }
    )
    return frame


def _last_transaction_day(cumulative_count: np.ndarray) -> np.ndarray:
    """For each customer and snapshot column d: the day of the last transaction before d
    (the day before the history starts when there was none)."""
    changed = np.diff(cumulative_count, axis=1, prepend=0) > 0
    columns = np.where(changed, np.arange(cumulative_count.shape[1])[None, :], 0)
    # Column d+1 first counts day d's transactions, so the day is the column minus one.
    return np.maximum.accumulate(columns, axis=1) - 1


def profile_rows(bank: Bank) -> pd.DataFrame:
    """The profile feature table: one row per customer, stamped with the timeline's start."""
    frame = bank.customers[[CUSTOMER_KEY, *PROFILE_FEATURES]].copy()
    frame.insert(1, EVENT_TIME, bank.day(0))
    return frame


def new_customers(bank: Bank, size: int = 3, seed: int = 99, hours_ago: int = 6) -> pd.DataFrame:
    """Profile rows of customers who signed up `hours_ago` hours before `end` and have not
    transacted yet: known to the store, but with no activity rows (nothing to aggregate)."""
    first = int(bank.customers[CUSTOMER_KEY].max()) + 1_000_000
    raw = make_churn(size, seed=seed, first_row=first)
    return pd.DataFrame(
        {
            CUSTOMER_KEY: raw["CustomerId"].astype("int64"),
            EVENT_TIME: bank.end + pd.Timedelta(hours=-hours_ago),
            "age": raw["Age"].astype("int64"),
            "credit_score": raw["CreditScore"].astype("int64"),
            "tenure": 0,
            "is_active_member": raw["IsActiveMember"].astype("int64"),
            "geography": raw["Geography"].astype(str),
        }
    )
