"""The RabbitMQ broker (`amqp://`, `amqps://`): `AMQPBroker` in queue.py, its parts beside it."""

from .publish import H_ETA
from .queue import AMQPBroker
from .topology import LEVELS, dead_queue, delay_queue

__all__ = ["AMQPBroker", "H_ETA", "LEVELS", "dead_queue", "delay_queue"]
