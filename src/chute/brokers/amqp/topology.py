"""What chute declares on RabbitMQ (docs/brokers/rabbitmq.md): work and dead-letter queues and their
arguments, the delay chain's exchanges and TTL queues, the topic exchange; each once per process.

A delay of `UNIT * n` seconds travels the chain by the bits of n: a message enters at exchange
`chute.delay.<k>` (k its highest set bit); at each level a set bit routes it into that level's TTL
queue (it waits there 2^k units, then dead-letters one level down), a clear bit straight on; after
level 0 it reaches `chute.delay.due`, bound to every delayed queue by the queue's token.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

import pika.exceptions

from ...errors import BrokerError
from .books import Books

UNIT = 0.01  # seconds: the grain of delays
LEVELS = 24  # delay levels of UNIT * 2**k seconds: one pass through them waits up to ~46 hours
TOPICS = "chute.topics"
DELAY_EXCHANGE = "chute.delay.{}"  # one topic exchange per level, then chute.delay.due
DUE = "chute.delay.due"
QUEUES_KEY, DELAYED_KEY = "chute.amqp.queues", "chute.amqp.delayed"  # registries in the store's meta


def dead_queue(queue: str) -> str:
    return f"chute.dead.{queue}"


def delay_queue(queue: str, level: int) -> str:
    return f"chute.delay.{queue}.{level}"


def token(queue: str) -> str:
    """The routing-key word that names a queue in the delay exchanges (queue names may hold dots)."""
    return hashlib.sha1(queue.encode()).hexdigest()[:16]


def pattern(level: int, bit: str, last: str) -> str:
    """A binding key on delay exchange `level`: bit `level` of the delay (written high bit first) is `bit`."""
    words = ["*"] * LEVELS
    words[LEVELS - 1 - level] = bit
    return ".".join([*words, last])


def units(delay: float) -> int:
    """A delay in UNITs, rounded up (never early), at most one pass through every level."""
    return min(max(1, int(-(-delay // UNIT))), (1 << LEVELS) - 1)


def level(delay: float) -> int:
    """The highest delay level a message of this delay passes through."""
    return units(delay).bit_length() - 1


def delay_key(delay: float, queue: str) -> tuple[str, str]:
    """The exchange and routing key a message delayed by `delay` seconds enters the chain with."""
    n = units(delay)
    bits = ".".join("1" if n >> (LEVELS - 1 - i) & 1 else "0" for i in range(LEVELS))
    return DELAY_EXCHANGE.format(n.bit_length() - 1), f"{bits}.{token(queue)}"


class Link(Protocol):
    """A connection with a channel for declarations and counts (`links.Link`)."""

    def admin(self) -> Any: ...


class Topology:
    """The queues, delay levels and exchanges this process has declared, and declaring the rest."""

    def __init__(self, queue_type: str, books: Books) -> None:
        self.queue_type = queue_type
        self._books = books
        self.declared: set[str] = set()  # queues (and TOPICS) declared by this process
        self.levels: dict[str, int] = {}  # queue -> highest delay level declared by this process
        self._exchange_level = -1

    def forget(self) -> None:
        """A queue was deleted behind our back: declare everything anew on the next publish."""
        self.declared.clear()
        self.levels.clear()

    def lacks(self, queue: str | None, level: int) -> bool:
        """True if a message needs declared what this process has not: `queue` (None: the topic exchange)
        and, for level >= 0, its delay levels up to `level`."""
        if queue is None:
            return TOPICS not in self.declared
        if level >= 0:
            return self.levels.get(queue, -1) < level
        return queue not in self.declared

    def declare(self, ch: Any, queue: str | None, level: int) -> None:
        """Declare what `lacks` names."""
        if queue is None:
            self.declare_topics(ch)
        elif level >= 0:
            self.declare_delays(ch, queue, level)
        else:
            self.declare_queue(ch, queue)

    # -- arguments --------------------------------------------------------------------------------
    def queue_args(self, dead_letter_to: str | None) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.queue_type == "quorum":
            args["x-queue-type"] = "quorum"
        if dead_letter_to is not None:
            args["x-dead-letter-exchange"] = ""
            args["x-dead-letter-routing-key"] = dead_letter_to
            if self.queue_type == "quorum":  # at-least-once dead-lettering needs reject-publish overflow
                args["x-dead-letter-strategy"] = "at-least-once"
                args["x-overflow"] = "reject-publish"
        return args

    def work_queue_args(self, queue: str) -> dict[str, Any]:
        """The arguments chute declares a work queue with (a plain client must use the same)."""
        args = self.queue_args(dead_queue(queue))
        if self.queue_type == "classic":
            args["x-max-priority"] = 9
        return args

    def delay_queue_args(self, queue: str, k: int) -> dict[str, Any]:
        """Level k's TTL queue: holds a message 2^k units, then dead-letters it one level down (or, at level
        0, into `queue`)."""
        args = self.queue_args(None)
        args["x-message-ttl"] = int(round(UNIT * 1000)) << k
        if k:
            args["x-dead-letter-exchange"] = DELAY_EXCHANGE.format(k - 1)
        else:
            args.update({"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue})
        if self.queue_type == "quorum":
            args.update({"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"})
        return args

    # -- declaring ----------------------------------------------------------------------------------
    def declare_queue(self, ch: Any, queue: str, force: bool = False) -> None:
        """Declare a work queue and its dead-letter queue (idempotent; once per process unless forced)."""
        if queue in self.declared and not force:
            return
        try:
            ch.queue_declare(dead_queue(queue), durable=True, arguments=self.queue_args(None))
            ch.queue_declare(queue, durable=True, arguments=self.work_queue_args(queue))
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 406:
                raise BrokerError(f"RabbitMQ queue {queue!r} exists with other arguments ({exc.reply_text}); "
                                  f"chute declares it durable with {self.work_queue_args(queue)}: delete it, or "
                                  "use the matching ?queue_type=") from None
            raise
        self.declared.add(queue)
        self._books.register(QUEUES_KEY, queue)

    def declare_delays(self, ch: Any, queue: str, level: int) -> None:
        """The delay exchanges and `queue`'s TTL queues for levels 0..`level`, pipelined (nowait) and then
        checked with one round trip; a later, longer delay adds levels."""
        have = self.levels.get(queue, -1)
        if have >= level:
            return
        self.declare_queue(ch, queue)
        impl, word = ch._impl, token(queue)
        if self._exchange_level < 0:
            impl.exchange_declare(DUE, "topic", durable=True)
        for k in range(self._exchange_level + 1, level + 1):
            impl.exchange_declare(DELAY_EXCHANGE.format(k), "topic", durable=True)
            impl.exchange_bind(DELAY_EXCHANGE.format(k - 1) if k else DUE, DELAY_EXCHANGE.format(k),
                               pattern(k, "0", "*"))
        for k in range(have + 1, level + 1):
            impl.queue_declare(delay_queue(queue, k), durable=True, arguments=self.delay_queue_args(queue, k))
            impl.queue_bind(delay_queue(queue, k), DELAY_EXCHANGE.format(k), pattern(k, "1", word))
        if have < 0:
            impl.queue_bind(queue, DUE, "#." + word)
        ch.queue_declare(delay_queue(queue, level), passive=True)  # one wait: any refusal above surfaces here
        self._exchange_level = max(self._exchange_level, level)
        self.levels[queue] = level
        self._books.register(DELAYED_KEY, queue, level)

    def declare_topics(self, ch: Any) -> None:
        if TOPICS not in self.declared:
            ch.exchange_declare(TOPICS, "topic", durable=True)
            self.declared.add(TOPICS)

    # -- reading back -------------------------------------------------------------------------------
    def queues(self, queue: str | None = None) -> list[str]:
        """`queue`, or every work queue any process declared."""
        if queue is not None:
            return [queue]
        return sorted(set(self._books.registry(QUEUES_KEY)) | (self.declared - {TOPICS}))

    def count(self, link: Link, queue: str) -> int | None:
        """Messages ready in a queue, or None if it does not exist (the 404 closes only the admin channel)."""
        try:
            return int(link.admin().queue_declare(queue, passive=True).method.message_count)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                return None
            raise

    def ready(self, link: Link, queue: str) -> int:
        return self.count(link, queue) or 0

    def delayed(self, link: Link, queue: str) -> int:
        top = max(self.levels.get(queue, -1), self._books.registry(DELAYED_KEY).get(queue, -1))
        return sum(self.count(link, delay_queue(queue, k)) or 0 for k in range(top + 1))
