"""RabbitMQ for tests: the shared server under vhosts of their own.

The shared server (127.0.0.1:5672, guest/guest) is only ever used inside vhosts these helpers create
and delete afterwards. Each `rabbitmqctl` call starts an Erlang VM (0.6 s, most of a core), so vhosts
are made in batches of POOL with one `import_definitions` and deleted in batches with one `eval`, in
the background, the rest at the session's end (tests/conftest.py); a test still gets a vhost no other
test has used. Names carry the creating pid, so a run killed before its clean-up is swept by the next.
The restart scenario runs a node of its own (servers.py) and never touches the shared server.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest

from conftest import require_service, services_required

HOST, PORT = "127.0.0.1", 5672
PREFIX = "chute-test-"
POOL = 20  # vhosts made by one rabbitmqctl call


def url(vhost: str, port: int = PORT, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"amqp://guest:guest@{HOST}:{port}/{quote(vhost, safe='')}" + (f"?{query}" if query else "")


def ctl(*args: str, node: str | None = None, input: str | None = None) -> str:
    """Run rabbitmqctl; a missing tool or a failure skips the test (fails it in CI)."""
    tool = shutil.which("rabbitmqctl")
    if tool is None:
        _missing("rabbitmqctl is not installed (tests create vhosts of their own with it)")
    cmd = [tool, *(["-n", node] if node else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, input=input)
    if done.returncode != 0:
        _missing(f"{' '.join(cmd)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _missing(reason: str) -> None:
    if services_required():
        pytest.fail(reason)
    pytest.skip(reason)


def set_policy(vhost: str, name: str, pattern: str, definition: str) -> None:
    """A policy on the queues of `vhost` whose names match `pattern` (JSON `definition`)."""
    ctl("set_policy", "-p", vhost, "--apply-to", "queues", name, pattern, definition)


class _Vhosts:
    """This process's vhosts: a pool of fresh ones, and the used ones waiting to be deleted."""

    def __init__(self) -> None:
        self.fresh: list[str] = []
        self.used: list[str] = []
        self.lock = threading.Lock()
        self.deleting: threading.Thread | None = None
        self.swept = False

    def take(self) -> str:
        with self.lock:
            if not self.swept:  # one process of a run looks for what killed runs left
                self.swept = True
                if os.environ.get("PYTEST_XDIST_WORKER", "gw0") == "gw0":
                    self._sweep()
            if not self.fresh:
                names = [f"{PREFIX}{os.getpid()}-{os.urandom(4).hex()}" for _ in range(POOL)]
                _create(names)
                self.fresh = names
            return self.fresh.pop()

    def give_back(self, name: str) -> None:
        with self.lock:
            self.used.append(name)
            if len(self.used) < POOL or (self.deleting is not None and self.deleting.is_alive()):
                return
            batch, self.used = self.used, []
        self.deleting = threading.Thread(target=delete, args=(batch,), daemon=True)
        self.deleting.start()

    def leftovers(self) -> list[str]:
        """Every vhost this process made and has not deleted; forgotten here (the caller deletes them)."""
        if self.deleting is not None:
            self.deleting.join(120)
        with self.lock:
            rest, self.used, self.fresh = self.used + self.fresh + _session, [], []
            _session.clear()
        return rest

    def _sweep(self) -> None:
        """Delete the vhosts of test runs whose process is gone (killed before their clean-up)."""
        stale = []
        for name in ctl("list_vhosts", "--quiet", "--no-table-headers").split():
            if not name.startswith(PREFIX):
                continue
            pid = name[len(PREFIX):].split("-", 1)[0]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                stale.append(name)
        if stale:
            delete(stale)


def _create(names: list[str]) -> None:
    definitions = {"vhosts": [{"name": n} for n in names],
                   "permissions": [{"user": "guest", "vhost": n, "configure": ".*", "write": ".*", "read": ".*"}
                                   for n in names]}
    ctl("import_definitions", "--format", "json", input=json.dumps(definitions))


def delete(names: list[str]) -> None:
    """Delete vhosts with everything in them: one Erlang call for all (one already gone is passed over),
    else one rabbitmqctl each."""
    tool = shutil.which("rabbitmqctl")
    if tool is None:
        return
    binaries = ", ".join(f'<<"{n}">>' for n in names)
    expr = f'lists:foreach(fun(V) -> catch rabbit_vhost:delete(V, <<"chute-tests">>) end, [{binaries}]).'
    done = subprocess.run([tool, "eval", expr], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:  # another RabbitMQ version without that internal call
        for n in names:
            subprocess.run([tool, "delete_vhost", n], capture_output=True, timeout=120)


_vhosts = _Vhosts()
_session: list[str] = []


def leftovers() -> list[str]:
    """The vhosts this process made and has not deleted yet, for the session's end to delete (tests/conftest.py:
    under xdist the controller deletes every worker's in one call)."""
    return _vhosts.leftovers()


@contextmanager
def vhost() -> Iterator[str]:
    """A vhost no other test has used, on the shared server, for the block; deleted afterwards."""
    require_service("RabbitMQ", HOST, PORT)
    name = _vhosts.take()
    try:
        yield name
    finally:
        _vhosts.give_back(name)


def session_vhost() -> str:
    """One vhost for the conformance tests of this process (they use fresh queue names each)."""
    require_service("RabbitMQ", HOST, PORT)
    if not _session:
        _session.append(_vhosts.take())
    return _session[0]
