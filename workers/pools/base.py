"""The pool interface: run work items somewhere, report each outcome through one callback.

A pool never talks to the broker. It reports an :class:`~qtui.workers.execution.Outcome` when a
task ends and a :class:`~qtui.workers.execution.Lost` when a task's process died under it;
``report`` may be called from any thread, and the worker's main loop does the rest (acks,
redelivery, hooks). A pool that can report from the main thread itself does so in
:meth:`Pool.collect` (prefork: no thread hop per task).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..execution import Lost, Outcome, WorkItem

if TYPE_CHECKING:
    from qtui.core.app import App

Report = Callable[[Outcome | Lost], None]


class Pool(ABC):
    """Runs tasks with a fixed (but resizable) number of slots."""

    name: str = "base"
    #: :meth:`apply` runs the task to its end before it returns (the worker does nothing else
    #: meanwhile).
    runs_in_caller: bool = False

    def __init__(self, app: App, concurrency: int, report: Report,
                 max_tasks_per_child: int | None = None) -> None:
        self.app = app
        self.concurrency = max(1, concurrency)
        self.report = report
        self.max_tasks_per_child = max_tasks_per_child

    @abstractmethod
    def start(self) -> None:
        """Get ready to run tasks (start processes or threads)."""

    @abstractmethod
    def apply(self, item: WorkItem) -> bool:
        """Start running ``item``; False when no slot could take it (the caller keeps it)."""

    @property
    @abstractmethod
    def free_slots(self) -> int:
        """How many more items :meth:`apply` would take now."""

    @property
    @abstractmethod
    def active(self) -> int:
        """How many items are running."""

    @property
    def results_refused(self) -> str | None:
        """The refusal a result write in another process of the pool waits out now (prefork's
        children); writes in this process are the backend's own :attr:`refused`."""
        return None

    def maintain(self) -> None:
        """Called by the worker's main thread on every turn of its loop (respawn, resize)."""

    def collect(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for outcomes and report them from the calling thread
        (the worker's main thread). False where the pool reports from threads of its own: the
        worker then waits on what they report instead."""
        return False

    def grow(self, n: int = 1) -> None:
        self.concurrency += n

    def shrink(self, n: int = 1) -> None:
        self.concurrency = max(1, self.concurrency - n)

    def signal(self, job_id: int, signum: int) -> bool:
        """Signal the process running ``job_id``; False when this pool cannot."""
        return False

    def pids(self) -> list[int]:
        """The processes running tasks (for the banner and remote inspection)."""
        return []

    def pid_of(self, job_id: int) -> int | None:
        """The process running ``job_id`` (this one, unless the pool forks)."""
        return os.getpid()

    def info(self) -> dict[str, Any]:
        """What ``inspect stats`` shows under ``pool`` (Celery's keys)."""
        return {"implementation": f"{type(self).__module__}:{type(self).__name__}",
                "max-concurrency": self.concurrency}

    @abstractmethod
    def stop(self) -> None:
        """Release everything once no task runs (the worker waits for that first)."""

    @abstractmethod
    def terminate(self) -> None:
        """Stop now: running tasks are abandoned (their messages are requeued by the worker)."""
