"""R14: schedulers on skewed clocks, their leader SIGKILLed twice, miss no tick and run none twice."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers import TESTS, env_for, start_worker, stop, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
SPEED = 240.0  # simulated seconds per real second: an hour in 15 s
SKEWS = (-30.0, 0.0, 45.0)


def test_three_skewed_schedulers_run_an_every_minute_job_exactly_sixty_times_in_an_hour(
        url: str, tmp_path: Path) -> None:
    log = tmp_path / "ticks.log"
    start_real = time.time() + 4.0  # the processes' start (imports, an election) comes before the hour
    start_sim = math.floor(start_real / 60) * 60 + 60  # the simulated hour starts on a minute
    lease = 0.3  # real seconds: a takeover costs at most 72 simulated seconds

    def sim_now() -> float:
        return start_sim + (time.time() - start_real) * SPEED

    def scheduler(i: int) -> subprocess.Popen[bytes]:
        args = f"{start_real!r}, {start_sim!r}, {SPEED!r}, {SKEWS[i]!r}, {lease!r}, {str(tmp_path / f'state{i}')!r}"
        code = f"from apps.minutely import run_scheduler; run_scheduler({args})"
        return subprocess.Popen([sys.executable, "-c", code], env=env_for(url, CHUTE_TEST_LOG=str(log)), cwd=str(TESTS))

    def leader() -> list[int]:
        leading = [i for i in range(3) if procs[i].poll() is None and (tmp_path / f"state{i}").exists()
                   and (tmp_path / f"state{i}").read_text() == "leading"]
        return leading[:1]  # two may both believe it for a moment: either will do

    worker = start_worker(url, "apps.minutely:app", "-c", "4", CHUTE_TEST_LOG=str(log))
    procs = [scheduler(i) for i in range(3)]
    killed = []
    try:
        wait_for(lambda: leader() or None, timeout=max(0.1, start_real - time.time()), what="a leader before the hour")
        for minute in (20, 40):  # SIGKILL whoever leads at minute 20 and at minute 40
            wait_for(lambda m=minute: sim_now() >= start_sim + m * 60, timeout=30, what=f"minute {minute}")
            (i,) = wait_for(leader, timeout=5, what="a leader")
            procs[i].send_signal(signal.SIGKILL)
            procs[i].wait()
            killed.append(SKEWS[i])
        wait_for(lambda: sim_now() >= start_sim + 62 * 60, timeout=30, what="the end of the hour")
        slots = [start_sim + 60 * k for k in range(1, 61)]
        try:
            wait_for(lambda: all(f"{s:.3f}" in log.read_text() for s in slots), timeout=15, what="every slot run")
        except AssertionError:
            ran = log.read_text()
            missing = [round((s - start_sim) / 60) for s in slots if f"{s:.3f}" not in ran]
            raise AssertionError(f"minutes never run: {missing} (leaders killed: skews {killed})") from None
        time.sleep(1.0)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(10)
        stop(worker)
    runs = Counter(line.rsplit(":", 1)[1] for line in log.read_text().split())
    in_hour = {slot: n for slot, n in runs.items() if start_sim < float(slot) <= start_sim + 3600}
    print(f"leaders killed: skews {killed}; {sum(in_hour.values())} runs in the hour")
    assert len(in_hour) == 60 and set(in_hour.values()) == {1}, sorted(in_hour.items())
