"""The outbox for SQLAlchemy: rows written in the caller's Session, relayed from an Engine.

    outbox = SQLAlchemyOutbox(app, engine)
    outbox.create_table()                       # or include outbox.table in your migrations
    with Session(engine) as session, session.begin():
        session.add(order)
        outbox.send(session, send_receipt.s(order.id))   # sent if and only if this commits
    outbox.run_relay(stop_event)                # in a worker thread or a process of its own
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Float, Integer, LargeBinary, MetaData, String, Table, delete, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from . import TABLE, Row, event_row, relay_batch, run_relay, task_row

if TYPE_CHECKING:
    from ..app import App
    from ..task import Signature


class SQLAlchemyOutbox:
    """An outbox table in the application's SQLAlchemy database."""

    def __init__(self, app: App, engine: Engine, *, table: str = TABLE, metadata: MetaData | None = None) -> None:
        self.app = app
        self.engine = engine
        self.table = Table(table, metadata or MetaData(),
                           Column("id", String(64), primary_key=True),
                           Column("queue", String(200), nullable=False),
                           Column("body", LargeBinary, nullable=False),
                           Column("priority", Integer, nullable=False, default=0),
                           Column("eta", Float),
                           Column("topic", String(400)),
                           Column("created", Float, nullable=False, index=True),
                           Column("failed", String(2000)))

    def create_table(self) -> None:
        self.table.create(self.engine, checkfirst=True)

    def send(self, session: Session | Connection, call: Signature) -> str:
        """Queue a task call in this transaction; return its task id."""
        return self._add(session, task_row(self.app, call))

    def publish(self, session: Session | Connection, topic: str, payload: Any = None) -> str:
        """Publish an event in this transaction; return its id."""
        return self._add(session, event_row(self.app, topic, payload))

    def _add(self, session: Session | Connection, row: Row) -> str:
        session.execute(insert(self.table).values(id=row.id, queue=row.queue, body=row.body, priority=row.priority,
                                                  eta=row.eta, topic=row.topic, created=row.created))
        return row.id

    def store(self) -> _Store:
        return _Store(self)

    def relay_once(self, limit: int = 100) -> int:
        return relay_batch(self.app, self.store(), limit)

    def run_relay(self, stop: Any = None, limit: int = 100) -> None:
        run_relay(self.app, self.store(), stop=stop, limit=limit)


class _Store:
    def __init__(self, outbox: SQLAlchemyOutbox) -> None:
        self.outbox = outbox
        self.conn: Connection | None = None

    def claim(self, limit: int) -> list[Row]:
        t = self.outbox.table
        self.conn = self.outbox.engine.connect()
        self.conn.begin()
        query = select(t).where(t.c.failed.is_(None)).order_by(t.c.created).limit(limit)
        if self.conn.dialect.name != "sqlite":
            query = query.with_for_update(skip_locked=True)  # several relays share the table
        return [Row(r.id, r.queue, bytes(r.body), r.priority, r.eta, r.topic, r.created)
                for r in self.conn.execute(query)]

    def done(self, ids: Sequence[str]) -> None:
        assert self.conn is not None
        try:
            if ids:
                self.conn.execute(delete(self.outbox.table).where(self.outbox.table.c.id.in_(list(ids))))
            self.conn.commit()
        finally:
            self.conn.close()
            self.conn = None

    def set_aside(self, row_id: str, reason: str) -> None:
        assert self.conn is not None
        t = self.outbox.table
        self.conn.execute(update(t).where(t.c.id == row_id).values(failed=reason[:2000]))
