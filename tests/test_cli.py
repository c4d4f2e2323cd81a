"""The `chute` command: status, dlq, send, worker errors, and the demo, run as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import chute
from chute import State
from helpers import TESTS, env_for, start_worker, stop, wait_for


def chute_cmd(url: str, *args: str, input: str | None = None, cwd: Path = TESTS) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chute", *args], env=env_for(url, COLUMNS="200"), cwd=str(cwd),
                          capture_output=True, text=True, timeout=120, input=input)


pytestmark = pytest.mark.brokers("sqlite")  # the CLI on the embedded broker; `dlq` on every durable one


def test_send_then_status_then_worker_runs_it(url: str) -> None:
    sent = chute_cmd(url, "send", "apps.basic.add", "--args", "[20, 22]")
    assert sent.returncode == 0, sent.stderr
    task_id = sent.stdout.strip()
    status = json.loads(chute_cmd(url, "status", "--json").stdout)
    assert status["queues"] == [{"queue": "default", "ready": 1, "in_flight": 0, "delayed": 0, "dead": 0}]
    w = start_worker(url)
    try:
        assert chute.App(url).result(task_id).get(timeout=20) == 42
        live = wait_for(lambda: json.loads(chute_cmd(url, "status", "--json").stdout)["workers"], what="worker")
        assert live[0]["queues"] == ["default"]
        table = chute_cmd(url, "status").stdout
        assert "Queues" in table and "Workers · 1 alive" in table
    finally:
        stop(w)


def test_send_with_wait_prints_the_result(url: str) -> None:
    w = start_worker(url)
    try:
        out = chute_cmd(url, "send", "-A", "apps.basic:app", "apps.basic.add", "--args", "[1, 2]", "--wait", "20")
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[1] == "3"
    finally:
        stop(w)


@pytest.mark.parametrize(("args", "message"), [
    (["--args", "not json"], "--args/--kwargs must be JSON"),
    (["--args", "{}"], "--args must be a JSON array"),
    (["--priority", "12"], "12 is not in the range"),
])
def test_send_refuses_bad_input(url: str, args: list[str], message: str) -> None:
    out = chute_cmd(url, "send", "apps.basic.add", *args)
    assert out.returncode == 2 and message in out.stderr
    assert json.loads(chute_cmd(url, "status", "--json").stdout)["queues"] == []


@pytest.mark.brokers("sqlite", "redis", "amqp")
def test_dlq_list_show_replay_purge(url: str) -> None:
    app = chute.App(url)
    fails = app.task(name="apps.basic.always_fails", retries=2)(lambda reason: None)
    first, second = fails.delay("broken"), fails.delay("also broken")
    w = start_worker(url)
    try:
        wait_for(lambda: first.status is State.DEAD and second.status is State.DEAD, timeout=20, what="DEAD")
        listed = json.loads(chute_cmd(url, "dlq", "list", "--json").stdout)
        assert {(d["id"], d["task"], d["reason"]) for d in listed} == {
            (first.id, "apps.basic.always_fails", "ValueError: broken"),
            (second.id, "apps.basic.always_fails", "ValueError: also broken")}
        mine = next(d for d in listed if d["id"] == first.id)
        assert mine["attempt"] == 2 and mine["args"] == ["broken"]
        assert "ValueError: broken" in chute_cmd(url, "dlq", "list").stdout
        shown = chute_cmd(url, "dlq", "show", first.id).stdout
        assert '"reason": "ValueError: broken"' in shown and "Traceback" in shown and "always_fails" in shown
        assert chute_cmd(url, "dlq", "show", "nope").returncode == 2
        assert chute_cmd(url, "dlq", "replay").returncode == 2  # refuses to guess what to replay
        assert chute_cmd(url, "dlq", "replay", first.id).stdout.strip() == "replayed 1 message(s)"
        wait_for(lambda: first.status is State.DEAD and len(app.broker.dead_letters()) == 2, timeout=20,
                 what="replayed task to fail again")  # it still fails: one more attempt, then back
        aborted = chute_cmd(url, "dlq", "purge", "--all", input="n\n")
        assert aborted.returncode == 1 and len(app.broker.dead_letters()) == 2
        assert chute_cmd(url, "dlq", "purge", "--all", "--yes").stdout.strip() == "purged 2 message(s)"
        assert app.broker.dead_letters() == []
    finally:
        stop(w)
        app.close()


@pytest.mark.parametrize(("spec", "message"), [
    ("no_such_module:app", "cannot import 'no_such_module'"),
    ("apps.basic:missing", "module 'apps.basic' has no attribute 'missing'"),
    ("apps.basic:add", "apps.basic:add is a Task, not a chute.App"),
    (":app", "is not module:attribute"),
    ("apps.broken:app", "importing 'apps.broken' raised ZeroDivisionError"),
])
def test_worker_with_a_bad_app_reference_says_why(url: str, spec: str, message: str) -> None:
    out = chute_cmd(url, "worker", spec)
    assert out.returncode == 2
    assert message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_bad_url_is_a_clear_error(tmp_path: Path) -> None:
    out = chute_cmd("sqlite:///x.db", "status", "--url", "reddis://localhost")
    assert out.returncode == 2 and "unknown broker scheme 'reddis'" in out.stderr
    out = chute_cmd("sqlite:///x.db", "status", "--url", f"sqlite:///{tmp_path}/x.db")
    assert out.returncode == 0


def test_not_a_chute_database_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "other.db").write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    out = chute_cmd(f"sqlite:///{tmp_path}/other.db", "status")
    assert out.returncode == 2 and "is not a chute database" in out.stderr


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "chute", "demo", "--tasks", "500", "--dir", str(tmp_path / "d")],
                         env=env_for("sqlite:///unused.db"), capture_output=True, text=True, timeout=120,
                         cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    text = " ".join(out.stdout.split())
    for expected in ("500 tasks enqueued", "retrying after attempt 1", "dead (attempt 3)", "replayed 1 message(s)",
                     "charged order 1042: 99.50 EUR", "Workers · 2 alive"):
        assert expected in text, expected


def test_status_json_is_the_operations_api_and_dlq_list_filters(url: str) -> None:
    app = chute.App(url)
    try:
        fails = app.task(name="apps.basic.always_fails", retries=2)(lambda reason: None)
        dead = fails.delay("token=abc123 broken")
        w = start_worker(url)
        try:
            wait_for(lambda: dead.status is State.DEAD, timeout=20, what="DEAD")
        finally:
            stop(w)
        status = json.loads(chute_cmd(url, "status", "--json").stdout)
        assert status["overview"]["failed_last_hour"] == 1 and status["overview"]["retried_last_hour"] == 2
        assert status["queues"] == status["overview"]["queues"]
        listed = json.loads(chute_cmd(url, "dlq", "list", "--json", "--task", "apps.basic.always_fails",
                                      "--search", "broken").stdout)
        assert [d["id"] for d in listed] == [dead.id] and "abc123" not in json.dumps(listed)
        assert json.loads(chute_cmd(url, "dlq", "list", "--json", "--task", "other").stdout) == []
        assert "abc123" not in chute_cmd(url, "dlq", "show", dead.id).stdout
    finally:
        app.close()


def test_status_watch_refreshes_live_in_a_terminal(url: str) -> None:
    import os
    import pty
    import re
    import select
    import signal

    master, slave = pty.openpty()
    # Ctrl-C as in a terminal, where SIGINT is never ignored: a run started in the background by a shell
    # without job control inherits SIGINT ignored, and a process started ignoring it keeps ignoring it
    proc = subprocess.Popen([sys.executable, "-m", "chute", "status", "--watch", "--interval", "0.2"], cwd=str(TESTS),
                            env=env_for(url, COLUMNS="160", LINES="50", TERM="xterm"), stdin=slave, stdout=slave,
                            stderr=slave, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(slave)
    seen = b""

    def screen_shows(pattern: str) -> bool:
        nonlocal seen
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                seen += os.read(master, 65536)
            except OSError:
                pass
        return re.search(pattern, seen.decode("utf-8", "replace")) is not None

    app = chute.App(url)
    try:
        wait_for(lambda: screen_shows(r"Queues"), timeout=30, what="the first frame")
        add = app.task(name="apps.basic.add")(lambda a, b: None)
        for i in range(3):
            add.delay(i, i)
        wait_for(lambda: screen_shows(r"default\s*│\s*3\s*│"), timeout=30, what="a frame with 3 ready")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        app.close()
