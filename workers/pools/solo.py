"""The solo pool: each task runs in the worker's own main thread, one at a time.

Nothing else happens while a task runs (no consuming, no remote control), which is what makes
it the simplest and the fastest for short tasks. Soft and hard time limits use SIGALRM; the hard
limit raises ``TimeLimitExceeded`` in the task instead of killing a process.
"""

from __future__ import annotations

from typing import Any

from ..execution import WorkItem, execute
from .base import Pool


class SoloPool(Pool):
    name = "solo"
    runs_in_caller = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.concurrency = 1
        self._running = False

    def start(self) -> None:
        """Nothing to start: tasks run in the caller's thread."""

    def apply(self, item: WorkItem) -> bool:
        if self._running:
            return False
        self._running = True
        try:
            outcome = execute(self.app, item, use_alarm=True, hard_by_alarm=True)
        finally:
            self._running = False
        self.report(outcome)
        return True

    @property
    def free_slots(self) -> int:
        return 0 if self._running else 1

    @property
    def active(self) -> int:
        return 1 if self._running else 0

    def grow(self, n: int = 1) -> None:
        """The solo pool has one slot, always."""

    def shrink(self, n: int = 1) -> None:
        """The solo pool has one slot, always."""

    def stop(self) -> None:
        """Nothing to release."""

    def terminate(self) -> None:
        """Nothing runs outside the caller's thread."""
