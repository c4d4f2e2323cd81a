"""gevent: keep the hub running while chute's producer talks to SQLite.

After `gevent.monkey.patch_all()` sockets yield to the hub, so Redis calls are cooperative as they
are. SQLite is a C library: a publish (and any wait for its write lock, up to busy_timeout) would
stop every greenlet of the server. `offload(app)` sends each broker and result-store call of the
App to gevent's threadpool, real OS threads, and the calling greenlet waits cooperatively.

    from gevent import monkey; monkey.patch_all()       # first, as gevent requires
    ...
    offload(chute_app)     # the Bottle plugin does it for you under a patched process
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def patched() -> bool:
    """True in a process where gevent monkey-patched the standard library (without importing gevent)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("socket"))


def offload(app: Any) -> None:
    """Route `app`'s SQLite/memory broker and result-store calls through gevent's threadpool (idempotent)."""
    broker = app.broker
    if isinstance(broker, Offloaded) or broker.features.socket_io:
        return  # already done; or sockets, cooperative once patched
    offloaded = Offloaded(broker)
    results = app.results
    app.broker = offloaded
    app.results = offloaded if results is broker else Offloaded(results)


class Offloaded:
    """A broker or result store whose every method runs on a gevent threadpool thread."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr) or name.endswith("_async"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            from gevent import get_hub

            return get_hub().threadpool.apply(attr, args, kwargs)

        return _named(call, attr)

    def __repr__(self) -> str:
        return f"<offloaded to gevent's threadpool: {self._target!r}>"


def _named(call: Callable[..., Any], attr: Any) -> Callable[..., Any]:
    call.__name__ = getattr(attr, "__name__", "call")
    call.__doc__ = getattr(attr, "__doc__", None)
    return call
