"""Run the suite in two phases: every test but the timing ones on parallel workers, then the timing ones
(marked `timing`: idle CPU, loop lag, latency, lateness and throughput bounds) alone, so nothing else
disturbs what they measure. One seed orders both (pytest-randomly); the run ends with the 25 slowest
tests of both phases.

    python tests/phases.py [--seed N] [--jobs N] [pytest arguments...]

`make test` runs it; `make test SEED=N` replays an order. Exit status: 0 when both phases pass.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NO_TESTS = 5  # pytest's exit status when a phase selected nothing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="test order (pytest-randomly); random if not given")
    # Most tests wait (on processes, leases, servers): four workers a core kept this 2-core machine's CPU
    # busy (2 cores: 8 workers, 123 s; 12 workers, 148 s: the extra ones only queue for the CPU).
    jobs = int(os.environ.get("CHUTE_TEST_JOBS", 0)) or min(16, 4 * (os.cpu_count() or 2))
    parser.add_argument("--jobs", type=int, default=jobs, help=f"parallel workers of the first phase (here {jobs})")
    parser.add_argument("--slowest", type=int, default=25, help="how many of the slowest tests to list at the end")
    known, pytest_args = parser.parse_known_args()
    seed = known.seed if known.seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"test order seed {seed} (replay: make test SEED={seed})", flush=True)
    # pytest rewrites the asserts of every test module as it imports it (2.6 s of a process's 4.7 s start
    # here) and caches the result only where Python may write bytecode: PYTHONDONTWRITEBYTECODE=1 (set on
    # the project's machines) made every worker of every phase rewrite them again. One collection first
    # fills the cache the workers then read.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:randomly"], cwd=ROOT,
                   env=env, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="chute-phases-") as tmp:
        reports = [Path(tmp) / "parallel.xml", Path(tmp) / "serial.xml"]
        phases = [
            ("parallel", ["-n", str(known.jobs), "--dist", "worksteal", "-m", "not timing"]),
            ("serial (timing)", ["-p", "no:xdist", "-m", "timing"]),
        ]
        codes = []
        for (name, args), report in zip(phases, reports, strict=True):
            print(f"\n=== phase: {name} ===", flush=True)
            cmd = [sys.executable, "-m", "pytest", *args, f"--randomly-seed={seed}",
                   f"--junitxml={report}", "-o", "junit_family=xunit2", *pytest_args]
            codes.append(subprocess.call(cmd, cwd=ROOT, env=env))
        print_slowest(reports, known.slowest)
    failed = [name for (name, _), code in zip(phases, codes, strict=True) if code not in (0, NO_TESTS)]
    if failed:
        print(f"\nFAILED in phase(s): {', '.join(failed)} (seed {seed}: make test SEED={seed} replays the order)")
        return 1
    return 0


def print_slowest(reports: list[Path], n: int) -> None:
    """The `n` slowest tests of every phase (setup, call and teardown together), slowest first."""
    times: list[tuple[float, str]] = []
    for report in reports:
        if not report.exists():
            continue
        for case in ET.parse(report).iter("testcase"):
            path = case.get("classname", "").replace(".", "/") + ".py"
            times.append((float(case.get("time", 0)), f"{path}::{case.get('name')}"))
    times.sort(reverse=True)
    print(f"\n=== slowest {n} tests of both phases (setup + call + teardown) ===")
    for seconds, name in times[:n]:
        print(f"{seconds:8.2f}s  {name}")


if __name__ == "__main__":
    sys.exit(main())
