"""The `chute` command: worker, status, dlq, send, demo."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import click
import msgspec

from .app import App
from .brokers import redact_url
from .errors import AppImportError, ChuteError

if TYPE_CHECKING:
    from .ops import Ops


def load_app(spec: str) -> App:
    """Import `module:attribute` (attribute defaults to `app`) from the current folder or PYTHONPATH."""
    module_name, _, attr = spec.partition(":")
    attr = attr or "app"
    if not module_name:
        raise AppImportError(f"{spec!r} is not module:attribute (for example myproject.tasks:app)")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppImportError(f"cannot import {module_name!r} for {spec!r}: no module named {exc.name!r}; run "
                                 "from the folder that contains it, or add that folder to PYTHONPATH") from None
        raise AppImportError(f"importing {module_name!r} failed: {exc}") from exc
    except ChuteError:
        raise
    except Exception as exc:
        raise AppImportError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise AppImportError(f"module {module_name!r} has no attribute {attr!r} (looked for {spec!r})") from None
    if not isinstance(app, App):
        raise AppImportError(f"{module_name}:{attr} is a {type(app).__name__}, not a chute.App")
    return app


def _open(app_spec: str | None, url: str | None) -> App:
    if app_spec:
        return load_app(app_spec)
    return App(url)


def _fail(exc: Exception) -> None:
    click.echo(f"Error: {exc}", err=True)
    sys.exit(2)


app_option = click.option("--app", "-A", "app_spec", envvar="CHUTE_APP", metavar="MODULE:APP",
                          help="The App to use (or set CHUTE_APP).")
url_option = click.option("--url", envvar="CHUTE_URL", metavar="URL",
                          help="Broker URL when no --app is given (default $CHUTE_URL or sqlite:///chute.db).")


@click.group()
@click.version_option(package_name="chute")
def main() -> None:
    """chute: background tasks and durable queues."""


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
    from .logs import setup

    setup(log_level, "json" if log_format == "json" else "text")
    try:
        app = load_app(app_spec)
    except ChuteError as exc:
        _fail(exc)
    if processes > 1:
        from .worker.supervisor import supervise

        args = [app_spec, "-c", str(concurrency), "--grace", str(grace), "--log-level", log_level,
                "--log-format", log_format] + (["--no-events"] if no_events else [])
        if queues:
            args += ["-q", queues]
        if prefetch:
            args += ["--prefetch", str(prefetch)]
        sys.exit(supervise(args, processes, grace))
    from .worker import Worker

    try:
        w = Worker(app, queues.split(",") if queues else None, concurrency=concurrency, prefetch=prefetch,
                   grace=grace, events=not no_events)
    except (ChuteError, ValueError) as exc:
        _fail(exc)
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
    from .logs import setup

    setup(log_level, "json" if log_format == "json" else "text")
    try:
        app = load_app(app_spec)
    except ChuteError as exc:
        _fail(exc)
    from .scheduler import Scheduler

    s = Scheduler(app, lease=lease, catch_up=catch_up)
    click.echo(f"chute scheduler {s.id} · {redact_url(app.url)} · {len(app.schedules)} periodic task(s)", err=True)
    s.install_signal_handlers()
    s.run()


def _ops(app: App) -> Ops:
    from .ops import Ops

    return Ops(app)


def status_data(app: App) -> dict[str, Any]:
    """The numbers `chute status` shows, as plain data (the operations API's Status)."""
    data: dict[str, Any] = msgspec.to_builtins(_ops(app).status())
    return data


def print_status(app: App, ops: Ops | None = None) -> None:
    from rich.console import Console

    from .ops.terminal import status_view

    Console().print(status_view((ops or _ops(app)).status()))


def _watch(ops: Ops, interval: float) -> None:
    from rich.console import Console, RenderableType
    from rich.live import Live
    from rich.text import Text

    from .ops.terminal import status_view

    def view() -> RenderableType:
        try:
            return status_view(ops.status())
        except ChuteError as exc:  # keep watching: the broker may come back
            return Text(f"{time.strftime('%H:%M:%S')} {exc}", style="red")

    try:
        with Live(view(), console=Console(), auto_refresh=False) as live:
            while True:
                time.sleep(interval)  # a display refresh period, not a wait for work
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        pass


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
    from .logs import setup

    setup(log_level, "json" if log_format == "json" else "text")
    try:
        import uvicorn

        from .dashboard import Credentials, create_app
        from .dashboard.security import is_loopback
    except ImportError as exc:
        _fail(ChuteError(f"the dashboard needs its extra: pip install 'chute[dashboard]' ({exc})"))
    try:
        credentials = Credentials.from_env()
        if not credentials.enabled and not is_loopback(host):
            raise ChuteError(f"refusing to serve the dashboard on {host} without authentication: set "
                             "CHUTE_DASHBOARD_TOKEN (or CHUTE_DASHBOARD_USER and CHUTE_DASHBOARD_PASSWORD), or "
                             "listen on 127.0.0.1")
        app = load_app(app_spec)
    except ChuteError as exc:
        _fail(exc)
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
@app_option
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--watch", "-w", is_flag=True, help="Refresh live until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes with --watch.")
def status(app_spec: str | None, url: str | None, as_json: bool, watch: bool, interval: float) -> None:
    """Queues (ready, in flight, delayed, dead), the last hour's outcomes and live workers."""
    try:
        app = _open(app_spec, url)
        if as_json:
            click.echo(json.dumps(status_data(app), indent=2))
        elif watch:
            _watch(_ops(app), max(0.1, interval))
        else:
            print_status(app)
    except ChuteError as exc:
        _fail(exc)


@main.group()
def dlq() -> None:
    """Inspect, replay and purge dead-lettered messages."""


@dlq.command("list")
@app_option
@url_option
@click.option("--queue", "-q", help="Only this queue.")
@click.option("--task", "-t", "task_name", help="Only messages of this task.")
@click.option("--search", "-s", help="Only messages whose id or reason contains this text.")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def dlq_list(app_spec: str | None, url: str | None, queue: str | None, task_name: str | None, search: str | None,
             limit: int, as_json: bool) -> None:
    """List dead-lettered messages, oldest first (arguments and reasons with secrets masked)."""
    try:
        rows = _ops(_open(app_spec, url)).dead_letters(queue, task_name, search, limit)
    except ChuteError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(rows), indent=2))
        return
    from rich.console import Console

    from .ops.terminal import dead_letter_table

    Console().print(dead_letter_table(rows, queue))


@dlq.command("show")
@app_option
@url_option
@click.argument("message_id")
def dlq_show(app_spec: str | None, url: str | None, message_id: str) -> None:
    """Show one dead-lettered message with its error and traceback."""
    try:
        found = _ops(_open(app_spec, url)).dead_letter(message_id)
    except ChuteError as exc:
        _fail(exc)
    if found is None:
        _fail(ChuteError(f"no dead-lettered message with id {message_id!r}"))
    assert found is not None
    data: dict[str, Any] = msgspec.to_builtins(found)
    error = data.pop("error", None)
    tb = ""
    if error:
        tb = error.pop("traceback", "")
        data["error"] = error
    click.echo(json.dumps(data, indent=2))
    if tb:
        click.echo("\n" + tb.rstrip())


def _targets(ids: tuple[str, ...], all_: bool, queue: str | None, verb: str) -> list[str] | None:
    if not ids and not all_ and not queue:
        _fail(ChuteError(f"name message ids to {verb}, or use --queue Q or --all"))
    return list(ids) if ids else None


@dlq.command("replay")
@app_option
@url_option
@click.argument("ids", nargs=-1)
@click.option("--queue", "-q", help="Only this queue.")
@click.option("--all", "all_", is_flag=True, help="Every dead-lettered message.")
def dlq_replay(app_spec: str | None, url: str | None, ids: tuple[str, ...], queue: str | None, all_: bool) -> None:
    """Send dead-lettered messages back to their queues for one more attempt."""
    targets = _targets(ids, all_, queue, "replay")
    try:
        n = _ops(_open(app_spec, url)).replay(targets, queue, all_).count
    except ChuteError as exc:
        _fail(exc)
    click.echo(f"replayed {n} message(s)")


@dlq.command("purge")
@app_option
@url_option
@click.argument("ids", nargs=-1)
@click.option("--queue", "-q", help="Only this queue.")
@click.option("--all", "all_", is_flag=True, help="Every dead-lettered message.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(app_spec: str | None, url: str | None, ids: tuple[str, ...], queue: str | None, all_: bool,
              yes: bool) -> None:
    """Delete dead-lettered messages for good."""
    targets = _targets(ids, all_, queue, "purge")
    if not yes:
        what = f"{len(ids)} message(s)" if ids else f"every dead letter{' in ' + queue if queue else ''}"
        click.confirm(f"Delete {what} for good?", abort=True)
    try:
        n = _ops(_open(app_spec, url)).purge(targets, queue, all_).count
    except ChuteError as exc:
        _fail(exc)
    click.echo(f"purged {n} message(s)")


@main.command()
@app_option
@url_option
@click.argument("task_name")
@click.option("--args", "args_json", default="[]", help="JSON array of positional arguments.")
@click.option("--kwargs", "kwargs_json", default="{}", help="JSON object of keyword arguments.")
@click.option("--queue", "-q", help="Queue (default: the task's own, or 'default').")
@click.option("--countdown", type=float, help="Run no sooner than this many seconds from now.")
@click.option("--priority", type=click.IntRange(0, 9))
@click.option("--wait", "wait_s", type=float, help="Wait up to this many seconds and print the result.")
def send(app_spec: str | None, url: str | None, task_name: str, args_json: str, kwargs_json: str,
         queue: str | None, countdown: float | None, priority: int | None, wait_s: float | None) -> None:
    """Queue TASK_NAME with JSON arguments and print its id."""
    try:
        args, kwargs = json.loads(args_json), json.loads(kwargs_json)
    except json.JSONDecodeError as exc:
        _fail(ChuteError(f"--args/--kwargs must be JSON: {exc}"))
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        _fail(ChuteError("--args must be a JSON array and --kwargs a JSON object"))
    try:
        app = _open(app_spec, url)
        if task_name not in app.tasks:  # queue by name for a worker that knows it
            app.task(name=task_name, queue=queue)(_unknown_here)
        options = {k: v for k, v in (("queue", queue), ("countdown", countdown), ("priority", priority))
                   if v is not None}
        result = app.send_task(task_name, args, kwargs, **options)
        click.echo(result.id)
        if wait_s is not None:
            click.echo(json.dumps(result.get(timeout=wait_s)))
    except (ChuteError, ValueError, TypeError) as exc:
        _fail(exc)


def _unknown_here(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("this task is only known to workers")


@main.command()
@click.option("--tasks", "-n", default=3000, show_default=True, help="How many tasks to enqueue.")
@click.option("--processes", "-p", default=2, show_default=True, help="Worker processes to start.")
@click.option("--dir", "workdir", default=".demo", show_default=True, help="Folder for the demo's database.")
def demo(tasks: int, processes: int, workdir: str) -> None:
    """A real end-to-end run on the embedded broker: workers, thousands of tasks, retries, DLQ, replay."""
    from .demo import run_demo

    sys.exit(run_demo(tasks, processes, workdir))


if __name__ == "__main__":
    main()
