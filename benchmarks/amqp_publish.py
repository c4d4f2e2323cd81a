"""RabbitMQ publishing: the asyncio side (aio-pika, on the loop) against the sync side (pika, on a thread).

    .venv/bin/python benchmarks/amqp_publish.py
    .venv/bin/python benchmarks/amqp_publish.py --url amqp://guest:guest@127.0.0.1:5672/ -n 4000

For batches of 1, 20, 50 and 500 no-op tasks, the confirmed publish alone (the broker's frames and
their confirms: no QUEUED marks, no envelope building), one batch after another: wall time per batch
and CPU time per message; for the asyncio side the event loop thread's own CPU (what the loop cannot
spend on anything else), for the thread the whole process's. Uses a queue of its own, deleted after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import chute  # noqa: E402
from chute.brokers.amqp.publish import frame  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("-n", type=int, default=2000, help="messages per measurement (default 2000)")
    args = parser.parse_args()
    queue = f"bench-publish-{os.urandom(3).hex()}"
    with tempfile.TemporaryDirectory() as folder:
        app = chute.App(args.url, results=f"sqlite:///{folder}/results.db")
        noop = app.task(name="bench.noop", queue=queue)(lambda i: None)
        try:
            asyncio.run(measure(app, noop, args.n))
        finally:
            from chute.brokers.amqp import AMQPBroker, dead_queue

            broker = app.broker
            assert isinstance(broker, AMQPBroker)
            with broker._link() as link:
                ch = link.admin()
                ch.queue_delete(queue)
                ch.queue_delete(dead_queue(queue))
            app.close()


async def measure(app: chute.App, noop: chute.Task[..., None], n: int) -> None:
    broker = app.broker
    await noop.delay_async(0)  # declares the queue, opens both sides' connections
    await asyncio.to_thread(noop.delay, 0)
    print(f"{'batch':>6} {'async ms/batch':>15} {'loop µs/msg':>12} {'thread ms/batch':>16} {'process µs/msg':>15}")
    for size in (1, 20, 50, 500):
        outs = [app.producer.envelope(noop, (i,), {}, {}, time.time())[1] for i in range(size)]
        rounds = max(1, n // size)
        t, cpu = time.perf_counter(), time.thread_time()
        for _ in range(rounds):
            await broker.aio._made._send(outs)  # type: ignore[union-attr]  # the aio-pika side, made above
        a_wall, a_cpu = (time.perf_counter() - t) / rounds, (time.thread_time() - cpu) / rounds
        t, cpu = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            await asyncio.to_thread(broker._sender.send, [frame(m, time.time()) for m in outs])
        s_wall, s_cpu = (time.perf_counter() - t) / rounds, (time.process_time() - cpu) / rounds
        print(f"{size:>6} {a_wall * 1e3:>15.2f} {a_cpu / size * 1e6:>12.0f} {s_wall * 1e3:>16.2f} "
              f"{s_cpu / size * 1e6:>15.0f}")
    await app.aclose()


if __name__ == "__main__":
    main()
