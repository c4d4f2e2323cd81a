"""What every broker used to write for itself, written once: the idempotency scope, topic fan-out and
unrouted counting, driver-error translation (sync and async) and URL options."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import msgspec

from ..errors import ChuteError, InvalidURL
from ..results import ResultRecord
from ..states import State
from ..topics import group_queue, matches
from .base import Outgoing

F = TypeVar("F", bound=Callable[..., Any])


# -- idempotency ------------------------------------------------------------------------------------
def idempotency_slot(queue: str, key: str) -> str:
    """The name a message's idempotency key is claimed under: the key is scoped to its queue.

    The same key sent to two queues makes two messages (docs/protocol.md). Per queue, because a key
    that lives beside its queue can be checked in the same atomic step as the publish on every broker,
    Redis Cluster included, where a global key would sit in another hash slot. The length prefix keeps
    any queue name and key apart (`a:b` + `c` is not `a` + `b:c`).
    """
    return f"{len(queue)}:{queue}:{key}"


# -- QUEUED marks ---------------------------------------------------------------------------------
QUEUED_TTL = 86_400.0  # seconds a QUEUED mark lasts if no worker writes the next state


def queued_marks(messages: Sequence[Outgoing]) -> list[ResultRecord]:
    """QUEUED records for tasks about to be published, for a store that cannot see their messages: written
    before the messages exist, so no worker's STARTED can come first. Events have no results."""
    now = time.time()
    return [ResultRecord(m.id, State.QUEUED, queue=m.queue, updated_at=now, expires_at=now + QUEUED_TTL)
            for m in messages if m.topic is None]


# -- topics -----------------------------------------------------------------------------------------
UNROUTED = "chute.unrouted:"  # + topic: events published to a topic no group subscribes to


def unrouted_key(topic: str) -> str:
    """The store's meta key counting the events of `topic` that no group took."""
    return UNROUTED + topic


def fan_out(messages: Sequence[Outgoing], subscriptions: Iterable[tuple[str, str]]
            ) -> tuple[list[Outgoing], list[int | str], list[str]]:
    """Expand events into one copy per subscribed group (`<id>:<group>`, on the group's queue).

    `subscriptions` are (group, pattern) pairs. Returns the messages to store, the plan (per original
    message: the index of its copy in the first list, or an event's own id) and the topics nobody
    subscribes to, one entry per event: they are counted (`unrouted_key`), not an error.
    """
    subs = list(subscriptions)
    out: list[Outgoing] = []
    plan: list[int | str] = []
    unrouted: list[str] = []
    for m in messages:
        if m.topic is None:
            plan.append(len(out))
            out.append(m)
            continue
        plan.append(m.id)
        targets = sorted({g for g, p in subs if matches(p, m.topic)})
        if not targets:
            unrouted.append(m.topic)
        out += [msgspec.structs.replace(m, id=f"{m.id}:{g}", queue=group_queue(g), topic=None, idempotency_key=None)
                for g in targets]
    return out, plan, unrouted


def ids_of(plan: Sequence[int | str], stored: Sequence[str]) -> list[str]:
    """The id each original message is known by, from a fan-out plan and the ids of what was stored."""
    return [p if isinstance(p, str) else stored[p] for p in plan]


# -- a broker that is its own store --------------------------------------------------------------
class KeepsOwnBooks:
    """The Queue methods of a broker that keeps its own bookkeeping and counts what is in flight on the
    server (memory, SQLite, Redis): nothing to bind, nothing a connection holds, nothing prefetched."""

    def bind(self, store: object) -> None:
        """Nothing: its bookkeeping is its own."""

    def beat(self, worker_id: str) -> tuple[dict[str, int], dict[str, int]]:
        """Nothing held by a connection: `stats` counts it."""
        return {}, {}

    def stopped(self, worker_id: str) -> None:
        """Nothing to give back: it prefetches nothing."""


# -- driver errors ----------------------------------------------------------------------------------
Translate = Callable[[BaseException, str], ChuteError | None]


def translated(translate: Translate) -> Callable[[F], F]:
    """A decorator for a broker's methods, sync or `async def`: a driver error leaves as the ChuteError
    `translate(exc, url)` makes of it (BrokerUnavailable for an outage, BrokerError for the rest); an
    exception it returns None for passes unchanged. `url` is the instance's masked `url`."""

    def decorate(fn: F) -> F:
        def convert(self: Any, exc: BaseException) -> ChuteError | None:
            return None if isinstance(exc, ChuteError) else translate(exc, getattr(self, "url", "?"))

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def call_async(self: Any, *args: Any, **kwargs: Any) -> Any:
                try:
                    return await fn(self, *args, **kwargs)
                except Exception as exc:
                    err = convert(self, exc)
                    if err is None:
                        raise
                    raise err from None

            return call_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(self, *args, **kwargs)
            except Exception as exc:
                err = convert(self, exc)
                if err is None:
                    raise
                raise err from None

        return call  # type: ignore[return-value]

    return decorate


# -- URL options ------------------------------------------------------------------------------------
def url_options(url: str, known: Mapping[str, Callable[[str], Any]], *, shown: str,
                passthrough: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
    """A URL's query options, each parsed by its parser in `known` (a ValueError becomes InvalidURL naming
    the option). Unknown options are an InvalidURL listing the known ones, unless `passthrough`: then they
    are returned apart, as given, for the driver (pika's own options). `shown` is the masked URL."""
    given = dict(parse_qsl(urlsplit(url).query))  # a blank value means the default, as before
    parsed: dict[str, Any] = {}
    rest: dict[str, str] = {}
    for name, text in given.items():
        parse = known.get(name)
        if parse is None:
            rest[name] = text
            continue
        try:
            parsed[name] = parse(text)
        except ValueError as exc:
            raise InvalidURL(f"{shown!r}: option {name}={text!r}: {exc}") from None
    if rest and not passthrough:
        raise InvalidURL(f"{shown!r}: unknown option(s) {', '.join(sorted(rest))}; known: "
                         f"{', '.join(sorted(known))}")
    return parsed, rest


def choice(*allowed: str) -> Callable[[str], str]:
    """A URL option parser that accepts one of `allowed`."""

    def parse(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"use {' or '.join(repr(a) for a in allowed)}")
        return text

    return parse

