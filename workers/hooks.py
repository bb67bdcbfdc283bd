"""Named points in a task's life where worker features plug in (events, the arguments store).

An observer subclasses :class:`Observer` and overrides the hooks it needs; the worker calls
every observer at each point through :class:`Hooks`. An observer that raises is logged and
never stops the worker.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .execution import Outcome
    from .job import Job
    from .worker import Worker

logger = logging.getLogger("qtui.worker")


class Observer:
    """Every hook, doing nothing."""

    def on_worker_ready(self, worker: Worker) -> None: ...
    def on_worker_stopping(self, worker: Worker) -> None: ...
    def on_worker_stopped(self, worker: Worker) -> None: ...
    def on_task_received(self, job: Job) -> None: ...
    def on_task_started(self, job: Job, pid: int | None) -> None: ...
    def on_task_succeeded(self, job: Job, outcome: Outcome) -> None: ...
    def on_task_failed(self, job: Job, exception: str, traceback: str | None) -> None: ...
    def on_task_retried(self, job: Job, outcome: Outcome) -> None: ...
    def on_task_revoked(self, job: Job, *, expired: bool = False, terminated: bool = False,
                        signum: int | None = None) -> None: ...
    def on_task_rejected(self, job: Job | None, reason: str) -> None: ...


class Hooks(Observer):
    """Calls each registered observer in turn."""

    def __init__(self) -> None:
        self.observers: list[Observer] = []

    def add(self, observer: Observer) -> None:
        self.observers.append(observer)

    def _emit(self, hook: str, *args: Any, **kwargs: Any) -> None:
        for observer in self.observers:
            try:
                getattr(observer, hook)(*args, **kwargs)
            except Exception:
                logger.exception("worker hook %s of %r failed", hook, observer)

    def on_worker_ready(self, worker: Worker) -> None:
        self._emit("on_worker_ready", worker)

    def on_worker_stopping(self, worker: Worker) -> None:
        self._emit("on_worker_stopping", worker)

    def on_worker_stopped(self, worker: Worker) -> None:
        self._emit("on_worker_stopped", worker)

    def on_task_received(self, job: Job) -> None:
        self._emit("on_task_received", job)

    def on_task_started(self, job: Job, pid: int | None) -> None:
        self._emit("on_task_started", job, pid)

    def on_task_succeeded(self, job: Job, outcome: Outcome) -> None:
        self._emit("on_task_succeeded", job, outcome)

    def on_task_failed(self, job: Job, exception: str, traceback: str | None) -> None:
        self._emit("on_task_failed", job, exception, traceback)

    def on_task_retried(self, job: Job, outcome: Outcome) -> None:
        self._emit("on_task_retried", job, outcome)

    def on_task_revoked(self, job: Job, *, expired: bool = False, terminated: bool = False,
                        signum: int | None = None) -> None:
        self._emit("on_task_revoked", job, expired=expired, terminated=terminated, signum=signum)

    def on_task_rejected(self, job: Job | None, reason: str) -> None:
        self._emit("on_task_rejected", job, reason)
