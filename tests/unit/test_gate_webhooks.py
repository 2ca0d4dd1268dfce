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


# --- replay protection, limits and the per-run secret -----------------------------------------


def _post(receiver, body: bytes, headers: dict) -> requests.Response:
    return requests.post(receiver.url, data=body, headers=headers, timeout=5)


def _resigned(secret: str, body: bytes, delivery: str, timestamp: int) -> dict:
    signed = f"{delivery}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery,
        "X-MLflow-Timestamp": str(timestamp),
        "X-MLflow-Signature": "v1," + base64.b64encode(digest).decode(),
    }


def test_delivery_refusal_names_stale_future_and_unsigned_deliveries():
    from utils.gate.webhooks import delivery_refusal

    body, headers = _signed("s3cret", {"entity": "model_version"})
    now = int(headers["X-MLflow-Timestamp"])
    assert delivery_refusal("s3cret", headers, body, now=now) is None
    stale = _resigned("s3cret", body, "d1", now - 301)
    assert "older than 300 s" in delivery_refusal("s3cret", stale, body, now=now)
    future = _resigned("s3cret", body, "d2", now + 120)
    assert "in the future" in delivery_refusal("s3cret", future, body, now=now)
    assert "signature" in delivery_refusal("other", headers, body, now=now)
    no_time = {k: v for k, v in headers.items() if k != "X-MLflow-Timestamp"}
    assert "signature" in delivery_refusal("s3cret", no_time, body, now=now)
    not_a_number = _resigned("s3cret", body, "d3", 0) | {"X-MLflow-Timestamp": "soon"}
    assert delivery_refusal("s3cret", not_a_number, body, now=now)


def test_signature_check_survives_non_ascii_headers_and_invalid_utf8():
    body, headers = _signed("s3cret", {"entity": "model_version"})
    assert not signature_is_valid("s3cret", headers | {"X-MLflow-Signature": "v1,é"}, body)
    assert not signature_is_valid("s3cret", headers, b"\xff\xfe" + body)


def test_receiver_refuses_replays_stale_deliveries_and_bad_json():
    with WebhookReceiver(lambda event: event["n"], secret="s3cret") as receiver:
        body, headers = _signed("s3cret", {"n": 1})
        assert _post(receiver, body, headers).status_code == 200
        again = _post(receiver, body, headers)
        assert again.status_code == 409 and "already received" in again.text
        now = int(time.time())
        stale = _post(receiver, body, _resigned("s3cret", body, "old", now - 600))
        assert stale.status_code == 401 and "older than" in stale.text
        not_json = b"{not json"
        assert (
            _post(receiver, not_json, _resigned("s3cret", not_json, "nj", now)).status_code == 400
        )
        unsigned = _post(receiver, b"{not json", {"Content-Type": "application/json"})
        assert unsigned.status_code == 401  # the signature is checked before parsing
        assert receiver.wait_for_results(1, timeout=10) == [1]
        assert len(receiver.events) == 1 and receiver.rejected == 4
        assert any("already received" in r for r in receiver.refusals)


def test_receiver_checks_content_length_before_reading():
    import socket

    with WebhookReceiver(lambda event: None, secret="s3cret", max_body_bytes=1024) as receiver:
        port = int(receiver.url.split(":")[2].split("/")[0])
        for length, status in (
            ("10000000", b"413"),
            ("-5", b"400"),
            ("many", b"400"),
            (None, b"411"),
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                head = "POST /mlflow-webhook HTTP/1.1\r\nHost: x\r\n"
                if length is not None:
                    head += f"Content-Length: {length}\r\n"
                sock.sendall((head + "\r\n").encode())  # no body sent: must not wait for it
                assert sock.recv(64).split(b" ")[1] == status, length


def test_webhook_secret_is_new_per_run_and_owner_only(tmp_path, monkeypatch):
    from utils.env import WORK_DIR_ENV
    from utils.gate.webhooks import new_webhook_secret

    monkeypatch.setenv(WORK_DIR_ENV, str(tmp_path))
    first, path = new_webhook_secret()
    second, same_path = new_webhook_secret()
    assert first != second and len(first) >= 32 and path == same_path
    assert path.read_text() == second and path.is_relative_to(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600


def test_replaying_the_last_delivery_is_refused_both_ways():
    from utils.gate.webhooks import replay_last_delivery

    with WebhookReceiver(lambda event: "handled", secret="s3cret") as receiver:
        with pytest.raises(ValueError, match="no delivery"):
            replay_last_delivery(receiver, "s3cret")
        body, headers = _signed("s3cret", {"entity": "model_version"})
        assert _post(receiver, body, headers).status_code == 200
        answers = replay_last_delivery(receiver, "s3cret")
        assert answers["the same delivery again"].startswith("409")
        assert answers["a delivery signed 10 minutes ago"].startswith("401")
        assert receiver.wait_for_results(1, timeout=10) == ["handled"]
        assert len(receiver.events) == 1


def test_encryption_key_is_the_same_for_callers_racing_to_create_it(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from utils.env import WORK_DIR_ENV
    from utils.gate.webhooks import encryption_key

    for attempt in range(20):  # a fresh work dir each time: every round races on creation
        monkeypatch.setenv(WORK_DIR_ENV, str(tmp_path / str(attempt)))
        start = Barrier(8)

        def first_key(_, start=start):
            start.wait()
            return encryption_key()

        with ThreadPoolExecutor(8) as pool:
            keys = set(pool.map(first_key, range(8)))
        assert len(keys) == 1 and "" not in keys, keys
        secrets_dir = tmp_path / str(attempt) / "secrets"
        assert [p.name for p in secrets_dir.iterdir()] == ["webhook-encryption.key"]  # no temp
        assert (secrets_dir / "webhook-encryption.key").stat().st_mode & 0o777 == 0o600


def test_stop_waits_for_the_event_in_progress():
    def slow_handler(event):
        time.sleep(1.5)  # longer than the server's 0.5 s shutdown poll
        return event["data"]["version"]

    with WebhookReceiver(slow_handler, secret="s3cret") as receiver:
        body, headers = _signed("s3cret", {"data": {"version": "7"}})
        assert requests.post(receiver.url, data=body, headers=headers, timeout=5).status_code == 200
        assert receiver.results == []  # still handling when the context ends
    assert receiver.results == ["7"]


def test_connections_over_the_cap_get_503_and_the_receiver_keeps_working():
    import socket

    with WebhookReceiver(lambda event: "done", secret="s3cret", max_connections=3) as receiver:
        port = int(receiver.url.split(":")[2].split("/")[0])
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]  # send nothing
        try:
            time.sleep(0.2)  # let the server accept them
            with socket.create_connection(("127.0.0.1", port), timeout=5) as over:
                assert over.recv(64).startswith(b"HTTP/1.1 503")  # answered without a thread
        finally:
            for connection in idle:
                connection.close()
        body, headers = _signed("s3cret", {"data": {"version": "1"}})
        deadline = time.monotonic() + 5
        while (answer := requests.post(receiver.url, data=body, headers=headers, timeout=5)
               ).status_code == 503 and time.monotonic() < deadline:  # fmt: skip
            time.sleep(0.05)  # the idle connections' threads are finishing
        assert answer.status_code == 200
        assert receiver.wait_for_results(1, timeout=10) == ["done"]
