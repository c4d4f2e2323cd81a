"""The README's quickstart tasks: run `chute worker tasks:app` in this folder."""

from __future__ import annotations

import time

import chute

app = chute.App()  # sqlite:///chute.db here, or $CHUTE_URL


@app.task(retries=3)
def send_report(user_id: int) -> str:
    time.sleep(0.1)  # the slow part
    return f"report for {user_id} sent"


@app.task(retries=1, retry_backoff=0.1)
def flaky(user_id: int) -> str:
    raise ConnectionError(f"mail server refused user {user_id}")
