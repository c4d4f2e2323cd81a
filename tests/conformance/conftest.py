"""Every broker, one fixture: the conformance tests run unchanged against each of them.

`broker` opens the broker a URL from tests/conftest.py's `broker_url` names, so a broker added there
(and to BROKERS) is tested here too. RabbitMQ keeps no results, registry or keys: its broker borrows a
SQLite store, as an App does. On RabbitMQ the tests of one process share a vhost (each uses fresh queue
names) instead of paying for a vhost each.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from chute.brokers import open_broker
from chute.brokers.base import Broker
from conftest import broker_url


@pytest.fixture
def broker(kind: str, tmp_path: Path) -> Iterator[Broker]:
    if kind == "amqp":
        import amqp_server

        b = open_broker(amqp_server.url(amqp_server.session_vhost()))
        store = open_broker(f"sqlite:///{tmp_path}/amqp-store.db")  # its results, registry and keys
        b.adopt_results(store)  # type: ignore[attr-defined]
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
