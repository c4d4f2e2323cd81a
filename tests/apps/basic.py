"""A test application: the URL comes from CHUTE_URL, set per test."""

from __future__ import annotations

import os
import time

import chute

app = chute.App(lease=float(os.environ.get("CHUTE_TEST_LEASE", "30")))


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task
def sleep_then(seconds: float, value: int) -> int:
    """Sleep, then record that we ran (appending our pid to a file named by CHUTE_TEST_LOG); a file named
    by CHUTE_TEST_STARTS gets a line as it starts."""
    starts = os.environ.get("CHUTE_TEST_STARTS")
    if starts:
        with open(starts, "a") as f:
            f.write(f"{value} {os.getpid()}\n")
    time.sleep(seconds + float(os.environ.get("CHUTE_TEST_SLOW", "0")))  # a slow worker, for fairness tests
    log = os.environ.get("CHUTE_TEST_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{value} {os.getpid()}\n")
    return value


@app.task(retries=2, retry_backoff=0.05)
def always_fails(reason: str) -> None:
    raise ValueError(reason)


@app.task
def noop(i: int) -> int:
    return i


@app.task(rate_limit="40/s")
def limited(i: int) -> None:
    """At most 40 starts a second across every worker; logs the time of each start."""
    log = os.environ.get("CHUTE_TEST_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{time.time()} {os.getpid()}\n")


@app.task(time_limit=0.3, retries=0)
def blocked(seconds: float) -> None:
    """Blocks in C (time.sleep), where the time-limit exception cannot reach it."""
    time.sleep(seconds)
