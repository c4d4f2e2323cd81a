"""An every-minute job, and a scheduler runner on an injected clock (skewed and sped up) for the
clock-skew fault test. Each run appends its slot to CHUTE_TEST_LOG."""

from __future__ import annotations

import os
import threading
import time

import chute

app = chute.App()


@app.periodic(every=60.0)
def tick() -> None:
    job = chute.current_job()
    assert job is not None
    with open(os.environ["CHUTE_TEST_LOG"], "a") as f:
        f.write(f"{job.envelope.idempotency_key}\n")


def run_scheduler(start_real: float, start_sim: float, speed: float, skew: float, lease: float, state: str) -> None:
    """Run a Scheduler whose clock reads start_sim + (now - start_real) × speed + skew; keep `state`
    (a file) saying whether it leads, so the test can find and kill the leader."""
    from chute.scheduler import Scheduler

    # catch_up in simulated seconds: the default 300 is 1.25 real seconds at 240×, which a busy machine's
    # stall of a killed leader's successor can outlast; 1,200 (5 real s) still fences off real downtime
    s = Scheduler(app, lease=lease, catch_up=1200.0,
                  clock=lambda: start_sim + (time.time() - start_real) * speed + skew)

    def report() -> None:
        while True:
            with open(state + ".tmp", "w") as f:
                f.write("leading" if s.leading else "standby")
            os.replace(state + ".tmp", state)  # readers never see a half-written file
            time.sleep(0.02)

    threading.Thread(target=report, daemon=True).start()
    s.install_signal_handlers()
    s.run()
