"""Periodic tasks: declaration errors, slot times (DST included), one active scheduler, no tick twice."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import chute
from chute.scheduler import Scheduler
from helpers import TESTS, env_for, start_worker, stop, wait_for

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cron": "61 * * * *"}, "'61 \\* \\* \\* \\*' is not a valid cron expression"),
    ({"cron": "every five minutes"}, "is not a valid cron expression"),
    ({"cron": "*/5 * * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"every": 5, "cron": "* * * * *"}, "exactly one of every= or cron="),
    ({}, "exactly one of every= or cron="),
    ({"every": 0}, "every= must be a positive duration"),
    ({"every": 5, "missed": "later"}, "missed='later'"),
])
def test_bad_declarations_fail_at_once(kwargs: dict[str, object], message: str) -> None:
    app = chute.App("memory://")
    with pytest.raises(chute.ConfigurationError, match=message):
        app.periodic(**kwargs)(lambda: None)  # type: ignore[arg-type]
    assert app.schedules == {}


def slots(app: chute.App, start: datetime, end: datetime) -> list[datetime]:
    (p,) = app.schedules.values()
    out, t = [], start.timestamp()
    while (t := p.next_slot(t)) < end.timestamp():
        out.append(datetime.fromtimestamp(t, p.tz))
    return out


def test_interval_slots_are_aligned_and_deterministic() -> None:
    app = chute.App("memory://")
    app.periodic(every=300)(lambda: None)
    (p,) = app.schedules.values()
    assert p.next_slot(1_000_000_000.0) == 1_000_000_200.0
    assert p.next_slot(1_000_000_200.0) == 1_000_000_500.0


def test_fixed_time_cron_runs_once_a_day_across_both_dst_changes() -> None:
    app = chute.App("memory://")
    app.periodic(cron="30 2 * * *", tz="Europe/Berlin")(lambda: None)
    spring = slots(app, datetime(2026, 3, 27, tzinfo=BERLIN), datetime(2026, 4, 1, tzinfo=BERLIN))
    autumn = slots(app, datetime(2026, 10, 23, tzinfo=BERLIN), datetime(2026, 10, 28, tzinfo=BERLIN))
    for days in (spring, autumn):
        assert len(days) == len({d.date() for d in days}) == 5  # one run per day, never two
    assert [d.strftime("%d %H:%M%z") for d in spring][2] == "29 03:00+0200"  # 02:30 did not exist
    assert [d.strftime("%d %H:%M%z") for d in autumn][2] == "25 02:30+0200"  # the first 02:30 only


def test_wildcard_hour_cron_follows_real_time_through_the_repeated_hour() -> None:
    app = chute.App("memory://")
    app.periodic(cron="*/30 * * * *", tz="Europe/Berlin")(lambda: None)
    got = slots(app, datetime(2026, 10, 25, 1, 45, tzinfo=BERLIN), datetime(2026, 10, 25, 3, 15, tzinfo=BERLIN))
    assert [d.strftime("%H:%M%z") for d in got] == ["02:00+0200", "02:30+0200", "02:00+0100", "02:30+0100",
                                                     "03:00+0100"]


def test_missed_slots_skip_or_run_once() -> None:
    for policy, expected in (("skip", 0), ("run_once", 1)):
        app = chute.App("memory://")
        task = app.periodic(every=60, missed=policy)(lambda: None)
        now = 1_000_000_000.0
        app.results.set_meta(f"chute.periodic:{task.name}:last", repr(now - 600))  # ten minutes down
        s = Scheduler(app, clock=lambda now=now: now)
        s._hold_lease()
        assert s.leading
        s._send_due()
        assert sum(x.ready + x.delayed for x in app.broker.stats()) == expected, policy


def test_one_active_scheduler_and_takeover_without_double_ticks() -> None:
    app = chute.App("memory://")
    app.periodic(every=0.1)(lambda: None)
    a, b = Scheduler(app, lease=0.6), Scheduler(app, lease=0.6)
    ta, tb = threading.Thread(target=a.run), threading.Thread(target=b.run)
    ta.start()
    wait_for(lambda: a.leading, timeout=5, what="a leads")
    tb.start()
    time.sleep(0.5)
    assert a.leading and not b.leading
    a.stop()  # the leader goes away (releasing its lease)
    ta.join(5)
    wait_for(lambda: b.leading, timeout=2, what="b takes over")
    time.sleep(0.5)
    b.stop()
    tb.join(5)
    keys = [app.codec.decode(d.body).idempotency_key for d in app.broker.fetch(["default"], 1000, 30, 0)]
    assert len(keys) == len(set(keys)) >= 8
    assert a.sent + b.sent >= len(keys)


@pytest.mark.slow
def test_two_scheduler_processes_leader_killed(tmp_path: Path) -> None:
    url, log = f"sqlite:///{tmp_path}/s.db", tmp_path / "ticks.log"

    def scheduler() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "chute", "scheduler", "apps.periodic:app", "--lease", "2",
                                 "--log-level", "WARNING"], env=env_for(url), cwd=str(TESTS))

    app = chute.App(url)
    first = scheduler()
    wait_for(lambda: app.results.get_meta("chute.periodic:apps.periodic.tick:last"), timeout=10, what="a tick")
    second = scheduler()
    worker = start_worker(url, "apps.periodic:app", CHUTE_TEST_LOG=str(log))
    try:
        time.sleep(2.5)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = time.time()
        wait_for(lambda: float(app.results.get_meta("chute.periodic:apps.periodic.tick:last") or 0) > killed_at,
                 timeout=2 + 2 + 2, what="the second scheduler to take over within its lease")
        time.sleep(2.5)
    finally:
        stop(second)
        time.sleep(1.0)
        stop(worker)
        if first.poll() is None:
            first.kill()
    ticks = Counter(log.read_text().split())
    assert ticks and max(ticks.values()) == 1  # no tick ran twice
    assert len(ticks) >= 5
