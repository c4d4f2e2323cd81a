"""Supervisor: runs N worker processes, forwards SIGTERM/SIGINT, restarts any that die."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

log = logging.getLogger("chute.supervisor")


def supervise(child_args: list[str], processes: int, grace: float) -> int:
    """Start `processes` children running `python -m chute worker <child_args>`; return an exit code.

    A child that exits while the supervisor is not stopping is restarted after a short backoff
    (doubling to 10 s while it keeps crashing), so one poison task cannot take the pool down.
    """
    cmd = [sys.executable, "-m", "chute", "worker", *child_args, "--processes", "1"]
    env = dict(os.environ, CHUTE_SUPERVISOR_PID=str(os.getpid()))

    def spawn() -> subprocess.Popen[bytes]:
        # a session of its own: a terminal's Ctrl-C reaches the children once, through us
        return subprocess.Popen(cmd, env=env, start_new_session=True)

    children: list[subprocess.Popen[bytes] | None] = [None] * processes
    backoff = [0.5] * processes
    restart_at = [0.0] * processes
    stopping: list[int] = []
    told: dict[int, int] = {}  # child pid -> how many of the stop signals it has been sent

    def forward() -> None:
        for c in children:
            if c is not None and c.poll() is None:
                for k in range(told.get(c.pid, 0), len(stopping)):  # each once; a late child all of them
                    c.send_signal(signal.SIGKILL if k >= 2 else stopping[k])
                told[c.pid] = len(stopping)

    def handle(signum: int, frame: object) -> None:
        stopping.append(signum)
        forward()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    for i in range(processes):
        children[i] = spawn()
    log.info("supervising %d worker processes: %s", processes, " ".join(str(c.pid) for c in children if c))
    while True:
        if stopping:
            forward()  # a child started while the signal was handled (a restart) has not heard of it
            deadline = time.monotonic() + grace + 5
            for c in children:
                if c is not None:
                    try:
                        c.wait(max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        c.kill()
                        c.wait()
            return 0
        now = time.monotonic()
        for i, c in enumerate(children):
            if c is not None and c.poll() is not None:
                log.error("worker process %d exited with %s; restarting in %.1f s", c.pid, c.returncode, backoff[i])
                children[i] = None
                restart_at[i] = now + backoff[i]
                backoff[i] = min(backoff[i] * 2, 10.0)
            elif c is None and now >= restart_at[i] and not stopping:
                children[i] = spawn()
            elif c is not None and now - restart_at[i] > 30:
                backoff[i] = 0.5  # it has stayed up: forget earlier crashes
        time.sleep(0.2)
