"""`chute demo`: the product end to end on the embedded SQLite broker, in about twenty seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def run_demo(tasks: int, processes: int, workdir: str) -> int:
    console = Console()
    folder = Path(workdir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("demo.db", "demo.db-wal", "demo.db-shm", "gateway-up"):
        (folder / name).unlink(missing_ok=True)
    url = f"sqlite:///{folder}/demo.db"
    os.environ["CHUTE_URL"] = url
    os.environ["CHUTE_DEMO_DIR"] = str(folder)
    from . import demo_app
    from .ops.terminal import print_status
    from .states import State

    app = demo_app.app
    console.rule("[bold]chute demo[/] · embedded SQLite broker")
    console.print(f"broker: {url}")
    worker = subprocess.Popen([sys.executable, "-m", "chute", "worker", "chute.demo_app:app", "-p", str(processes),
                               "-c", "8", "--log-level", "WARNING"], env=dict(os.environ), stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: len(app.results.workers()) >= processes, 20)
        console.print(f"started {processes} worker processes: "
                      + ", ".join(f"pid {w.pid}" for w in app.results.workers()))

        console.rule("1 · enqueue and drain")
        handles = []
        t0 = time.perf_counter()
        with _progress(console) as bar:
            job = bar.add_task("enqueuing make_thumbnail", total=tasks)
            for start in range(0, tasks, 250):
                batch = [demo_app.make_thumbnail.s(i) for i in range(start, min(start + 250, tasks))]
                handles += app.send_many(batch)
                bar.update(job, advance=len(batch))
        enqueue_s = time.perf_counter() - t0
        with _progress(console) as bar:
            job = bar.add_task("completed", total=tasks)
            while True:
                s = app.broker.stats(["default"])[0]
                left = s.ready + s.in_flight
                bar.update(job, completed=tasks - left)
                if left == 0:
                    break
                time.sleep(0.05)
        total_s = time.perf_counter() - t0
        console.print(f"{tasks:,} tasks enqueued in {enqueue_s * 1000:.0f} ms and done in {total_s:.2f} s "
                      f"({tasks / total_s:,.0f} tasks/s including enqueue)")
        sample = Table("task id", "state", "result", title="a few results", title_justify="left")
        for h in handles[:3] + handles[-2:]:
            sample.add_row(h.id, str(h.status), str(h.get(timeout=10)))
        console.print(sample)
        print_status(app)

        console.rule("2 · a failing task: retries with backoff, then the dead-letter queue")
        r = demo_app.charge_card.delay(1042, 99.5)
        console.print(f"charge_card(1042, 99.5) sent as {r.id}; the payment gateway is down")
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rec = r.info()
            label = "unknown" if rec is None else (
                f"{rec.state} after attempt {rec.attempt + 1}" if rec.state is State.RETRYING else
                f"{rec.state} (attempt {rec.attempt + 1})")
            if not seen or seen[-1] != label:
                seen.append(label)
                console.print(f"  state: [bold]{label}[/]"
                              + (f" · {rec.error.type}: {rec.error.message}" if rec and rec.error else ""))
            if rec is not None and rec.state is State.DEAD:
                break
            time.sleep(0.02)
        dead = Table("id", "queue", "reason", title="chute dlq list", title_justify="left")
        for d in app.broker.dead_letters():
            dead.add_row(d.id, d.queue, d.reason)
        console.print(dead)

        console.rule("3 · fix the cause and replay")
        (folder / "gateway-up").touch()
        console.print("the gateway is back; chute dlq replay --all")
        console.print(f"replayed {app.broker.replay()} message(s)")
        console.print(f"result: [green]{r.get(timeout=30)}[/] · state {r.status}")
        print_status(app)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
    console.rule("done")
    console.print(f"Try it yourself: CHUTE_URL={url} chute status · chute dlq list · see README.md")
    return 0


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description:>26}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


def _wait(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit("workers did not start: run `chute worker chute.demo_app:app` to see why")
        time.sleep(0.05)
