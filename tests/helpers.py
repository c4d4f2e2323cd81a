"""Test helpers: a worker on a thread, real worker processes, and waiting on conditions."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import chute
from chute.worker import Worker

TESTS = Path(__file__).parent
ROOT = TESTS.parent


@contextmanager
def sqlite_db(path: str | Path, timeout: float = 60) -> Iterator[sqlite3.Connection]:
    """A plain SQLite connection that commits on success and is always closed (`sqlite3.connect`'s
    own context manager commits but leaves the connection open)."""
    conn = sqlite3.connect(path, timeout=timeout)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


@contextmanager
def worker_thread(app: chute.App, **options: Any) -> Iterator[Worker]:
    """A Worker running on a background thread for the duration of the block."""
    w = Worker(app, **options)
    t = threading.Thread(target=w.run, daemon=True)
    t.start()
    try:
        yield w
    finally:
        w.stop()
        t.join(timeout=15)
        assert not t.is_alive(), "worker did not stop"


def env_for(url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ, CHUTE_URL=url, PYTHONPATH=f"{TESTS}{os.pathsep}{ROOT / 'src'}")
    env.update(extra)
    return env


def start_worker(url: str, spec: str = "apps.basic:app", *args: str, stderr: Any = None,
                 **extra: str) -> subprocess.Popen[bytes]:
    """A real `chute worker` process (its stderr to the test's, or to `stderr`: a file or PIPE).
    One the test leaves running is killed when the test ends (tests/conftest.py)."""
    proc = subprocess.Popen([sys.executable, "-m", "chute", "worker", spec, "--log-level", "WARNING", *args],
                            env=env_for(url, **extra), cwd=str(TESTS), stderr=stderr)
    STARTED.append(proc)
    return proc


def idle_cpu_share(proc: subprocess.Popen[bytes], seconds: float = 3.0) -> float:
    """The share of one core `proc` used over `seconds`: the scheduler's own run time of each of its
    threads in nanoseconds (schedstat), not the 10 ms ticks of /proc/<pid>/stat, which at well under
    1 % of a core count a handful of ticks and swing by half from one sample to the next."""
    tasks = Path(f"/proc/{proc.pid}/task")

    def cpu() -> float:
        total = 0
        for task in tasks.iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):  # a thread that just ended
                pass
        return total / 1e9

    c0, t0 = cpu(), time.monotonic()
    time.sleep(seconds)
    return (cpu() - c0) / (time.monotonic() - t0)


STARTED: list[subprocess.Popen[bytes]] = []  # workers started by the running test


def kill_leftovers() -> None:
    """SIGKILL the workers the test that just ended left running (a failed assertion skips its stop())."""
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"worker {proc.pid} did not exit within {timeout} s of {sig}") from None
