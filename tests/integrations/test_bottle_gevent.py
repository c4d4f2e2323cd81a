"""Bottle under gevent: the producer API never blocks the hub, even while a worker writes to the same SQLite file."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from helpers import sqlite_db
from integrations import scenario
from web import broker, call, free_port, process, worker

# The other writer holds SQLite's lock 20 ms at a time: a publish waiting for it on the hub shows as
# lag of that order (the control measures 30-35 ms). Offloaded, p99 is about 1 ms on a quiet machine;
# the limit leaves room for a shared 2-core machine running other suites, yet stays under 20 ms.
LIMIT_MS = 10.0

pytest.importorskip("gevent")
pytest.importorskip("bottle")


def load(base: str, rate: float = 400, clients: int = 4, seconds: float = 3.0) -> int:
    """`clients` threads POSTing jobs at `rate` requests/s in all, for `seconds`; how many were accepted.

    Paced, not flat out: a saturated CPU would delay the server whatever it does, and hide what is
    measured here, the hub being held by a blocking call.
    """
    accepted: list[int] = []
    start = time.monotonic()

    def client() -> None:
        n = 0
        while time.monotonic() - start < seconds:
            status, _, _ = call("POST", f"{base}/reports", {"rows": 1})
            assert status == 202
            n += 1
            ahead = start + n * clients / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # the client's pacing, not a wait for work
        accepted.append(n)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(accepted)


@contextmanager
def another_writer(db: Path) -> Iterator[None]:
    """Another process's long transactions: SQLite's write lock held 20 ms of every 50 ms."""
    stop = threading.Event()

    def hold() -> None:
        with sqlite_db(db) as conn:
            while not stop.is_set():
                conn.execute("BEGIN IMMEDIATE")
                stop.wait(0.02)
                conn.commit()
                stop.wait(0.03)

    t = threading.Thread(target=hold)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def measure(folder: Path, url: str, **extra: str) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "apps.bottle_gevent_lag", str(port)]
    with process(cmd, url, cwd=folder, port=port, REPORT_SECONDS="0", **extra), \
            worker("reports:chute", url, "-c", "4", cwd=folder, REPORT_SECONDS="0"):
        call("POST", f"{base}/reports", {"rows": 1})  # warm; the schema exists from here on
        assert call("POST", f"{base}/lag/start")[0] == 200
        with another_writer(Path(url.removeprefix("sqlite:///"))):
            sent = load(base)
        _, report, _ = call("GET", f"{base}/lag")
    report["requests"] = sent
    return dict(report)


@pytest.mark.timing
def test_enqueueing_under_gevent_does_not_block_the_hub(tmp_path: Path) -> None:
    """A greenlet's 1 ms timer stays on time while clients enqueue 400 jobs/s and another process
    keeps taking SQLite's write lock. The control, the same with the offload undone, shows what the
    test would catch: each publish waiting for the lock on the hub stops every greenlet."""
    folder = scenario.copy_example("bottle", tmp_path)
    runs = []
    for attempt in range(3):  # best of up to 3: other processes on a shared machine can delay a run
        with broker("sqlite", tmp_path / f"a{attempt}") as url:
            runs.append(measure(folder, url))
        if runs[-1]["p99_ms"] < LIMIT_MS:
            break
    report = min(runs, key=lambda r: r["p99_ms"])
    with broker("sqlite", tmp_path / "b") as url:
        blocked = measure(folder, url, CHUTE_TEST_NO_OFFLOAD="1")
    print(f"bottle+gevent, offloaded: {report}\nbottle+gevent, SQLite on the hub: {blocked}")
    assert report["offloaded"] and report["requests"] > 300, report
    assert report["p99_ms"] < LIMIT_MS, report
    assert not blocked["offloaded"] and blocked["p99_ms"] > 15.0, (report, blocked)


def test_the_plugin_offloads_only_in_a_patched_process(tmp_path: Path) -> None:
    import bottle

    from chute.integrations.bottle import ChutePlugin
    from chute.integrations.config import DeferredApp
    from chute.integrations.gevent import Offloaded

    app = bottle.Bottle()
    app.config["chute.url"] = f"sqlite:///{tmp_path}/b.db"
    chute = DeferredApp()
    app.install(ChutePlugin(chute))
    assert chute.configured and not isinstance(chute.broker, Offloaded)  # pytest's process is not patched

    @app.get("/a")
    def a(chute: Any) -> str:
        return repr(chute)

    @app.get("/b")
    def b() -> str:
        return "no chute asked for"

    assert app.routes[1].call() == "no chute asked for"
    assert "sqlite" in app.routes[0].call()
    chute.close()
