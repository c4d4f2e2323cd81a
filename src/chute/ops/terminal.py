"""Terminal rendering of the operations API (rich tables) for `chute status` and `chute dlq`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .views import DeadLetterView, Status

if TYPE_CHECKING:
    from ..app import App

_SPARK = " ▁▂▃▄▅▆▇█"


def status_view(status: Status) -> Group:
    """Queues, the last hour's outcomes and live workers, as one renderable."""
    o = status.overview
    queues = Table(title=f"Queues · {status.broker}", title_justify="left")
    for col in ("queue", "ready", "in flight", "delayed", "dead"):
        queues.add_column(col, justify="left" if col == "queue" else "right")
    for q in status.queues:
        queues.add_row(q.queue, f"{q.ready:,}", f"{q.in_flight:,}", f"{q.delayed:,}",
                       f"[red]{q.dead:,}[/]" if q.dead else "0")
    if not status.queues:
        queues.add_row("(no messages)", "", "", "", "")
    per_minute = [r.succeeded + r.failed + r.dead for r in o.rates]
    rates = Text.assemble(
        ("Last hour: ", "bold"), f"{o.succeeded_last_hour:,} succeeded, ",
        (f"{o.failed_last_hour:,} failed", "red" if o.failed_last_hour else ""),
        f" ({100 * o.failure_rate:.1f} %), {o.retried_last_hour:,} retried · per minute ", (spark(per_minute), "cyan"),
        f" · now {per_minute[-1] if per_minute else 0:,}/min")
    workers = Table(title=f"Workers · {len(status.workers)} alive", title_justify="left")
    for col in ("worker", "host", "pid", "queues", "heartbeat", "processed", "failed", "running"):
        workers.add_column(col, justify="right" if col in ("pid", "processed", "failed", "running") else "left")
    for w in status.workers:
        workers.add_row(w.id[-12:], w.hostname, str(w.pid), ",".join(w.queues), f"{w.heartbeat_age:.1f} s ago",
                        f"{w.processed:,}", f"{w.failed:,}", str(len(w.running)))
    return Group(queues, rates, workers)


def spark(values: Sequence[int]) -> str:
    """A one-line bar chart of `values` (one character each)."""
    top = max(values, default=0)
    if not top:
        return _SPARK[1] * len(values)
    return "".join(_SPARK[max(1, round(v / top * (len(_SPARK) - 1)))] if v else _SPARK[0] for v in values)


def dead_letter_table(rows: Sequence[DeadLetterView], queue: str | None) -> Table:
    table = Table(title=f"Dead letters{' in ' + queue if queue else ''} · {len(rows)} shown", title_justify="left")
    for col in ("id", "queue", "task", "reason", "dead since"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.id, r.queue, r.task or "?", r.reason[:80],
                      time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.dead_at)))
    return table


def print_status(app: App) -> None:
    """Print what `chute status` shows: queues, the last hour's outcomes, live workers."""
    from rich.console import Console

    from .api import Ops

    Console().print(status_view(Ops(app).status()))
