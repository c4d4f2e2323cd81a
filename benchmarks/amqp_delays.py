"""RabbitMQ's delay chain under a burst: how late do delayed messages reach their queue?

    .venv/bin/python benchmarks/amqp_delays.py
    .venv/bin/python benchmarks/amqp_delays.py --url amqp://guest:guest@127.0.0.1:5672/ -n 1000

Sends N delayed no-op tasks due 3-5 s out (spread uniformly: about N/2 due a second, as the fault
suite's R3 test), then a plain pika consumer reads them off the work queue and compares each
arrival with its `x-chute-eta` header: the server's own lateness, with no chute worker beside it.
Uses a queue of its own, deleted after with its dead-letter and delay queues.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pika

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import chute  # noqa: E402
from chute.brokers.amqp import H_ETA, LEVELS, AMQPBroker, dead_queue, delay_queue  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("-n", type=int, default=1000)
    args = parser.parse_args()
    queue = f"bench-delays-{os.urandom(3).hex()}"
    with tempfile.TemporaryDirectory() as folder:
        app = chute.App(args.url, results=f"sqlite:///{folder}/results.db")
        work = app.task(name="bench.work", queue=queue)(lambda i: None)
        broker = app.broker
        assert isinstance(broker, AMQPBroker)
        try:
            now = time.time()
            for start in range(0, args.n, 100):
                batch = range(start, min(args.n, start + 100))
                app.send_many([work.s(i).set(eta=now + random.uniform(3, 5)) for i in batch])
            print(f"sent {args.n} in {time.time() - now:.2f} s")
            late = consume(args.url, queue, args.n)
            late.sort()
            n = len(late)
            print(f"arrival after the ETA: p50 {late[n // 2] * 1e3:.0f} ms, p99 {late[int(n * 0.99)] * 1e3:.0f} ms, "
                  f"max {late[-1] * 1e3:.0f} ms, min {late[0] * 1e3:.0f} ms")
        finally:
            with broker._link() as link:
                ch = link.admin()
                for name in (queue, dead_queue(queue), *(delay_queue(queue, k) for k in range(LEVELS))):
                    ch.queue_delete(name)
            app.close()


def consume(url: str, queue: str, n: int) -> list[float]:
    late: list[float] = []
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=500)

    def on(channel: Any, method: Any, props: Any, _body: bytes) -> None:
        late.append(time.time() - props.headers[H_ETA] / 1000)
        channel.basic_ack(method.delivery_tag)
        if len(late) >= n:
            channel.stop_consuming()

    ch.basic_consume(queue, on)
    ch.start_consuming()
    conn.close()
    return late


if __name__ == "__main__":
    main()
