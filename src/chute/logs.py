"""Logging set-up for chute's processes: readable text by default, one JSON object a line on request.

A task outcome (logger `chute.task`) is one line with the task's id, name, queue, attempt,
duration, state and error; in text format those fields follow the message as `key=value`. Every
line goes through the Redactor first: passwords in URLs and secret `name=value` pairs never reach
the log.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Literal

from .redact import Redactor

FIELDS = ("task_id", "task", "queue", "attempt", "duration_ms", "state", "error")


class RedactingFilter(logging.Filter):
    """Masks secrets in a record's message and error field before any handler formats it."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redactor.text(message)
        if clean != message:
            record.msg, record.args = clean, None
        error = record.__dict__.get("error")
        if isinstance(error, str) and error:
            record.error = self.redactor.text(error)
        return True


class TextFormatter(logging.Formatter):
    """`time level logger[pid] message`, then a task outcome's fields as key=value."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s")
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if record.__dict__.get("task_id"):
            line += " " + " ".join(f"{k}={record.__dict__[k]}" for k in FIELDS[:5] if k in record.__dict__)
        return line

    def formatException(self, ei: logging._SysExcInfoType) -> str:  # noqa: N802 (logging's name)
        return self.redactor.text(super().formatException(ei))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message, and a task outcome's fields."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {"time": round(record.created, 6), "level": record.levelname,
                                   "logger": record.name, "pid": record.process, "message": record.getMessage()}
        for key in FIELDS:
            value = record.__dict__.get(key)
            if value not in (None, ""):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.redactor.text(self.formatException(record.exc_info))
        return json.dumps(data, ensure_ascii=False)


def setup(level: str, fmt: Literal["text", "json"] = "text", redactor: Redactor | None = None) -> None:
    """Send every logger's records to stderr in `fmt`, secrets masked (patterns: chute.redact)."""
    redactor = redactor or Redactor.from_env()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redactor) if fmt == "json" else TextFormatter(redactor))
    handler.addFilter(RedactingFilter(redactor))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
