import numpy as np
import pytest

from utils.record import RECORDED, record, record_results


@pytest.mark.unit
def test_record_results_keeps_json_safe_values_and_returns_them():
    recorded = record_results({"rows": np.int64(3), "share": np.float64(0.25), "ids": (1, 2)})
    assert recorded == {"rows": 3, "share": 0.25, "ids": [1, 2]}
    assert type(recorded["rows"]) is int
    assert {k: RECORDED[k] for k in recorded} == recorded


@pytest.mark.unit
def test_record_is_record_results_of_one_value():
    record("single", np.bool_(True))
    assert RECORDED["single"] is True


@pytest.mark.unit
def test_record_results_refuses_pairs_and_non_string_names():
    with pytest.raises(TypeError, match="dict of"):
        record_results([("rows", 3)])
    with pytest.raises(TypeError, match="string names"):
        record_results({1: "x"})
