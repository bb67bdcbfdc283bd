"""A qtui task's handlers and the task signals around one run, in the order Celery's tracer
calls them: task_prerun, before_start, the task, then on_success and task_success, or
on_failure and task_failure, or on_retry and task_retry; after_return; task_postrun last.

A handler or receiver that raises after the outcome is stored is logged and changes nothing
(``before_start`` runs as part of the task: raising there fails it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from . import signals
from .exceptions import Retry
from .task import ExceptionInfo, Request, Task

logger = logging.getLogger(__name__)


class TaskHandlers:
    """The handlers and signals of one run of ``task`` for ``request``."""

    def __init__(self, task: Task, request: Request) -> None:
        self.task = task
        self.request = request
        self.id = request.id or ""

    def started(self) -> None:
        signals.task_prerun.send(sender=self.task, task_id=self.id, task=self.task,
                                 args=self.request.args, kwargs=self.request.kwargs)

    def before_start(self) -> None:
        self.task.before_start(self.id, self.request.args, self.request.kwargs)

    def succeeded(self, value: Any) -> None:
        self._handler("on_success", self.task.on_success, value, self.id, self.request.args,
                      self.request.kwargs)
        signals.task_success.send(sender=self.task, result=value)

    def failed(self, exc: BaseException, einfo: ExceptionInfo) -> None:
        self._handler("on_failure", self.task.on_failure, exc, self.id, self.request.args,
                      self.request.kwargs, einfo)
        signals.task_failure.send(sender=self.task, task_id=self.id, exception=exc,
                                  args=self.request.args, kwargs=self.request.kwargs,
                                  traceback=exc.__traceback__, einfo=einfo)

    def retried(self, retry: Retry, einfo: ExceptionInfo) -> None:
        self._handler("on_retry", self.task.on_retry, retry.exc if retry.exc is not None
                      else retry, self.id, self.request.args, self.request.kwargs, einfo)
        signals.task_retry.send(sender=self.task, request=self.request, reason=retry,
                                einfo=einfo)

    def returned(self, state: str, value: Any, einfo: ExceptionInfo | None) -> None:
        self._handler("after_return", self.task.after_return, state, value, self.id,
                      self.request.args, self.request.kwargs, einfo)

    def finished(self, state: str, value: Any) -> None:
        signals.task_postrun.send(sender=self.task, task_id=self.id, task=self.task,
                                  args=self.request.args, kwargs=self.request.kwargs,
                                  retval=value, state=state)

    def _handler(self, name: str, handler: Callable[..., Any], *args: Any) -> None:
        try:
            handler(*args)
        except Exception:  # the outcome is stored already: a handler's bug cannot change it
            logger.exception("Task %s[%s]: its %s handler raised", self.task.name, self.id,
                             name)
