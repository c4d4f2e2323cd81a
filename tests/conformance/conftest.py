"""Every broker, one fixture: the conformance tests run unchanged against each of them.

`broker` opens the queue a URL from tests/conftest.py's `broker_url` names, so a broker added there
(and to BROKERS) is tested here too; `store` is the store an App pairs it with: the broker itself, or,
for RabbitMQ, which keeps no results, registry or keys, a SQLite store it is bound to, as in an App.
On RabbitMQ the tests of one process share a vhost (each uses fresh queue names) instead of paying for
a vhost each.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from chute.brokers import open_broker
from chute.brokers.base import Queue
from chute.brokers.store import Store
from conftest import broker_url


@pytest.fixture
def broker(kind: str, tmp_path: Path) -> Iterator[Queue]:
    if kind == "amqp":
        import amqp_server

        b = open_broker(amqp_server.url(amqp_server.session_vhost()))
        store = open_broker(f"sqlite:///{tmp_path}/amqp-store.db")  # its results, registry and keys
        assert isinstance(store, Store)
        b.bind(store)
        try:
            yield b
        finally:
            b.close()
            store.close()
        return
    with broker_url(kind, tmp_path) as url:
        b = open_broker(url)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def queue_name() -> str:
    return f"q{os.urandom(4).hex()}"


@pytest.fixture
def store(broker: Queue) -> Store:
    """The store an App would pair `broker` with."""
    if isinstance(broker, Store):
        return broker
    bound = broker._store  # type: ignore[attr-defined]  # the one the fixture bound
    assert isinstance(bound, Store)
    return bound
