"""FastAPI and Starlette: a lifespan that hands the App to every request, and a dependency that takes it.

    app = FastAPI(lifespan=lifespan(chute_app))

    @app.post("/reports")
    async def start(chute: Annotated[App, Depends(get_chute)]) -> dict:
        job = await build_report.delay_async(10)        # never blocks the event loop
        return {"id": job.id}

The lifespan yields `{"chute": app}` (Starlette copies it into `request.state`) and, at shutdown,
closes the connections the server's event loop opened (`app.aclose()`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.requests import HTTPConnection  # at run time: FastAPI reads the dependency's annotations

from ..app import App
from ..errors import ConfigurationError


def lifespan(chute: App) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan for `FastAPI(lifespan=...)` / `Starlette(lifespan=...)`; nest it inside your own if you have one."""

    @asynccontextmanager
    async def run(asgi_app: Any) -> AsyncIterator[dict[str, Any]]:
        try:
            yield {"chute": chute}
        finally:
            await chute.aclose()

    return run


def get_chute(conn: HTTPConnection) -> App:
    """The App of this request (a FastAPI dependency: `Depends(get_chute)`; in Starlette call it)."""
    app = getattr(conn.state, "chute", None)
    if not isinstance(app, App):
        raise ConfigurationError("no chute app in the request state: pass lifespan=chute.integrations.asgi"
                                 ".lifespan(app) to FastAPI or Starlette")
    return app
