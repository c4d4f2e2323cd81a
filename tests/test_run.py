"""Sync and async tasks run through the same steps (worker/run.py), so they see the same behaviour."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

import chute
from helpers import worker_thread


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_rate_limited_tasks_start_and_duration_exclude_its_wait_for_a_token(
        app: chute.App, flavour: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="chute.task")
    seen: list[tuple[float, float]] = []  # (when its body began, how long after its recorded start)

    def body() -> None:
        job = chute.current_job()
        assert job is not None
        now = time.monotonic()
        seen.append((now, now - job.started))

    async def abody() -> None:
        body()

    task: Any = app.task(rate_limit="4/s", name="run.limited")(body if flavour == "sync" else abody)
    results = [task.delay() for _ in range(3)]
    with worker_thread(app, concurrency=3):
        for r in results:
            r.get(timeout=20)
    starts = sorted(at for at, _ in seen)
    assert starts[-1] - starts[0] >= 0.35  # they did wait for tokens: 4 starts a second
    assert max(gap for _, gap in seen) < 0.1  # the start is stamped after the wait, not before
    durations = [r.duration_ms for r in caplog.records if getattr(r, "state", "") == "succeeded"]
    assert len(durations) == 3 and max(durations) < 100, durations
