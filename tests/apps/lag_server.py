"""Servers that enqueue on request while a 1 ms timer inside their event loop measures its lag.

FastAPI (`uvicorn apps.lag_server:fastapi_app`) and Tornado (`python -m apps.lag_server PORT`).
POST /enqueue?n=N sends N tasks in one batch (or N single sends with &each=1); POST /lag/start
starts a measurement; GET /lag reports the timer's lateness (ms) since then.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import chute

app = chute.App()  # CHUTE_URL


@app.task
def noop(i: int) -> None:
    pass


class Lag:
    """Timer lateness, sampled every millisecond on the loop it runs on."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.enqueued = 0

    async def tick(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            self.samples.append(time.perf_counter() - t - 0.001)

    def report(self) -> dict[str, Any]:
        s = sorted(self.samples)
        if not s:
            return {"samples": 0}
        return {"samples": len(s), "enqueued": self.enqueued, "p50_ms": s[len(s) // 2] * 1000,
                "p99_ms": s[int(len(s) * 0.99)] * 1000, "max_ms": s[-1] * 1000}


lag = Lag()


async def enqueue(n: int, each: bool) -> int:
    if each:
        await asyncio.gather(*(noop.delay_async(i) for i in range(n)))
    else:
        await app.send_many_async([noop.s(i) for i in range(n)])
    lag.enqueued += n
    return n


def _fastapi() -> Any:
    from fastapi import FastAPI

    from chute.integrations.asgi import lifespan

    @asynccontextmanager
    async def both(asgi: Any) -> AsyncIterator[dict[str, Any]]:
        ticker = asyncio.create_task(lag.tick())
        async with lifespan(app)(asgi) as state:
            yield state
        ticker.cancel()

    api = FastAPI(lifespan=both)

    @api.post("/enqueue")
    async def post_enqueue(n: int = 10, each: int = 0) -> dict[str, int]:
        return {"sent": await enqueue(n, bool(each))}

    @api.post("/lag/start")
    async def start() -> dict[str, int]:
        lag.samples.clear()
        lag.enqueued = 0
        return {}

    @api.get("/lag")
    async def report() -> dict[str, Any]:
        return lag.report()

    return api


async def _tornado(port: int) -> None:
    from tornado.web import Application, RequestHandler

    from chute.integrations.tornado import ChuteMixin

    class Enqueue(ChuteMixin, RequestHandler):
        async def post(self) -> None:
            n, each = int(self.get_argument("n", "10")), self.get_argument("each", "0") == "1"
            self.write({"sent": await enqueue(n, each)})

    class Lagging(RequestHandler):
        def post(self) -> None:
            lag.samples.clear()
            lag.enqueued = 0
            self.write({})

        def get(self) -> None:
            self.write(lag.report())

    Application([(r"/enqueue", Enqueue), (r"/lag(?:/start)?", Lagging)], chute=app).listen(port, "127.0.0.1")
    await lag.tick()


fastapi_app = _fastapi()

if __name__ == "__main__":
    asyncio.run(_tornado(int(sys.argv[1])))
