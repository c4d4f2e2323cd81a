"""The Django app: the chute App built from `settings.CHUTE`, and task discovery in installed apps."""

from __future__ import annotations

import threading
from typing import Any

from django.apps import AppConfig

from ...app import App
from ...hooks import JobView, Middleware
from ..config import app_options

_lock = threading.Lock()
_app: App | None = None


def get_app() -> App:
    """The project's chute App, made once from `settings.CHUTE` (URL, RESULT_TTL, … as for App)."""
    global _app
    if _app is None:
        from django.conf import settings

        with _lock:
            if _app is None:
                app = App(**app_options(getattr(settings, "CHUTE", {}), "", where="settings.CHUTE"))
                app.hooks.add(DatabaseConnections())
                _app = app
    return _app


class DatabaseConnections(Middleware):
    """What Django does around a request, around each task: close connections that are stale or broken."""

    def task_started(self, job: JobView) -> None:
        from django.db import close_old_connections

        close_old_connections()

    def task_finished(self, job: JobView, error: BaseException | None, value: Any) -> None:
        from django.db import close_old_connections

        close_old_connections()


class ChuteConfig(AppConfig):  # type: ignore[misc]  # django ships no type hints
    name = "chute.integrations.django"
    label = "chute"
    verbose_name = "chute"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        autodiscover_modules("tasks")  # like the admin's admin.py: each app's tasks.py declares its tasks
