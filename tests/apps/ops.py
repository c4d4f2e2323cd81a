"""A test application for the operations side: tasks that succeed, fail, hold secrets, and a schedule.

The URL comes from CHUTE_URL; CHUTE_TEST_FIX names a file whose existence makes `fragile` succeed
(so a dead-lettered task can be fixed, then replayed).
"""

from __future__ import annotations

import os
from datetime import timedelta

import chute

app = chute.App(name="shop")


@app.task(name="shop.add")
def add(a: int, b: int) -> int:
    return a + b


@app.task(name="shop.charge", retries=1, retry_backoff=0.01)
def charge(order: str, api_key: str, note: str = "") -> dict[str, str]:
    """Fails until the file named by CHUTE_TEST_FIX exists."""
    fix = os.environ.get("CHUTE_TEST_FIX", "")
    if not fix or not os.path.exists(fix):
        raise ConnectionError(f"payment gateway refused order {order} (token=tok_live_123)")
    return {"order": order, "status": "charged", "session_token": "sess-999"}


@app.task(name="shop.login", retries=0)
def login(user: str, password: str) -> None:
    raise PermissionError(f"bad password for {user}")


@app.periodic(every=timedelta(hours=1), name="shop.report")
def report() -> str:
    return "report"
