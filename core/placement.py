"""Counts held back until a task's queue is known.

A Celery worker's task events do not name the queue; only the client's ``task-sent`` does, and
a client publishes it just after the task. A worker that takes the task at once can get its
events (received, started, succeeded) to the receiver first, so counted on arrival the task
would go under no queue (the exporter's ``celery``), and never under its own. Metrics hold such
a task's counts until its ``task-sent`` arrives, or for :data:`PLACEMENT_WAIT` seconds (its
clients send no task-sent), then count them under what is known by then.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from .state import TaskState

#: Seconds a task's counts wait for the client's task-sent that names its queue.
PLACEMENT_WAIT = 2.0
#: Tasks held at most: past it the oldest are counted at once (memory stays bounded).
MAX_HELD_TASKS = 50_000

T = TypeVar("T")


class Held(Generic[T]):
    """Counts to make (of any shape) of tasks whose queue is not known yet, by task id, in the
    order the tasks were first held."""

    def __init__(self, wait: float = PLACEMENT_WAIT, limit: int = MAX_HELD_TASKS) -> None:
        self.wait = wait
        self.limit = limit
        self._held: dict[str, list[T]] = {}
        self._order: deque[tuple[float, str, list[T]]] = deque()
        """(when due, task id, its counts) in the order held; an entry whose counts are no
        longer the task's (released) is skipped. A deque: taking the oldest from a dict walks
        over the holes its earlier deletions left, once per task."""

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, uuid: object) -> bool:
        return uuid in self._held

    def counts(self, uuid: str, placed: bool, count: T, now: float) -> list[T]:
        """What to count of a task now that ``count`` comes: nothing while its queue is not
        ``placed`` (``count`` waits with its others), else what it held, then ``count``."""
        if not placed:
            self.hold(uuid, count, now)
            return []
        if uuid in self._held:
            return [*self.release(uuid), count]
        return [count]

    def hold(self, uuid: str, count: T, now: float) -> None:
        """Hold one count of a task, due ``wait`` seconds after the task's first."""
        counts = self._held.get(uuid)
        if counts is None:
            counts = self._held[uuid] = [count]
            self._order.append((now + self.wait, uuid, counts))
        else:
            counts.append(count)

    def release(self, uuid: str) -> list[T]:
        """The task's held counts (its queue is known now), in the order they were held."""
        return self._held.pop(uuid, [])

    def due(self, now: float) -> list[tuple[str, list[T]]]:
        """The tasks whose wait is over at ``now``, and the oldest past ``limit``, with their
        counts; they are held no more."""
        found = []
        held, order = self._held, self._order
        while order:
            due, uuid, counts = order[0]
            if held.get(uuid) is not counts:
                order.popleft()
                continue
            if due > now and len(held) <= self.limit:
                break
            order.popleft()
            del held[uuid]
            found.append((uuid, counts))
        return found

    def due_placed(self, now: float, task_of: Callable[[str], TaskState | None],
                   held_name: Callable[[T], str | None]
                   ) -> Iterator[tuple[T, str | None, str | None]]:
        """:meth:`due`'s counts one by one, each with its task's name and queue as
        ``task_of`` knows them now (for a task gone: the name the count was held with,
        ``held_name`` of it, and no queue)."""
        for uuid, counts in self.due(now):
            task = task_of(uuid)
            for count in counts:
                if task is None:
                    yield count, held_name(count), None
                else:
                    yield count, task.name, task.queue
