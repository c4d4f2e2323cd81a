"""Fixtures of the fault-injection suite: `url` is a fresh broker of every durable kind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import broker_url
from helpers import sqlite_db

DURABLE_KINDS = ["sqlite", "redis"]  # the brokers every fault scenario runs on


@pytest.fixture(params=DURABLE_KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
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
