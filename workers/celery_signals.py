"""Celery's worker-level signals for a Celery app on qtui's worker, with Celery's arguments.

The task-level ones (task_prerun, task_postrun, task_success, task_failure, task_retry) come
from Celery's tracer (:mod:`.celery_trace`); this observer sends those the worker itself knows
of: worker_init, worker_ready, worker_shutdown, task_received, task_revoked, task_rejected and
task_unknown. Only imported for a :class:`~qtui.core.celery_app.CeleryApp`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import signals
from celery.app.task import Context

from qtui.core.exceptions import NotRegistered

from .celery_trace import request_dict
from .execution import WorkItem
from .hooks import Observer

if TYPE_CHECKING:
    from qtui.core.celery_app import CeleryApp

    from .job import Job
    from .worker import Worker


class CelerySignals(Observer):
    """Sends Celery's signals at the worker's named points; ``worker_init`` when made."""

    def __init__(self, worker: Worker, app: CeleryApp) -> None:
        self.worker = worker
        self.app = app
        signals.worker_init.send(sender=worker)

    def on_worker_ready(self, worker: Worker) -> None:
        signals.worker_ready.send(sender=worker)

    def on_worker_stopped(self, worker: Worker) -> None:
        signals.worker_shutdown.send(sender=worker)

    def on_task_received(self, job: Job) -> None:
        signals.task_received.send(sender=self.worker, request=self._request(job))

    def on_task_revoked(self, job: Job, *, expired: bool = False, terminated: bool = False,
                        signum: int | None = None) -> None:
        task = self.app.celery.tasks.get(job.name)
        signals.task_revoked.send(sender=task, request=self._request(job),
                                  terminated=terminated, signum=signum, expired=expired)

    def on_task_rejected(self, job: Job | None, reason: str) -> None:
        if job is not None and job.name not in self.app.tasks:
            signals.task_unknown.send(sender=self.worker, name=job.name, id=job.task_id,
                                      message=job.delivery, exc=NotRegistered(job.name))
            return
        signals.task_rejected.send(sender=self.worker,
                                   message=job.delivery if job is not None else None, exc=None)

    def _request(self, job: Job) -> Any:
        item = WorkItem(job_id=job.id, message=job.message, delivery_info=job.delivery_info(),
                        hostname=self.worker.hostname)
        return Context(request_dict(item))
