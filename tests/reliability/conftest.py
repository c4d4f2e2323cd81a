"""Fixtures of the fault-injection suite: `url` is a fresh broker of every durable kind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import broker_url

DURABLE_KINDS = ["sqlite", "redis"]  # the brokers every fault scenario runs on


@pytest.fixture(params=DURABLE_KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with broker_url(request.param, tmp_path) as u:
        yield u
