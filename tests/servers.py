"""Servers of a test's own, on loopback ports of their own: started, SIGKILLed and started again.

Each controller has the same face, so a scenario written once (tests/test_restart.py) runs on any:
`url`, `start()`, `kill()` (SIGKILL: only what the server made durable survives), `stop()`, and
`worker_env` (what the test's workers need to see the outage in a test's time).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import services_required
from helpers import free_port, wait_for

HOST = "127.0.0.1"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # the Debian wrapper in /usr/sbin would switch user


def _missing(reason: str) -> None:
    if services_required():
        pytest.fail(reason)
    pytest.skip(reason)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
        return True
    except OSError:
        return False


class RedisServer:
    """A redis-server of our own, append-only with fsync always: a SIGKILL keeps every acknowledged write."""

    name = "redis"
    worker_env = {"CHUTE_TEST_LEASE": "2"}

    def __init__(self, folder: Path, *extra: str, password: str | None = None) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            _missing("redis-server is not installed (this test runs a Redis server of its own)")
        self.folder, self.extra, self.password = folder, extra, password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        import redis

        assert self.binary is not None
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", HOST, "--dir", str(self.folder),
                                      "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                                      "--daemonize", "no", "--logfile", str(self.folder / "redis.log"), *self.extra])
        client = redis.Redis(HOST, self.port, password=self.password)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        try:
            wait_for(lambda: self.proc is None or self.proc.poll() is not None or up(), timeout=10,
                     what=f"redis-server on port {self.port}")
            assert self.proc.poll() is None, f"redis-server exited: {(self.folder / 'redis.log').read_text()}"
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)


class RabbitNode:
    """A RabbitMQ node of our own: its name, ports, data and logs under `folder`. Survives stop/start."""

    name = "amqp"
    worker_env: dict[str, str] = {}

    def __init__(self, folder: Path) -> None:
        if not os.path.exists(RABBITMQ_SERVER):
            _missing(f"{RABBITMQ_SERVER} is not installed (this test runs a RabbitMQ node of its own)")
        self.folder = folder
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"chute-test-{os.urandom(3).hex()}@localhost"
        (folder / "rabbitmq.conf").write_text(f"listeners.tcp.default = {HOST}:{self.port}\nloopback_users = none\n")
        (folder / "enabled_plugins").write_text("[].\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{HOST}:{self.port}/%2F"

    def env(self) -> dict[str, str]:
        f = str(self.folder)
        return dict(os.environ, HOME=f, RABBITMQ_NODENAME=self.node, RABBITMQ_NODE_PORT=str(self.port),
                    RABBITMQ_DIST_PORT=str(self.dist_port), RABBITMQ_MNESIA_BASE=f"{f}/mnesia",
                    RABBITMQ_LOG_BASE=f"{f}/log", RABBITMQ_CONFIG_FILE=f"{f}/rabbitmq.conf",
                    RABBITMQ_ENABLED_PLUGINS_FILE=f"{f}/enabled_plugins", RABBITMQ_PID_FILE=f"{f}/pid")

    def start(self, timeout: float = 60) -> None:
        with open(self.folder / "server.log", "ab") as log:
            self.proc = subprocess.Popen([RABBITMQ_SERVER], env=self.env(), cwd=str(self.folder), stdout=log,
                                         stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not _accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"private RabbitMQ node did not start; see {self.folder / 'server.log'}")
            time.sleep(0.2)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

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
        wait_for(lambda: not _accepts(self.port), timeout=30, what=f"RabbitMQ node's port {self.port} to close")
        self.proc = None
