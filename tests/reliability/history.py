"""The history checker: what producers saw returned, against what tasks did (the ledger)."""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from helpers import sqlite_db

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
