"""Tornado: handlers reach the App as `self.chute`; enqueue and wait with `await`, never blocking the IOLoop.

    class Reports(ChuteMixin, RequestHandler):
        async def post(self) -> None:
            job = await build_report.delay_async(10)
            self.write({"id": job.id})

    Application(routes, chute=chute_app)     # the App travels in the application settings

Tornado runs on asyncio, so the async client is all it needs; the Redis connections the loop
opened close when `asyncio.run(main())` ends (or call `await chute_app.aclose()`).
"""

from __future__ import annotations

from typing import Any, cast

from ..app import App
from ..errors import ConfigurationError


class ChuteMixin:
    """Mix into a tornado.web.RequestHandler: `self.chute` is `Application(..., chute=app)`'s App."""

    @property
    def chute(self) -> App:
        app = cast(Any, self).application.settings.get("chute")
        if not isinstance(app, App):
            raise ConfigurationError("no chute app in the Tornado application settings: "
                                     "tornado.web.Application(routes, chute=app)")
        return app
