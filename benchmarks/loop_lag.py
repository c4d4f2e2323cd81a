"""Event-loop lag in a real web server while it enqueues 5,000 tasks/s, on any broker.

    .venv/bin/python benchmarks/loop_lag.py --url amqp://guest:guest@127.0.0.1:5672/ --results sqlite:///r.db
    .venv/bin/python benchmarks/loop_lag.py --server tornado --clients 8 --each --url redis://127.0.0.1:6379/0

The servers and the driver of tests/integrations/test_event_loop_lag.py (uvicorn + FastAPI or
Tornado, a 1 ms timer in the server's loop, keep-alive clients paced to 5,000 tasks/s in requests of
20 for 3 s, no worker running), with the broker, the number of clients and the mode chosen here; prints
the server's lag report (p50/p99/max ms), the rate reached and the CPU the server and RabbitMQ used.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "integrations"), str(ROOT / "src")]

from test_event_loop_lag import SERVERS, drive  # noqa: E402

from web import free_port, process  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="broker URL (default: a SQLite file in a temporary folder)")
    ap.add_argument("--results", help="result store URL (RabbitMQ keeps none)")
    ap.add_argument("--server", choices=sorted(SERVERS), default="fastapi")
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--each", action="store_true", help="20 concurrent delay_async calls a request, not one batch")
    ap.add_argument("-r", type=int, default=3, help="runs")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = a.url or f"sqlite:///{folder}/lag.db"
        extra = {"CHUTE_RESULTS_URL": a.results} if a.results else {}
        beam = subprocess.run(["pgrep", "-f", "beam.smp"], capture_output=True, text=True).stdout.split()
        for _ in range(a.r):
            port = free_port()
            cmd = [part.replace("{port}", str(port)) for part in SERVERS[a.server]]
            with process(cmd, url, cwd=ROOT / "tests", port=port, **extra) as server:
                before = cpu_seconds(server.pid), cpu_seconds(int(beam[0])) if beam else 0.0, time.time()
                report: dict[str, Any] = drive(port, a.each, a.clients)
                took = time.time() - before[2]
                server_cpu = (cpu_seconds(server.pid) - before[0]) / took
                rabbit_cpu = (cpu_seconds(int(beam[0])) - before[1]) / took if beam else 0.0
            print(f"{a.server} clients={a.clients} each={a.each}: rate {report['rate']:.0f}/s, lag p50 "
                  f"{report['p50_ms']:.2f} ms, p99 {report['p99_ms']:.2f} ms, max {report['max_ms']:.1f} ms; "
                  f"server CPU {server_cpu:.0%}, RabbitMQ CPU {rabbit_cpu:.0%}", flush=True)


if __name__ == "__main__":
    main()
