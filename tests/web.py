"""Helpers for the web-framework and async-client tests: broker URLs, servers on free ports, HTTP calls."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import broker_url
from helpers import ROOT, TESTS, free_port, wait_for

__all__ = ["WEB_BROKERS", "broker", "call", "env", "free_port", "process", "worker"]

WEB_BROKERS = ("sqlite", "redis")  # what the web-framework tests run on: the embedded broker and a server


@contextmanager
def broker(kind: str, tmp_path: Path) -> Iterator[str]:
    """A fresh broker URL (tests/conftest.py's factory) in `tmp_path`, made if needed; cleaned up after."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    with broker_url(kind, tmp_path) as url:
        yield url


def env(url: str, **extra: str) -> dict[str, str]:
    """The environment of a server or worker process: CHUTE_URL, and ROOT on the path (examples.*)."""
    e = dict(os.environ, CHUTE_URL=url, PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS), str(ROOT / "src")]))
    e.update(extra)
    return e


@contextmanager
def process(cmd: list[str], url: str, *, cwd: Path = ROOT, port: int | None = None,
            **extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """A child process (a server when `port` is given: returns once it accepts connections); stopped after."""
    proc = subprocess.Popen(cmd, env=env(url, **extra), cwd=str(cwd))
    try:
        if port is not None:
            wait_for(lambda: proc.poll() is not None or _accepts(port), timeout=30, what=f"{cmd[:3]} on port {port}")
            assert proc.poll() is None, f"{cmd} exited with {proc.returncode}"
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def worker(spec: str, url: str, *args: str, cwd: Path = ROOT, **extra: str) -> Any:
    """A real `chute worker` process for `spec` (a context manager)."""
    return process([sys.executable, "-m", "chute", "worker", spec, "--log-level", "ERROR", *args], url, cwd=cwd,
                   **extra)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def call(method: str, url: str, body: Any = None, timeout: float = 10) -> tuple[int, Any, float]:
    """One HTTP request with a JSON body; (status, decoded JSON or text, seconds it took)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
        exc.close()
    took = time.perf_counter() - t
    try:
        return status, json.loads(raw), took
    except ValueError:
        return status, raw.decode(errors="replace"), took
