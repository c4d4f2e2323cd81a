"""Shared fixtures: one broker-URL factory, one `app` and one `url` fixture over every broker, and the
rule for missing services.

The brokers a test runs on: a test that takes `kind` (through `app`, or a fixture of its own such as the
conformance suite's `broker`) runs on every kind in BROKERS; one that takes only `url` (a broker its
worker processes share) on every durable one. `@pytest.mark.brokers("sqlite", "redis")` on a test or a
module narrows that, and CHUTE_TEST_BROKERS=memory,sqlite narrows the whole run (`make test-fast`). A
new broker joins the suite in ALL_BROKERS and `broker_url` below.

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

REDIS = ("127.0.0.1", 6379)
POSTGRES = ("127.0.0.1", 5432)  # trust auth, user postgres, database test
ALL_BROKERS = ("memory", "sqlite", "redis", "amqp")
_chosen = [k.strip() for k in os.environ.get("CHUTE_TEST_BROKERS", "").split(",") if k.strip()]
BROKERS = [k for k in ALL_BROKERS if not _chosen or k in _chosen]  # what this run tests on
DURABLE = [k for k in BROKERS if k != "memory"]  # brokers separate processes can share


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


_VHOSTS = pytest.StashKey[list[str]]()  # vhosts that xdist workers left, for the controller to delete


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Delete the RabbitMQ vhosts the tests left: an xdist worker hands its own to the controller, which
    deletes every worker's in one call once they are done."""
    names = session.config.stash.get(_VHOSTS, [])
    if "amqp_server" in sys.modules:
        import amqp_server

        names += amqp_server.leftovers()
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker
        workeroutput["chute_vhosts"] = names
    elif names:
        import amqp_server

        amqp_server.delete(names)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist's controller: keep the vhosts a finished worker left, for pytest_sessionfinish."""
    left = node.config.stash.setdefault(_VHOSTS, [])
    left += getattr(node, "workeroutput", {}).get("chute_vhosts", [])


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Deal the slow tests out evenly, each worker's share first, keeping pytest-randomly's order (it shuffled
    them before this runs). xdist's `worksteal` hands worker k the k-th of N equal runs of the list, and
    idle workers steal from the ends of the others' runs: so every worker starts on its slow tests, and
    what is left to steal at the end is fast. Without xdist (N = 1) the slow tests simply come first."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    fast = [item for item in items if item.get_closest_marker("slow") is None]
    ordered: list[pytest.Item] = []
    left = len(items)
    for k in range(workers):
        size = left // (workers - k)  # as worksteal sizes its first runs
        share = slow[k::workers][:size]
        ordered += share
        ordered += fast[:size - len(share)]
        del fast[:size - len(share)]
        left -= size
    items[:] = ordered + fast


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that uses `kind` (through `app` or `url`) once per broker it is meant for."""
    if "kind" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("brokers")
    shared = "url" in metafunc.fixturenames and "app" not in metafunc.fixturenames  # for other processes too
    meant = marker.args if marker else DURABLE if shared else ALL_BROKERS
    kinds = [k for k in meant if k in BROKERS]
    if not kinds:  # a run narrowed by CHUTE_TEST_BROKERS to brokers this test is not for
        why = f"CHUTE_TEST_BROKERS={os.environ.get('CHUTE_TEST_BROKERS')} leaves none of {', '.join(meant)}"
        metafunc.parametrize("kind", [pytest.param("", marks=pytest.mark.skip(reason=why))])
        return
    metafunc.parametrize("kind", kinds)


@contextmanager
def broker_url(kind: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, isolated broker of `kind`, cleaned up after: a SQLite file of the test's, a
    key prefix of its own on the shared Redis, a vhost of its own on the shared RabbitMQ."""
    if kind == "memory":
        yield "memory://"
    elif kind == "sqlite":
        yield f"sqlite:///{tmp_path}/{kind}.db"
    elif kind == "redis":
        require_service("Redis", *REDIS)
        prefix = f"t{os.urandom(5).hex()}"
        try:
            yield f"redis://{REDIS[0]}:{REDIS[1]}/0?prefix={prefix}"
        finally:
            drop_redis_prefix(prefix)
    elif kind == "amqp":
        import amqp_server

        with amqp_server.vhost() as name:
            yield amqp_server.url(name)
    else:
        raise ValueError(kind)


def drop_redis_prefix(prefix: str, server: tuple[str, int] = REDIS) -> None:
    """Delete every key under `prefix` on the shared Redis."""
    import redis

    client = redis.Redis(*server, db=0)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i:i + 500])
    finally:
        client.close()


@contextmanager
def postgres_schema(scheme: str = "postgresql") -> Iterator[str]:
    """A URL (`scheme`://…) of the shared PostgreSQL's `test` database whose search path is a schema of the
    test's own, so its tables meet no other test's; the schema is dropped with them after."""
    require_service("PostgreSQL", *POSTGRES)
    import psycopg

    schema = f"t_{os.urandom(5).hex()}"
    admin = f"postgresql://postgres@{POSTGRES[0]}:{POSTGRES[1]}/test"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{scheme}://postgres@{POSTGRES[0]}:{POSTGRES[1]}/test?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


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


@pytest.fixture
def url(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh broker of `kind` that the test's worker and CLI processes share: on RabbitMQ, which keeps no
    results, $CHUTE_RESULTS_URL names a SQLite file of the test's, for the test and the processes it starts."""
    results = results_url(kind, tmp_path)
    if results is not None:
        monkeypatch.setenv("CHUTE_RESULTS_URL", results)
    with broker_url(kind, tmp_path) as u:
        yield u


@pytest.fixture
def app_options() -> dict[str, Any]:
    """Options of the `app` fixture's App; a module overrides this fixture to change them."""
    return {}


@pytest.fixture
def app(kind: str, url: str, tmp_path: Path, app_options: dict[str, Any]) -> Iterator[Any]:
    """A chute.App on a fresh broker of `kind`, closed after."""
    import chute

    a = chute.App(url, **{"results": results_url(kind, tmp_path), **app_options})
    try:
        yield a
    finally:
        a.close()
