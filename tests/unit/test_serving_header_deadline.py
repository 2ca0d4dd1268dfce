"""utils.serving.header_deadline: a client that sends its headers too slowly gets a 408 and
its connection back, while a normal request on the same server is answered."""

from __future__ import annotations

import pickle
import socket
import threading
import time

import pytest
import uvicorn

from utils.processes import free_port
from utils.serving.header_deadline import HeaderDeadlineProtocol

pytestmark = pytest.mark.integration
PROTOCOL = "utils.serving.header_deadline:HeaderDeadlineProtocol"


async def _app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture()
def server(monkeypatch):
    monkeypatch.setenv("MLDEPLOY_SERVING_HEADER_TIMEOUT_S", "0.5")
    port = free_port()
    config = uvicorn.Config(_app, host="127.0.0.1", port=port, http=PROTOCOL, log_level="error")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port
    running.should_exit = True
    thread.join(10)


def _exchange(port: int, data: bytes, pause: float) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        time.sleep(pause)
        chunks = []
        while chunk := sock.recv(4096):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and pause == 0:
                break
        return b"".join(chunks)


def test_slow_headers_get_408_and_a_prompt_request_is_answered(server):
    slow = _exchange(server, b"POST /invocations HTTP/1.1\r\nHost: x\r\n", pause=1.0)
    assert slow.startswith(b"HTTP/1.1 408") and b"REQUEST_TIMEOUT" in slow
    prompt = _exchange(server, b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0)
    assert prompt.startswith(b"HTTP/1.1 200")


def test_the_protocol_is_given_to_uvicorn_by_a_picklable_import_path():
    # Several workers: uvicorn pickles its config for each one (chapter 05 serves with two).
    config = uvicorn.Config("utils.serving.guard:create_app", factory=True, http=PROTOCOL)
    assert pickle.loads(pickle.dumps(config)).http == PROTOCOL
    assert uvicorn.config.import_from_string(PROTOCOL) is HeaderDeadlineProtocol
