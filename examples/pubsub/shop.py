"""Two subscriber groups on one topic: `chute worker shop:app` here, then `python shop.py`."""

from __future__ import annotations

import sys

import chute
from chute.topics import matches

app = chute.App()


@app.subscriber("order.*", group="billing")
def bill(order: dict[str, object]) -> str:
    return f"invoiced order {order['id']} for {order['total']} EUR"


@app.subscriber(["order.created", "order.cancelled"], group="email")
def notify(order: dict[str, object]) -> str:
    job = chute.current_job()
    assert job is not None
    return f"emailed {order['customer']}: {job.envelope.name}"


def main() -> None:
    app.declare_subscribers()  # groups exist from now on, even before their workers start
    with app.batch():  # both events or neither
        first = app.publish("order.created", {"id": 1, "total": 30, "customer": "ada@example.com"})
        second = app.publish("order.paid", {"id": 1, "total": 30, "customer": "ada@example.com"})
    for event, topic in ((first, "order.created"), (second, "order.paid")):
        for group, sub in app.subscribers.items():
            if any(matches(p, topic) for p in sub.patterns):  # order.paid is not for the email group
                print(group, "->", app.result(f"{event}:{group}").get(timeout=20))


if __name__ == "__main__":
    main()
    sys.exit(0)
