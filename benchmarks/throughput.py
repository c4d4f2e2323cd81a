"""chute's own throughput benchmark: enqueue/s, drain/s with one worker process, latency, idle CPU.

    .venv/bin/python benchmarks/throughput.py                       # SQLite in a temporary folder
    .venv/bin/python benchmarks/throughput.py --url redis://127.0.0.1:6379/0?prefix=bench -r 5
    .venv/bin/python benchmarks/throughput.py --url amqp://guest:guest@127.0.0.1:5672/ --results sqlite:///r.db

Each run starts from an empty broker: it enqueues N no-op tasks one by one (`delay`), then N in
batches of 1,000 (`send_many`), starts ONE `chute worker` process and times the drain from the
first completion to the last (worker start-up excluded, as in ../shared/bench/peers), then runs
sequential round trips (`delay` then `result.get()`) for latency, then samples the idle worker's
CPU. Results are medians over the runs; the machine is shared, so compare ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import chute  # noqa: E402

QUEUE = "bench"


def make_app(url: str, results: str | None) -> chute.App:
    app = chute.App(url, results=results)

    @app.task(name="bench.noop", queue=QUEUE)
    def noop(i: int) -> None:
        return None

    return app


APP_MODULE = '''
import os, chute
app = chute.App(os.environ["BENCH_URL"], results=os.environ.get("BENCH_RESULTS") or None)

@app.task(name="bench.noop", queue="bench")
def noop(i):
    return None
'''


def pending(app: chute.App) -> int:
    (s,) = app.broker.stats([QUEUE])
    return s.ready + s.in_flight + s.delayed


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(url: str, results: str | None, n: int, latency_n: int, idle_s: float, workdir: Path,
            worker_args: list[str]) -> dict[str, float]:
    app = make_app(url, results)
    noop = app.tasks["bench.noop"]
    try:
        t = time.perf_counter()
        for i in range(n):
            noop.delay(i)
        one_by_one = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for start in range(0, n, 1000):
            app.send_many([noop.s(i) for i in range(start, min(n, start + 1000))])
        batched = n / (time.perf_counter() - t)
        total = 2 * n
        (workdir / "bench_app.py").write_text(APP_MODULE)
        env = dict(os.environ, BENCH_URL=url, BENCH_RESULTS=results or "",
                   PYTHONPATH=f"{workdir}{os.pathsep}{HERE.parent / 'src'}")
        worker = subprocess.Popen([sys.executable, "-m", "chute", "worker", "bench_app:app", "-q", QUEUE,
                                   "--log-level", "ERROR", *worker_args], env=env, cwd=workdir)
        try:
            deadline = time.monotonic() + 300
            while pending(app) == total and time.monotonic() < deadline:
                time.sleep(0.001)
            t0, left0 = time.perf_counter(), pending(app)
            while (left := pending(app)) and time.monotonic() < deadline:
                time.sleep(0.01)
            drain = (left0 - left) / (time.perf_counter() - t0)
            lat = []
            for i in range(latency_n):
                t = time.perf_counter()
                noop.delay(i).get(timeout=10)
                lat.append((time.perf_counter() - t) * 1000)
            lat.sort()
            time.sleep(1.0)  # let the last settles and heartbeats pass
            c0, t0 = cpu_seconds(worker.pid), time.perf_counter()
            time.sleep(idle_s)
            idle = (cpu_seconds(worker.pid) - c0) / (time.perf_counter() - t0) * 100
        finally:
            worker.terminate()
            worker.wait(30)
        return {"enqueue": one_by_one, "batched": batched, "drain": drain,
                "p50": lat[len(lat) // 2] if lat else float("nan"),
                "p99": lat[max(0, int(len(lat) * 0.99) - 1)] if lat else float("nan"),
                "idle_cpu": idle, "complete": float(left == 0)}
    finally:
        app.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="broker URL (default: a fresh SQLite file per run)")
    ap.add_argument("--results", help="result backend URL (for brokers that keep none)")
    ap.add_argument("-n", type=int, default=10_000, help="tasks per enqueue mode (the worker drains 2 × n)")
    ap.add_argument("-r", type=int, default=3, help="runs")
    ap.add_argument("--latency", type=int, default=500, help="sequential round trips per run")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU sampling per run")
    ap.add_argument("worker_args", nargs="*", help="extra `chute worker` options, after --")
    a = ap.parse_args()
    runs = []
    for rep in range(a.r):
        with tempfile.TemporaryDirectory() as tmp:
            url = a.url or f"sqlite:///{tmp}/bench.db"
            if a.url and a.url.startswith("redis"):
                import redis

                client = redis.Redis.from_url(a.url.split("?")[0])
                prefix = dict(p.split("=") for p in a.url.partition("?")[2].split("&") if p).get("prefix", "chute")
                for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                    client.delete(key)
                client.close()
            res = one_run(url, a.results, a.n, a.latency, a.idle, Path(tmp), a.worker_args)
            runs.append(res)
            print(f"# run {rep + 1}: " + ", ".join(f"{k} {v:,.2f}" for k, v in res.items()), file=sys.stderr,
                  flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"broker: {chute.brokers.redact_url(a.url) if a.url else 'sqlite (fresh file per run)'} · n={a.n} · "
          f"runs={a.r} · python {sys.version.split()[0]}")
    print("| metric | median | min–max |")
    print("|---|---|---|")
    for key, label, fmt in (("enqueue", "enqueue one by one (delay), tasks/s", "{:,.0f}"),
                            ("batched", "enqueue batched (send_many of 1,000), tasks/s", "{:,.0f}"),
                            ("drain", "drain, one worker process, tasks/s", "{:,.0f}"),
                            ("p50", "latency enqueue→result p50, ms", "{:.2f}"),
                            ("p99", "latency enqueue→result p99, ms", "{:.2f}"),
                            ("idle_cpu", "idle worker CPU, % of one core", "{:.2f}")):
        values = [r[key] for r in runs]
        print(f"| {label} | {fmt.format(med[key])} | {fmt.format(min(values))}–{fmt.format(max(values))} |")
    print(f"| every task done | {all(r['complete'] for r in runs)} | |")


if __name__ == "__main__":
    main()
