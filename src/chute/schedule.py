"""Periodic: a task declared to be sent on a schedule (every N seconds, or a cron expression in a zone),
and the slots it is due at. `scheduler.py` runs them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .task import Task

Missed = Literal["skip", "run_once"]


@dataclass
class Periodic:
    """A task sent on a schedule: every N seconds, or on a cron expression in a time zone."""

    task: Task[Any, Any]
    every: float | None = None
    cron: str | None = None
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    missed: Missed = "skip"
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.task.name

    @classmethod
    def declare(cls, task: Task[Any, Any], every: float | timedelta | None, cron: str | None, tz: str,
                missed: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Periodic:
        """Validate a declaration, naming what is wrong."""
        where = f"periodic task {task.name}"
        if (every is None) == (cron is None):
            raise ConfigurationError(f"{where}: give exactly one of every= or cron=")
        if missed not in ("skip", "run_once"):
            raise ConfigurationError(f"{where}: missed={missed!r}; use 'skip' or 'run_once'")
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(f"{where}: unknown time zone {tz!r} (use an IANA name like 'Europe/Paris')") \
                from None
        seconds = every.total_seconds() if isinstance(every, timedelta) else every
        if seconds is not None and (not math.isfinite(seconds) or seconds <= 0):
            raise ConfigurationError(f"{where}: every= must be a positive duration, not {every!r}")
        if cron is not None:
            from croniter import croniter

            if not isinstance(cron, str) or not croniter.is_valid(cron):
                raise ConfigurationError(f"{where}: {cron!r} is not a valid cron expression "
                                         "(five fields: minute hour day-of-month month day-of-week)")
        return cls(task, seconds, cron, zone, missed, args, kwargs)  # type: ignore[arg-type]

    def next_slot(self, after: float) -> float:
        """The first slot strictly after `after` (unix seconds)."""
        if self.every is not None:
            return (math.floor(after / self.every) + 1) * self.every
        from croniter import croniter

        assert self.cron is not None
        fixed_hour = self.cron.split()[1] != "*"
        it = croniter(self.cron, datetime.fromtimestamp(after, self.tz))
        while True:
            candidate: datetime = it.get_next(datetime)
            # In a repeated hour (clocks turned back), a job with a fixed hour runs once, not twice.
            if fixed_hour and _second_occurrence(candidate, self.tz):
                continue
            return candidate.timestamp()


def _second_occurrence(moment: datetime, tz: ZoneInfo) -> bool:
    wall = moment.replace(tzinfo=None)
    return wall.replace(tzinfo=tz, fold=0).timestamp() != moment.timestamp()
