"""utils.features.training_sets: labels over time, the naive join, and the leak it causes."""

import pandas as pd
import pytest

from utils.features.training_sets import (
    MODEL_FEATURES,
    fit_on,
    label_events,
    leak_table,
    naive_training_set,
)
from utils.features.transactions import (
    CUSTOMER_KEY,
    EVENT_TIME,
    LABEL,
    activity_snapshots,
    make_bank,
    profile_rows,
)

pytestmark = pytest.mark.unit
END = pd.Timestamp("2026-03-01", tz="UTC")


@pytest.fixture(scope="module")
def bank():
    return make_bank(300, 120, end=END)


def as_of(labels, bank):
    """A point-in-time join done by hand (what Feast does), for comparison."""
    activity = activity_snapshots(bank).sort_values(EVENT_TIME)
    joined = pd.merge_asof(labels.sort_values(EVENT_TIME), activity, on=EVENT_TIME, by=CUSTOMER_KEY)
    joined = joined.merge(profile_rows(bank).drop(columns=[EVENT_TIME]), on=CUSTOMER_KEY)
    return joined.assign(balance_per_product=joined["balance"] / joined["num_products"])


def test_labels_cover_active_customers_and_say_who_churns_within_30_days(bank):
    labels = label_events(bank, 40, 60, per_customer=2)
    churn_day = labels[CUSTOMER_KEY].map(bank.customers.set_index(CUSTOMER_KEY)["churn_day"])
    day = (labels[EVENT_TIME] - bank.day(0)).dt.days
    assert ((churn_day < 0) | (churn_day > day)).all()  # nobody already gone
    expected = ((churn_day >= 0) & (churn_day <= day + 30)).astype(int)
    assert (labels[LABEL] == expected).all()
    assert labels[EVENT_TIME].dt.hour.eq(12).all()
    with pytest.raises(ValueError, match="need 30 more days"):
        label_events(bank, 40, 100)


def test_the_naive_join_uses_the_latest_values_for_every_label(bank):
    labels = label_events(bank, 40, 60)
    activity = activity_snapshots(bank)
    naive = naive_training_set(labels, profile_rows(bank), activity)
    latest = activity[activity[EVENT_TIME] == END].set_index(CUSTOMER_KEY)["balance"]
    assert (naive["balance"].to_numpy() == latest.loc[naive[CUSTOMER_KEY]].to_numpy()).all()
    assert set(MODEL_FEATURES) <= set(naive.columns) and len(naive) == len(labels)


def test_the_naive_set_promises_more_than_it_delivers_on_later_labels(bank):
    labels = label_events(bank, 40, 60, per_customer=3)
    later = as_of(label_events(bank, 90, 90, seed=1), bank)
    naive = naive_training_set(labels, profile_rows(bank), activity_snapshots(bank))
    table = leak_table(
        [fit_on("naive", naive), fit_on("point-in-time", as_of(labels, bank))], later
    )
    assert table.loc["naive", "offline_auc"] > 0.95
    assert table.loc["naive", "gap"] > table.loc["point-in-time", "gap"] + 0.2
