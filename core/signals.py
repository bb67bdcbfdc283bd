"""Celery's signals, by Celery's names and with Celery's arguments, for qtui's own apps.

A receiver is called as ``receiver(signal=..., sender=..., **arguments)``; connect it with
``@signals.task_prerun.connect`` or ``signal.connect(receiver, sender=...)`` (only that
sender, or a task of that name). A receiver that raises is logged and the others still run,
as in Celery. Only the signals qtui's worker sends are here; a Celery app's tasks send
Celery's own (``celery.signals``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

Receiver = Callable[..., Any]


class Signal:
    """One named point receivers can connect to."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.receivers: list[tuple[Receiver, Any]] = []

    def connect(self, receiver: Receiver | None = None, *, sender: Any = None) -> Any:
        """Connect ``receiver`` (for ``sender`` only, when given); usable as a decorator."""
        def register(fun: Receiver) -> Receiver:
            if (fun, sender) not in self.receivers:
                self.receivers.append((fun, sender))
            return fun
        return register(receiver) if receiver is not None else register

    def disconnect(self, receiver: Receiver, sender: Any = None) -> None:
        self.receivers = [(r, s) for r, s in self.receivers if (r, s) != (receiver, sender)]

    def send(self, sender: Any, **arguments: Any) -> list[tuple[Receiver, Any]]:
        """Call every receiver for ``sender``; returns (receiver, its answer or exception)."""
        if not self.receivers:  # the usual case, sent several times a task
            return []
        answers: list[tuple[Receiver, Any]] = []
        for receiver, wanted in list(self.receivers):
            if wanted is not None and wanted is not sender \
                    and not (isinstance(wanted, str) and getattr(sender, "name", None) == wanted):
                continue
            try:
                answers.append((receiver, receiver(signal=self, sender=sender, **arguments)))
            except Exception as exc:  # a receiver's bug must not change the task's outcome
                logger.exception("Signal %s: receiver %r raised", self.name, receiver)
                answers.append((receiver, exc))
        return answers

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"


task_received = Signal("task_received")
task_prerun = Signal("task_prerun")
task_postrun = Signal("task_postrun")
task_success = Signal("task_success")
task_failure = Signal("task_failure")
task_retry = Signal("task_retry")
task_revoked = Signal("task_revoked")
task_rejected = Signal("task_rejected")
task_unknown = Signal("task_unknown")
worker_init = Signal("worker_init")
worker_process_init = Signal("worker_process_init")
worker_ready = Signal("worker_ready")
worker_shutdown = Signal("worker_shutdown")
