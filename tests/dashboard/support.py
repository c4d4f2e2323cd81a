"""Helpers for the dashboard tests: a SQLite broker seeded by a real worker, and real `chute dashboard` processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import chute
from helpers import TESTS, env_for, free_port, start_worker, stop, wait_for

pytest.importorskip("starlette", reason="the dashboard extra is not installed")
httpx = pytest.importorskip("httpx")

SECRETS = ("sk_live_xyz", "hunter2", "tok_live_123", "sess-999")  # none may appear in any page, JSON or metric
SCRIPT = "<script>alert(1)</script>"


def stub_app(url: str) -> tuple[chute.App, dict[str, chute.Task[..., object]]]:
    """The test process's view of tests/apps/ops.py: the same task names, for sending."""
    app = chute.App(url)
    tasks: dict[str, chute.Task[..., object]] = {
        "add": app.task(name="shop.add")(lambda a, b: None),
        "charge": app.task(name="shop.charge", retries=1)(lambda order, api_key, note="": None),
        "login": app.task(name="shop.login", retries=0)(lambda user, password: None),
    }
    return app, tasks


@dataclass
class Seeded:
    url: str
    db: Path
    fix: Path  # create it and shop.charge succeeds
    ok: list[str] = field(default_factory=list)
    charge: str = ""  # dead, with a secret api_key and a <script> note
    login: str = ""  # dead, with a secret password
    workflow: str = ""

    def env(self, **extra: str) -> dict[str, str]:
        return env_for(self.url, CHUTE_TEST_FIX=str(self.fix), **extra)


def seed(tmp: Path) -> Seeded:
    s = Seeded(f"sqlite:///{tmp}/dash.db", tmp / "dash.db", tmp / "fixed")
    app, t = stub_app(s.url)
    try:
        s.ok = [t["add"].delay(i, i).id for i in range(5)]
        charge = t["charge"].send(("A-1042", "sk_live_xyz"), {"note": SCRIPT})
        login = t["login"].delay("bob", "hunter2")
        flow = chute.chain(t["add"].s(1, 2), t["add"].s(3)).run(app)
        s.charge, s.login, s.workflow = charge.id, login.id, flow.id
        w = start_worker(s.url, "apps.ops:app", CHUTE_TEST_FIX=str(s.fix))
        try:
            wait_for(lambda: charge.status is chute.State.DEAD and login.status is chute.State.DEAD
                     and flow.status is chute.State.SUCCEEDED and all(app.result(i).ready() for i in s.ok),
                     timeout=60, what="seed tasks to settle")
        finally:
            stop(w)
    finally:
        app.close()
    return s


@contextmanager
def dashboard(env: dict[str, str], *args: str, spec: str = "apps.ops:app") -> Iterator[str]:
    """A real `chute dashboard` process on a free port; yields its base URL once it answers."""
    port = free_port()
    log = tempfile.TemporaryFile("w+")  # read only if the dashboard exits
    proc = subprocess.Popen([sys.executable, "-m", "chute", "dashboard", spec, "--port", str(port),
                             "--log-level", "WARNING", "--refresh", "0.5", *args], env=env, cwd=str(TESTS),
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            log.seek(0)
            raise AssertionError(f"chute dashboard exited with {proc.returncode}:\n{log.read()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    try:
        wait_for(up, timeout=30, what="the dashboard to listen")
        yield base
    finally:
        stop(proc)  # type: ignore[arg-type]  # a text-mode Popen
        log.close()


@contextmanager
def client(base: str, **kwargs: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, follow_redirects=False, timeout=30, **kwargs) as c:
        yield c
