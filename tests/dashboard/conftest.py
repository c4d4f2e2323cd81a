"""Fixtures for the dashboard tests (helpers in support.py)."""

from __future__ import annotations

import pytest

from .support import Seeded, seed


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """A broker with finished, dead (with secrets and a <script> argument) and workflow tasks; no worker left."""
    return seed(tmp_path_factory.mktemp("dash"))
