"""Soak: steady load for a long time; the worker's memory and open file descriptors must stay flat.

    .venv/bin/python benchmarks/soak.py --minutes 60                       # SQLite
    .venv/bin/python benchmarks/soak.py --minutes 60 --url "redis://127.0.0.1:6379/0?prefix=soak"

A producer sends `--rate` tasks a second (1 ms of work each, results stored, one in 50 failing
once and retried, one in 500 dead-lettered) to ONE worker process; every `--sample` seconds the
worker's RSS and open file descriptors are read from /proc. Growth compares the mean of the last
tenth of the run with the mean of the second tenth (the first is warm-up). Writes a CSV and an
SVG plot (docs/images/soak-<broker>.svg) and prints the summary line for docs/reliability.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

import chute  # noqa: E402

APP_MODULE = '''
import os, time, chute
app = chute.App(os.environ["SOAK_URL"], result_ttl=60)

@app.task(name="soak.work", queue="soak", retries=1, retry_backoff=0.05)
def work(i):
    time.sleep(0.001)
    job = chute.current_job()
    if i % 500 == 0 or (i % 50 == 0 and job.envelope.attempt == 0):
        raise RuntimeError(f"planned failure {i}")
    return {"i": i, "pad": "x" * 100}
'''


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def svg(samples: list[tuple[float, int, int]], title: str) -> str:
    """A two-line chart (RSS MiB and fds over minutes), drawn by hand: no plotting dependency."""
    w, h, pad = 720, 300, 50
    t_max = max(s[0] for s in samples) or 1
    rss = [s[1] / 1024 for s in samples]
    fd = [s[2] for s in samples]
    r_max, f_max = max(rss) * 1.2 or 1, max(fd) * 1.2 or 1

    def line(values: list[float], top: float, colour: str) -> str:
        pts = " ".join(f"{pad + s[0] / t_max * (w - 2 * pad):.1f},{h - pad - v / top * (h - 2 * pad):.1f}"
                       for s, v in zip(samples, values, strict=True))
        return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>'

    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
            f'font-size="12"><rect width="{w}" height="{h}" fill="white"/>'
            f'<text x="{pad}" y="20" font-size="14">{title}</text>'
            f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#888"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{h - pad}" stroke="#888"/>'
            f'<text x="{w - pad}" y="{h - pad + 18}" text-anchor="end">{t_max / 60:.0f} min</text>'
            f'<text x="{pad}" y="{h - pad + 18}">0</text>'
            + line(rss, r_max, "#1f77b4") + line(fd, f_max, "#d62728")
            + f'<text x="{pad + 10}" y="{pad - 8}" fill="#1f77b4">RSS, MiB (max {max(rss):.1f}; axis to '
              f'{r_max:.0f})</text>'
            + f'<text x="{w - pad}" y="{pad - 8}" text-anchor="end" fill="#d62728">open fds (max {max(fd)}; axis to '
              f'{f_max:.0f})</text></svg>')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=300.0, help="tasks per second")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    a = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="chute-soak-"))
    url = a.url or f"sqlite:///{folder}/soak.db"
    (folder / "soak_app.py").write_text(APP_MODULE)
    env = dict(os.environ, SOAK_URL=url, PYTHONPATH=f"{folder}{os.pathsep}{ROOT / 'src'}")
    sys.path.insert(0, str(folder))
    os.environ["SOAK_URL"] = url
    import soak_app

    app: chute.App = soak_app.app
    work = app.tasks["soak.work"]
    worker = subprocess.Popen([sys.executable, "-m", "chute", "worker", "soak_app:app", "-q", "soak",
                               "--log-level", "ERROR"], env=env, cwd=folder,
                              stderr=subprocess.DEVNULL)
    stop = threading.Event()
    sent = [0]

    def produce() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            due = int((time.monotonic() - t0) * a.rate)
            if due > sent[0]:
                app.send_many([work.s(i) for i in range(sent[0], min(due, sent[0] + 500))])
                sent[0] = min(due, sent[0] + 500)
            else:
                time.sleep(0.01)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    samples: list[tuple[float, int, int]] = []
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < a.minutes * 60:
            time.sleep(a.sample)
            samples.append((time.monotonic() - t0, rss_kb(worker.pid), fds(worker.pid)))
            if len(samples) % 30 == 0:
                print(f"# {samples[-1][0] / 60:.1f} min: RSS {samples[-1][1] / 1024:.1f} MiB, fds {samples[-1][2]}, "
                      f"sent {sent[0]:,}", file=sys.stderr, flush=True)
    finally:
        stop.set()
        producer.join(5)
        worker.terminate()
        worker.wait(60)
    tenth = max(1, len(samples) // 10)
    base = samples[tenth:2 * tenth] or samples[:1]
    last = samples[-tenth:]
    rss0, rss1 = statistics.mean(s[1] for s in base), statistics.mean(s[1] for s in last)
    fd0, fd1 = statistics.mean(s[2] for s in base), statistics.mean(s[2] for s in last)
    broker = url.split(":", 1)[0]
    (folder / "soak.csv").write_text("seconds,rss_kb,fds\n" + "".join(f"{t:.0f},{r},{f}\n" for t, r, f in samples))
    images = ROOT / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)
    title = f"chute soak on {broker}: {a.minutes:.0f} min at {a.rate:.0f} tasks/s, one worker process"
    (images / f"soak-{broker}.svg").write_text(svg(samples, title))
    print(f"{broker}: {a.minutes:.0f} min, {sent[0]:,} tasks at {a.rate:.0f}/s · RSS {rss0 / 1024:.1f} → "
          f"{rss1 / 1024:.1f} MiB ({(rss1 - rss0) / rss0 * 100:+.1f} %) · fds {fd0:.0f} → {fd1:.0f} "
          f"({(fd1 - fd0) / fd0 * 100:+.1f} %) · CSV {folder / 'soak.csv'} · plot docs/images/soak-{broker}.svg")
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
