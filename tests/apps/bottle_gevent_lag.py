"""The Bottle example on bottle's gevent server, plus a greenlet that measures how late the hub runs it.

`python -m apps.bottle_gevent_lag PORT` from the example's folder. POST /lag/start, GET /lag (ms).
CHUTE_TEST_NO_OFFLOAD=1 undoes the plugin's offload, to see what blocking SQLite calls cost the hub.
"""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import bottle  # noqa: E402
import gevent  # noqa: E402
from reports import app, chute  # noqa: E402

from chute.integrations.gevent import Offloaded  # noqa: E402

samples: list[float] = []

if os.environ.get("CHUTE_TEST_NO_OFFLOAD") == "1":
    assert isinstance(chute.broker, Offloaded)
    chute.broker = chute.results = chute.broker._target


def tick() -> None:
    while True:
        t = time.perf_counter()
        gevent.sleep(0.001)
        samples.append(time.perf_counter() - t - 0.001)


@app.post("/lag/start")
def start() -> dict[str, Any]:
    samples.clear()
    return {"offloaded": isinstance(chute.broker, Offloaded)}


@app.get("/lag")
def report() -> dict[str, Any]:
    s = sorted(samples)
    return {"samples": len(s), "p50_ms": s[len(s) // 2] * 1000, "p99_ms": s[int(len(s) * 0.99)] * 1000,
            "max_ms": s[-1] * 1000, "offloaded": isinstance(chute.broker, Offloaded)}


if __name__ == "__main__":
    gevent.spawn(tick)
    bottle.run(app, server="gevent", host="127.0.0.1", port=int(sys.argv[1]), quiet=True)
