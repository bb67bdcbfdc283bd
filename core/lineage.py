"""Lineage: the ``parent_id`` and ``root_id`` of what a task sends from inside its body.

As in Celery (``Celery.send_task`` reads ``current_worker_task``), a send made while a task
runs (on a worker, or by ``apply()``) names that task as its parent and shares its root;
the ids a caller gives win. The running tasks are kept per thread and per context (a
:class:`~contextvars.ContextVar`), so each task of a threads pool sees its own; a send
outside a task reads one empty variable and sets nothing.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .task import Request

RUNNING: ContextVar[tuple[Request, ...]] = ContextVar("qtui_running_requests", default=())
"""The requests of the tasks run in this thread or context (a worker's, ``apply()``'s),
innermost last: per thread, so each task of a threads pool sees its own."""


def entered(request: Request) -> None:
    """``request``'s task runs here now (until :func:`left`)."""
    RUNNING.set((*RUNNING.get(), request))


def left(request: Request) -> None:
    """``request``'s task no longer runs here (a request that never entered: nothing)."""
    running = RUNNING.get()
    for at in range(len(running) - 1, -1, -1):  # the last, but for pops out of order
        if running[at] is request:
            RUNNING.set(running[:at] + running[at + 1:])
            return


def running_request() -> Request | None:
    """The request of the task running in this thread or context, or None outside a task
    (Celery's ``app.current_worker_task``: a task called directly is not one)."""
    running = RUNNING.get()
    return running[-1] if running else None


def lineage(root_id: str | None, parent_id: str | None) -> tuple[str | None, str | None]:
    """The root and parent ids of a send from here: those given, and for one not given, the
    running task's (its id as the parent; its root, or its id, as the root), as Celery's
    ``send_task`` fills them in. Outside a task, those given."""
    running = RUNNING.get()
    if not running:
        return root_id, parent_id
    request = running[-1]
    return root_id or request.root_id or request.id, parent_id or request.id
