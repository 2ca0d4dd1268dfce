"""Drive an ASGI app with one HTTP request in this process: everything a served request does
except the socket (used by the guard and metrics tests and by benchmarks/reliability.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass


@dataclass
class Answer:
    status: int
    body: bytes
    sent: list[dict]  # every message the app sent
    unread: list[dict]  # request messages the app never received


def asgi_request(
    app,
    body: bytes = b"",
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    path: str = "/invocations",
    method: str = "POST",
    chunk: int | None = None,
    receive: Callable[[], Awaitable[dict]] | None = None,
) -> Answer:
    """Send `body` (in pieces of `chunk` bytes when given) with exactly these header pairs,
    repeats included; `receive` replaces the request's messages (a client that stalls)."""
    pieces = [body] if chunk is None else [body[i : i + chunk] for i in range(0, len(body), chunk)]
    messages = [
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces or [b""])
    ]
    sent: list[dict] = []

    async def receive_messages():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "method": method,
        "headers": list(headers),
        "server": ("127.0.0.1", 5000),
        "client": ("127.0.0.1", 40000),
    }
    asyncio.run(app(scope, receive or receive_messages, send))
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return Answer(sent[0]["status"], payload, sent, messages)
