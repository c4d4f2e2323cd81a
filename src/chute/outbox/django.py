"""The outbox for Django: rows written through Django's connection, inside the caller's transaction.

    outbox = DjangoOutbox(app)              # using="default"
    outbox.create_table()                   # once (or run the same DDL in a migration)
    with transaction.atomic():
        order.save()
        outbox.send(send_receipt.s(order.id))    # sent if and only if this block commits

`transaction.on_commit` is not enough: a crash between the commit and the send loses the message.
Here the message is a row of the same transaction; the relay (`outbox.run_relay()`) sends it later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import TABLE, Row, event_row, relay_batch, run_relay, task_row

if TYPE_CHECKING:
    from ..app import App
    from ..task import Signature

_BLOB = {"postgresql": "BYTEA", "mysql": "LONGBLOB", "sqlite": "BLOB", "oracle": "BLOB"}
_FLOAT = {"postgresql": "DOUBLE PRECISION", "mysql": "DOUBLE", "sqlite": "REAL", "oracle": "BINARY_DOUBLE"}


class DjangoOutbox:
    """An outbox table in a Django database (`using` is the DATABASES alias)."""

    def __init__(self, app: App, *, using: str = "default", table: str = TABLE) -> None:
        self.app = app
        self.using = using
        self.table = table

    def _connection(self) -> Any:
        from django.db import connections

        return connections[self.using]

    def create_table(self) -> None:
        conn = self._connection()
        blob, real = _BLOB.get(conn.vendor, "BLOB"), _FLOAT.get(conn.vendor, "REAL")
        with conn.cursor() as c:
            c.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (id VARCHAR(64) PRIMARY KEY, queue VARCHAR(200) NOT "
                      f"NULL, body {blob} NOT NULL, priority INTEGER NOT NULL, eta {real}, topic VARCHAR(400), "
                      f"created {real} NOT NULL, failed VARCHAR(2000))")

    def drop_table(self) -> None:
        with self._connection().cursor() as c:
            c.execute(f"DROP TABLE IF EXISTS {self.table}")

    def send(self, call: Signature) -> str:
        """Queue a task call in the current transaction; return its task id."""
        return self._add(task_row(self.app, call))

    def publish(self, topic: str, payload: Any = None) -> str:
        """Publish an event in the current transaction; return its id."""
        return self._add(event_row(self.app, topic, payload))

    def _add(self, row: Row) -> str:
        with self._connection().cursor() as c:
            c.execute(f"INSERT INTO {self.table} (id, queue, body, priority, eta, topic, created) "
                      "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                      [row.id, row.queue, row.body, row.priority, row.eta, row.topic, row.created])
        return row.id

    def relay_once(self, limit: int = 100) -> int:
        return relay_batch(self.app, _Store(self), limit)

    def run_relay(self, stop: Any = None, limit: int = 100) -> None:
        run_relay(self.app, _Store(self), stop=stop, limit=limit)


class _Store:
    def __init__(self, outbox: DjangoOutbox) -> None:
        self.outbox = outbox
        self._atomic: Any = None

    def claim(self, limit: int) -> list[Row]:
        from django.db import transaction

        conn = self.outbox._connection()
        self._atomic = transaction.atomic(using=self.outbox.using)
        self._atomic.__enter__()
        lock = " FOR UPDATE SKIP LOCKED" if conn.vendor in ("postgresql", "mysql", "oracle") else ""
        with conn.cursor() as c:
            c.execute(f"SELECT id, queue, body, priority, eta, topic, created FROM {self.outbox.table} "
                      f"WHERE failed IS NULL ORDER BY created LIMIT %s{lock}", [limit])
            return [Row(r[0], r[1], bytes(r[2]), r[3], r[4], r[5], r[6]) for r in c.fetchall()]

    def done(self, ids: Sequence[str]) -> None:
        try:
            if ids:
                with self.outbox._connection().cursor() as c:
                    c.execute(f"DELETE FROM {self.outbox.table} WHERE id IN ({', '.join(['%s'] * len(ids))})",
                              list(ids))
        except BaseException as exc:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._atomic.__exit__(None, None, None)

    def set_aside(self, row_id: str, reason: str) -> None:
        with self.outbox._connection().cursor() as c:
            c.execute(f"UPDATE {self.outbox.table} SET failed = %s WHERE id = %s", [reason[:2000], row_id])
