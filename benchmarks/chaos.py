"""The fault-injection suite in its long form (the sizes of issue 7 and docs/reliability.md).

    .venv/bin/python benchmarks/chaos.py                      # every scenario, every durable broker
    .venv/bin/python benchmarks/chaos.py -k sigkill_chaos      # one scenario (a pytest -k expression)
    .venv/bin/python benchmarks/chaos.py -k "redis and fuzz"   # one scenario on one broker

The scenarios are the tests under tests/reliability/ (and the outbox relay and the broker restart
scenario, tests/test_restart.py):
`make test` runs them small, this runs the same code with CHUTE_CHAOS_LONG=1 (10,000-task chaos, 100
producer kills, 1,000 crash-loop kills, 8 x 8 processes on one SQLite file, 1,000 fuzzed among 10,000
valid messages, 10,000 signed and 10,000 tampered, Redis and RabbitMQ restarted under 10,000 tasks).
Each prints its figures and its seed (replay with CHUTE_CHAOS_SEED=...).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    env = dict(os.environ, CHUTE_CHAOS_LONG="1")
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "reliability"),
           str(ROOT / "tests" / "test_outbox.py") + "::test_relay_process_sigkilled_at_random_instants",
           str(ROOT / "tests" / "test_restart.py"),
           "-s", "-q", "-p", "no:cacheprovider",
           "-o", "timeout=3600", "--durations=0", *sys.argv[1:]]
    print("$ CHUTE_CHAOS_LONG=1 " + " ".join(cmd[2:]), flush=True)
    return subprocess.call(cmd, env=env, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
