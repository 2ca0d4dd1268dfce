"""utils.features.databricks_fe: the Feature Engineering arguments chapter 11 uses on Databricks.

`databricks-feature-engineering` is not installed here (it needs a workspace and pins older
protobuf), so the arguments are checked against the parameter names of its 0.18 API."""

import textwrap
from datetime import timedelta

import pandas as pd
import pytest

from utils.features import databricks_fe as dfe
from utils.features.model_code.lookupkit.ondemand import balance_per_product
from utils.features.training_sets import MODEL_FEATURES

pytestmark = pytest.mark.unit

# Keyword parameters of databricks-feature-engineering 0.18 (FeatureEngineeringClient methods,
# FeatureLookup and FeatureFunction constructors).
CREATE_TABLE = {
    "name",
    "primary_keys",
    "df",
    "timeseries_column",
    "partition_columns",
    "schema",
    "description",
    "tags",
}
FEATURE_LOOKUP = {
    "table_name",
    "lookup_key",
    "feature_names",
    "rename_outputs",
    "timestamp_lookup_key",
    "lookback_window",
    "default_values",
}
FEATURE_FUNCTION = {"udf_name", "input_bindings", "output_name"}
CREATE_TRAINING_SET = {
    "df",
    "feature_lookups",
    "feature_spec",
    "features",
    "label",
    "exclude_columns",
    "use_spark_native_join",
    "use_timeseries_filtering",
}
LOG_MODEL = {
    "model",
    "artifact_path",
    "flavor",
    "training_set",
    "registered_model_name",
    "await_registration_for",
    "infer_input_example",
    "extra_pip_requirements",
}


def test_every_argument_is_one_the_api_takes():
    for spec in dfe.feature_table_specs("main", "s"):
        assert set(spec) <= CREATE_TABLE and {"name", "primary_keys"} <= set(spec)
    for spec in dfe.feature_lookup_specs("main", "s"):
        assert set(spec) <= FEATURE_LOOKUP
    assert set(dfe.feature_function_spec("main", "s")) <= FEATURE_FUNCTION
    assert set(dfe.training_set_kwargs("main", "s")) <= CREATE_TRAINING_SET
    assert set(dfe.log_model_kwargs("main.s.m")) <= LOG_MODEL


def test_names_are_three_part_and_plain():
    tables = [spec["name"] for spec in dfe.feature_table_specs("main", "s")]
    assert tables == ["main.s.customer_profile_fe", "main.s.customer_activity_30d_fe"]
    for bad in ("a.b", "", "x`y"):
        with pytest.raises(ValueError, match="one plain identifier"):
            dfe.three_part_name(bad, "s", "t")


def test_activity_lookups_are_point_in_time_and_cover_the_model_features():
    profile, activity = dfe.feature_lookup_specs("main", "s")
    assert "timestamp_lookup_key" not in profile
    assert activity["timestamp_lookup_key"] == dfe.LOOKUP_TIME
    assert activity["lookback_window"] == timedelta(days=2)
    looked_up = profile["feature_names"] + activity["feature_names"]
    computed = [dfe.feature_function_spec("main", "s")["output_name"]]
    assert sorted(looked_up + computed + dfe.request_columns()[1:]) == sorted(MODEL_FEATURES)
    time_series = dfe.feature_table_specs("main", "s")[1]
    assert time_series["timeseries_column"] in time_series["primary_keys"]


def test_the_uc_function_runs_the_same_code_as_feast():
    body = dfe.uc_function_body()
    namespace = {}
    exec("def uc(balance, num_products):\n" + textwrap.indent(body, "    "), namespace)
    for balance, products in ((1000.0, 4), (0.0, 1), (None, 2)):
        assert namespace["uc"](balance, products) == balance_per_product(balance, products)
    sql = dfe.uc_function_sql("main", "s")
    assert sql.startswith("CREATE OR REPLACE FUNCTION main.s.balance_per_product(")
    assert "LANGUAGE PYTHON" in sql and body in sql


def test_labels_get_the_lookup_time_column():
    labels = pd.DataFrame({"customer_id": [1], "event_timestamp": [pd.Timestamp("2026-01-01")]})
    assert list(dfe.labels_for_databricks(labels).columns) == ["customer_id", dfe.LOOKUP_TIME]


class FakeClient:
    """Records the calls a FeatureEngineeringClient would get; one table exists already."""

    def __init__(self, existing):
        self.existing, self.calls = set(existing), []

    def get_table(self, name):
        if name not in self.existing:
            raise ValueError(f"Feature table {name} does not exist")
        return name

    def create_table(self, **kwargs):
        self.calls.append(("create", kwargs["name"], set(kwargs)))

    def write_table(self, **kwargs):
        self.calls.append(("merge", kwargs["name"], kwargs["mode"]))


def test_feature_tables_are_created_once_then_merged_into():
    fe = FakeClient(existing={"main.s.customer_activity_30d_fe"})
    names = dfe.write_feature_tables(fe, "main", "s", ["profile_df", "activity_df"])
    assert names == ["main.s.customer_profile_fe", "main.s.customer_activity_30d_fe"]
    created, merged = fe.calls
    assert created[:2] == ("create", "main.s.customer_profile_fe") and "df" in created[2]
    assert created[2] <= CREATE_TABLE
    assert merged == ("merge", "main.s.customer_activity_30d_fe", "merge")
