"""Fixtures of the fault-injection suite; `url` (tests/conftest.py) is a fresh broker of every durable kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import sqlite_db


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    """The effects ledger (tests/apps/chaos.py), created before any worker writes to it."""
    from apps.chaos import create_ledger

    path = tmp_path / "ledger.db"
    with sqlite_db(path) as conn:
        create_ledger(conn)
    return path
