"""`python manage.py chute_worker [-c 8] [-p 1] [-q queues]`: the chute worker for this Django project."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):  # type: ignore[misc]  # django ships no type hints
    help = "Run a chute worker for this project's tasks (django.tasks with the chute backend, and chute tasks)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("-q", "--queues", help="Comma-separated queues (default: every TASKS queue)")
        parser.add_argument("-c", "--concurrency", type=int, default=8, help="Threads per worker process")
        parser.add_argument("-p", "--processes", type=int, default=1, help="Worker processes")
        parser.add_argument("--grace", type=float, default=30.0, help="Seconds to finish running tasks on SIGTERM")
        parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    def handle(self, *args: Any, **options: Any) -> None:
        from django.tasks import task_backends

        from chute.cli import main
        from chute.integrations.django.backend import ChuteBackend

        queues = options["queues"] or ",".join(sorted(
            {q for b in task_backends.all() if isinstance(b, ChuteBackend) for q in b.queues} | {"default"}))
        main([
            "worker", "chute.integrations.django.worker:app", "-q", queues, "-c", str(options["concurrency"]),
            "-p", str(options["processes"]), "--grace", str(options["grace"]), "--log-level", options["log_level"],
        ], prog_name="manage.py chute_worker")
