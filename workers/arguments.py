"""The complete arguments of the tasks this worker received lately, for ``task_arguments``.

Events carry ``argsrepr`` and ``kwargsrepr``, cut at 1 KiB: enough to read, not to run the task
again. A monitor that re-sends a failed task (the console's retry) asks the workers for the real
arguments with the ``task_arguments`` remote-control command, answered from this store.

Each reply carries the ``argsrepr``/``kwargsrepr`` the message came with and whether they mask
the arguments (the sender gave its own to hide them): a monitor then shows the reprs, never the
arguments, and a retry sends the reprs again.

Bounded three ways: the most recent :data:`MAX_TASKS` tasks, at most :data:`MAX_BYTES` of
arguments in all, and no task whose arguments take more than :data:`MAX_TASK_BYTES` as JSON
(only the reprs of those are kept). Sizes come from the message body where it is plain JSON,
so keeping a task costs no serialization; the store holds the decoded message's own objects,
copying nothing.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qtui.core.protocol import masks

from .hooks import Observer

if TYPE_CHECKING:
    from .job import Job

MAX_TASKS = 5_000
MAX_TASK_BYTES = 256 * 1024
MAX_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~0.3 us a task more
class Arguments:
    args: tuple[Any, ...] | None
    """None for a task whose arguments are too big to keep: only its reprs are."""
    kwargs: dict[str, Any] | None
    name: str
    queue: str
    size: int
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    shadow: str | None = None
    masked: bool = False
    """Whether the reprs mask the arguments, for a task whose arguments are not kept."""

    def reply(self) -> dict[str, Any]:
        """The ``task_arguments`` reply for this task: with the reprs its message carried, and
        whether they mask the arguments (worked out here, on request, where they are kept)."""
        reply: dict[str, Any] = {
            "name": self.name, "queue": self.queue, "argsrepr": self.argsrepr,
            "kwargsrepr": self.kwargsrepr, "shadow": self.shadow, "masked": self.masked}
        if self.args is not None and self.kwargs is not None:
            reply.update(args=list(self.args), kwargs=self.kwargs,
                         masked=masks(self.args, self.kwargs, self.argsrepr, self.kwargsrepr))
        return reply


class ArgumentStore(Observer):
    """An LRU of task id -> :class:`Arguments`, filled as tasks are received."""

    def __init__(self, max_tasks: int = MAX_TASKS, max_bytes: int = MAX_BYTES,
                 max_task_bytes: int = MAX_TASK_BYTES) -> None:
        self.max_tasks = max_tasks
        self.max_bytes = max_bytes
        self.max_task_bytes = max_task_bytes
        self.bytes = 0
        self._tasks: OrderedDict[str, Arguments] = OrderedDict()

    def on_task_received(self, job: Job) -> None:
        msg = job.message
        size = json_size(job)
        if size is None:
            return
        if size > self.max_task_bytes:
            # Kept: whether its reprs mask its arguments, so a monitor never re-sends the mask
            # as the arguments (saferepr is bounded: cheap however big they are).
            reprs = len(msg.argsrepr or "") + len(msg.kwargsrepr or "")
            self.add(msg.id, Arguments(None, None, msg.task, job.queue, reprs, msg.argsrepr,
                                       msg.kwargsrepr, msg.shadow,
                                       masks(msg.args, msg.kwargs, msg.argsrepr,
                                             msg.kwargsrepr)))
            return
        self.add(msg.id, Arguments(msg.args, msg.kwargs, msg.task, job.queue, size,
                                   msg.argsrepr, msg.kwargsrepr, msg.shadow))

    def add(self, task_id: str, arguments: Arguments) -> None:
        old = self._tasks.pop(task_id, None)
        if old is not None:
            self.bytes -= old.size
        self._tasks[task_id] = arguments
        self.bytes += arguments.size
        while self._tasks and (len(self._tasks) > self.max_tasks or self.bytes > self.max_bytes):
            _, dropped = self._tasks.popitem(last=False)
            self.bytes -= dropped.size

    def get(self, task_id: str) -> Arguments | None:
        return self._tasks.get(task_id)

    def lookup(self, task_ids: Iterable[str], max_bytes: int) -> dict[str, dict[str, Any]]:
        """Replies for the ids known here, in order, until about ``max_bytes`` of them."""
        found: dict[str, dict[str, Any]] = {}
        total = 0
        for task_id in task_ids:
            arguments = self._tasks.get(task_id)
            if arguments is None or task_id in found:
                continue
            total += arguments.size
            if total > max_bytes and found:
                break
            found[task_id] = arguments.reply()
        return found

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._tasks


def json_size(job: Job) -> int | None:
    """About how many bytes the job's arguments take as JSON; None if they are not JSON."""
    delivery = job.delivery
    body = delivery.body
    compressed = (delivery.headers or {}).get("compression")
    if delivery.content_type == "application/json" and not compressed and body is not None:
        return len(body)  # [args, kwargs, embed]: a little more than the arguments alone
    try:
        return len(json.dumps([job.message.args, job.message.kwargs]))
    except (TypeError, ValueError):
        return None
