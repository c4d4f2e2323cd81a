"""Checks of the chute backend through Django's own API, run in a process of their own by test_django.py.

`python -m apps.django_checks` with DJANGO_SETTINGS_MODULE=apps.django_settings and a worker running.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import django

django.setup()

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db import transaction  # noqa: E402
from django.tasks import TaskResultStatus, default_task_backend, task_backends  # noqa: E402
from django.tasks.exceptions import TaskResultDoesNotExist  # noqa: E402
from django.tasks.signals import task_enqueued  # noqa: E402
from django.utils import timezone  # noqa: E402

from apps.djtasks.tasks import add, async_double, attempt, fails  # noqa: E402
from chute.integrations.django import ChuteBackend, get_app  # noqa: E402

enqueued: list[str] = []
task_enqueued.connect(lambda sender, task_result, **kw: enqueued.append(task_result.id), weak=False)


def finished(result: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not result.is_finished:
        assert time.monotonic() < deadline, f"{result.id} still {result.status}"
        time.sleep(0.02)
        result.refresh()
    return result


def main() -> None:
    assert isinstance(default_task_backend, ChuteBackend) or type(task_backends["default"]) is ChuteBackend

    # sent only if the transaction commits
    class Rollback(Exception):
        pass

    try:
        with transaction.atomic():
            lost = add.enqueue(1, 1)
            raise Rollback
    except Rollback:
        pass
    with transaction.atomic():
        kept = add.enqueue(2, 3)
        assert enqueued == [], "sent before the commit"
        try:
            add.get_result(kept.id)
            raise AssertionError("visible before the commit")
        except TaskResultDoesNotExist:
            pass
    assert enqueued == [kept.id], enqueued
    try:
        add.get_result(lost.id)
        raise AssertionError("a rolled-back task was sent")
    except TaskResultDoesNotExist:
        pass

    # results through Django's API
    done = finished(add.get_result(kept.id))
    assert done.status == TaskResultStatus.SUCCESSFUL and done.return_value == 5, done
    assert done.enqueued_at is not None and done.finished_at is not None and done.attempts == 1, done
    assert done.enqueued_at <= done.finished_at <= timezone.now()
    bad = finished(fails.enqueue("no good"))
    assert bad.status == TaskResultStatus.FAILED and len(bad.errors) == 1, bad
    assert bad.errors[0].exception_class is ValueError and "no good" in bad.errors[0].traceback, bad.errors
    assert finished(attempt.enqueue()).return_value == 1

    # async tasks, aenqueue/aget_result, priority and run_after
    async def async_side() -> Any:
        r = await async_double.aenqueue(21)
        for _ in range(1000):
            r = await async_double.aget_result(r.id)
            if r.is_finished:
                return r
            await asyncio.sleep(0.02)
        raise AssertionError(f"{r.id} did not finish")

    r = asyncio.run(async_side())
    assert r.return_value == [21, 42], r.return_value
    assert get_app().tasks["apps.djtasks.tasks.async_double"].is_async
    t0 = time.monotonic()
    later = add.using(run_after=timezone.now() + timedelta(seconds=0.5)).enqueue(1, 2)
    assert add.get_result(later.id).status == TaskResultStatus.READY
    assert finished(later).return_value == 3 and time.monotonic() - t0 >= 0.45

    try:
        ChuteBackend("bad", {"OPTIONS": {"RETRYS": 1}})
        raise AssertionError("a misspelt option passed")
    except ImproperlyConfigured as exc:
        assert "RETRYS" in str(exc)
    print("django checks passed")


if __name__ == "__main__":
    main()
