"""Tasks for workflow tests; the chord callback appends to CHUTE_TEST_LOG to count its runs."""

from __future__ import annotations

import os

import chute

app = chute.App()


@app.task
def square(x: int) -> int:
    return x * x


@app.task
def total(values: list[int]) -> int:
    log = os.environ.get("CHUTE_TEST_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{len(values)} {sum(values)}\n")
    return sum(values)
