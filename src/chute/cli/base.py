"""What every `chute` command shares: the command group, loading the App, failing with a clear message."""

from __future__ import annotations

import importlib
import os
import sys
from typing import TYPE_CHECKING, NoReturn

import click

from ..app import App
from ..errors import AppImportError, ChuteError

if TYPE_CHECKING:
    from ..ops import Ops


def load_app(spec: str) -> App:
    """Import `module:attribute` (attribute defaults to `app`) from the current folder or PYTHONPATH."""
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    if not module_name:
        raise AppImportError(f"{spec!r} is not module:attribute (for example myproject.tasks:app)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppImportError(f"cannot import {module_name!r} for {spec!r}: no module named {exc.name!r}; run "
                                 "from the folder that contains it, or add that folder to PYTHONPATH") from None
        raise AppImportError(f"importing {module_name!r} failed: {exc}") from exc
    except ChuteError:
        raise
    except Exception as exc:
        raise AppImportError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise AppImportError(f"module {module_name!r} has no attribute {attr!r} (looked for {spec!r})") from None
    if not isinstance(app, App):
        raise AppImportError(f"{module_name}:{attr} is a {type(app).__name__}, not a chute.App")
    return app


def open_app(app_spec: str | None, url: str | None) -> App:
    if app_spec:
        return load_app(app_spec)
    return App(url)


def fail(exc: Exception) -> NoReturn:
    click.echo(f"Error: {exc}", err=True)
    sys.exit(2)


app_option = click.option("--app", "-A", "app_spec", envvar="CHUTE_APP", metavar="MODULE:APP",
                          help="The App to use (or set CHUTE_APP).")
url_option = click.option("--url", envvar="CHUTE_URL", metavar="URL",
                          help="Broker URL when no --app is given (default $CHUTE_URL or sqlite:///chute.db).")


@click.group()
@click.version_option(package_name="chute")
def main() -> None:
    """chute: background tasks and durable queues."""



def ops_of(app: App) -> Ops:
    from ..ops import Ops

    return Ops(app)
