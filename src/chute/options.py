"""What a task and a queue are declared with, and the durations, instants and rates they accept, checked once."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from .errors import ConfigurationError

Seconds = float | int | timedelta
When = float | int | datetime


def seconds(value: Seconds | None, what: str) -> float | None:
    """Normalise a duration given as seconds or a timedelta."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be seconds (int or float) or a timedelta, not {type(value).__name__}")
    return float(value)


def timestamp(value: When | None, what: str) -> float | None:
    """Normalise a point in time given as unix seconds or a timezone-aware datetime."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{what}={value!r} is a naive datetime; give it a timezone "
                             "(datetime.now(timezone.utc) + ...), so it means one instant everywhere")
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a datetime or unix seconds, not {type(value).__name__}")
    return float(value)


class TaskOptions(msgspec.Struct, frozen=True):
    """A task's declared behaviour; every field has the safe default."""

    queue: str = "default"
    retries: int = 3
    retry_backoff: float = 1.0  # seconds before the first retry; doubles each attempt
    retry_jitter: float = 0.2  # each delay varies by up to ±this fraction
    max_backoff: float = 3600.0
    time_limit: float | None = None
    priority: int = 0
    store_result: bool = True
    dead_letter: bool = True  # after the last retry: dead-letter (DEAD) or just record FAILED
    rate_limit: float | None = None  # starts per second, across every worker


class QueueLimit:
    """A queue's maximum length and what happens at it."""

    def __init__(self, max_length: int, on_full: str, block_timeout: float) -> None:
        self.max_length, self.on_full, self.block_timeout = max_length, on_full, block_timeout


def parse_rate(rate: str | float | None) -> float | None:
    """"100/s", "30/m", "500/h" or a number per second, as starts per second."""
    if rate is None:
        return None
    if isinstance(rate, (int, float)) and not isinstance(rate, bool):
        value, per = float(rate), 1.0
    elif isinstance(rate, str) and rate.count("/") == 1:
        count, unit = rate.split("/")
        units = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}
        try:
            value, per = float(count), units[unit.strip()]
        except (ValueError, KeyError):
            raise ConfigurationError(f"rate_limit={rate!r}: write it like '100/s', '30/m' or '500/h'") from None
    else:
        raise ConfigurationError(f"rate_limit={rate!r}: write it like '100/s', '30/m' or '500/h'")
    if not value > 0:
        raise ConfigurationError(f"rate_limit={rate!r} must be positive")
    return value / per


def check_priority(priority: object) -> None:
    """Refuse a priority that is not an int from 0 to 9."""
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise ValueError(f"priority must be an int from 0 (lowest) to 9 (highest), not {priority!r}")
