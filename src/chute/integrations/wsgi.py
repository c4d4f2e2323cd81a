"""Any WSGI app: a middleware that puts the chute App in each request's environ.

    application = ChuteMiddleware(application, chute_app)
    ...
    app = get_app(environ)      # in any view: environ["chute.app"]

For frameworks without an integration of their own (Falcon, web.py, plain WSGI). Sending from a
WSGI view is a plain sync call: one broker round trip (about a millisecond on SQLite or Redis).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..app import App
from ..errors import ConfigurationError

ENVIRON_KEY = "chute.app"
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class ChuteMiddleware:
    """Wraps a WSGI app; each request's environ gets `chute.app` (or the key you give)."""

    def __init__(self, app: WSGIApp, chute: App, *, key: str = ENVIRON_KEY) -> None:
        self.app, self.chute, self.key = app, chute, key

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        environ[self.key] = self.chute
        return self.app(environ, start_response)


def get_app(environ: dict[str, Any], key: str = ENVIRON_KEY) -> App:
    """The App ChuteMiddleware put in this request's environ."""
    try:
        app: App = environ[key]
    except KeyError:
        raise ConfigurationError(f"no chute app in the WSGI environ under {key!r}: wrap the application in "
                                 "chute.integrations.wsgi.ChuteMiddleware") from None
    return app
