"""What lifecycle events cost: drain throughput with events on vs off, same broker, same run.

    .venv/bin/python benchmarks/events_overhead.py [--url URL] [-n 20000] [--rounds 5] [-c 8]

Each round enqueues N no-op tasks, then drains them with one in-process Worker
(`run(until_idle=True)`), alternately with `events=True` and `events=False` so machine noise hits
both alike; the report is the median tasks/s of each and the relative drop, the median of each round's
own drop (a paired figure, steadier on a shared machine), and the CPU time per task of the process. The default URL is a
fresh SQLite file per round; one short warm-up drain of each kind runs first, uncounted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src")]

import chute  # noqa: E402
from chute.worker import Worker  # noqa: E402


def drain(url: str, n: int, concurrency: int, events: bool) -> tuple[float, float]:
    """(tasks per second, CPU microseconds per task) for one drain of `n` no-op tasks."""
    app = chute.App(url)
    try:
        noop = app.task(name="bench.noop")(lambda i: i)
        for start in range(0, n, 1000):
            app.send_many([noop.s(i) for i in range(start, min(n, start + 1000))])
        w = Worker(app, concurrency=concurrency, events=events)
        t0, c0 = time.perf_counter(), time.process_time()
        w.run(until_idle=True)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert w.processed == n, f"processed {w.processed} of {n}"
        return n / elapsed, cpu / n * 1e6
    finally:
        app.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="broker URL (default: a fresh SQLite file per round)")
    ap.add_argument("-n", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-c", type=int, default=8, help="worker threads")
    a = ap.parse_args()
    rates: dict[bool, list[float]] = {True: [], False: []}
    cpus: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for events in (True, False):  # warm-up, not counted: imports, page cache, the CPU's clock
            drain(a.url or f"sqlite:///{tmp}/warm-{int(events)}.db", min(a.n, 5000), a.c, events)
        for r in range(a.rounds):
            for events in ((True, False) if r % 2 == 0 else (False, True)):
                url = a.url or f"sqlite:///{tmp}/r{r}-{int(events)}.db"
                rate, cpu = drain(url, a.n, a.c, events)
                rates[events].append(rate)
                cpus[events].append(cpu)
                print(f"round {r + 1}: events {'on ' if events else 'off'} {rate:9,.0f} tasks/s {cpu:5.1f} µs CPU/task",
                      flush=True)
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    paired = statistics.median((f - o) / f for o, f in zip(rates[True], rates[False], strict=True))
    cpu_on, cpu_off = statistics.median(cpus[True]), statistics.median(cpus[False])
    print(f"median: events on {on:,.0f} tasks/s, off {off:,.0f} tasks/s, drop {100 * (off - on) / off:+.1f} % "
          f"(median of the rounds' own drops {100 * paired:+.1f} %); "
          f"CPU {cpu_on:.1f} vs {cpu_off:.1f} µs/task ({100 * (cpu_on - cpu_off) / cpu_off:+.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
