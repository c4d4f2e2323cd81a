"""Task-outcome log lines: one per outcome, structured, with secrets masked — from a real worker process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import chute
from helpers import TESTS, env_for, stop, wait_for

SECRET_REASON = "login failed: password=hunter2 via redis://app:s3cret-pw@db:6379/0"


def run_worker(url: str, log_format: str, until: list[chute.TaskResult[object]]) -> str:
    w = subprocess.Popen([sys.executable, "-m", "chute", "worker", "apps.basic:app", "--log-level", "INFO",
                          "--log-format", log_format], env=env_for(url), cwd=str(TESTS), stderr=subprocess.PIPE,
                         text=True)
    try:
        wait_for(lambda: all(r.ready() for r in until), timeout=30, what="tasks to finish")
    finally:
        stop(w)
        assert w.stderr is not None
        out = w.stderr.read()
        w.stderr.close()
    return out


def test_json_outcome_lines_carry_the_task_fields_and_no_secret(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/logs.db"
    app = chute.App(url)
    try:
        ok = app.task(name="apps.basic.add")(lambda a, b: None).delay(1, 2)
        bad = app.task(name="apps.basic.always_fails")(lambda reason: None).delay(SECRET_REASON)
        out = run_worker(url, "json", [ok, bad])
    finally:
        app.close()
    assert "hunter2" not in out and "s3cret-pw" not in out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    outcomes = [x for x in lines if x["logger"] == "chute.task"]
    assert {x["task_id"] for x in outcomes} == {ok.id, bad.id}
    for x in outcomes:  # every outcome line has the fields an operator filters on
        assert {"task_id", "task", "queue", "attempt", "duration_ms", "state"} <= x.keys()
    dead = next(x for x in outcomes if x["state"] == "dead")
    assert dead["attempt"] == 2 and dead["duration_ms"] > 0
    assert "password=***" in dead["error"] and "redis://app:***@db" in dead["message"]


def test_text_outcome_lines_end_with_the_fields(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/logs.db"
    app = chute.App(url)
    try:
        ok = app.task(name="apps.basic.add")(lambda a, b: None).delay(1, 2)
        out = run_worker(url, "text", [ok])
    finally:
        app.close()
    (line,) = [line for line in out.splitlines() if ok.id in line]
    assert "chute.task" in line and "succeeded in" in line
    assert f"task_id={ok.id} task=apps.basic.add queue=default attempt=0 duration_ms=" in line
