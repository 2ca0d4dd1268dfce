"""The webhook receiver: signature check, hand-off to the handler, errors kept as results."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import pytest
import requests

from utils.gate.webhooks import WebhookReceiver, signature_is_valid

pytestmark = pytest.mark.integration


def _signed(secret: str, body: dict) -> tuple[bytes, dict]:
    """A delivery signed the way MLflow signs them (mlflow.webhooks.delivery)."""
    payload = json.dumps(body)
    delivery, timestamp = str(uuid.uuid4()), str(int(time.time()))
    digest = hmac.new(secret.encode(), f"{delivery}.{timestamp}.{payload}".encode(), hashlib.sha256)
    headers = {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": timestamp,
        "X-MLflow-Signature": "v1," + base64.b64encode(digest.digest()).decode(),
    }
    return payload.encode(), headers


def test_signature_check_accepts_the_right_secret_only():
    body, headers = _signed("s3cret", {"entity": "model_version"})
    assert signature_is_valid("s3cret", headers, body)
    assert not signature_is_valid("other", headers, body)
    assert not signature_is_valid("s3cret", headers, body + b" ")
    assert not signature_is_valid("s3cret", {}, body)


def test_receiver_passes_signed_events_to_the_handler_and_rejects_others():
    def handler(event):
        if event["data"]["version"] == "0":
            raise ValueError("version 0 does not exist")
        return int(event["data"]["version"]) * 10

    with WebhookReceiver(handler, secret="s3cret") as receiver:
        assert receiver.url.startswith("http://127.0.0.1:")
        for version in ("1", "0"):
            body, headers = _signed(
                "s3cret", {"entity": "model_version", "data": {"version": version}}
            )
            assert (
                requests.post(receiver.url, data=body, headers=headers, timeout=5).status_code
                == 200
            )
        body, headers = _signed("wrong", {"data": {"version": "9"}})
        assert requests.post(receiver.url, data=body, headers=headers, timeout=5).status_code == 401
        results = receiver.wait_for_results(2, timeout=10)
        assert results[0] == 10 and isinstance(results[1], ValueError)
        assert receiver.rejected == 1 and len(receiver.events) == 2
        with pytest.raises(TimeoutError, match="2 of 3"):
            receiver.wait_for_results(3, timeout=0.2)
    with pytest.raises(requests.ConnectionError):
        requests.post(receiver.url, data=b"{}", timeout=2)  # stopped
