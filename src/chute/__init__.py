"""chute: background tasks, durable queues and workflows for Python web applications."""

from .app import App
from .canvas import DAG, chain, chord, group
from .envelope import Envelope
from .errors import (
    AppImportError,
    BrokerError,
    BrokerUnavailable,
    ChuteError,
    ConfigurationError,
    DecodeError,
    InvalidURL,
    NotAChuteDatabase,
    PayloadTooLarge,
    QueueFull,
    Retry,
    SerializationError,
    StorageFull,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskTimeout,
    TimeLimitExceeded,
    UnknownTask,
    UnsupportedVersion,
    WorkerLost,
)
from .hooks import Middleware
from .states import State
from .task import Signature, Task, TaskResult
from .worker.job import current_job

__version__ = "0.1.0"

__all__ = [
    "App", "AppImportError", "BrokerError", "BrokerUnavailable", "ChuteError", "ConfigurationError", "DecodeError",
    "Envelope", "InvalidURL", "Middleware", "NotAChuteDatabase", "PayloadTooLarge", "QueueFull", "Retry",
    "SerializationError",
    "Signature", "State", "StorageFull", "Task", "TaskCancelled", "TaskExpired", "TaskFailed", "TaskResult",
    "TaskTimeout", "TimeLimitExceeded", "UnknownTask", "UnsupportedVersion", "WorkerLost", "__version__",
    "current_job", "DAG", "chain", "chord", "group",
]
