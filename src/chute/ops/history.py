"""History: the broker's event stream folded into rates, counters, durations and task timelines.

One History per reading process (a dashboard, `chute status --watch`): `refresh` reads the
batches written since its last call and folds them in, so each event is decoded once however
many pages, API clients and scrapes look. What it keeps is bounded: per-minute buckets for the
last hour, totals and duration histograms per task name since it started reading (Prometheus
counters), and the timelines of the most recent `max_tasks` tasks.
"""

from __future__ import annotations

import bisect
import collections
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import msgspec

from ..brokers.store import EventLog
from ..events import OUTCOMES, Event, decode_batch

WINDOW = 3600.0  # seconds of per-minute rates kept
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
RATE_KINDS = ("succeeded", "failed", "retried", "dead", "cancelled")
STATE_OF = {"received": "started", "started": "started", "succeeded": "succeeded", "failed": "failed",
            "retried": "retrying", "dead": "dead", "cancelled": "cancelled"}


@dataclass
class Durations:
    """A cumulative histogram of one task's attempt durations (seconds)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0
    n: int = 0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total += seconds
        self.n += 1


class History:
    """Folds events read from `log` (the App's store); safe to share between threads. Each refresh reads
    what was written since the last, unless `min_interval` seconds have not passed (a dashboard serving
    many requests)."""

    def __init__(self, log: EventLog, *, max_tasks: int = 20_000, page: int = 200, max_pages: int = 50,
                 min_interval: float = 0.0) -> None:
        self.log = log
        self.max_tasks = max_tasks
        self.page, self.max_pages, self.min_interval = page, max_pages, min_interval
        self.cursor = 0
        self.undecodable = 0  # batches skipped because they did not decode
        self.minutes: dict[int, list[int]] = {}  # minute (unix // 60) -> counts per RATE_KINDS
        self.totals: collections.Counter[tuple[str, str, str]] = collections.Counter()  # (name, queue, kind)
        self.durations: dict[tuple[str, str], Durations] = {}  # (name, queue)
        self.tasks: collections.OrderedDict[str, list[Event]] = collections.OrderedDict()
        self.workers: dict[str, Event] = {}  # worker id -> its latest worker-* event
        self.workflows: collections.OrderedDict[str, float] = collections.OrderedDict()  # id -> last seen
        self._lock = threading.RLock()
        self._last_refresh = 0.0

    def refresh(self, force: bool = False) -> None:
        """Fold in what was written since the last call (at most max_pages pages per call)."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last_refresh < self.min_interval:
                return
            self._last_refresh = now
            for _ in range(self.max_pages):
                batches = self.log.read_events(self.cursor, self.page)
                for seq, data in batches:
                    self.cursor = seq
                    try:
                        events = decode_batch(data)
                    except msgspec.DecodeError:
                        self.undecodable += 1
                        continue
                    for e in events:
                        self._fold(e)
                if len(batches) < self.page:
                    break
            self._prune(time.time())

    def _fold(self, e: Event) -> None:
        kind = e.kind
        if kind.startswith("worker-"):
            self.workers[e.worker] = e
            return
        if kind in OUTCOMES:
            counts = self.minutes.setdefault(int(e.at // 60), [0] * len(RATE_KINDS))
            counts[RATE_KINDS.index(kind)] += 1
            self.totals[(e.name, e.queue, kind)] += 1
            if e.received:  # it ran (a message refused before running has no duration)
                self.durations.setdefault((e.name, e.queue), Durations()).add(e.duration)
        if e.task_id:
            timeline = self.tasks.get(e.task_id)
            if timeline is None:
                timeline = self.tasks[e.task_id] = []
                if len(self.tasks) > self.max_tasks:
                    self.tasks.popitem(last=False)
            else:
                self.tasks.move_to_end(e.task_id)
            timeline.append(e)
        if e.workflow:
            self.workflows[e.workflow] = e.at
            self.workflows.move_to_end(e.workflow)
            if len(self.workflows) > 1000:
                self.workflows.popitem(last=False)

    def _prune(self, now: float) -> None:
        oldest = int((now - WINDOW) // 60)
        for minute in [m for m in self.minutes if m < oldest]:
            del self.minutes[minute]
        for wid in [w for w, e in self.workers.items() if e.at < now - WINDOW]:
            del self.workers[wid]

    # -- reading (call refresh first) ----------------------------------------------------------
    def rates(self, now: float, minutes: int = 60) -> list[tuple[int, list[int]]]:
        """(minute start, counts per RATE_KINDS) for each of the last `minutes` minutes, oldest first."""
        with self._lock:
            last = int(now // 60)
            return [(m * 60, list(self.minutes.get(m, [0] * len(RATE_KINDS)))) for m in range(last - minutes + 1,
                                                                                              last + 1)]

    def timeline(self, task_id: str) -> list[Event]:
        with self._lock:
            return list(self.tasks.get(task_id, ()))

    def recent(self, state: str | None = None, name: str | None = None, limit: int = 100) -> Iterator[Event]:
        """The latest event of recent tasks, newest first, optionally only those now in `state`."""
        with self._lock:
            latest = [t[-1] for t in reversed(self.tasks.values())]
        found = 0
        for e in latest:
            if (state is None or STATE_OF.get(e.kind) == state) and (name is None or e.name == name):
                yield e
                found += 1
                if found >= limit:
                    return

    def recent_workflows(self, limit: int) -> list[tuple[str, float]]:
        """(workflow id, when a step of it was last seen), most recent first."""
        with self._lock:
            return list(reversed(self.workflows.items()))[:limit]

    def snapshot(self) -> tuple[dict[tuple[str, str, str], int], dict[tuple[str, str], Durations]]:
        """Copies of the totals and duration histograms, for a metrics scrape."""
        with self._lock:
            return dict(self.totals), {k: Durations(list(d.counts), d.total, d.n) for k, d in self.durations.items()}
