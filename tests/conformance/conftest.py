"""Every broker, one fixture: the conformance tests run unchanged against each of them.

To add a broker: add its name to BROKERS and a branch to `make_broker` that returns a fresh,
isolated instance (its own file, key prefix, vhost or queue names) and a cleanup function.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chute.brokers.base import Broker

BROKERS = ["memory", "sqlite", "redis", "amqp"]
REDIS = ("127.0.0.1", 6379)


def make_broker(kind: str, tmp_path: Path) -> tuple[Broker, Callable[[], None]]:
    from chute.brokers import open_broker

    if kind == "memory":
        b = open_broker("memory://")
        return b, b.close
    if kind == "sqlite":
        b = open_broker(f"sqlite:///{tmp_path}/conformance.db")
        return b, b.close
    if kind == "redis":
        from conftest import require_service

        require_service("Redis", *REDIS)
        prefix = f"t{os.urandom(4).hex()}"
        b = open_broker(f"redis://{REDIS[0]}:{REDIS[1]}/0?prefix={prefix}")

        def cleanup() -> None:
            import redis

            client = redis.Redis(*REDIS, db=0)
            for batch in _chunks(client.scan_iter(match=f"{prefix}:*", count=1000), 500):
                client.delete(*batch)
            client.close()
            b.close()

        return b, cleanup
    if kind == "amqp":
        import amqp_server

        b = open_broker(amqp_server.url(amqp_server.session_vhost()))
        store = open_broker(f"sqlite:///{tmp_path}/amqp-store.db")  # its results, registry and keys
        b.adopt_results(store)  # type: ignore[attr-defined]

        def close_both() -> None:
            b.close()
            store.close()

        return b, close_both
    raise ValueError(kind)


def _chunks(items: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    b, cleanup = make_broker(request.param, tmp_path)
    yield b
    cleanup()


@pytest.fixture
def queue_name() -> str:
    return f"q{os.urandom(4).hex()}"
