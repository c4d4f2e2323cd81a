"""Bottle: a plugin that hands the App to the routes that ask for it, configured from `app.config`.

    chute = DeferredApp()                          # or a chute.App you made yourself
    app = bottle.Bottle()
    app.config.load_config("app.ini")              # [chute] url = ...   (or app.config["chute.url"] = ...)
    app.install(ChutePlugin(chute))

    @app.post("/reports")
    def start(chute: App) -> dict:                 # a route with a `chute` parameter gets the App
        return {"id": build_report.delay(10).id}

In a gevent-patched process (bottle's "gevent" server, gunicorn -k gevent) the plugin also calls
chute.integrations.gevent.offload, so SQLite never blocks the hub.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import bottle

from ..app import App
from ..errors import ConfigurationError
from . import gevent
from .config import DeferredApp, app_options


class ChutePlugin:
    """Bottle plugin (API 2): `app.install(ChutePlugin(chute_app))`."""

    name = "chute"
    api = 2

    def __init__(self, chute: App, *, keyword: str = "chute") -> None:
        self.chute, self.keyword = chute, keyword

    def setup(self, app: bottle.Bottle) -> None:
        for other in app.plugins:
            if isinstance(other, ChutePlugin) and other is not self and other.keyword == self.keyword:
                raise ConfigurationError(f"two chute plugins use the keyword {self.keyword!r}; give one keyword=...")
        options = app_options(app.config, "chute.", where="Bottle app.config")
        if isinstance(self.chute, DeferredApp) and not self.chute.configured:
            self.chute.configure(**options)
        elif options:
            raise ConfigurationError(f"Bottle app.config has chute.* settings ({', '.join(sorted(options))}) but "
                                     f"{self.chute!r} is already configured; use a chute DeferredApp to take them")
        if gevent.patched():
            gevent.offload(self.chute)

    def apply(self, callback: Callable[..., Any], route: bottle.Route) -> Callable[..., Any]:
        if self.keyword not in inspect.signature(route.get_undecorated_callback()).parameters:
            return callback
        chute, keyword = self.chute, self.keyword

        @functools.wraps(callback)
        def with_chute(*args: Any, **kwargs: Any) -> Any:
            kwargs[keyword] = chute
            return callback(*args, **kwargs)

        return with_chute

    def close(self) -> None:
        """Called by Bottle on uninstall or app.close(); the App stays open (workers may share it)."""
