"""utils.pyfunc.wine: the wine data as named float frames, split by cultivar."""

import pytest

from utils.pyfunc.wine import WINE_LABEL, load_wine_split, wine_features

pytestmark = pytest.mark.unit


def test_split_is_stratified_with_named_float_columns():
    X_train, X_test, y_train, y_test = load_wine_split(test_size=0.3, seed=1)
    assert list(X_train.columns) == wine_features() and len(wine_features()) == 13
    assert (X_train.dtypes == "float64").all()
    assert y_train.name == WINE_LABEL and set(y_test) == {0, 1, 2}
    assert len(X_train) + len(X_test) == 178
    shares = y_train.value_counts(normalize=True).sort_index()
    assert (abs(shares - y_test.value_counts(normalize=True).sort_index()) < 0.05).all()
