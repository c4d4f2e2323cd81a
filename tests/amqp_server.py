"""RabbitMQ for tests: the shared server under a vhost of their own, or a private node to restart.

The shared server (127.0.0.1:5672, guest/guest) is only ever used inside vhosts these helpers create
with rabbitmqctl and delete afterwards; the restart test runs a node of its own (own name, ports,
data and log folders) and never touches the shared one.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

import chute
from conftest import require_service, services_required

HOST, PORT = "127.0.0.1", 5672
SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # the Debian wrapper in /usr/sbin would switch user


def url(vhost: str, port: int = PORT, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"amqp://guest:guest@{HOST}:{port}/{quote(vhost, safe='')}" + (f"?{query}" if query else "")


def _ctl(*args: str, node: str | None = None) -> None:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        _missing("rabbitmqctl is not installed (tests create a vhost of their own with it)")
    cmd = [ctl, *(["-n", node] if node else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        _missing(f"{' '.join(cmd)} failed: {done.stderr.strip() or done.stdout.strip()}")


def _missing(reason: str) -> None:
    if services_required():
        pytest.fail(reason)
    pytest.skip(reason)


def add_vhost(name: str) -> None:
    _ctl("add_vhost", name)
    _ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")


def set_policy(vhost: str, name: str, pattern: str, definition: str) -> None:
    """A policy on the queues of `vhost` whose names match `pattern` (JSON `definition`)."""
    _ctl("set_policy", "-p", vhost, "--apply-to", "queues", name, pattern, definition)


def delete_vhost(name: str) -> None:
    _ctl("delete_vhost", name)


@contextmanager
def vhost() -> Iterator[str]:
    """A fresh vhost on the shared server for the block, deleted afterwards with everything in it."""
    require_service("RabbitMQ", HOST, PORT)
    name = f"chute-test-{os.urandom(4).hex()}"
    add_vhost(name)
    try:
        yield name
    finally:
        delete_vhost(name)


@contextmanager
def app(tmp_path: Path, **options: Any) -> Iterator[chute.App]:
    """A chute App on RabbitMQ in a vhost of its own, its results in a SQLite file under `tmp_path`."""
    with vhost() as name:
        a = chute.App(url(name), results=f"sqlite:///{tmp_path}/amqp-results.db", **options)
        try:
            yield a
        finally:
            a.close()


_session: list[str] = []


def session_vhost() -> str:
    """One vhost for the conformance tests of this session (they use fresh queue names each), deleted at exit."""
    require_service("RabbitMQ", HOST, PORT)
    if not _session:
        name = f"chute-conformance-{os.urandom(4).hex()}"
        add_vhost(name)
        _session.append(name)
        atexit.register(lambda: subprocess.run(["rabbitmqctl", "delete_vhost", name], capture_output=True,
                                               timeout=60))
    return _session[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class PrivateNode:
    """A RabbitMQ node of our own: its name, ports, data and logs under `folder`. Survives stop/start."""

    def __init__(self, folder: Path) -> None:
        if not os.path.exists(SERVER):
            _missing(f"{SERVER} is not installed (the restart test runs a RabbitMQ node of its own)")
        self.folder = folder
        self.port = free_port()
        self.name = f"chute-test-{os.urandom(3).hex()}@localhost"
        (folder / "rabbitmq.conf").write_text(f"listeners.tcp.default = {HOST}:{self.port}\nloopback_users = none\n")
        (folder / "enabled_plugins").write_text("[].\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        f = str(self.folder)
        return dict(os.environ, HOME=f, RABBITMQ_NODENAME=self.name, RABBITMQ_NODE_PORT=str(self.port),
                    RABBITMQ_DIST_PORT=str(free_port()), RABBITMQ_MNESIA_BASE=f"{f}/mnesia",
                    RABBITMQ_LOG_BASE=f"{f}/log", RABBITMQ_CONFIG_FILE=f"{f}/rabbitmq.conf",
                    RABBITMQ_ENABLED_PLUGINS_FILE=f"{f}/enabled_plugins", RABBITMQ_PID_FILE=f"{f}/pid")

    def start(self, timeout: float = 60) -> None:
        log = open(self.folder / "server.log", "ab")
        self.proc = subprocess.Popen([SERVER], env=self.env(), cwd=str(self.folder), stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"private RabbitMQ node did not start; see {self.folder / 'server.log'}")
                time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the node (SIGKILL: at once, as a crash) and wait until its port is closed."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)  # the script and the Erlang VM it started
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        pid_file = self.folder / "pid"
        if pid_file.exists():  # the VM may outlive the script that started it
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL if sig == signal.SIGKILL else signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, self.port), timeout=0.5).close()
                time.sleep(0.2)
            except OSError:
                break
        self.proc = None
