"""The commands that look and send: status (once, --json, --watch) and send."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import click
import msgspec

from ..app import App
from ..errors import ChuteError
from ..ops.terminal import print_status
from .base import app_option, fail, main, open_app, ops_of, url_option

if TYPE_CHECKING:
    from ..ops import Ops


def status_data(app: App) -> dict[str, Any]:
    """The numbers `chute status` shows, as plain data (the operations API's Status)."""
    data: dict[str, Any] = msgspec.to_builtins(ops_of(app).status())
    return data


def _watch(ops: Ops, interval: float) -> None:
    from rich.console import Console, RenderableType
    from rich.live import Live
    from rich.text import Text

    from ..ops.terminal import status_view

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
@app_option
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--watch", "-w", is_flag=True, help="Refresh live until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, help="Seconds between refreshes with --watch.")
def status(app_spec: str | None, url: str | None, as_json: bool, watch: bool, interval: float) -> None:
    """Queues (ready, in flight, delayed, dead), the last hour's outcomes and live workers."""
    try:
        app = open_app(app_spec, url)
        if as_json:
            click.echo(json.dumps(status_data(app), indent=2))
        elif watch:
            _watch(ops_of(app), max(0.1, interval))
        else:
            print_status(app)
    except ChuteError as exc:
        fail(exc)


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
        fail(ChuteError(f"--args/--kwargs must be JSON: {exc}"))
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        fail(ChuteError("--args must be a JSON array and --kwargs a JSON object"))
    try:
        app = open_app(app_spec, url)
        if task_name not in app.tasks:  # queue by name for a worker that knows it
            app.task(name=task_name, queue=queue)(_unknown_here)
        options = {k: v for k, v in (("queue", queue), ("countdown", countdown), ("priority", priority))
                   if v is not None}
        result = app.send_task(task_name, args, kwargs, **options)
        click.echo(result.id)
        if wait_s is not None:
            click.echo(json.dumps(result.get(timeout=wait_s)))
    except (ChuteError, ValueError, TypeError) as exc:
        fail(exc)


def _unknown_here(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("this task is only known to workers")
