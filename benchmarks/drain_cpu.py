"""One worker's drain of the peer harness's task, with the worker's CPU per task.

    .venv/bin/python benchmarks/drain_cpu.py                     # chute-redis's task, 20,000, 3 runs
    .venv/bin/python benchmarks/drain_cpu.py -n 10000 -r 5 -- -c 2   # worker options after --

It preloads N tasks of the harness's `bench_chute` (each makes one redis-py `INCR`) from one
process, starts ONE `chute worker bench_chute:app`, times the drain from the first completion to
the last, as the harness does, and reads the worker's run time over that window from
/proc/<pid>/task/*/schedstat (ns, every thread). After each drain it times the task's body alone
(the harness's `done()`, one redis-py `INCR`) N times in a loop in a fresh process: the drain a
worker that cost nothing would reach running the tasks one after another, measured in the same
minute as the drain it bounds. It needs the harness copied to benchmarks/.peers (docs/benchmarks.md)
and Linux.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PEERS = Path(__file__).resolve().parent / ".peers"


def cpu_seconds(pid: int) -> float:
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:  # a thread that ended between the listing and the read
            pass
    return total / 1e9


def one_run(url: str, n: int, worker_args: list[str]) -> tuple[float, float, float]:
    import redis

    counter = redis.Redis.from_url(url)
    counter.flushdb()
    env = dict(os.environ, CHUTE_URL=url, BENCH_REDIS_URL=url)
    subprocess.run([sys.executable, "-c", f"import bench_chute; bench_chute.produce({n})"], cwd=PEERS, env=env,
                   check=True)
    chute = str(Path(sys.executable).parent / "chute")
    worker = subprocess.Popen([chute, "worker", "bench_chute:app", "--log-level", "WARNING", *worker_args],
                              cwd=PEERS, env=env, stdout=subprocess.DEVNULL)
    try:
        while int(counter.get("bench:done") or 0) == 0:
            time.sleep(0.001)
        t0, c0, d0 = time.perf_counter(), cpu_seconds(worker.pid), int(counter.get("bench:done") or 0)
        while int(counter.get("bench:done") or 0) < n:
            time.sleep(0.002)
        elapsed, cpu = time.perf_counter() - t0, cpu_seconds(worker.pid) - c0
    finally:
        worker.terminate()
        worker.wait()
    tasks = n - d0
    return tasks / elapsed, 100 * cpu / elapsed, 1e6 * cpu / tasks


_BODY_ALONE = """
import sys, time
import common
n = int(sys.argv[1])
common.done()
t, c = time.perf_counter(), time.process_time()
for _ in range(n):
    common.done()
print(n / (time.perf_counter() - t), 1e6 * (time.process_time() - c) / n)
"""


def body_alone(url: str, n: int) -> tuple[float, float]:
    """The task's body run n times in a loop, no framework: (calls a second, us of CPU a call)."""
    env = dict(os.environ, BENCH_REDIS_URL=url)
    out = subprocess.run([sys.executable, "-c", _BODY_ALONE, str(n)], cwd=PEERS, env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="redis://127.0.0.1:6379/15", help="broker and counter (flushed each run)")
    ap.add_argument("-n", type=int, default=20_000, help="tasks per run")
    ap.add_argument("-r", type=int, default=3, help="runs")
    ap.add_argument("worker_args", nargs="*", help="extra `chute worker` options, after --")
    a = ap.parse_args()
    if not (PEERS / "bench_chute.py").exists():
        sys.exit(f"no harness in {PEERS}: cp -r /work/shared/bench/peers {PEERS}")
    runs = []
    for i in range(a.r):
        runs.append(one_run(a.url, a.n, a.worker_args) + body_alone(a.url, a.n))
        print(f"# run {i + 1}: drain {runs[-1][0]:,.0f}/s, worker at {runs[-1][1]:.0f} % of a core, "
              f"{runs[-1][2]:.0f} us of CPU a task; the body alone {runs[-1][3]:,.0f}/s, "
              f"{runs[-1][4]:.0f} us of CPU a call", flush=True)
    ratios = [r[0] / r[3] for r in runs]
    print("| | median | min–max |\n|---|---|---|")
    for label, k, fmt in (("drain, tasks/s", 0, "{:,.0f}"), ("worker CPU, % of one core", 1, "{:.0f}"),
                          ("worker CPU a task, us", 2, "{:.0f}"),
                          ("the task's body alone in a loop, calls/s", 3, "{:,.0f}"),
                          ("the body's CPU a call, us", 4, "{:.0f}")):
        xs = [r[k] for r in runs]
        print(f"| {label} | {fmt.format(statistics.median(xs))} | {fmt.format(min(xs))}–{fmt.format(max(xs))} |")
    print(f"| drain / body alone | {statistics.median(ratios):.2f} | {min(ratios):.2f}–{max(ratios):.2f} |")


if __name__ == "__main__":
    main()
