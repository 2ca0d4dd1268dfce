"""utils.scoring_client: every payload format, the 16 MB check, response and error reading."""

from __future__ import annotations

import json
import socket

import numpy as np
import pandas as pd
import pytest

from utils.serving.client import (
    DATABRICKS_MAX_PAYLOAD_BYTES,
    PayloadTooLargeError,
    ScoringError,
    build_payload,
    error_from_response,
    predictions_frame,
    score_model,
)

pytestmark = pytest.mark.unit

FRAME = pd.DataFrame({"age": [31, 45], "city": ["Paris", "Lyon"], "balance": [10.5, np.nan]})


def decode(body: bytes) -> dict:
    return json.loads(body)


def test_dataframe_split_lists_columns_once_and_sends_nan_as_null():
    body, content_type = build_payload(FRAME, "dataframe_split")
    assert content_type == "application/json"
    assert decode(body) == {
        "dataframe_split": {
            "columns": ["age", "city", "balance"],
            "data": [[31, "Paris", 10.5], [45, "Lyon", None]],
        }
    }


def test_records_and_instances_are_one_object_per_row():
    for fmt in ("dataframe_records", "instances"):
        rows = decode(build_payload(FRAME, fmt)[0])[fmt]
        assert rows == [
            {"age": 31, "city": "Paris", "balance": 10.5},
            {"age": 45, "city": "Lyon", "balance": None},
        ]


def test_inputs_is_columnar():
    assert decode(build_payload(FRAME, "inputs")[0]) == {
        "inputs": {"age": [31, 45], "city": ["Paris", "Lyon"], "balance": [10.5, None]}
    }


def test_csv_has_a_header_and_its_content_type():
    body, content_type = build_payload(FRAME, "csv")
    assert content_type == "text/csv"
    assert body.decode().splitlines() == ["age,city,balance", "31,Paris,10.5", "45,Lyon,"]


def test_tensors_go_as_instances_or_inputs_but_not_as_dataframes():
    array = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert decode(build_payload(array, "instances")[0]) == {"instances": array.tolist()}
    with pytest.raises(ValueError, match="no column names"):
        build_payload(array, "dataframe_split")


def test_azure_wraps_the_payload_in_input_data_and_params_travel_along():
    body = decode(build_payload(FRAME.head(1), "dataframe_split", azure=True, params={"k": 3})[0])
    assert set(body) == {"input_data", "params"}
    assert body["input_data"]["columns"] == ["age", "city", "balance"]
    assert body["params"] == {"k": 3}


def test_unknown_format_and_csv_with_params_are_refused():
    with pytest.raises(ValueError, match="Unknown payload format 'json'"):
        build_payload(FRAME, "json")
    with pytest.raises(ValueError, match="CSV"):
        build_payload(FRAME, "csv", params={"k": 1})


def test_a_payload_over_16_mb_is_refused_before_sending():
    big = pd.DataFrame({"text": ["x" * 1000] * (DATABRICKS_MAX_PAYLOAD_BYTES // 1000 + 10)})
    # nothing listens on this port: the error must come from the size check, not the network
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PayloadTooLargeError, match="at most 16 MB.*score_in_chunks"):
        score_model(f"http://127.0.0.1:{port}", big)


def test_predictions_frame_reads_every_response_shape():
    assert predictions_frame({"predictions": [1, 0]})["prediction"].tolist() == [1, 0]
    records = predictions_frame({"predictions": [{"p": 0.1, "label": "a"}]})
    assert records.to_dict("records") == [{"p": 0.1, "label": "a"}]
    assert predictions_frame([0.5, 0.7])["prediction"].tolist() == [0.5, 0.7]  # Azure: bare list
    assert predictions_frame({"predictions": {"a": [1, 2]}})["a"].tolist() == [1, 2]


def test_errors_carry_status_code_and_message():
    error = error_from_response(400, b'{"error_code": "BAD_REQUEST", "message": "missing col"}')
    assert (error.status, error.error_code, error.message) == (400, "BAD_REQUEST", "missing col")
    generic = error_from_response(
        400,
        json.dumps(
            {
                "error_code": "BAD_REQUEST",
                "message": "Encountered an unexpected error.",
                "stack_trace": "Traceback...\nValueError: Input X contains infinity.\n",
            }
        ).encode(),
    )
    assert (
        generic.message
        == "Encountered an unexpected error. Cause: ValueError: Input X contains infinity."
    )
    plain = error_from_response(415, b"This predictor only supports JSON")
    assert isinstance(plain, ScoringError) and plain.error_code == "HTTP_415"
    assert "only supports" in str(plain)


def test_score_in_chunks_joins_answers_back_by_index(monkeypatch):
    from utils.serving import client

    def doubled(url, frame, **kwargs):  # an answer that knows nothing of the frame's index
        return pd.DataFrame({"prediction": (frame["x"] * 2).to_numpy()})

    monkeypatch.setattr(client, "score_model", doubled)
    frame = pd.DataFrame({"x": range(10)}, index=[f"row-{i}" for i in reversed(range(10))])
    scored = client.score_in_chunks("http://unused", frame, chunk_rows=3)
    assert list(scored.index) == list(frame.index)
    joined = frame.join(scored)
    assert (joined["prediction"] == joined["x"] * 2).all()
