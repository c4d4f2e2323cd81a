"""`chute dlq`: list, show, replay and purge dead-lettered messages."""

from __future__ import annotations

import json
from typing import Any

import click
import msgspec

from ..errors import ChuteError
from .base import app_option, fail, main, open_app, ops_of, url_option


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
        rows = ops_of(open_app(app_spec, url)).dead_letters(queue, task_name, search, limit)
    except ChuteError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps(msgspec.to_builtins(rows), indent=2))
        return
    from rich.console import Console

    from ..ops.terminal import dead_letter_table

    Console().print(dead_letter_table(rows, queue))


@dlq.command("show")
@app_option
@url_option
@click.argument("message_id")
def dlq_show(app_spec: str | None, url: str | None, message_id: str) -> None:
    """Show one dead-lettered message with its error and traceback."""
    try:
        found = ops_of(open_app(app_spec, url)).dead_letter(message_id)
    except ChuteError as exc:
        fail(exc)
    if found is None:
        fail(ChuteError(f"no dead-lettered message with id {message_id!r}"))
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
        fail(ChuteError(f"name message ids to {verb}, or use --queue Q or --all"))
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
        n = ops_of(open_app(app_spec, url)).replay(targets, queue, all_).count
    except ChuteError as exc:
        fail(exc)
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
        n = ops_of(open_app(app_spec, url)).purge(targets, queue, all_).count
    except ChuteError as exc:
        fail(exc)
    click.echo(f"purged {n} message(s)")
