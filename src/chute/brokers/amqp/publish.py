"""How a publish to RabbitMQ is planned and judged, without I/O: what its messages need declared, the
frame (exchange, routing key, body, properties) of each, the confirms it waits for, what the confirms
and returns mean, and how long it may try. Shared by the pika driver (send.py) and the aio-pika driver
(aio.py), which differ only in how they send, so a message is the same bytes from either."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, NamedTuple

import pika

from ...errors import BrokerError, BrokerUnavailable, ChuteError, QueueFull
from ..base import Outgoing
from .topology import TOPICS, dead_queue, delay_key, level

REQUEST_TIMEOUT = 5.0  # seconds a publish waits for its confirms before BrokerUnavailable
PERSISTENT = 2
H_ETA, H_TOPIC, H_REASON, H_DEAD_AT, H_QUEUE = "x-chute-eta", "x-chute-topic", "x-chute-reason", "x-chute-dead-at", \
    "x-chute-queue"
H_DELIVERIES = "x-chute-deliveries"  # on a copy given back by a worker: the deliveries it had had that count

Frame = tuple[str, str, bytes, pika.BasicProperties]  # exchange, routing key, body, properties
Returned = tuple[dict[str, Any] | None, Any]  # a message the server returned: its headers and message id


# -- before sending ---------------------------------------------------------------------------------
def need(m: Outgoing, now: float) -> tuple[str | None, int]:
    """What `m` needs declared to route (`Topology.lacks`): its queue (None: the topic exchange) and the
    highest delay level it passes through (-1: none)."""
    if m.topic is not None:
        return None, -1
    if m.eta is not None and m.eta > now:
        return m.queue, level(m.eta - now)
    return m.queue, -1


def limits(messages: Sequence[Outgoing]) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """The max_length checks a publish makes: queues to check for room before ({queue: (limit, adding)},
    on_full="reject") and queues to trim after ({queue: limit}, on_full="drop_oldest")."""
    given = {m.queue: (m.max_length or 0, m.on_full) for m in messages if m.max_length is not None and m.topic is None}
    room = {q: (limit, sum(1 for m in messages if m.queue == q)) for q, (limit, on_full) in given.items()
            if on_full != "drop_oldest"}
    return room, {q: limit for q, (limit, on_full) in given.items() if on_full == "drop_oldest"}


# -- frames -------------------------------------------------------------------------------------------
def frame(m: Outgoing, now: float) -> Frame:
    """One message: straight to its queue, into the delay chain, or to the topic exchange."""
    headers: dict[str, Any] = {}
    exchange, key = "", m.queue
    if m.topic is not None:
        exchange, key = TOPICS, m.topic
        headers[H_TOPIC] = m.topic
    elif m.eta is not None and m.eta > now:
        exchange, key = delay_key(m.eta - now, m.queue)
        headers[H_ETA] = int(m.eta * 1000)
    props = pika.BasicProperties(delivery_mode=PERSISTENT, message_id=m.id,
                                 priority=min(9, max(0, int(m.priority))), headers=headers or None)
    return exchange, key, m.body, props


def given_back(queue: str, body: bytes, props: pika.BasicProperties, deliveries: int) -> Frame:
    """A copy of a delivered message for its queue, carrying the deliveries that count (a requeue would
    mark it redelivered instead, and the next worker take it for the survivor of a crash)."""
    props = copy.copy(props)
    props.headers = {k: v for k, v in (props.headers or {}).items() if k != "x-delivery-count"}
    props.headers[H_DELIVERIES] = deliveries
    props.delivery_mode = PERSISTENT
    return "", queue, body, props


def dead_frame(queue: str, message_id: str, body: bytes, priority: int, reason: str, now: float) -> Frame:
    """A message for `queue`'s dead-letter queue, with why and when (ms: AMQP headers carry no floats)."""
    headers = {H_REASON: reason, H_DEAD_AT: int(now * 1000), H_QUEUE: queue}
    props = pika.BasicProperties(delivery_mode=PERSISTENT, message_id=message_id, priority=priority, headers=headers)
    return "", dead_queue(queue), body, props


# -- confirms -----------------------------------------------------------------------------------------
class Confirms:
    """A confirming channel's bookkeeping: delivery tags count from 1 in publishing order; a basic.ack or
    basic.nack settles one tag or, with `multiple`, every tag up to it; a basic.return comes before its
    message's confirm."""

    def __init__(self) -> None:
        self.next_tag = 1
        self.unconfirmed: set[int] = set()
        self.nacked: set[int] = set()
        self.returned: list[Returned] = []
        self.first = 1

    def start(self) -> None:
        """A new batch: its outcomes alone are reported."""
        self.first = self.next_tag
        self.nacked.clear()
        self.returned.clear()

    def sent(self) -> None:
        self.unconfirmed.add(self.next_tag)
        self.next_tag += 1

    def settle(self, tag: int, multiple: bool, ack: bool) -> None:
        tags = {t for t in self.unconfirmed if t <= tag} if multiple else {tag}
        self.unconfirmed -= tags
        if not ack:
            self.nacked |= tags

    def outcome(self) -> tuple[list[int], list[Returned]]:
        """The batch's indexes the server nacked, and what it returned."""
        return sorted(t - self.first for t in self.nacked), list(self.returned)


class Judged(NamedTuple):
    unrouted: list[str]  # topics of events no group subscribes to: counted, not an error
    forget: bool  # a queue was deleted behind our back: declare anew on the next publish
    error: ChuteError | None  # what the publish raises


def judge(sent: int, nacked: int, returned: Sequence[Returned]) -> Judged:
    """What a confirmed publish means: a returned event is unrouted; a returned task message means its
    queue was deleted (BrokerError); messages the server nacked were refused (QueueFull)."""
    unrouted: list[str] = []
    for headers, message_id in returned:
        topic = (headers or {}).get(H_TOPIC)
        if topic is None:
            return Judged(unrouted, True, BrokerError(
                f"RabbitMQ returned message {message_id} as unroutable: its queue was deleted while this process "
                "used it; publish again to declare it anew"))
        unrouted.append(text(topic))
    if nacked:
        return Judged(unrouted, False, QueueFull(
            f"RabbitMQ refused {nacked} of {sent} message(s) (basic.nack: a max-length policy with "
            "overflow=reject-publish, or a server error)"))
    return Judged(unrouted, False, None)


class Deadline:
    """How long a publish may try (REQUEST_TIMEOUT), resending what was not confirmed on a new
    connection (a message may then be stored twice, never dropped), and the pauses between tries."""

    def __init__(self, now: float) -> None:
        self.at = now + REQUEST_TIMEOUT
        self._pause = 0.05

    def left(self, now: float) -> float:
        return max(0.1, self.at - now)

    def pause(self, now: float) -> float | None:
        """The pause before the next try, or None if none fits before the deadline."""
        if now + self._pause >= self.at:
            return None
        pause, self._pause = self._pause, min(self._pause * 2, 0.5)
        return pause


def unconfirmed(url: str, missing: int, sent: int, cause: BaseException | None = None) -> BrokerUnavailable:
    why = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
    return BrokerUnavailable(f"RabbitMQ at {url} is unreachable{why}; {missing} of {sent} message(s) not confirmed "
                             "(some may have been stored), try again when it is back")


def text(value: Any) -> str:
    """A header value as text (pika gives AMQP long strings as bytes)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
