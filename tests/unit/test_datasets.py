import pandas as pd
import pytest

from utils.datasets import (
    CHURN_COLUMNS,
    CHURN_FEATURES,
    drop_landing_batch,
    make_churn,
    split_features_label,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def churn():
    return make_churn(10_000)


def test_schema_and_size(churn):
    assert list(churn.columns) == CHURN_COLUMNS
    assert len(churn) == 10_000
    assert churn["CustomerId"].is_unique
    assert set(churn["Geography"]) == {"France", "Germany", "Spain"}
    assert churn["CreditScore"].between(350, 850).all()
    assert churn["Age"].between(18, 92).all()
    assert churn["Exited"].isin([0, 1]).all()


def test_same_seed_same_rows_and_size_parameter():
    pd.testing.assert_frame_equal(make_churn(500, seed=3), make_churn(500, seed=3))
    assert len(make_churn(123)) == 123


def test_churn_rate_close_to_public_table(churn):
    assert 0.18 < churn["Exited"].mean() < 0.23


def test_churn_depends_on_features_as_in_bank_data(churn):
    rate = churn.groupby("Geography")["Exited"].mean()
    assert rate["Germany"] > rate["France"] + 0.05
    active = churn.groupby("IsActiveMember")["Exited"].mean()
    assert active[0] > active[1] + 0.05
    older = churn.loc[churn["Age"].between(45, 60), "Exited"].mean()
    younger = churn.loc[churn["Age"] < 35, "Exited"].mean()
    assert older > younger + 0.15
    products = churn.groupby("NumOfProducts")["Exited"].mean()
    assert products[1] > products[2] and products[3] > products[1]


@pytest.mark.parametrize("size", [0, -5, 2.5, "100", True])
def test_bad_size_is_refused(size):
    with pytest.raises(ValueError, match="size must be a positive whole number"):
        make_churn(size)


def test_split_features_label(churn):
    X, y = split_features_label(churn)
    assert list(X.columns) == CHURN_FEATURES
    assert y.name == "Exited"


def test_landing_batches_never_share_ids(tmp_path):
    first = drop_landing_batch(tmp_path, 0, 200)
    second = drop_landing_batch(tmp_path, 1, 200)
    ids = pd.concat([pd.read_parquet(first), pd.read_parquet(second)])["CustomerId"]
    assert ids.is_unique and len(ids) == 400
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "batch_00000.parquet",
        "batch_00001.parquet",
    ]


def test_landing_batch_size_limit(tmp_path):
    with pytest.raises(ValueError, match="at most 1,000,000"):
        drop_landing_batch(tmp_path, 0, 2_000_000)
