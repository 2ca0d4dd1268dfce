import pandas as pd
import pytest

from utils.batch.scoring import ScoringSchemaError, Throughput, check_scoring_columns, timed
from utils.datasets import make_churn

pytestmark = pytest.mark.unit

EXPECTED = {"CreditScore": "long", "Geography": "string", "Balance": "double"}


def test_accepts_matching_and_compatible_columns():
    rows = make_churn(5)
    assert check_scoring_columns(rows, EXPECTED) == list(EXPECTED)
    widened = rows.assign(
        Balance=rows["Balance"].astype("float32"), CreditScore=rows["CreditScore"].astype("int32")
    )
    assert check_scoring_columns(widened, EXPECTED) == list(EXPECTED)


def test_missing_column_names_expected_and_given():
    rows = make_churn(5).drop(columns=["Balance"])
    with pytest.raises(
        ScoringSchemaError, match=r"missing column\(s\) \['Balance'\].*Expected:.*given:"
    ):
        check_scoring_columns(rows, EXPECTED)


def test_wrong_type_names_column_expected_and_given():
    rows = pd.DataFrame({"CreditScore": ["650"], "Geography": ["France"], "Balance": [1.0]})
    with pytest.raises(ScoringSchemaError, match=r"'CreditScore': 'expected long, given string'"):
        check_scoring_columns(rows, EXPECTED)


def test_spark_style_dtypes_are_read():
    class SparkLike:
        dtypes = [("CreditScore", "bigint"), ("Geography", "string"), ("Balance", "int")]

    assert check_scoring_columns(SparkLike(), EXPECTED) == list(EXPECTED)


def test_timed_counts_rows_per_second():
    result = timed(lambda: 1000)
    assert isinstance(result, Throughput) and result.rows == 1000 and result.rows_per_s > 0
