"""qtui.core: the library users import. A Celery-style API that speaks Celery's wire protocols."""

from __future__ import annotations

from . import brokers, signals, states
from .app import App, current_app, shared_task
from .canvas import Signature, chain, chord, group, signature
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
from .result import AsyncResult, GroupResult
from .task import Task

brokers.register()

__all__ = [
    "App", "AsyncResult", "ConfigError", "GroupResult", "ImproperlyConfigured",
    "MaxRetriesExceededError", "NotRegistered", "ProtocolError", "QtuiError", "Retry", "Signature",
    "SoftTimeLimitExceeded", "Task", "TimeLimitExceeded", "chain", "chord", "current_app", "group",
    "shared_task", "signals", "signature", "states",
]
__version__ = "0.1.0"
