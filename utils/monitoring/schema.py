"""The inference table's column names, in one place: chapter 05's A/B router log, chapter 09's
inference table and the jobs of `databricks.yml` all use these (the router model file repeats
`request_id` because it travels alone inside the logged model)."""

from __future__ import annotations

REQUEST_ID = "request_id"


ACTUAL_LABEL = "actual_label"


PREDICTION = "prediction"


MODEL_VERSION = "model_version"


SCORED_AT = "scored_at"


SCORED_DATE = "scored_date"  # partition column: a label merge rewrites only the days it touches


LABELLED_AT = "labelled_at"
