"""Background processes: readiness, errors with the log's end, and no leaks."""

import sys
import time

import pytest

from utils.processes import (
    ProcessStartError,
    free_port,
    port_is_free,
    start_process,
    stop_all_processes,
)

pytestmark = pytest.mark.integration


def _http_server(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


def test_ready_url_then_stop_frees_the_port(tmp_path):
    port = free_port()
    with start_process(
        _http_server(port),
        name="http.server",
        log_path=tmp_path / "server.log",
        cwd=tmp_path,
        ready_url=f"http://127.0.0.1:{port}/",
        timeout=30,
    ) as server:
        assert server.is_alive()
        assert not port_is_free(port)
    assert not server.is_alive()
    assert port_is_free(port)


def test_exit_while_starting_names_the_process_and_shows_the_log(tmp_path):
    args = [sys.executable, "-c", "import sys; print('bad config: no model'); sys.exit(3)"]
    with pytest.raises(ProcessStartError, match=r"(?s)crasher exited with code 3.*bad config"):
        start_process(args, name="crasher", log_path=tmp_path / "c.log", ready=lambda: False)


def test_not_ready_in_time_is_stopped(tmp_path):
    args = [sys.executable, "-c", "import time; print('waiting', flush=True); time.sleep(60)"]
    started = time.monotonic()
    with pytest.raises(ProcessStartError, match=r"(?s)sleeper was not ready within 1 s.*waiting"):
        start_process(
            args, name="sleeper", log_path=tmp_path / "s.log", ready=lambda: False, timeout=1
        )
    assert time.monotonic() - started < 15


def test_stop_kills_a_process_that_ignores_term(tmp_path):
    args = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('up', flush=True); time.sleep(60)",
    ]
    log = tmp_path / "stubborn.log"
    handle = start_process(
        args, name="stubborn", log_path=log, ready=lambda: "up" in log.read_text()
    )
    handle.stop(timeout=0.5)
    assert not handle.is_alive()


def test_exit_hook_stops_what_is_still_running(tmp_path):
    args = [sys.executable, "-c", "import time; time.sleep(60)"]
    handle = start_process(args, name="orphan", log_path=tmp_path / "o.log")
    stop_all_processes()
    assert not handle.is_alive()
