"""Fixtures of the fault-injection suite: `url` is a fresh broker of every durable kind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import broker_url, results_url
from helpers import sqlite_db

DURABLE_KINDS = ["sqlite", "redis", "amqp"]  # the brokers every fault scenario runs on


@pytest.fixture(params=DURABLE_KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh broker; on RabbitMQ, which keeps no results, $CHUTE_RESULTS_URL names a SQLite file of the
    test's, so the test and the worker processes it starts (they inherit the environment) share it."""
    results = results_url(request.param, tmp_path)
    if results is not None:
        monkeypatch.setenv("CHUTE_RESULTS_URL", results)
    with broker_url(request.param, tmp_path) as u:
        yield u


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """The effects ledger (tests/apps/chaos.py), created before any worker writes to it."""
    from apps.chaos import create_ledger

    path = tmp_path / "ledger.db"
    with sqlite_db(path) as conn:
        create_ledger(conn)
    return path
