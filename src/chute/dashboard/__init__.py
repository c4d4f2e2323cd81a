"""The web dashboard: `chute dashboard module:app`, or `create_app(app)` for any ASGI server.

Needs the `dashboard` extra (Starlette, uvicorn, Jinja2, prometheus-client):
`pip install 'chute[dashboard]'`. Nothing else in chute imports this package.
"""

from __future__ import annotations

from .security import Credentials
from .server import create_app

__all__ = ["Credentials", "create_app"]
