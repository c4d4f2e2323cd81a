"""What becomes of a message once its task ran, or could not run: one pure decision.

`decide` maps every case the worker meets to one Settlement, and the record it writes; it does no
I/O, so each case is tested alone (tests/test_settle.py). `Settler` (settler.py) carries them out.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import msgspec

from ..brokers.base import Delivery
from ..envelope import Codec
from ..errors import ChuteError, SerializationError, TaskCancelled, WorkerLost
from ..errors import Retry as RetryError
from ..results import ResultRecord
from ..states import State
from .job import Job, Outcome, Reject, error_info, record_of


class Dropped(msgspec.Struct):
    """A claimed message that is not run: done already (no job), or cancelled before it started."""

    delivery: Delivery
    job: Job | None = None


class _Settlement(msgspec.Struct, frozen=True, kw_only=True):
    delivery: Delivery
    record: ResultRecord | None = None  # what the result store learns; None: nothing
    job: Job | None = None  # None for a message that never became a job (a reject, a duplicate)
    error: str = ""  # what went wrong, as events and logs say it ("Type: message", or a reject's reason)
    duration: float = 0.0


class Ack(_Settlement, frozen=True, kw_only=True):
    """Acknowledge a success (or a message with nothing to do); its record goes first or with the ack."""

    value: Any = None  # the task's return value, for success hooks


class Retry(_Settlement, frozen=True, kw_only=True):
    """Store the RETRYING record, then put `body` (the next attempt) back, due in `delay` seconds."""

    body: bytes
    delay: float


class DeadLetter(_Settlement, frozen=True, kw_only=True):
    """Move the message to the dead-letter queue, then store its DEAD record: whoever reads DEAD finds
    the message there, ready to replay."""

    reason: str


class Fail(_Settlement, frozen=True, kw_only=True):
    """Store the FAILED record, then acknowledge: out of retries (dead_letter=False), an unstorable
    result, expired before it ran."""


class Cancelled(_Settlement, frozen=True, kw_only=True):
    """Acknowledge a task cancelled while it ran (CANCELLED record first) or before it started (no record)."""


Settlement = Ack | Retry | DeadLetter | Fail | Cancelled


def decide(item: Outcome | Reject | Dropped, codec: Codec, result_ttl: float, now: float,
           uniform: Callable[[float, float], float] = random.uniform) -> Settlement:
    """The settlement of one finished, refused or dropped message; records are stamped `now`.

    `uniform` draws retry jitter. Raises ChuteError only if a retry's message cannot be encoded.
    """
    if isinstance(item, Outcome):
        if item.error is None:
            return succeeded(item, codec, result_ttl, now)
        return _failed(item, item.error, codec, result_ttl, now, uniform)
    if isinstance(item, Reject):
        return _rejected(item, codec, result_ttl, now)
    if item.job is None:
        return Ack(delivery=item.delivery)
    return Cancelled(delivery=item.delivery, job=item.job)


def succeeded(o: Outcome, codec: Codec, ttl: float, now: float) -> Settlement:
    """`decide` for an Outcome without an error (the settler calls it directly: the hot path)."""
    job = o.job
    env = job.envelope
    if not job.task.options.store_result and env.workflow is None:  # a workflow step's successors read it
        return Ack(delivery=job.delivery, job=job, duration=o.duration, value=o.value)
    try:
        value = None if o.value is None else codec.encode_value(o.value, f"{env.name} result")
    except SerializationError as exc:
        return Fail(delivery=job.delivery, job=job, duration=o.duration, error=_said(exc),
                    record=record_of(env, State.FAILED, codec.name, ttl, now, error=error_info(exc, "")))
    return Ack(delivery=job.delivery, job=job, duration=o.duration, value=o.value,
               record=record_of(env, State.SUCCEEDED, codec.name, ttl, now, value))


def _failed(o: Outcome, exc: BaseException, codec: Codec, ttl: float, now: float,
            uniform: Callable[[float, float], float]) -> Settlement:
    job = o.job
    env, d, c = job.envelope, job.delivery, codec.name
    if isinstance(exc, WorkerLost):  # its worker died running it too often: never run again
        return DeadLetter(delivery=d, job=job, duration=o.duration, error=_said(exc), reason=str(exc),
                          record=record_of(env, State.DEAD, c, ttl, now, error=error_info(exc, o.traceback)))
    if isinstance(exc, TaskCancelled) or (job.cancelled and isinstance(exc, asyncio.CancelledError)):
        stop = TaskCancelled(f"{env.name} was cancelled while running")
        return Cancelled(delivery=d, job=job, duration=o.duration, error=_said(stop),
                         record=record_of(env, State.CANCELLED, c, ttl, now, error=error_info(stop, o.traceback)))
    info = error_info(exc, o.traceback)
    delay = retry_delay(job, exc, uniform)
    if delay is not None:
        body = codec.encode(msgspec.structs.replace(env, attempt=env.attempt + 1))
        return Retry(delivery=d, job=job, duration=o.duration, error=_said(exc), body=body, delay=delay,
                     record=record_of(env, State.RETRYING, c, ttl, now, error=info))
    if job.task.options.dead_letter:
        return DeadLetter(delivery=d, job=job, duration=o.duration, error=_said(exc),
                          reason=f"{info.type}: {info.message}", record=record_of(env, State.DEAD, c, ttl, now,
                                                                                  error=info))
    return Fail(delivery=d, job=job, duration=o.duration, error=_said(exc),
                record=record_of(env, State.FAILED, c, ttl, now, error=info))


def _rejected(r: Reject, codec: Codec, ttl: float, now: float) -> Settlement:
    env = r.envelope
    record = None if env is None else record_of(env, r.state, codec.name, ttl, now,
                                                error=r.error or error_info(ChuteError(r.reason), ""))
    if r.state is State.DEAD:
        return DeadLetter(delivery=r.delivery, record=record, error=r.reason, reason=r.reason)
    return Fail(delivery=r.delivery, record=record, error=r.reason)


def retry_delay(job: Job, exc: BaseException,
                uniform: Callable[[float, float], float] = random.uniform) -> float | None:
    """Seconds until the next attempt, or None if the task is out of retries.

    The worker's own declaration of the task decides (`retries=`), not the producer's copy in the
    envelope: redeploying workers with a new policy applies it to messages already queued.
    """
    env, opts = job.envelope, job.task.options
    if env.attempt >= opts.retries:
        return None
    if isinstance(exc, RetryError) and exc.countdown is not None:
        return max(0.0, exc.countdown)
    base: float = min(opts.max_backoff, opts.retry_backoff * (2 ** env.attempt))
    if opts.retry_jitter:
        base *= uniform(1 - opts.retry_jitter, 1 + opts.retry_jitter)
    return base


def _said(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
