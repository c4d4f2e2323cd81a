"""Logging set-up for chute's processes: readable text by default, one JSON object a line on request."""

from __future__ import annotations

import json
import logging
import sys
from typing import Literal

FIELDS = ("task_id", "task", "queue", "attempt", "duration_ms", "state", "error")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message, and a task outcome's fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {"time": round(record.created, 6), "level": record.levelname,
                                   "logger": record.name, "pid": record.process, "message": record.getMessage()}
        for key in FIELDS:
            value = record.__dict__.get(key)
            if value not in (None, ""):
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def setup(level: str, fmt: Literal["text", "json"] = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
