"""The order pipeline: validate → charge → (email ‖ invoice ‖ ship) → close, as a DAG.

Run a worker in this folder (`chute worker pipeline:app`), then `python pipeline.py 42`.
"""

from __future__ import annotations

import sys
import time

import chute
from chute import DAG

app = chute.App()


@app.task
def validate(order_id: int) -> str:
    return f"order {order_id} valid"


@app.task(retries=3)
def charge(order_id: int) -> str:
    time.sleep(0.05)  # the payment provider
    return f"charged order {order_id}"


@app.task
def email(order_id: int) -> str:
    return f"emailed about order {order_id}"


@app.task
def invoice(order_id: int) -> str:
    return f"invoice for order {order_id}"


@app.task
def ship(order_id: int) -> str:
    return f"shipped order {order_id}"


@app.task
def close(order_id: int) -> str:
    return f"closed order {order_id}"


def order_pipeline(order_id: int) -> DAG:
    return (DAG(f"order-{order_id}")
            .step("validate", validate.s(order_id))
            .step("charge", charge.s(order_id), after=["validate"])
            .step("email", email.s(order_id), after=["charge"])
            .step("invoice", invoice.s(order_id), after=["charge"])
            .step("ship", ship.s(order_id), after=["charge"])
            .step("close", close.s(order_id), after=["email", "invoice", "ship"]))


def main(order_id: int) -> None:
    wf = order_pipeline(order_id).run(app)
    print("workflow", wf.id)
    seen: dict[str, str] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        finished = app.workflow(wf.id).status.finished  # before the steps: their last look comes after it
        for step, state in app.workflow(wf.id).steps().items():
            if seen.get(step) != state.value:
                seen[step] = state.value
                print(f"  {step:<9} {state.value}")
        if finished:
            break
        time.sleep(0.02)
    print("result:", wf.get(timeout=10), "·", wf.status.value)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 42)
