"""utils.features.transactions: the generated bank and the feature tables built from it."""

import numpy as np
import pandas as pd
import pytest

from utils.features.transactions import (
    ACTIVITY_FEATURES,
    CUSTOMER_KEY,
    EVENT_TIME,
    WINDOW_DAYS,
    activity_snapshots,
    make_bank,
    new_customers,
    profile_rows,
)

pytestmark = pytest.mark.unit
END = pd.Timestamp("2026-03-01", tz="UTC")


@pytest.fixture(scope="module")
def bank():
    return make_bank(60, 90, end=END)


def test_the_timeline_ends_at_end_and_is_reproducible(bank):
    assert bank.day(bank.days) == END and bank.day(0) == END - pd.Timedelta(days=90)
    again = make_bank(60, 90, end=END)
    pd.testing.assert_frame_equal(bank.transactions, again.transactions)
    assert bank.transactions[EVENT_TIME].between(bank.day(0), END).all()


def test_churners_empty_their_account_and_then_stop(bank):
    churners = bank.customers[bank.customers["churn_day"] >= 0]
    assert len(churners) > 0
    tx = bank.transactions.merge(churners[[CUSTOMER_KEY, "churn_day"]], on=CUSTOMER_KEY)
    assert (tx["day"] <= tx["churn_day"]).all()
    snapshots = activity_snapshots(bank)
    last = snapshots.sort_values(EVENT_TIME).groupby(CUSTOMER_KEY).tail(1).set_index(CUSTOMER_KEY)
    gone = churners[churners["churn_day"] < bank.days - WINDOW_DAYS][CUSTOMER_KEY]
    assert (last.loc[gone, "balance"] == 0).all()
    assert (last.loc[gone, "txn_count_30d"] == 0).all()


def test_activity_aggregates_match_a_direct_computation(bank):
    snapshots = activity_snapshots(bank)
    assert list(snapshots.columns) == [CUSTOMER_KEY, EVENT_TIME, *ACTIVITY_FEATURES]
    assert len(snapshots) == len(bank.customers) * (bank.days - WINDOW_DAYS + 1)
    rng = np.random.default_rng(0)
    for i in rng.integers(0, len(snapshots), 25):
        row = snapshots.iloc[i]
        at = row[EVENT_TIME]
        tx = bank.transactions[bank.transactions[CUSTOMER_KEY] == row[CUSTOMER_KEY]]
        window = tx[(tx[EVENT_TIME] < at) & (tx[EVENT_TIME] >= at - pd.Timedelta(days=30))]
        assert row["txn_count_30d"] == len(window)
        assert row["deposits_30d"] == pytest.approx(window["amount"].clip(lower=0).sum(), abs=0.02)
        assert row["withdrawals_30d"] == pytest.approx(
            (-window["amount"]).clip(lower=0).sum(), abs=0.02
        )
        before = tx[tx[EVENT_TIME] < at]
        if len(before):
            last_day = (before[EVENT_TIME].max().floor("D") - bank.day(0)).days
            assert row["days_since_last_txn"] == (at - bank.day(0)).days - last_day


def test_new_customers_have_a_profile_and_no_activity(bank):
    newcomers = new_customers(bank)
    assert not set(newcomers[CUSTOMER_KEY]) & set(bank.customers[CUSTOMER_KEY])
    assert (newcomers[EVENT_TIME] < END).all()
    assert not set(newcomers[CUSTOMER_KEY]) & set(bank.transactions[CUSTOMER_KEY])
    assert profile_rows(bank)[EVENT_TIME].eq(bank.day(0)).all()


def test_too_short_a_timeline_is_refused():
    with pytest.raises(ValueError, match="days must exceed"):
        make_bank(10, 40, end=END)
