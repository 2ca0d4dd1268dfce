"""uvicorn's httptools protocol with a deadline for the request line and headers.

uvicorn starts no timer before a request's headers are complete, so a client sending them
slowly would hold a connection (and a slot of the connection cap) forever. With this protocol
it gets a 408 after `MLDEPLOY_SERVING_HEADER_TIMEOUT_S` seconds (default 10). The guard passes
it to uvicorn by import path (`http="utils.serving.header_deadline:HeaderDeadlineProtocol"`):
with several workers uvicorn pickles its config, and a class made inside a function cannot be.
"""

from __future__ import annotations

import json
import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_HEADER_TIMEOUT_S = 10.0


def header_timeout_s() -> float:
    return float(os.environ.get("MLDEPLOY_SERVING_HEADER_TIMEOUT_S", DEFAULT_HEADER_TIMEOUT_S))


def timeout_answer(seconds: float) -> bytes:
    """The whole 408 response, in MLflow's error shape."""
    body = json.dumps(
        {
            "error_code": "REQUEST_TIMEOUT",
            "message": f"The request headers did not arrive within {seconds:g} s.",
        }
    ).encode()
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """Arms a timer when a connection opens and when a request begins; disarms it when the
    headers are complete. A timer that fires answers 408 and closes the connection."""

    _header_timer = None

    def _arm(self) -> None:
        if self._header_timer is None:
            seconds = header_timeout_s()
            self._header_timer = self.loop.call_later(seconds, self._too_slow, seconds)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self, seconds: float) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(timeout_answer(seconds))
            self.transport.close()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)
