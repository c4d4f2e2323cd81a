"""Pyramid: `config.include("chute.integrations.pyramid")`; settings from the .ini; `request.chute` in views.

    [app:main]
    chute.app = myproject.tasks:chute      # optional: a DeferredApp your tasks are declared on
    chute.url = redis://127.0.0.1:6379/0   # App options: chute.result_ttl, chute.lease, ...

Without `chute.app` the include makes a plain App from the settings. The worker loads the same
.ini: `from_ini("production.ini")` in a module the worker names (see docs/integrations/pyramid.md).
"""

from __future__ import annotations

from typing import Any

from pyramid.config import Configurator

from ..app import App
from ..errors import ConfigurationError
from .config import DeferredApp, app_options


def includeme(config: Configurator) -> None:
    settings = config.get_settings()
    options = app_options(settings, "chute.", where="Pyramid settings", ignore=("chute.app",))
    spec = settings.get("chute.app")
    if spec:
        from ..cli import load_app

        app = load_app(spec)
        if isinstance(app, DeferredApp) and not app.configured:
            app.configure(**options)
        elif options:
            raise ConfigurationError(f"Pyramid settings give chute.* options ({', '.join(sorted(options))}) but "
                                     f"chute.app = {spec} is already configured; declare it as a DeferredApp")
    else:
        app = App(**options)
    config.registry.chute = app
    config.add_request_method(lambda request: app, "chute", reify=True)


def get_app(registry: Any) -> App:
    """The App the include put in this registry (`request.registry`, or bootstrap's)."""
    app = getattr(registry, "chute", None)
    if not isinstance(app, App):
        raise ConfigurationError("no chute app in the Pyramid registry: config.include('chute.integrations.pyramid')")
    return app


def from_ini(path: str, name: str = "main") -> App:
    """The App of the Pyramid application in an .ini file, for the worker: the web app's own configuration."""
    from pyramid.paster import bootstrap

    env = bootstrap(f"{path}#{name}")
    return get_app(env["registry"])
