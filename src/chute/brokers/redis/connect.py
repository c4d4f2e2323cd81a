"""How the Redis broker reaches its server: the URL and its options, redis-py's connection settings
(sync and asyncio alike), and redis-py's errors as chute's."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from ...errors import BrokerError, BrokerUnavailable, ChuteError, InvalidURL
from ..shared import translated, url_options

DEFAULT_PREFIX = "chute"


def translate(exc: BaseException, url: str) -> ChuteError | None:
    """A redis-py error as chute's (for `shared.translated`); None for anything else."""
    if isinstance(exc, redis.AuthenticationError):  # a ConnectionError to redis-py, but no outage
        return BrokerError(f"Redis at {url} refused the credentials ({exc}); check the URL's user and password")
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return BrokerUnavailable(f"Redis at {url} is unreachable ({exc}); nothing was done, try again when it "
                                 "is back")
    if isinstance(exc, redis.RedisError):
        return BrokerError(f"Redis at {url}: {exc}")
    return None


guarded = translated(translate)  # every method that talks to the server wears it


def _prefix(text: str) -> str:
    if not text or any(c in text for c in "{}: "):
        raise ValueError("prefix must be a non-empty name without braces, colons or spaces")
    return text


def parse(url: str, shown: str) -> tuple[str, str]:
    """`redis://[:password@]host:port/db[?prefix=NAME]` (or rediss:// for TLS) as (prefix, the URL for
    redis-py: chute's own options taken out). `shown` is the masked URL, for errors."""
    options, _ = url_options(url, {"prefix": _prefix}, shown=shown)
    return options.get("prefix", DEFAULT_PREFIX), urlunsplit(urlsplit(url)._replace(query=""))


def driver_identity() -> dict[str, Any]:
    """The connection option that names redis-py's version for CLIENT SETINFO. Left out, redis-py
    reads it from the installed packages' metadata on the first connection of each process
    (importlib.metadata: 4-10 ms, a third of a producer's start after its imports)."""
    try:
        from redis.driver_info import DriverInfo  # newer redis-py, where `lib_version` is deprecated
    except ImportError:
        return {"lib_version": redis.__version__}
    return {"driver_info": DriverInfo(lib_version=redis.__version__)}


def pool_options() -> dict[str, Any]:
    """Connection settings of both drivers' pools (each adds its own `retry`); the socket timeout is well
    past a blocking call's chunk (`plan.BLOCK_CHUNK`)."""
    return dict(socket_connect_timeout=2.0, socket_timeout=3.0, socket_keepalive=True, health_check_interval=30,
                protocol=2, **driver_identity())


RETRIES = 3  # refused or reset connections are retried briefly; a timeout is not (it would hang past 5 s)


def backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=0.5, base=0.05)


def open_pool(dsn: str, shown: str) -> redis.ConnectionPool:
    """redis-py's pool for the sync side (the asyncio side opens one of its own per event loop)."""
    try:
        return redis.ConnectionPool.from_url(dsn, **pool_options(), retry=Retry(
            backoff(), RETRIES, supported_errors=(redis.ConnectionError,)))
    except ValueError as exc:
        raise InvalidURL(f"{shown!r}: {exc}") from None
