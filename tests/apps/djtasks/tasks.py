"""Django tasks for tests/integrations/test_django.py (found through INSTALLED_APPS)."""

from __future__ import annotations

import asyncio

from django.tasks import TaskContext, task


@task
def add(a: int, b: int) -> int:
    return a + b


@task(backend="once")
def fails(message: str) -> None:
    raise ValueError(message)


@task(takes_context=True)
def attempt(context: TaskContext) -> int:
    return int(context.attempt)


@task(priority=50)
async def async_double(x: int) -> list[int]:
    await asyncio.sleep(0.01)
    return [x, x * 2]
