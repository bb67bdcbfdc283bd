"""Running a task here and now, as Celery's ``Task.apply()`` and ``task_always_eager`` do: for
tests, with no broker and no worker. The handlers and signals are called as on a worker, a
retry runs again at once (its countdown ignored) and nothing is stored in the result backend.
``link`` and ``link_error`` are applied as Celery's tracer applies them (``apply_async``, which
runs them here too under ``task_always_eager``): a link with the result, an errback with the
task's id.
"""

from __future__ import annotations

import socket
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import states
from .exceptions import Retry
from .handlers import TaskHandlers
from .lineage import applied_under, inherited_priority
from .task import ExceptionInfo, Request, new_task_id

if TYPE_CHECKING:
    from .task import Task


class EagerResult:
    """The outcome of :func:`apply`, with AsyncResult's reading methods."""

    def __init__(self, task_id: str, value: Any, state: str, traceback: str | None = None,
                 task_name: str | None = None) -> None:
        self.id = task_id
        self.state = self.status = state
        self.result = self.info = value
        self.traceback = traceback
        self.name = task_name

    def get(self, timeout: float | None = None, propagate: bool = True, **_: Any) -> Any:
        """The return value; raises the task's exception (``propagate``) if it failed."""
        if propagate and self.state in states.PROPAGATE_STATES:
            raise self.result
        return self.result

    wait = get

    def ready(self) -> bool:
        return True

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def forget(self) -> None:
        """Nothing was stored: nothing to forget."""

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id} {self.state}>"


def apply(task: Task, args: Any = None, kwargs: Mapping[str, Any] | None = None, *,
          task_id: str | None = None, retries: int = 0, throw: bool | None = None,
          link: Any = None, link_error: Any = None, priority: int | None = None, **_: Any
          ) -> EagerResult:
    """Run ``task`` in this thread as a worker would; ``throw`` (default
    ``task_eager_propagates``) raises a failure here instead of returning it."""
    if throw is None:
        throw = bool(task.app.conf.task_eager_propagates)
    task_id = task_id or new_task_id()
    running = applied_under()  # applied inside a task: its child, as in Celery
    request = Request(id=task_id, task=task.name, args=tuple(args or ()),
                      kwargs=dict(kwargs or {}), retries=retries,
                      root_id=(running.root_id if running else None) or task_id,
                      parent_id=running.id if running else None,
                      hostname=socket.gethostname(),
                      delivery_info={"is_eager": True, "priority": priority},
                      called_directly=False, is_eager=True)
    handlers = TaskHandlers(task, request)
    task.push_request(request)
    state, value, trace = states.FAILURE, None, None
    try:
        handlers.started()
        try:
            handlers.before_start()
            try:
                value = task(*request.args, **request.kwargs)
            except Retry:
                raise
            except Exception as exc:
                if task.autoretry_for and isinstance(exc, tuple(task.autoretry_for)):
                    task.retry(exc=exc, **dict(task.retry_kwargs or {}))
                raise
        except Retry as retry:
            state, value = states.RETRY, retry
            handlers.retried(retry, ExceptionInfo(retry, traceback.format_exc()))
        except Exception as exc:
            state, value, trace = states.FAILURE, exc, traceback.format_exc()
            einfo = ExceptionInfo(exc, trace)
            _follow(task, request, link_error, request.id, {})
            handlers.failed(exc, einfo)
            handlers.returned(state, exc, einfo)
            if throw:
                raise
        else:
            state = states.SUCCESS
            _follow(task, request, link, value,
                    inherited_priority(task.app, request.delivery_info))
            handlers.succeeded(value)
            handlers.returned(state, value, None)
    finally:
        handlers.finished(state, value)
        task.pop_request()
    if state == states.RETRY:
        return apply(task, request.args, request.kwargs, task_id=request.id,
                     retries=retries + 1, throw=throw, link=link, link_error=link_error,
                     priority=priority)
    return EagerResult(request.id or "", value, state, trace, task.name)


def _follow(task: Task, request: Request, links: Any, value: Any,
            priority: dict[str, int]) -> None:
    """Apply ``links`` (one signature or a list) with ``value`` first in their arguments: one
    as it is, several as one group, as Celery's tracer does; ``priority``, the option a
    success passes its links (errbacks get none, as in Celery)."""
    from .canvas import Signature, group

    if not links:
        return
    sigs = [links] if isinstance(links, Mapping) else list(links)
    parent: dict[str, Any] = {"parent_id": request.id, "root_id": request.root_id or request.id,
                              **priority}
    follow = Signature.from_dict(sigs[0], task.app) if len(sigs) == 1 else group(*sigs,
                                                                             app=task.app)
    follow.apply_async((value,), **parent)
