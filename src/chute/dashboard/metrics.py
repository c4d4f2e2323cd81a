"""Prometheus metrics for /metrics, computed at scrape time from broker stats and the event history.

A custom collector on a private registry (no global state): each scrape asks the broker for queue
counts and live workers and folds in new events. Counters count what this dashboard process has
read since it started — including the hour of events the broker still kept then — so they only
grow while it runs; Prometheus handles the reset when it restarts. Labels are task names, queues
and states only: no argument, error text or URL ever becomes a label.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from ..errors import ChuteError
from ..ops import Ops
from ..ops.history import DURATION_BUCKETS

OUTCOME_COUNTERS = {  # event kind -> counter name (each gets the _total suffix)
    "succeeded": ("chute_tasks_succeeded", "Attempts that succeeded."),
    "failed": ("chute_tasks_failed", "Tasks that failed for good without a dead-letter queue."),
    "retried": ("chute_tasks_retried", "Attempts that failed and were scheduled to run again."),
    "dead": ("chute_tasks_dead", "Tasks moved to the dead-letter queue."),
    "cancelled": ("chute_tasks_cancelled", "Tasks cancelled before or while running."),
}


class ChuteCollector:
    """Yields chute's metrics for one App on every collect()."""

    def __init__(self, ops: Ops) -> None:
        self.ops = ops

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to pre-register: a scrape must not be needed to build the registry

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("chute_broker_up", "1 if the broker answered this scrape, else 0.")
        try:
            queues = self.ops.queues()
            workers = self.ops.app.results.workers()
            self.ops.history.refresh(force=True)
        except ChuteError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        families = {name: GaugeMetricFamily(f"chute_queue_{name}", doc, labels=["queue"]) for name, doc in (
            ("depth", "Messages ready to run now."), ("delayed", "Messages waiting for their ETA or retry time."),
            ("in_flight", "Messages held by a worker under a lease."), ("dead", "Messages in the dead-letter queue."))}
        for q in queues:
            families["depth"].add_metric([q.queue], q.ready)
            families["delayed"].add_metric([q.queue], q.delayed)
            families["in_flight"].add_metric([q.queue], q.in_flight)
            families["dead"].add_metric([q.queue], q.dead)
        yield from families.values()
        yield GaugeMetricFamily("chute_workers", "Workers with a live heartbeat.", value=len(workers))
        yield GaugeMetricFamily("chute_tasks_running", "Tasks running on live workers.",
                                value=sum(len(w.running) for w in workers))
        totals, durations = self.ops.history.snapshot()
        processed = CounterMetricFamily("chute_tasks_processed", "Attempts finished, whatever the outcome.",
                                        labels=["task", "queue"])
        counters = {kind: CounterMetricFamily(name, doc, labels=["task", "queue"])
                    for kind, (name, doc) in OUTCOME_COUNTERS.items()}
        finished: dict[tuple[str, str], int] = {}
        for (task, queue, kind), n in sorted(totals.items()):
            counters[kind].add_metric([task, queue], n)
            finished[(task, queue)] = finished.get((task, queue), 0) + n
        for (task, queue), n in sorted(finished.items()):
            processed.add_metric([task, queue], n)
        yield processed
        yield from counters.values()
        hist = HistogramMetricFamily("chute_task_duration_seconds", "How long attempts ran, by task.",
                                     labels=["task", "queue"])
        for (task, queue), d in sorted(durations.items()):
            cumulative, buckets = 0, []
            for le, count in zip((*map(str, DURATION_BUCKETS), "+Inf"), d.counts, strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            hist.add_metric([task, queue], buckets, d.total)
        yield hist
        yield CounterMetricFamily("chute_event_batches_skipped", "Event batches this dashboard could not decode.",
                                  value=self.ops.history.undecodable)


def registry(ops: Ops) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ChuteCollector(ops))
    return reg


def render(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
