"""One-by-one enqueue against the peers, as the peer harness times it, in many short interleaved rounds.

    .venv/bin/python benchmarks/peer_enqueue.py                      # huey-redis vs chute-redis, 9 rounds
    .venv/bin/python benchmarks/peer_enqueue.py -r 15 --chute .venv benchmarks/.peers/.venvs/chute
    .venv/bin/python benchmarks/peer_enqueue.py --chute .venv .venv=/tmp/head/src   # A/B: a checkout's src first

The harness (benchmarks/.peers, docs/benchmarks.md) runs each library three times, minutes apart,
and the ratio of two single runs on this shared machine swings from 1.3x to 2.2x. Here each round
runs every library's producer back to back (`import bench_X; bench_X.produce(N)` in a fresh process,
process start included, exactly as run.py times it), so the ratio of one round compares the same
minute, and the median of the per-round ratios is what the comparison means. It also times each
producer's start alone (`produce(0)`) and reports the per-call cost without it. Every `--chute`
venv is a separate row (VENV=SRC puts another source tree first on the path), so two builds or
two interpreters compare in one run.
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
URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")


def timed(python: str, module: str, n: int, src: str = "") -> float:
    path = os.pathsep.join(x for x in (src, str(PEERS)) if x)
    env = dict(os.environ, PYTHONPATH=path, BENCH_REDIS_URL=URL, N=str(n))
    env["PATH"] = str(Path(python).parent) + os.pathsep + env["PATH"]
    t = time.perf_counter()
    subprocess.run([python, "-c", f"import {module}; {module}.produce({n})"], cwd=PEERS, env=env, check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=10_000, help="tasks a run (the harness uses 10,000)")
    ap.add_argument("-r", type=int, default=9, help="rounds")
    ap.add_argument("--peer", action="append", default=None,
                    help="a peer row as venv:module (default huey:bench_huey)")
    ap.add_argument("--chute", nargs="+", default=[".venv"], help="chute venvs, one row each")
    a = ap.parse_args()
    if not (PEERS / "bench_chute.py").exists():
        sys.exit(f"no harness in {PEERS}: cp -r /work/shared/bench/peers {PEERS} && {PEERS}/setup.sh")
    import redis

    r = redis.Redis.from_url(URL)
    rows: list[tuple[str, str, str, str]] = []  # name, python, module, source tree first on the path
    for spec in a.peer or ["huey:bench_huey"]:
        venv, module = spec.split(":")
        rows.append((venv, str(PEERS / ".venvs" / venv / "bin" / "python"), module, ""))
    for spec in a.chute:
        venv, _, src = spec.partition("=")
        rows.append((f"chute ({spec})", str(Path(venv).resolve() / "bin" / "python"), "bench_chute",
                     str(Path(src).resolve()) if src else ""))
    totals: dict[str, list[float]] = {row[0]: [] for row in rows}
    starts: dict[str, list[float]] = {row[0]: [] for row in rows}
    for i in range(a.r):
        for name, python, module, src in rows:
            r.flushdb()
            starts[name].append(timed(python, module, 0, src))
            r.flushdb()
            totals[name].append(timed(python, module, a.n, src))
        line = ", ".join(f"{row[0]} {a.n / totals[row[0]][-1]:,.0f}/s" for row in rows)
        print(f"# round {i + 1}: {line}", flush=True)
    r.flushdb()
    base = rows[0][0]
    print(f"| row | enqueue/s (median) | ratio to {base}, per round: median (min–max) | start s | per call µs |")
    print("|---|---|---|---|---|")
    for name, *_ in rows:
        rates = [a.n / t for t in totals[name]]
        ratios = [b / t for b, t in zip(totals[base], totals[name], strict=True)]
        start = statistics.median(starts[name])
        per_call = statistics.median((t - s) / a.n * 1e6 for t, s in zip(totals[name], starts[name], strict=True))
        print(f"| {name} | {statistics.median(rates):,.0f} | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}–{max(ratios):.2f}) | {start:.3f} | {per_call:.1f} |")


if __name__ == "__main__":
    main()
