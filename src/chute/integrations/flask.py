"""The Flask extension: `Chute(app)` or `chute.init_app(app)`; config from app.config, tasks in its app context.

    chute = Chute()                       # declare tasks on it at import time
    @chute.task
    def build_report(rows: int) -> dict: ...   # runs inside the Flask app context on the worker

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["CHUTE_URL"] = "redis://127.0.0.1:6379/0"   # CHUTE_RESULT_TTL, CHUTE_EAGER, ...
        chute.init_app(app)
        return app

The worker imports the module that builds the Flask app and names the extension:
`chute worker myproject.wsgi:chute`.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from ..errors import ConfigurationError
from ..hooks import JobView, Middleware
from .config import DeferredApp, app_options


class Chute(DeferredApp):
    """A chute App bound to one Flask app: its settings, and its app context around every task."""

    def __init__(self, app: Flask | None = None, *, name: str = "chute", **options: Any) -> None:
        super().__init__(name, hint="Chute.init_app(flask_app)")
        self._defaults = options  # overridden by CHUTE_* in app.config
        self.flask_app: Flask | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if self.flask_app is not None:
            if self.flask_app is app:
                return
            raise ConfigurationError(f"{self!r} already serves Flask app {self.flask_app.name!r}; "
                                     "create one Chute per Flask app")
        self.configure(**{**self._defaults, **app_options(app.config, "CHUTE_", where="Flask app.config")})
        self.flask_app = app
        self.hooks.add(AppContext(app))
        app.extensions["chute"] = self


class AppContext(Middleware):
    """Pushes the Flask app context around each task (current_app, g, extensions work as in a view)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def task_started(self, job: JobView) -> None:
        ctx = self.app.app_context()
        ctx.push()
        job.extra["flask.app_context"] = ctx

    def task_finished(self, job: JobView, error: BaseException | None, value: Any) -> None:
        ctx = job.extra.pop("flask.app_context", None)
        if ctx is not None:
            ctx.pop(error)
