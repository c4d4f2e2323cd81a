"""Redis's own time a task in each of a worker's scripts: fetch (which also reads each taken task's
state, so a batch run on the consumer thread needs no separate cancellation check), the separate
cancellation check (still made for running tasks, every 0.5 s), and ack with results, on batches
of a worker's size. What a worker waits for, apart from its Python and the task.

    .venv/bin/python benchmarks/redis_server_time.py [-n 20000] [-b 50] [-r 3]

Each phase runs alone between `CONFIG RESETSTAT` and `INFO commandstats` (the `usec` of EVALSHA over
the phase, per task), so run it where nobody else needs the server's statistics. It uses database 9
under a key prefix of its own and deletes what it wrote.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import redis

import chute
from chute.results import ResultRecord
from chute.states import State


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20_000, help="tasks a round")
    ap.add_argument("-b", type=int, default=50, help="batch size (a worker's fetch of the harness task: ~50)")
    ap.add_argument("-r", type=int, default=3, help="rounds")
    a = ap.parse_args()
    prefix = f"srvtime{os.urandom(3).hex()}"
    app = chute.App(f"redis://127.0.0.1:6379/9?prefix={prefix}")
    task = app.task(name="bench.noop")(lambda i: None)
    broker: Any = app.broker
    r = redis.Redis(db=9)
    seen: dict[str, list[tuple[float, float]]] = {}

    def phase(name: str, run: Any, *args: Any) -> None:
        r.config_resetstat()
        t = time.perf_counter()
        run(*args)
        wall = time.perf_counter() - t
        usec = r.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0)
        seen.setdefault(name, []).append((usec / a.n, wall / a.n * 1e6))

    def fetch(got: list[Any]) -> None:
        while batch := broker.fetch(["default"], a.b, 30, 0):
            got.extend(batch)

    def check(ids: list[str]) -> None:
        for i in range(0, len(ids), a.b):
            broker.cancelled(ids[i:i + a.b])

    def ack(got: list[Any], done: list[ResultRecord]) -> None:
        for i in range(0, len(got), a.b):
            broker.ack(got[i:i + a.b], done[i:i + a.b])

    try:
        for _ in range(a.r):
            with app.batch():
                for i in range(a.n):
                    task.delay(i)
            got: list[Any] = []
            phase("fetch", fetch, got)
            phase("cancellation check", check, [d.id for d in got])
            now = time.time()
            phase("ack with results", ack, got, [ResultRecord(d.id, State.SUCCEEDED, "bench.noop", "default", b"null",
                                                              updated_at=now, expires_at=now + 600) for d in got])
    finally:
        for key in r.scan_iter(match=f"{prefix}:*", count=1000):
            r.unlink(key)
        app.close()
    print(f"| script ({a.r} rounds of {a.n:,}, batches of {a.b}) | Redis µs a task, median (min–max) | "
          "client wall µs a task |")
    print("|---|---|---|")
    for name, xs in seen.items():
        server = [x[0] for x in xs]
        print(f"| {name} | {statistics.median(server):.1f} ({min(server):.1f}–{max(server):.1f}) | "
              f"{statistics.median(x[1] for x in xs):.1f} |")


if __name__ == "__main__":
    main()
