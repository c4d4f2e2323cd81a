"""The history checker: what producers saw returned, against what tasks did (the ledger); and the
harness pieces the fault scenarios share (seeds, the producer's view of the chaos app, a kill loop)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import chute
from helpers import sqlite_db, stop, wait_for

T = TypeVar("T")


@dataclass
class History:
    enqueued: set[str]
    effects: Counter[str]

    @property
    def lost(self) -> set[str]:
        return self.enqueued - set(self.effects)

    @property
    def duplicated(self) -> dict[str, int]:
        return {k: n for k, n in self.effects.items() if n > 1}

    @property
    def unexpected(self) -> set[str]:
        return set(self.effects) - self.enqueued


def read_ledger(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    with sqlite_db(path, timeout=60) as c:
        try:
            return Counter(r[0] for r in c.execute("SELECT task_id FROM effects"))
        except sqlite3.OperationalError:
            return Counter()


def ledger_rows(path: Path) -> list[tuple[str, int, int, float]]:
    with sqlite_db(path, timeout=60) as c:
        return list(c.execute("SELECT task_id, attempt, pid, at FROM effects ORDER BY at"))


def integrity(db: Path) -> str:
    with sqlite_db(db, timeout=60) as c:
        return str(c.execute("PRAGMA integrity_check").fetchone()[0])


def scale(short: T, long: T) -> T:
    """`short` in `make test`; `long` when CHUTE_CHAOS_LONG=1 (benchmarks/chaos.py runs the long forms)."""
    return long if os.environ.get("CHUTE_CHAOS_LONG") == "1" else short


def seeded() -> random.Random:
    """A random generator whose seed is printed, so a failing run replays (CHUTE_CHAOS_SEED=...)."""
    seed = int(os.environ.get("CHUTE_CHAOS_SEED", random.randrange(1 << 30)))
    print(f"seed {seed} (replay with CHUTE_CHAOS_SEED={seed})")
    return random.Random(seed)


def producer_app(url: str) -> tuple[chute.App, chute.Task[..., None]]:
    """The producer's view of tests/apps/chaos.py: its work(ms) task, never run here."""
    app = chute.App(url)
    work = app.task(name="apps.chaos.work")(lambda ms: None)
    return app, work


def kill_while_running(spawn: Callable[[], subprocess.Popen[bytes]], expected: set[str], ledger: Path,
                       rng: random.Random, workers: int = 4) -> tuple[History, dict[int, float]]:
    """Run `workers` processes from `spawn`, SIGKILL a random one and start another every 200 ms
    (for 4 s; the long form until 95 % is done), wait until the ledger holds every expected id.
    Returns the history and when each killed process (by pid) died."""
    procs = [spawn() for _ in range(workers)]
    killed: dict[int, float] = {}
    chaos_until = time.monotonic() + scale(4.0, 3600.0)
    try:
        while time.monotonic() < chaos_until and len(read_ledger(ledger)) < 0.95 * len(expected):
            time.sleep(0.2)
            i = rng.randrange(len(procs))
            procs[i].send_signal(signal.SIGKILL)
            procs[i].wait()
            killed[procs[i].pid] = time.time()
            procs[i] = spawn()
        wait_for(lambda: set(read_ledger(ledger)) >= expected, timeout=scale(120, 900), what="every id in the ledger")
    finally:
        for p in procs:
            stop(p)
    return History(expected, read_ledger(ledger)), killed


def orphan_delays(ledger: Path, killed: dict[int, float]) -> dict[int, list[float]]:
    """For each killed process (by pid), the runs it had started and not finished: for each, the
    seconds from the kill to that task's next start elsewhere (inf if it never started again)."""
    with sqlite_db(ledger) as c:
        starts = list(c.execute("SELECT task_id, pid, at FROM starts ORDER BY at"))
        finished = {(t, p) for t, p in c.execute("SELECT task_id, pid FROM effects")}
    delays: dict[int, list[float]] = {pid: [] for pid in killed}
    for task_id, pid, _ in starts:
        if pid in killed and (task_id, pid) not in finished:
            again = [at for t, p, at in starts if t == task_id and p != pid and at >= killed[pid]]
            delays[pid].append(min(again) - killed[pid] if again else float("inf"))
    return delays
