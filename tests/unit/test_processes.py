"""Background processes: readiness, errors with the log's end, and no leaks."""

import sys
import time
from pathlib import Path

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


def test_stop_ends_workers_that_outlive_their_supervisor(tmp_path):
    """A supervisor that dies leaves its workers in the group: stop() must still end them."""
    pid_file = tmp_path / "worker.pid"
    worker = "import time; time.sleep(60)"
    supervisor = (
        "import subprocess, sys; "
        f"w = subprocess.Popen([sys.executable, '-c', {worker!r}]); "
        f"open({str(pid_file)!r}, 'w').write(str(w.pid)); print('up', flush=True); "
        "import time; time.sleep(1)"
    )
    log = tmp_path / "supervisor.log"
    handle = start_process(
        [sys.executable, "-c", supervisor], name="supervisor", log_path=log,
        ready=lambda: "up" in log.read_text(),
    )  # fmt: skip
    handle.process.wait(10)  # the supervisor exits; its worker keeps running in the group
    worker_pid = int(pid_file.read_text())
    assert _running(worker_pid)
    handle.stop(timeout=5)
    assert not _running(worker_pid)


def _running(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    return state != "Z"  # a killed worker reparented to init may linger as a zombie briefly
