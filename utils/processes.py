"""Background child processes on 127.0.0.1: start, wait until ready, stop, never leak.

Every server the chapters start (the scoring server, the local LLM endpoint, the webhook
tracking server, a standalone Spark cluster) goes through `start_process`: a free loopback
port, a log file under the work dir, a readiness check with a timeout and the log's last lines
in every error, its own process group stopped with TERM then KILL, and a child that gets TERM
when its parent dies (Linux), so a crashed kernel leaves no server holding a port.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"

__all__ = [
    "LOOPBACK",
    "BackgroundProcess",
    "ProcessStartError",
    "die_with_parent",
    "free_port",
    "port_is_free",
    "start_process",
    "stop_all_processes",
    "url_answers",
]


class ProcessStartError(RuntimeError):
    """A background process exited or did not become ready in time (the log tail says why)."""


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when a server could listen on `port` (with SO_REUSEADDR, as uvicorn binds, so
    connections of a stopped server lingering in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def die_with_parent() -> None:
    """In the child (a `preexec_fn`): a process group of its own, and SIGTERM when the parent
    dies (Linux `PR_SET_PDEATHSIG`)."""
    os.setsid()
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)


def url_answers(url: str, timeout: float = 1.0) -> bool:
    """True when a GET on `url` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


_LIVE: set[BackgroundProcess] = set()
_LIVE_LOCK = threading.Lock()


@dataclass(eq=False)
class BackgroundProcess:
    """A running child process; `stop()` or leaving the `with` block ends its process group."""

    name: str
    args: list[str]
    log_path: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, ready: Callable[[], bool], timeout: float, what: str = "ready") -> None:
        """Poll `ready()` until it is true; raise ProcessStartError (with the log's end) when
        the process exits first or `timeout` seconds pass. The process is stopped on error."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                if not self.is_alive():
                    raise ProcessStartError(
                        f"{self.name} exited with code {self.process.returncode} while starting. "
                        f"Last lines of {self.log_path}:\n{self.log_tail()}"
                    )
                if ready():
                    return
                if time.monotonic() > deadline:
                    raise ProcessStartError(
                        f"{self.name} was not {what} within {timeout:.0f} s. "
                        f"Last lines of {self.log_path}:\n{self.log_tail()}"
                    )
                time.sleep(0.2)
        except BaseException:
            self.stop(timeout=3.0)
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """TERM the whole process group, KILL what is left after `timeout` s, reap the child.

        The group is signalled even when the child itself has exited: a server's workers
        (uvicorn's, Spark's) can outlive their supervisor and would keep the port.
        """
        with _LIVE_LOCK:
            _LIVE.discard(self)
        group = self.process.pid  # the child leads its own group (die_with_parent)
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if not self._group_alive(group):
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not self._group_alive(group):
                    return
                time.sleep(0.05)

    def _group_alive(self, group: int) -> bool:
        self.process.poll()  # reap the child if it exited, so a zombie does not count
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # the group id was reused by someone else's processes
            return False
        return True

    def __enter__(self) -> BackgroundProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_process(
    args: Sequence[str],
    *,
    name: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    ready_url: str | None = None,
    ready: Callable[[], bool] | None = None,
    timeout: float = 60.0,
) -> BackgroundProcess:
    """Start `args` in the background with its output in `log_path`, and wait until it is ready:
    `ready_url` answers 200 (GET), or `ready()` returns true. Neither given: return at once.

    Raises ProcessStartError naming the process, with the end of its log, when it exits while
    starting or is not ready within `timeout` seconds; it is stopped then.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            list(args),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
    handle = BackgroundProcess(name, list(args), log_path, process)
    with _LIVE_LOCK:
        _LIVE.add(handle)
    check = ready if ready is not None else (lambda: url_answers(ready_url)) if ready_url else None
    if check is not None:
        handle.wait_ready(check, timeout, what=f"answering {ready_url}" if ready_url else "ready")
    return handle


@atexit.register
def stop_all_processes() -> None:
    """Stop every background process this interpreter started and has not stopped yet."""
    with _LIVE_LOCK:
        handles = list(_LIVE)
    for handle in handles:
        handle.stop(timeout=3.0)
