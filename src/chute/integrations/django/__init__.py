"""Django: a backend for Django's own Tasks framework, run by chute workers, and a Django app.

    INSTALLED_APPS = [..., "chute.integrations.django"]        # finds every app's tasks.py
    CHUTE = {"URL": "redis://127.0.0.1:6379/0"}               # App options, upper case
    TASKS = {"default": {"BACKEND": "chute.integrations.django.ChuteBackend",
                         "QUEUES": ["default"], "OPTIONS": {"RETRIES": 3}}}

`@task`-decorated functions (django.tasks, Django >= 6.0) are enqueued with `.enqueue()` as usual,
after the surrounding transaction commits, and run by `python manage.py chute_worker`; their
results come back through Django's API (`get_result`, `refresh`, `status`, `return_value`, `errors`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ChuteBackend", "get_app"]


def __getattr__(name: str) -> Any:  # Django imports this package early (INSTALLED_APPS): load the rest on use
    if name == "ChuteBackend":
        from .backend import ChuteBackend

        return ChuteBackend
    if name == "get_app":
        from .apps import get_app

        return get_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
