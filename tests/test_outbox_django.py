"""The transactional outbox with Django, on SQLite and a real PostgreSQL (two DATABASES aliases)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import chute
from conftest import require_service
from helpers import wait_for, worker_thread

django = pytest.importorskip("django", reason="Django is an optional extra (pip install 'chute[django]')")


@pytest.fixture(scope="module", autouse=True)
def django_settings(tmp_path_factory: pytest.TempPathFactory) -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure(DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path_factory.mktemp("dj") / "d.db")},
            "pg": {"ENGINE": "django.db.backends.postgresql", "NAME": "test", "USER": "postgres",
                   "HOST": "127.0.0.1", "PORT": "5432"},
        }, INSTALLED_APPS=[], USE_TZ=True)
        django.setup()


@pytest.fixture(params=["default", "pg"])
def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[chute.App, object, list[int]]]:
    from django.db import connections

    from chute.outbox.django import DjangoOutbox

    if request.param == "pg":
        require_service("PostgreSQL", "127.0.0.1", 5432)
    app = chute.App(f"sqlite:///{tmp_path}/broker.db")
    effects: list[int] = []
    app.task(name="receipt")(lambda order: effects.append(order))
    box = DjangoOutbox(app, using=request.param, table=f"chute_outbox_{os.urandom(4).hex()}")
    box.create_table()
    yield app, box, effects
    box.drop_table()
    connections[request.param].close()
    app.close()


def test_sent_if_and_only_if_the_transaction_commits(outbox: tuple[chute.App, object, list[int]]) -> None:
    from django.db import transaction

    from chute.outbox.django import DjangoOutbox

    app, box, effects = outbox
    assert isinstance(box, DjangoOutbox)
    receipt = app.tasks["receipt"]
    with transaction.atomic(using=box.using):
        box.send(receipt.s(1))
    with pytest.raises(RuntimeError), transaction.atomic(using=box.using):
        box.send(receipt.s(2))
        raise RuntimeError("rolled back")
    assert box.relay_once() == 1 and box.relay_once() == 0
    with worker_thread(app):
        wait_for(lambda: effects == [1], what="the committed receipt")
        time.sleep(0.2)
    assert effects == [1]


def test_an_undecodable_row_is_set_aside(outbox: tuple[chute.App, object, list[int]]) -> None:
    from django.db import connections, transaction

    from chute.outbox.django import DjangoOutbox

    app, box, effects = outbox
    assert isinstance(box, DjangoOutbox)
    with connections[box.using].cursor() as c:
        c.execute(f"INSERT INTO {box.table} (id, queue, body, priority, created) VALUES (%s, %s, %s, %s, %s)",
                  ["bad", "default", b"\xff\x00", 0, 0.0])
    with transaction.atomic(using=box.using):
        box.send(app.tasks["receipt"].s(3))
    assert box.relay_once() == 1
    with connections[box.using].cursor() as c:
        c.execute(f"SELECT id, failed FROM {box.table}")
        (row,) = c.fetchall()
    assert row[0] == "bad" and row[1].startswith("decode_error")
