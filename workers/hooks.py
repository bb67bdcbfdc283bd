"""Named points in a task's life where worker features plug in (events, the arguments store,
revocation, ETA, rate limits).

An observer subclasses :class:`Observer` and overrides the hooks it needs; the worker calls
every observer at each point through :class:`Hooks`. An observer that raises is logged and
never stops the worker.

Three points are gates, where a feature may stop a job: ``refuse_task`` (revoked or expired:
settled, never run), ``delay_task`` (not due yet: held or stored until its ETA) and
``throttle_task`` (a rate limit: held until its turn). The first gate that says True ends the
ask; what a gate raises goes on, since it may be a lost connection the worker must reconnect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .execution import Outcome
    from .job import Job
    from .worker import Worker

logger = logging.getLogger("qtui.worker")


class Observer:
    """Every hook, doing nothing."""

    def on_worker_ready(self, worker: Worker) -> None: ...
    def on_worker_stopping(self, worker: Worker) -> None: ...
    def on_worker_stopped(self, worker: Worker) -> None: ...
    def on_task_received(self, job: Job) -> None: ...
    def on_task_started(self, job: Job, pid: int | None) -> None: ...
    def on_task_succeeded(self, job: Job, outcome: Outcome) -> None: ...
    def on_task_failed(self, job: Job, exception: str, traceback: str | None) -> None: ...
    def on_task_retried(self, job: Job, outcome: Outcome) -> None: ...
    def on_task_revoked(self, job: Job, *, expired: bool = False, terminated: bool = False,
                        signum: int | None = None) -> None: ...
    def on_task_rejected(self, job: Job | None, reason: str) -> None: ...

    def refuse_task(self, job: Job) -> bool:
        """True: ``job`` must not run, and this gate settled it. Asked when the job arrives,
        when it may run (its ETA passed) and right before it starts."""
        return False

    def delay_task(self, job: Job) -> bool:
        """True: ``job`` is not due yet; this gate keeps it (or has the broker keep it) and
        hands it on when it is."""
        return False

    def throttle_task(self, job: Job) -> bool:
        """True: ``job`` waits for its turn; this gate hands it on when the turn comes."""
        return False


_GATES = ("refuse_task", "delay_task", "throttle_task")
_POINTS = (*(name for name in vars(Observer) if name.startswith("on_")), *_GATES)


class Hooks(Observer):
    """Calls each registered observer in turn."""

    def __init__(self) -> None:
        self.observers: list[Observer] = []
        self._at: dict[str, list[Callable[..., Any]]] = {point: [] for point in _POINTS}
        """The methods of the observers that override each point: only they are called (a task
        passes several points, so no-op calls would add up)."""

    def add(self, observer: Observer) -> None:
        self.observers.append(observer)
        for point, methods in self._at.items():
            if getattr(type(observer), point) is not getattr(Observer, point):
                methods.append(getattr(observer, point))

    def _ask(self, gate: str, job: Job) -> bool:
        # A loop, not any(...): no generator made per job on the main loop's path.
        for ask in self._at[gate]:  # noqa: SIM110
            if ask(job):
                return True
        return False

    def _emit(self, hook: str, *args: Any, **kwargs: Any) -> None:
        for method in self._at[hook]:
            try:
                method(*args, **kwargs)
            except Exception:
                logger.exception("worker hook %s failed: %r", hook, method)

    def on_worker_ready(self, worker: Worker) -> None:
        self._emit("on_worker_ready", worker)

    def on_worker_stopping(self, worker: Worker) -> None:
        self._emit("on_worker_stopping", worker)

    def on_worker_stopped(self, worker: Worker) -> None:
        self._emit("on_worker_stopped", worker)

    def on_task_received(self, job: Job) -> None:
        self._emit("on_task_received", job)

    def on_task_started(self, job: Job, pid: int | None) -> None:
        self._emit("on_task_started", job, pid)

    def on_task_succeeded(self, job: Job, outcome: Outcome) -> None:
        self._emit("on_task_succeeded", job, outcome)

    def on_task_failed(self, job: Job, exception: str, traceback: str | None) -> None:
        self._emit("on_task_failed", job, exception, traceback)

    def on_task_retried(self, job: Job, outcome: Outcome) -> None:
        self._emit("on_task_retried", job, outcome)

    def on_task_revoked(self, job: Job, *, expired: bool = False, terminated: bool = False,
                        signum: int | None = None) -> None:
        self._emit("on_task_revoked", job, expired=expired, terminated=terminated, signum=signum)

    def on_task_rejected(self, job: Job | None, reason: str) -> None:
        self._emit("on_task_rejected", job, reason)

    def refuse_task(self, job: Job) -> bool:
        return self._ask("refuse_task", job)

    def delay_task(self, job: Job) -> bool:
        return self._ask("delay_task", job)

    def throttle_task(self, job: Job) -> bool:
        return self._ask("throttle_task", job)
