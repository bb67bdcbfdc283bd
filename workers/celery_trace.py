"""Running a Celery app's task with Celery's own tracer, as a Celery worker runs it.

``celery.app.trace`` gives the task its context (``self.request``), calls its handlers, sends
Celery's task signals, stores STARTED (``task_track_started``) and the outcome (with
``result_extended``) through the Celery app's backend, follows its callbacks and chain, and
turns ``retry``, ``Ignore`` and ``Reject`` into states. This module builds the request a Celery
worker would build from the message and turns the tracer's answer into qtui's :class:`Outcome`.
Only imported for a :class:`~qtui.core.celery_app.CeleryApp`, so celery stays optional.
"""

from __future__ import annotations

import os
import time
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from celery import exceptions as celery_exceptions
from celery import signals
from celery import states as celery_states
from celery.app.trace import setup_worker_optimizations, trace_task
from celery.exceptions import Reject

from qtui.core import exceptions, states
from qtui.core.protocol import build, saferepr

if TYPE_CHECKING:
    from qtui.core.celery_app import CeleryTask

    from .execution import Outcome, WorkItem

RESULT_REPR_MAXSIZE = 256


class SoftTimeLimitExceeded(exceptions.SoftTimeLimitExceeded,
                            celery_exceptions.SoftTimeLimitExceeded):
    """A Celery task's soft time limit on qtui's worker: Celery's exception, and qtui's."""


class TimeLimitExceeded(exceptions.TimeLimitExceeded, celery_exceptions.TimeLimitExceeded):
    """A Celery task's hard time limit where it is raised in the task (solo, threads)."""


CELERY_LIMIT_ERRORS = (SoftTimeLimitExceeded, TimeLimitExceeded)

_prepared: dict[int, bool] = {}
"""Processes (by pid) where the Celery app was set up as a worker's app."""


def run(task: CeleryTask, item: WorkItem, limits: AbstractContextManager[None],
        guard: AbstractContextManager[Any]) -> Outcome:
    """Run ``item`` with Celery's tracer under ``limits`` (inside ``guard``, see
    :func:`~qtui.workers.execution.execute`); Celery stores its states (so the limits bound the
    tracer's result write too, not only the task's code)."""
    from .execution import Outcome

    celery_task = task.celery_task
    celery_app = celery_task.app
    if not _prepared.get(os.getpid()):
        # Once per pool process, before its first task (Celery: when the process starts).
        setup_worker_optimizations(celery_app, item.hostname)
        signals.worker_process_init.send(sender=None)
        _prepared[os.getpid()] = True
    message = item.message
    request = request_dict(item)
    started = time.monotonic()
    try:
        with guard, limits:
            result, info, _, result_repr = trace_task(
                celery_task, message.id, request["args"], request["kwargs"], request,
                app=celery_app, hostname=item.hostname)
    except Reject as reject:  # raised by a handler after the task ran
        return _rejected(item, reject, time.monotonic() - started)
    runtime = time.monotonic() - started
    if info is None:
        return Outcome(job_id=item.job_id, state=states.SUCCESS, runtime=runtime,
                       result=result_repr)
    state = info.state
    exc = info.retval
    trace = getattr(result, "traceback", None)
    if state == celery_states.RETRY:
        return Outcome(job_id=item.job_id, state=states.RETRY, runtime=runtime,
                       exception=_repr(getattr(exc, "exc", None) or exc), traceback=trace,
                       retry_when=_seconds_until(getattr(exc, "when", None)))
    if state == celery_states.REJECTED:
        return _rejected(item, exc, runtime)
    if state == celery_states.IGNORED:
        return Outcome(job_id=item.job_id, state=states.IGNORED, runtime=runtime,
                       exception=_repr(exc))
    return Outcome(job_id=item.job_id, state=states.FAILURE, runtime=runtime,
                   exception=_repr(exc), traceback=trace)


def _rejected(item: WorkItem, reject: Reject, runtime: float) -> Outcome:
    from .execution import Outcome

    return Outcome(job_id=item.job_id, state=states.REJECTED, runtime=runtime,
                   exception=_repr(reject.reason), requeue=bool(reject.requeue))


def request_dict(item: WorkItem) -> dict[str, Any]:
    """The request a Celery worker hands its tracer: the message headers, then what
    ``celery.worker.request.Request`` and ``trace_task_ret`` add to them."""
    wire = build(item.message)
    args, kwargs, embed = wire.body
    info = item.delivery_info
    request: dict[str, Any] = dict(wire.headers)
    request.update({
        "properties": wire.properties,
        "reply_to": wire.properties.get("reply_to"),
        "correlation_id": wire.properties.get("correlation_id"),
        "hostname": item.hostname,
        "delivery_info": {"exchange": info.get("exchange"),
                          "routing_key": info.get("routing_key"),
                          "priority": info.get("priority"),
                          "redelivered": bool(info.get("redelivered"))},
        "args": args, "kwargs": kwargs, "is_eager": False,
    })
    request.update(embed)
    return request


def _seconds_until(when: Any) -> float | None:
    if isinstance(when, datetime):
        aware = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        return (aware - datetime.now(timezone.utc)).total_seconds()
    return float(when) if when is not None else None


def _repr(value: Any) -> str:
    try:
        return saferepr(value, RESULT_REPR_MAXSIZE)
    except Exception:  # noqa: BLE001 - a user's __repr__ may raise anything
        return f"<unrepresentable {type(value).__name__}>"
