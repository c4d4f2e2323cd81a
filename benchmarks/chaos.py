"""Worker SIGKILL chaos, long form: N tasks of 5-50 ms, W worker processes, a random one SIGKILLed
and restarted every K ms while the load runs; then the history check (lost, duplicates, integrity).

    .venv/bin/python benchmarks/chaos.py [--url URL] [-n 10000] [-w 4] [--kill-every 0.2] [--seed S]

The default URL is a fresh SQLite file. Every task writes (id, attempt, pid) to an effects ledger
(tests/apps/chaos.py); lost = enqueued but never in the ledger; duplicate = more than one row.
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

import chute  # noqa: E402
from helpers import sqlite_db, start_worker, stop  # noqa: E402
from reliability.history import History, integrity, read_ledger  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url")
    ap.add_argument("-n", type=int, default=10_000)
    ap.add_argument("-w", type=int, default=4)
    ap.add_argument("-c", type=int, default=4, help="threads per worker")
    ap.add_argument("--prefetch", type=int, default=8)
    ap.add_argument("--lease", type=float, default=2.0)
    ap.add_argument("--kill-every", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    a = ap.parse_args()
    rng = random.Random(a.seed)
    folder = Path(tempfile.mkdtemp(prefix="chute-chaos-"))
    url = a.url or f"sqlite:///{folder}/broker.db"
    ledger = folder / "ledger.db"
    app = chute.App(url)
    work = app.task(name="apps.chaos.work")(lambda ms: None)
    print(f"seed {a.seed} · {url} · {a.n} tasks · {a.w} workers × {a.c} threads · kill every {a.kill_every} s")
    ids: set[str] = set()
    for start in range(0, a.n, 1000):
        ids |= {r.id for r in app.send_many([work.s(rng.uniform(5, 50)) for _ in range(start, min(a.n, start + 1000))])}
    extra = {"CHUTE_LEDGER": str(ledger), "CHUTE_TEST_LEASE": str(a.lease)}

    def spawn() -> subprocess.Popen[bytes]:
        return start_worker(url, "apps.chaos:app", "-c", str(a.c), "--prefetch", str(a.prefetch), **extra)

    workers = [spawn() for _ in range(a.w)]
    kills, t0 = 0, time.monotonic()
    try:
        while not set(read_ledger(ledger)) >= ids:
            time.sleep(a.kill_every)
            done = len(read_ledger(ledger))
            if done < 0.95 * a.n:  # keep killing through 95 % of the run, then let it drain
                i = rng.randrange(len(workers))
                workers[i].send_signal(signal.SIGKILL)
                workers[i].wait()
                workers[i] = spawn()
                kills += 1
            if time.monotonic() - t0 > 900:
                break
    finally:
        for w in workers:
            stop(w)
    elapsed = time.monotonic() - t0
    h = History(ids, read_ledger(ledger))
    extra_runs = sum(k - 1 for k in h.duplicated.values())
    ok = integrity(folder / "broker.db") if url.startswith("sqlite") else "n/a"
    print(f"done in {elapsed:.1f} s · kills {kills} · lost {len(h.lost)} · tasks run twice {len(h.duplicated)} "
          f"(extra runs {extra_runs}, bound kills × prefetch = {kills * a.prefetch}) · integrity {ok}")
    with sqlite_db(ledger) as c:
        print(f"ledger rows {c.execute('SELECT count(*) FROM effects').fetchone()[0]}")
    return 0 if not h.lost and extra_runs <= kills * a.prefetch and ok in ("ok", "n/a") else 1


if __name__ == "__main__":
    sys.exit(main())
