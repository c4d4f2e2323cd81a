"""Shared fixtures: isolated brokers per test, and the rule for missing services.

A test that needs a service (Redis, RabbitMQ, …) calls `require_service`. When CI=true or
CHUTE_REQUIRE_SERVICES=1 a missing service fails the test; elsewhere it skips naming the service.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # tests/helpers.py and the test apps under tests/apps


def services_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("CHUTE_REQUIRE_SERVICES") == "1"


def require_service(name: str, host: str, port: int) -> None:
    """Skip (locally) or fail (CI) unless something listens at host:port."""
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port} ({exc})"
        if services_required():
            pytest.fail(message + "; CI requires it (start it: see README, 'Services for tests')")
        pytest.skip(message)


_opened: list[Any] = []  # every chute.App made during the running test, closed when it ends


def pytest_configure(config: pytest.Config) -> None:
    """Record each chute.App made, so a test that forgets app.close() leaks no sockets into the next
    (filterwarnings = error turns a ResourceWarning, raised wherever the GC runs, into a failure)."""
    import chute

    made = chute.App.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        made(self, *args, **kwargs)
        _opened.append(self)

    chute.App.__init__ = init  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """Kill the worker processes the test left running and close its Apps, once its fixtures
    (in-process workers among them) have torn down."""
    try:
        return (yield)
    finally:
        from helpers import kill_leftovers

        kill_leftovers()
        while _opened:
            try:
                _opened.pop().close()
            except Exception:  # noqa: BLE001 - already closed, or its broker already gone
                pass


REDIS = ("127.0.0.1", 6379)
BROKER_KINDS = ["memory", "sqlite", "redis", "amqp"]  # every broker an App can run on; app_on() opens each


@contextmanager
def broker_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, isolated broker of `kind` (memory, sqlite, redis, amqp), cleaned up after."""
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path}/{kind}.db"
    elif kind == "redis":
        require_service("Redis", *REDIS)
        prefix = f"t{os.urandom(4).hex()}"
        try:
            yield f"redis://{REDIS[0]}:{REDIS[1]}/0?prefix={prefix}"
        finally:
            import redis

            client = redis.Redis(*REDIS, db=0)
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for i in range(0, len(keys), 500):
                client.delete(*keys[i:i + 500])
            client.close()
    elif kind == "amqp":  # a vhost of its own on the shared server, deleted after
        import amqp_server

        with amqp_server.vhost() as name:
            yield amqp_server.url(name)
    else:
        raise ValueError(kind)


def results_url(kind: str, tmp_path: Path) -> str | None:
    """Where an App on `kind` keeps results in a test: RabbitMQ keeps none, so a SQLite file of the test's."""
    return f"sqlite:///{tmp_path}/results.db" if kind == "amqp" else None


@contextmanager
def app_on(kind: str, tmp_path: Path, **options: Any) -> Iterator[Any]:
    """A chute.App on a fresh, isolated broker of `kind`, closed and cleaned up after."""
    import chute

    with broker_url(kind, tmp_path) as url:
        app = chute.App(url, **{"results": results_url(kind, tmp_path), **options})
        try:
            yield app
        finally:
            app.close()


@pytest.fixture(params=["sqlite", "redis", "amqp"])
def any_url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh broker of each durable kind; RabbitMQ's results in a SQLite file of the test's, for the
    test, its workers and its CLI runs alike (CHUTE_RESULTS_URL)."""
    results = results_url(request.param, tmp_path)
    if results is not None:
        monkeypatch.setenv("CHUTE_RESULTS_URL", results)
    with broker_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/chute.db"


@pytest.fixture
def sqlite_app(db_url: str) -> Iterator[object]:
    import chute

    app = chute.App(db_url)
    yield app
    app.close()
