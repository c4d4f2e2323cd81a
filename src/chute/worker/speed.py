"""How long each task takes in this worker, to decide which tasks run inline on the consumer thread.

Handing a task to an executor thread costs a queue put, a wake-up and GIL hand-offs: for a task of
a few microseconds that is most of the work. A sync task that has proven fast runs inline instead.

Timings taken on executor threads include waiting for the GIL behind the other threads, so they
overstate how long a task takes: a 60 µs task can average over a millisecond on eight busy
threads. A task therefore qualifies on its *fastest* of LEARN_RUNS threaded runs, and then stays
inline while the moving average of its inline runs (which are exact) stays under the limit; a task
that proves slow inline goes back to the threads and must qualify again.
"""

from __future__ import annotations

from dataclasses import dataclass

LEARN_RUNS = 20  # threaded runs before a task may qualify
FAST = 0.0005  # seconds: faster than this runs inline
_ALPHA = 0.1  # weight of the newest run in a moving average


@dataclass(slots=True)
class _Seen:
    average: float = 0.0  # moving average of every run
    threaded_runs: int = 0  # since it last left inline
    best: float = float("inf")  # fastest of those threaded runs
    inline_runs: int = 0  # since it last qualified
    inline_average: float = 0.0


class Speeds:
    """Per task name: observed durations, and whether it now runs inline."""

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}

    def record(self, name: str, seconds: float, inline: bool) -> None:
        seen = self._seen.get(name)
        if seen is None:
            seen = self._seen[name] = _Seen(average=seconds)
        seen.average += (seconds - seen.average) * _ALPHA
        if not inline:
            seen.threaded_runs += 1
            seen.best = min(seen.best, seconds)
            return
        seen.inline_average = seconds if not seen.inline_runs else \
            seen.inline_average + (seconds - seen.inline_average) * _ALPHA
        seen.inline_runs += 1
        if seen.inline_average >= FAST:  # slow after all: back to the threads, to qualify afresh
            seen.inline_runs, seen.inline_average, seen.threaded_runs, seen.best = 0, 0.0, 0, float("inf")

    def runs_inline(self, name: str) -> bool:
        seen = self._seen.get(name)
        if seen is None:
            return False
        return seen.inline_runs > 0 or (seen.threaded_runs >= LEARN_RUNS and seen.best < FAST)

    def estimate(self, name: str) -> float:
        """Seconds one run of `name` takes here: the inline average once known, else the best seen."""
        seen = self._seen.get(name)
        if seen is None:
            return FAST
        return seen.inline_average if seen.inline_runs else min(seen.best, seen.average)
