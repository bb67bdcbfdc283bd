"""Celery's own signals (``celery.signals``) from qtui's worker, for a Celery app: the same
points as :class:`.signals.Signals`, with Celery's task objects and request contexts. The
task-level ones (task_prerun, task_postrun, task_success, task_failure, task_retry) come from
Celery's tracer (:mod:`.celery_trace`). Only imported for a
:class:`~qtui.core.celery_app.CeleryApp`, so celery stays optional.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import signals
from celery.app.task import Context

from .celery_trace import request_dict
from .execution import WorkItem
from .signals import Signals

if TYPE_CHECKING:
    from qtui.core.celery_app import CeleryApp

    from .job import Job
    from .worker import Worker


class CelerySignals(Signals):
    """Sends ``celery.signals`` with Celery's task objects and contexts."""

    def __init__(self, worker: Worker, app: CeleryApp) -> None:
        self.app = app
        super().__init__(worker, signals)

    def task(self, name: str) -> Any:
        return self.app.celery.tasks.get(name)

    def request(self, job: Job) -> Any:
        item = WorkItem(job_id=job.id, message=job.message, delivery_info=job.delivery_info(),
                        hostname=self.worker.hostname)
        return Context(request_dict(item))
