"""The long-running commands: worker, scheduler, dashboard, and the demo."""

from __future__ import annotations

import sys

import click

from ..brokers import redact_url
from ..errors import ChuteError
from .base import app_option, fail, load_app, main

__all__ = ["app_option"]


@main.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option("-q", "--queues", help="Comma-separated queues (default: every queue the app's tasks use).")
@click.option("-c", "--concurrency", default=8, show_default=True, help="Threads per worker process.")
@click.option("-p", "--processes", default=1, show_default=True, help="Worker processes.")
@click.option("--prefetch", type=int, help="Messages held per process (default 4 × concurrency, at least 16).")
@click.option("--grace", default=30.0, show_default=True, help="Seconds to finish running tasks on SIGTERM.")
@click.option("--log-level", default="WARNING", show_default=True, help="INFO adds one line per finished task.",
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]),
              help="json: one object a line, with task_id, task, queue, attempt, duration_ms, state.")
@click.option("--no-events", is_flag=True, help="Do not record lifecycle events for dashboards.")
def worker(app_spec: str, queues: str | None, concurrency: int, processes: int, prefetch: int | None,
           grace: float, log_level: str, log_format: str, no_events: bool) -> None:
    """Run a worker for MODULE:APP until SIGTERM or Ctrl-C."""
    from ..logs import setup

    setup(log_level, "json" if log_format == "json" else "text")
    try:
        app = load_app(app_spec)
    except ChuteError as exc:
        fail(exc)
    if processes > 1:
        from ..worker.supervisor import supervise

        args = [app_spec, "-c", str(concurrency), "--grace", str(grace), "--log-level", log_level,
                "--log-format", log_format] + (["--no-events"] if no_events else [])
        if queues:
            args += ["-q", queues]
        if prefetch:
            args += ["--prefetch", str(prefetch)]
        sys.exit(supervise(args, processes, grace))
    from ..worker import Worker

    try:
        w = Worker(app, queues.split(",") if queues else None, concurrency=concurrency, prefetch=prefetch,
                   grace=grace, events=not no_events)
    except (ChuteError, ValueError) as exc:
        fail(exc)
    click.echo(f"chute worker {w.id} · {redact_url(app.url)} · queues {','.join(w.queues)} · "
               f"{concurrency} threads · tasks: {len(app.tasks)}", err=True)
    w.install_signal_handlers()
    w.run()


@main.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option("--lease", default=10.0, show_default=True, help="Seconds a dead scheduler's lease lasts.")
@click.option("--catch-up", default=300.0, show_default=True,
              help="Seconds: slots missed by less (a takeover, clock skew) are all sent; older ones follow `missed`.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]))
def scheduler(app_spec: str, lease: float, catch_up: float, log_level: str, log_format: str) -> None:
    """Send MODULE:APP's periodic tasks; start several, exactly one is active."""
    from ..logs import setup

    setup(log_level, "json" if log_format == "json" else "text")
    try:
        app = load_app(app_spec)
    except ChuteError as exc:
        fail(exc)
    from ..scheduler import Scheduler

    s = Scheduler(app, lease=lease, catch_up=catch_up)
    click.echo(f"chute scheduler {s.id} · {redact_url(app.url)} · {len(app.schedules)} periodic task(s)", err=True)
    s.install_signal_handlers()
    s.run()



@main.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs CHUTE_DASHBOARD_TOKEN or USER+PASSWORD.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--refresh", default=2.0, show_default=True, help="Seconds between live updates.")
@click.option("--health-max-age", default=30.0, show_default=True,
              help="/health is 503 when no worker sent a heartbeat within this many seconds.")
@click.option("--redact", multiple=True, metavar="PATTERN",
              help="Also mask arguments named like this glob (default: *password*, *token*, *secret*, *key, …).")
@click.option("--allowed-origin", multiple=True, metavar="URL",
              help="Also accept POSTs from this origin (the public URL of a reverse proxy that rewrites Host).")
@click.option("--forwarded-allow-ips", default="127.0.0.1", show_default=True,
              help="Proxies whose X-Forwarded-For/Proto headers are trusted.")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.option("--log-format", default="text", show_default=True, type=click.Choice(["text", "json"]))
def dashboard(app_spec: str, host: str, port: int, refresh: float, health_max_age: float, redact: tuple[str, ...],
              allowed_origin: tuple[str, ...], forwarded_allow_ips: str, log_level: str, log_format: str) -> None:
    """Serve the web dashboard, JSON API, /metrics and /health for MODULE:APP."""
    from ..logs import setup

    setup(log_level, "json" if log_format == "json" else "text")
    try:
        import uvicorn

        from ..dashboard import Credentials, create_app
        from ..dashboard.security import is_loopback
    except ImportError as exc:
        fail(ChuteError(f"the dashboard needs its extra: pip install 'chute[dashboard]' ({exc})"))
    try:
        credentials = Credentials.from_env()
        if not credentials.enabled and not is_loopback(host):
            raise ChuteError(f"refusing to serve the dashboard on {host} without authentication: set "
                             "CHUTE_DASHBOARD_TOKEN (or CHUTE_DASHBOARD_USER and CHUTE_DASHBOARD_PASSWORD), or "
                             "listen on 127.0.0.1")
        app = load_app(app_spec)
    except ChuteError as exc:
        fail(exc)
    web = create_app(app, credentials=credentials, allowed_origins=allowed_origin, redact=redact,
                     health_max_age=health_max_age, refresh=refresh)
    click.echo(f"chute dashboard · {redact_url(app.url)} · http://{host}:{port}/ · "
               f"{'authentication on' if credentials.enabled else 'no authentication: localhost only'}", err=True)
    config = uvicorn.Config(web, host=host, port=port, log_config=None, log_level=log_level.lower(),
                            proxy_headers=True, forwarded_allow_ips=forwarded_allow_ips, server_header=False,
                            timeout_graceful_shutdown=3)
    try:
        uvicorn.Server(config).run()
    finally:
        app.close()



@main.command()
@click.option("--tasks", "-n", default=3000, show_default=True, help="How many tasks to enqueue.")
@click.option("--processes", "-p", default=2, show_default=True, help="Worker processes to start.")
@click.option("--dir", "workdir", default=".demo", show_default=True, help="Folder for the demo's database.")
def demo(tasks: int, processes: int, workdir: str) -> None:
    """A real end-to-end run on the embedded broker: workers, thousands of tasks, retries, DLQ, replay."""
    from ..demo import run_demo

    sys.exit(run_demo(tasks, processes, workdir))
