"""Brokers, picked by URL scheme: sqlite (default), memory, redis, amqp. Each is a Queue; all but RabbitMQ
are also a Store, and RabbitMQ's App keeps its store elsewhere (`open_store`)."""

from __future__ import annotations

import os
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from ..errors import InvalidURL
from .base import DeadLetter, Delivery, Features, Outgoing, Queue, QueueStats
from .pairing import Pairing
from .store import Store, WorkerInfo

__all__ = ["DeadLetter", "Delivery", "Features", "Outgoing", "Pairing", "Queue", "QueueStats", "Store", "WorkerInfo",
           "open_broker", "open_store", "redact_url", "DEFAULT_URL"]

DEFAULT_URL = "sqlite:///chute.db"
SCHEMES = ("sqlite", "memory", "redis", "rediss", "amqp", "amqps")


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, safe to print and log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def open_store(url: str) -> Store:
    """Open the store a URL names: the broker itself where it keeps results; for RabbitMQ, which keeps
    none, $CHUTE_RESULTS_URL, else a SQLite file per user, server and vhost (one machine)."""
    if not url.split("://", 1)[0].lower().startswith("amqp"):
        broker = open_broker(url)
        if not isinstance(broker, Store):
            raise InvalidURL(f"{redact_url(url)!r} cannot store results")
        return broker
    default = default_store_url(url)
    store = open_broker(default)
    if not isinstance(store, Store):
        raise InvalidURL(f"{redact_url(default)!r} (CHUTE_RESULTS_URL) cannot store results")
    return store


def default_store_url(url: str) -> str:
    """Where an App on a queue that keeps no results (RabbitMQ) keeps them by default."""
    env = os.environ.get("CHUTE_RESULTS_URL")
    if env:
        return env
    parts = urlsplit(url)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    folder = os.path.join(base, "chute")
    os.makedirs(folder, exist_ok=True)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    name = f"rabbitmq-{(parts.hostname or 'localhost').replace('/', '_')}-{port}-{quote(vhost, safe='')}.db"
    return f"sqlite:///{os.path.join(folder, name)}"


def open_broker(url: str) -> Queue:
    """Open the broker a URL names, or raise InvalidURL saying what is wrong with it."""
    if not isinstance(url, str) or "://" not in url:
        raise InvalidURL(f"{redact_url(str(url))!r} is not a broker URL; expected e.g. {DEFAULT_URL!r}, "
                         "'memory://', 'redis://127.0.0.1:6379/0' or 'amqp://guest:guest@127.0.0.1:5672/'")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        from .memory import MemoryBroker

        return MemoryBroker(url)
    if scheme == "sqlite":
        from .sqlite import SQLiteBroker

        return SQLiteBroker.from_url(url)
    if scheme in ("redis", "rediss"):
        try:
            from .redis import RedisBroker  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise InvalidURL(f"{redact_url(url)!r}: the Redis broker needs redis-py: pip install 'chute[redis]' "
                             f"({exc})") from None
        broker: Queue = RedisBroker.from_url(url)
        return broker
    if scheme in ("amqp", "amqps"):
        try:
            from .amqp import AMQPBroker
        except ImportError as exc:
            raise InvalidURL(f"{redact_url(url)!r}: the RabbitMQ broker needs pika: pip install 'chute[amqp]' "
                             f"({exc})") from None
        return AMQPBroker.from_url(url)
    raise InvalidURL(f"{redact_url(url)!r}: unknown broker scheme {scheme!r}; expected one of "
                     f"{', '.join(SCHEMES[:3])} or amqp")
