"""The examples under examples/ run as documented."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from helpers import ROOT, env_for, stop


def test_quickstart_example(tmp_path: Path) -> None:
    folder = tmp_path / "quickstart"
    shutil.copytree(ROOT / "examples" / "quickstart", folder)
    env = env_for("sqlite:///chute.db")
    env.pop("CHUTE_URL")  # the example uses the default URL, relative to its folder
    worker = subprocess.Popen([sys.executable, "-m", "chute", "worker", "tasks:app", "--log-level", "ERROR"],
                              cwd=folder, env=env)
    try:
        out = subprocess.run([sys.executable, "client.py"], cwd=folder, env=env, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert [line.split(" -> ")[1] for line in lines[1:6]] == [f"report for {u} sent" for u in range(1, 6)]
        assert lines[6].endswith("-> dead (mail server refused user 7)")
        assert (folder / "chute.db").exists()
    finally:
        stop(worker)


def test_order_pipeline_example(tmp_path: Path) -> None:
    folder = tmp_path / "order_pipeline"
    shutil.copytree(ROOT / "examples" / "order_pipeline", folder)
    env = env_for("sqlite:///chute.db")
    env.pop("CHUTE_URL")
    worker = subprocess.Popen([sys.executable, "-m", "chute", "worker", "pipeline:app", "--log-level", "ERROR"],
                              cwd=folder, env=env)
    try:
        out = subprocess.run([sys.executable, "pipeline.py", "7"], cwd=folder, env=env, capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().endswith("result: closed order 7 · succeeded")
        succeeded = [line.split()[0] for line in out.stdout.splitlines() if line.strip().endswith("succeeded")
                     and not line.startswith("result")]
        assert succeeded[0] == "validate" and succeeded[-1] == "close" and len(set(succeeded)) == 6
    finally:
        stop(worker)


def test_pubsub_example(tmp_path: Path) -> None:
    folder = tmp_path / "pubsub"
    shutil.copytree(ROOT / "examples" / "pubsub", folder)
    env = env_for("sqlite:///chute.db")
    env.pop("CHUTE_URL")
    subprocess.run([sys.executable, "-c", "import shop; shop.app.declare_subscribers()"], cwd=folder, env=env,
                   check=True)
    worker = subprocess.Popen([sys.executable, "-m", "chute", "worker", "shop:app", "--log-level", "ERROR"],
                              cwd=folder, env=env)
    try:
        out = subprocess.run([sys.executable, "-c", "import shop; shop.main()"], cwd=folder, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
    finally:
        stop(worker)
    assert sorted(out.stdout.splitlines()) == [
        "billing -> invoiced order 1 for 30 EUR", "billing -> invoiced order 1 for 30 EUR",
        "email -> emailed ada@example.com: order.created"]
