"""Test helpers: a worker on a thread, real worker processes, and waiting on conditions."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import signal
import socket
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


def _ports() -> Iterator[int]:
    """Candidate ports of this pytest process: a range of 500 per xdist worker below Linux's ephemeral
    range (32768+), so no other worker's server and no outgoing connection takes one between our check
    and the server's bind; from a random point in it, so two runs on one machine seldom meet."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    base = 20000 + 500 * (int(worker[2:]) % 25 if worker[2:].isdigit() else 0)
    start = random.SystemRandom().randrange(500)
    return (base + (start + i) % 500 for i in range(100_000))


_candidates = _ports()


def free_port() -> int:
    """A loopback port nothing listens on, for a server a test starts."""
    for port in _candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in this worker's range")


def producer(url: str, **options: Any) -> chute.App:
    """An App that sends the tasks of tests/apps/basic.py by name (it never runs them): the producer's view
    of the workers a test starts."""
    return declare_basic(chute.App(url, **options))


def declare_basic(app: chute.App) -> chute.App:
    """Declare the tasks of tests/apps/basic.py on `app` by name, to send them to a test's worker processes."""
    for name in ("add", "sleep_then", "always_fails", "noop", "limited", "blocked"):
        app.task(name=f"apps.basic.{name}")(lambda *args: None)
    return app


def ran(log: Path) -> list[tuple[int, int]]:
    """The (value, pid) lines that apps.basic.sleep_then wrote to its CHUTE_TEST_LOG."""
    if not log.exists():
        return []
    return [(int(v), int(p)) for v, p in (line.split() for line in log.read_text().splitlines() if line.strip())]


class LoopThread:
    """An event loop on a thread of its own, kept for a whole test; records its worst timer lateness."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.worst_lag = 0.0
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._tick(), self.loop)

    async def _tick(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.005)
            self.worst_lag = max(self.worst_lag, time.perf_counter() - t - 0.005)

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return self.submit(coro).result(timeout)

    def submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        """Start `coro` on the loop; its future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self, app: chute.App) -> None:
        self.call(app.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


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
