"""Every exception chute raises, named for what went wrong."""

from __future__ import annotations


class ChuteError(Exception):
    """Base class of every chute error."""


class ConfigurationError(ChuteError):
    """The application was configured in a way that cannot work."""


class InvalidURL(ConfigurationError):
    """A broker URL could not be understood."""


class AppImportError(ConfigurationError):
    """A `module:attribute` reference to an App could not be loaded."""


class NotAChuteDatabase(ConfigurationError):
    """A SQLite file exists but holds something other than a chute database."""


class SerializationError(ChuteError, TypeError):
    """Task arguments or a result cannot be encoded in the wire format."""


class QueueFull(ChuteError):
    """A queue is at its maximum length and its policy refuses more; nothing was enqueued."""


class PayloadTooLarge(ChuteError, ValueError):
    """An encoded message is larger than the configured maximum."""


class DecodeError(ChuteError):
    """Bytes taken from a broker are not a valid chute message."""


class UnsupportedVersion(DecodeError):
    """A message declares an envelope version this chute does not understand."""


class UnknownTask(ChuteError, KeyError):
    """No task of that name is registered with the App."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else "unknown task"


class BrokerError(ChuteError):
    """The broker failed an operation."""


class BrokerUnavailable(BrokerError):
    """The broker cannot be reached; the operation did not happen."""


class StorageFull(BrokerError):
    """The broker's storage is full; nothing was written. Retry once space is freed."""


class TaskTimeout(ChuteError, TimeoutError):
    """Waiting for a task's result took longer than the timeout given."""


class TaskCancelled(ChuteError):
    """The task was cancelled (`TaskResult.cancel()`): it will not run, or was stopped while running."""


class WorkerLost(ChuteError):
    """A task's worker died while running it `max_deliveries` times: it is treated as poison."""


class TimeLimitExceeded(ChuteError):
    """A task ran longer than its time limit and was interrupted."""


class TaskExpired(ChuteError):
    """A message's expiry passed before a worker could run it."""


class TaskFailed(ChuteError):
    """A task ended in failure; raised by `TaskResult.get()` when the original type is not importable.

    `type_name`, `message` and `traceback` describe the original exception as the worker saw it.
    """

    def __init__(self, type_name: str, message: str, traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def __str__(self) -> str:
        text = f"{self.type_name}: {self.message}"
        if self.traceback:
            text += "\n\nRemote traceback:\n" + self.traceback.rstrip()
        return text


class Retry(ChuteError):
    """Raise inside a task to ask for another attempt, optionally after `countdown` seconds."""

    def __init__(self, countdown: float | None = None, reason: str = "") -> None:
        super().__init__(reason or "retry requested")
        self.countdown = countdown
