"""utils.monitoring.schema: one set of inference-table column names, shared by the router."""

import pytest

import utils.monitoring.schema as schema
from utils.abtest.router import REQUEST_ID as ROUTER_REQUEST_ID
from utils.abtest.router import ROUTER_OUTPUTS

pytestmark = pytest.mark.unit


def test_router_file_repeats_the_schema_names_exactly():
    # The router model file travels alone inside the logged model, so it cannot import these.
    assert ROUTER_REQUEST_ID == schema.REQUEST_ID
    assert {schema.PREDICTION, schema.MODEL_VERSION, schema.REQUEST_ID} <= set(ROUTER_OUTPUTS)


def test_column_names_are_distinct_snake_case():
    names = [schema.REQUEST_ID, schema.ACTUAL_LABEL, schema.PREDICTION, schema.MODEL_VERSION,
             schema.SCORED_AT, schema.SCORED_DATE, schema.LABELLED_AT]  # fmt: skip
    assert len(set(names)) == len(names)
    assert all(name == name.lower() and " " not in name for name in names)
