"""Shared fixtures: isolated brokers per test, and the rule for missing services.

A test that needs a service (Redis, RabbitMQ, …) calls `require_service`. When CI=true or
CHUTE_REQUIRE_SERVICES=1 a missing service fails the test; elsewhere it skips naming the service.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/chute.db"


@pytest.fixture
def sqlite_app(db_url: str) -> Iterator[object]:
    import chute

    app = chute.App(db_url)
    yield app
    app.close()
