"""Each integration's set-up on its own: settings read and checked, the App handed over, clear errors."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import chute
from chute.errors import ConfigurationError
from chute.integrations.config import DeferredApp, app_options

FRAMEWORKS = ["flask", "django", "bottle", "pyramid", "tornado", "fastapi", "starlette", "aiohttp", "gevent",
              "werkzeug", "uvicorn", "asgiref", "webob"]


def test_import_chute_and_sending_imports_no_web_framework(tmp_path: Path) -> None:
    code = f"""
import sys, chute
app = chute.App("sqlite:///{tmp_path}/i.db")
@app.task
def f(x): return x
f.delay(1)
app.close()
loaded = sorted(m for m in {FRAMEWORKS!r} if m in sys.modules)
print(loaded)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_app_options_coerce_ini_strings_and_refuse_unknown_keys() -> None:
    got = app_options({"chute.url": "memory://", "chute.result_ttl": "60", "chute.eager": "yes",
                       "chute.max_deliveries": "5", "chute.signing_keys": "k1:s1, k2:s2", "other": "x"}, "chute.",
                      where="test")
    assert got == {"url": "memory://", "result_ttl": 60.0, "eager": True, "max_deliveries": 5,
                   "signing_keys": {"k1": "s1", "k2": "s2"}}
    with pytest.raises(ConfigurationError, match=r"'chute.lease_time'.*chute.lease"):
        app_options({"chute.lease_time": "3"}, "chute.", where="test")
    with pytest.raises(ConfigurationError, match="not a boolean"):
        app_options({"CHUTE_EAGER": "maybe"}, "CHUTE_", where="test")
    with pytest.raises(ConfigurationError, match="not a number"):
        app_options({"LEASE": "soon"}, "", where="settings.CHUTE")


def test_a_deferred_app_keeps_its_tasks_and_refuses_to_send_before_configure(tmp_path: Path) -> None:
    app = DeferredApp(hint="setup()")

    @app.task(retries=0)
    def double(x: int) -> int:
        return 2 * x

    with pytest.raises(ConfigurationError, match=r"not configured yet: call setup\(\)"):
        double.delay(1)
    app.close()  # harmless before configure
    app.configure(f"sqlite:///{tmp_path}/d.db", eager=True)
    assert double.delay(4).get(timeout=5) == 8 and app.tasks[double.name] is double
    with pytest.raises(ConfigurationError, match="already configured"):
        app.configure()
    app.close()


# Pyramid 2.1 imports pkg_resources, which warns on import (and PasteDeploy's namespace through it)
@pytest.mark.filterwarnings("ignore:pkg_resources is deprecated as an API:UserWarning")
@pytest.mark.filterwarnings("ignore:Deprecated call to `pkg_resources.declare_namespace:DeprecationWarning")
def test_pyramid_include_reads_the_settings_and_puts_the_app_on_the_request(tmp_path: Path) -> None:
    from pyramid.config import Configurator
    from pyramid.response import Response
    from webob import Request

    from chute.integrations.pyramid import get_app

    settings = {"chute.url": f"sqlite:///{tmp_path}/p.db", "chute.result_ttl": "60"}
    with Configurator(settings=settings) as config:
        config.include("chute.integrations.pyramid")
        config.add_route("x", "/x")
        config.add_view(lambda request: Response(request.chute.url), route_name="x")
        wsgi = config.make_wsgi_app()
    app = get_app(wsgi.registry)
    assert Request.blank("/x").get_response(wsgi).text == f"sqlite:///{tmp_path}/p.db"
    assert app.result_ttl == 60.0
    app.close()
    with pytest.raises(ConfigurationError, match="chute.resutl_ttl"), \
            Configurator(settings={"chute.resutl_ttl": "5"}) as config:
        config.include("chute.integrations.pyramid")


def test_wsgi_middleware_puts_the_app_in_the_environ() -> None:
    from chute.integrations.wsgi import ChuteMiddleware, get_app

    app = chute.App("memory://")
    seen: list[Any] = []

    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(get_app(environ))
        return [b""]

    ChuteMiddleware(inner, app)({}, lambda *a: None)
    assert seen == [app]
    with pytest.raises(ConfigurationError, match="ChuteMiddleware"):
        get_app({})
    app.close()


def test_asgi_lifespan_and_dependency(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request

    from chute.integrations.asgi import get_chute, lifespan

    app = chute.App(f"sqlite:///{tmp_path}/s.db")

    async def main() -> Any:
        web = Starlette(lifespan=lifespan(app))
        async with lifespan(app)(web) as state:
            req = Request({"type": "http", "state": dict(state)})
            return get_chute(req)

    assert asyncio.run(main()) is app
    with pytest.raises(ConfigurationError, match="lifespan"):
        get_chute(Request({"type": "http", "state": {}}))
    app.close()


def test_aiohttp_setup_uses_an_app_key() -> None:
    from aiohttp import web

    from chute.integrations.aiohttp import CHUTE, setup

    app = chute.App("memory://")
    web_app = web.Application()
    setup(web_app, app)
    assert web_app[CHUTE] is app and len(web_app.cleanup_ctx) == 1
    app.close()


def test_tornado_mixin_says_how_to_pass_the_app() -> None:
    from chute.integrations.tornado import ChuteMixin

    class Handler(ChuteMixin):
        application = type("A", (), {"settings": {}})()

    with pytest.raises(ConfigurationError, match="chute=app"):
        _ = Handler().chute
