"""The worker-level signals (``qtui.core.signals``, Celery's names and arguments) at the worker's
named points: worker_init, worker_ready, worker_shutdown, task_received, task_revoked,
task_rejected and task_unknown. The task-level ones are sent where the task runs
(:mod:`.execution`)."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from qtui.core import signals as qtui_signals
from qtui.core.exceptions import NotRegistered
from qtui.core.task import Request

from .hooks import Observer

if TYPE_CHECKING:
    from .job import Job
    from .worker import Worker


class Signals(Observer):
    """Sends the signals of ``signals`` (a module of them); ``worker_init`` when made."""

    def __init__(self, worker: Worker, signals: ModuleType = qtui_signals) -> None:
        self.worker = worker
        self.signals = signals
        signals.worker_init.send(sender=worker)

    def on_worker_ready(self, worker: Worker) -> None:
        self.signals.worker_ready.send(sender=worker)

    def on_worker_stopped(self, worker: Worker) -> None:
        self.signals.worker_shutdown.send(sender=worker)

    def on_task_received(self, job: Job) -> None:
        received = self.signals.task_received
        if received.receivers:  # the request costs a Celery app ~a fifth of a no-op task's CPU
            received.send(sender=self.worker, request=self.request(job))

    def on_task_revoked(self, job: Job, *, expired: bool = False, terminated: bool = False,
                        signum: int | None = None) -> None:
        self.signals.task_revoked.send(sender=self.task(job.name), request=self.request(job),
                                       terminated=terminated, signum=signum, expired=expired)

    def on_task_rejected(self, job: Job | None, reason: str) -> None:
        if job is not None and job.name not in self.worker.app.tasks:
            self.signals.task_unknown.send(sender=self.worker, name=job.name, id=job.task_id,
                                           message=job.delivery, exc=NotRegistered(job.name))
            return
        self.signals.task_rejected.send(sender=self.worker,
                                        message=job.delivery if job is not None else None,
                                        exc=None)

    def task(self, name: str) -> Any:
        """The sender of a task's signals: the task object, or None when unknown."""
        return self.worker.app.tasks.get(name)

    def request(self, job: Job) -> Any:
        """The request a task's signals carry, as the task itself would see it."""
        return Request.from_message(job.message, self.worker.hostname, job.delivery_info())
