"""utils.features.skew: comparing served and offline feature values."""

import numpy as np
import pandas as pd
import pytest

from utils.features.skew import feature_differences, timed_ms

pytestmark = pytest.mark.unit


def frame(**columns):
    return pd.DataFrame({"k": [1, 2], **columns})


def test_equal_values_give_no_differences():
    served = frame(x=[1.0, np.nan], g=["a", "b"])
    assert feature_differences(served, served.copy(), "k", ["x", "g"]).empty


def test_each_difference_is_one_row():
    served = frame(x=[1.0, 2.0], g=["a", "b"])
    offline = frame(x=[1.0, 2.5], g=["a", "c"])
    diff = feature_differences(served, offline, "k", ["x", "g"])
    assert diff[["k", "feature"]].values.tolist() == [[2, "x"], [2, "g"]]


def test_a_value_missing_on_one_side_or_a_missing_key_counts():
    diff = feature_differences(frame(x=[1.0, np.nan]), frame(x=[1.0, 3.0]), "k", ["x"])
    assert diff["k"].tolist() == [2]
    only_one = pd.DataFrame({"k": [1], "x": [1.0]})
    assert feature_differences(only_one, frame(x=[1.0, 2.0]), "k", ["x"])["k"].tolist() == [2]


def test_numbers_compare_within_a_tolerance():
    assert feature_differences(frame(x=[1.0, 2.0]), frame(x=[1.0, 2.0 + 1e-12]), "k", ["x"]).empty


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"\['y'\]"):
        feature_differences(frame(x=[1, 2]), frame(x=[1, 2]), "k", ["x", "y"])


def test_timed_ms_times_each_call():
    calls = []
    times = timed_ms(lambda: calls.append(1), 5, warmup=2)
    assert len(times) == 5 and len(calls) == 7 and (times >= 0).all()
