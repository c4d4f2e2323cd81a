"""A periodic task every second; each run appends its slot key to CHUTE_TEST_LOG."""

from __future__ import annotations

import os

import chute

app = chute.App()


@app.periodic(every=1.0)
def tick() -> None:
    job = chute.current_job()
    assert job is not None
    with open(os.environ["CHUTE_TEST_LOG"], "a") as f:
        f.write(f"{job.envelope.idempotency_key}\n")
