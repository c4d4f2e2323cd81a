"""aiohttp: the App under a typed application key, closed with the web app.

    setup(web_app, chute_app)                # web_app[CHUTE] is the App
    async def start(request: web.Request) -> web.Response:
        job = await build_report.delay_async(10)        # never blocks the event loop
        ...
    get_chute(request)                        # request.app[CHUTE]
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from ..app import App

CHUTE = web.AppKey("chute", App)


def setup(app: web.Application, chute: App) -> None:
    """Store the App at `app[CHUTE]`; on cleanup, close the connections this event loop opened."""
    app[CHUTE] = chute

    async def close_at_cleanup(_: web.Application) -> AsyncIterator[None]:
        yield
        await chute.aclose()

    app.cleanup_ctx.append(close_at_cleanup)


def get_chute(request: web.Request) -> App:
    return request.app[CHUTE]
