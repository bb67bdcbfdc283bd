"""Lineage: the ``parent_id`` and ``root_id`` of what a task sends from inside its body (and,
with ``task_inherit_parent_priority``, its priority).

As in Celery (``Celery.send_task`` reads ``current_worker_task``), a send made while a task
runs (on a worker, or by ``apply()``) names that task as its parent and shares its root;
the ids a caller gives win. The running tasks are kept per thread and per context (a
:class:`~contextvars.ContextVar`), so each task of a threads pool sees its own; a send
outside a task reads one empty variable and sets nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import App
    from .task import Request

RUNNING: ContextVar[tuple[Request, ...]] = ContextVar("qtui_running_requests", default=())
"""The requests of the tasks run in this thread or context (a worker's, ``apply()``'s),
innermost last: per thread, so each task of a threads pool sees its own."""

DIRECT: ContextVar[tuple[int, ...]] = ContextVar("qtui_direct_calls", default=())
"""For each task called directly (``task()``) inside a running task, innermost last: how many
tasks were running in this thread or context then."""


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


def applied_under() -> Request | None:
    """The request an ``apply()`` here is the child of: the running task's, or None when the
    innermost task is one called directly inside it, whose request has no id (Celery's
    ``Task.apply`` reads ``_task_stack.top``, which a direct call pushes; its ``send_task``
    skips such a task, as :func:`lineage` does)."""
    running = RUNNING.get()
    if not running:
        return None
    direct = DIRECT.get()
    return None if direct and direct[-1] == len(running) else running[-1]


def running_priority(root_id: str | None, parent_id: str | None) -> int | None:
    """The delivery priority of the task running here (None outside a task, or none), which
    ``task_inherit_parent_priority`` gives a send from it, as Celery's ``send_task`` reads
    ``parent.request.delivery_info['priority']``: only for a send that leaves its root or parent
    id to be filled in (Celery's ``if not root_id or not parent_id``), so not for one that names
    both, as a failed task's errbacks do."""
    running = RUNNING.get()
    if not running or (root_id and parent_id):
        return None
    priority: int | None = running[-1].delivery_info.get("priority")
    return priority


def inherited_priority(app: App, delivery_info: Mapping[str, Any]) -> dict[str, int]:
    """The ``priority`` option a finished task gives its links and next chain step: its own
    delivery priority under ``task_inherit_parent_priority`` (over theirs, as Celery's tracer
    passes it to their ``apply_async``), else none."""
    priority = delivery_info.get("priority")
    if priority is None or not app.send_settings.inherit_priority:
        return {}
    return {"priority": priority}


def lineage(root_id: str | None, parent_id: str | None) -> tuple[str | None, str | None]:
    """The root and parent ids of a send from here: those given, and for one not given, the
    running task's (its id as the parent; its root, or its id, as the root), as Celery's
    ``send_task`` fills them in. Outside a task, those given."""
    running = RUNNING.get()
    if not running:
        return root_id, parent_id
    request = running[-1]
    return root_id or request.root_id or request.id, parent_id or request.id
