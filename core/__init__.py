"""qtui.core: the library users import. A Celery-style API that speaks Celery's wire protocols."""

from __future__ import annotations

from . import brokers, signals, states
from .app import App, current_app, shared_task
from .exceptions import (
    ConfigError,
    ImproperlyConfigured,
    MaxRetriesExceededError,
    NotRegistered,
    ProtocolError,
    QtuiError,
    Retry,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
)
from .canvas import Signature, chain, chord, group, signature
from .result import AsyncResult, GroupResult
from .task import Task

brokers.register()

__all__ = [
    "App", "AsyncResult", "Task", "current_app", "shared_task", "signals", "states", "ConfigError", "ImproperlyConfigured",
    "MaxRetriesExceededError", "NotRegistered", "ProtocolError", "QtuiError", "Retry",
    "SoftTimeLimitExceeded", "TimeLimitExceeded",
    "GroupResult", "Signature", "chain", "chord", "group", "signature",
]
__version__ = "0.1.0"
