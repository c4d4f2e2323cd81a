"""Dead letters as the operations API shows and acts on them: listed, searched, described, replayed, purged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..brokers.base import DeadLetter
from ..errors import ChuteError, ConfigurationError
from ..redact import Redactor
from .views import ActionResult, DeadLetterView, ErrorView

if TYPE_CHECKING:
    from ..app import App

DLQ_SCAN = 10_000  # dead letters read at most to answer one filtered or by-id query


class DeadLetterOps:
    """The dead-letter half of `Ops` (chute.ops.api)."""

    app: App
    redactor: Redactor

    def dead_letters(self, queue: str | None = None, task: str | None = None, search: str | None = None,
                     limit: int = 50, offset: int = 0) -> list[DeadLetterView]:
        """Dead-lettered messages, oldest first, filtered by queue, task name and text in the reason."""
        if task is None and not search:
            return [self._describe(d) for d in self.app.broker.dead_letters(queue, limit, offset)]
        needle = (search or "").lower()
        matched: list[DeadLetterView] = []
        for d in self._scan_dead(queue):
            v = self._describe(d)
            if (task is None or v.task == task) and (not needle or needle in f"{v.id} {v.reason}".lower()):
                matched.append(v)
                if len(matched) >= offset + limit:
                    break
        return matched[offset:offset + limit]

    def dead_letter(self, message_id: str) -> DeadLetterView | None:
        """One dead letter with the error its task last raised."""
        dead = self._find_dead(message_id)
        if dead is None:
            return None
        view = self._describe(dead)
        record = self.app.results.get(message_id)
        if record is not None and record.error is not None:
            red = self.redactor.text
            view.error = ErrorView(record.error.type, red(record.error.message), red(record.error.traceback))
        return view

    def replay(self, ids: Sequence[str] | None = None, queue: str | None = None, everything: bool = False
               ) -> ActionResult:
        """Send dead letters back to their queues: these ids, or all of a queue, or every one."""
        self._check_target(ids, queue, everything, "replay")
        return ActionResult("replay", self.app.broker.replay(queue, list(ids) if ids else None))

    def purge(self, ids: Sequence[str] | None = None, queue: str | None = None, everything: bool = False
              ) -> ActionResult:
        """Delete dead letters for good: these ids, or all of a queue, or every one."""
        self._check_target(ids, queue, everything, "purge")
        return ActionResult("purge", self.app.broker.purge_dead(queue, list(ids) if ids else None))

    @staticmethod
    def _check_target(ids: Sequence[str] | None, queue: str | None, everything: bool, verb: str) -> None:
        if not ids and not queue and not everything:
            raise ConfigurationError(f"name message ids to {verb}, or a queue, or ask for every dead letter")

    def _scan_dead(self, queue: str | None = None) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        while len(found) < DLQ_SCAN:
            page = self.app.broker.dead_letters(queue, 500, len(found))
            found += page
            if len(page) < 500:
                break
        return found

    def _find_dead(self, message_id: str) -> DeadLetter | None:
        return next((d for d in self._scan_dead() if d.id == message_id), None)

    def _describe(self, d: DeadLetter) -> DeadLetterView:
        view = DeadLetterView(d.id, d.queue, self.redactor.text(d.reason), d.dead_at)
        try:
            env = self.app.codec.decode(d.body)
        except ChuteError as exc:
            view.undecodable = self.redactor.text(str(exc))
            view.raw = self.redactor.text(d.body[:200].decode("utf-8", "replace"))
            return view
        task = self.app.tasks.get(env.name)
        view.args, view.kwargs = self.redactor.call(task.fn if task else None, env.args, env.kwargs)
        view.task, view.attempt, view.max_retries = env.name, env.attempt, env.max_retries
        return view
