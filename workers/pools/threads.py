"""The threads pool: tasks run in a fixed set of threads of the worker process.

Good for I/O-bound tasks. Time limits and ``terminate`` are cooperative: a watchdog raises
``SoftTimeLimitExceeded``, ``TimeLimitExceeded`` or ``TaskRevokedError`` in the task's thread
(``PyThreadState_SetAsyncExc``), which takes effect at its next Python instruction -- a thread
blocked inside a C call (a socket read, ``time.sleep``) sees it only when that call returns.
It does so only while the task's own code runs (the job is *armed*): an exception landing in the
pool's bookkeeping or in the result write would lose the result or store the wrong one.
"""

from __future__ import annotations

import ctypes
import io
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from qtui.core import states
from qtui.core.exceptions import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded

from ..execution import LimitErrors, Outcome, WorkItem, execute, interrupted, limit_errors
from .base import Pool

logger = logging.getLogger("qtui.worker")
_STOP = object()


class _Armed(io.BytesIO):
    """The block in which the watchdog and ``terminate`` may interrupt the task: from entering
    it to its ``close``. A ``BytesIO`` for its ``__exit__`` alone, which is C code (it closes
    the object): leaving the block disarms the job without running a line of Python, so there
    is no point between the end of the task's code and the disarm where an interruption could
    land outside every handler (a Python ``__exit__`` is one: its first instruction)."""

    armed = False
    revoked = False
    """Terminated before it was armed: it raises as it would arm."""

    def __enter__(self) -> None:  # type: ignore[override]
        self.armed = True
        if self.revoked:  # read after arming: a terminate either set it or was sent
            raise TaskRevokedError("terminated")


@dataclass
class _Running:
    """A job taken by the pool: queued for a thread, then running in it."""

    item: WorkItem
    errors: LimitErrors
    gate: _Armed = field(default_factory=_Armed)
    guard: io.BytesIO = field(default_factory=io.BytesIO)
    """Entered around :attr:`gate` and left after it (see :func:`execute`): its C ``__exit__``
    closes it however the block ends, even when a Python profiler or tracer made the
    interpreter skip the gate's ``__exit__`` (its ``c_call`` event) or raise on its way into
    the block (the ``return`` event of ``__enter__``)."""
    thread_id: ctypes.c_ulong | None = None
    started: float = 0.0
    soft_at: float | None = None
    hard_at: float | None = None
    outcome: Outcome | None = None


#: ``PyThreadState_SetAsyncExc``: raises an exception in a thread at its next Python instruction
#: (with the GIL held: the thread is parked at an instruction, or in a blocking C call).
_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
#: What the pool raises in its threads.
_INTERRUPTS = (TaskRevokedError, SoftTimeLimitExceeded, TimeLimitExceeded)


def _interrupt(running: _Running, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` in the job's thread if its task's code runs (see :class:`_Armed`).
    Between the test and the raise is no call and no jump back, where the interpreter could
    let the job's thread run on (out of the block) before the raise."""
    exc = ctypes.py_object(exc_type)
    gate, guard = running.gate, running.guard
    if gate.armed and not gate.closed and not guard.closed:
        _set_async_exc(running.thread_id, exc)
        return True
    return False


class ThreadsPool(Pool):
    name = "threads"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._running: dict[int, _Running] = {}
        """The jobs taken, queued for a thread or running in it."""
        self._lock = threading.Lock()
        self._names = itertools.count(1)
        self._watchdog_wake = threading.Event()
        self._stopping = False

    def start(self) -> None:
        for _ in range(self.concurrency):
            self._add_thread()
        threading.Thread(target=self._watchdog, name="qtui-time-limits", daemon=True).start()

    def _add_thread(self) -> None:
        thread = threading.Thread(target=self._run, name=f"ThreadPoolWorker-{next(self._names)}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self) -> None:
        thread_id = ctypes.c_ulong(threading.get_ident())
        while True:
            running = self._queue.get()
            if running is _STOP:
                return
            assert isinstance(running, _Running)
            try:
                try:
                    outcome = self._execute(running, thread_id)
                finally:
                    self._end(running)
            except _INTERRUPTS as exc:
                # A Celery task terminated before its block (the tracer does not catch what
                # the gate's __enter__ raises), or one that landed past the task's block (on a
                # free-threaded build the test and the raise of _interrupt are not one step):
                # the job is reported as what it ended with -- its outcome if it had one, else
                # that interruption.
                self._end(running)
                outcome = running.outcome or interrupted(self.app, running.item, exc,
                                                         running.started)
            self.report(outcome)

    def _execute(self, running: _Running, thread_id: ctypes.c_ulong) -> Outcome:
        """Run the job in this thread (its outcome is kept in ``running.outcome`` too). An
        interruption that escaped the task's block comes out of here."""
        item = running.item
        now = time.monotonic()
        with self._lock:
            running.thread_id, running.started = thread_id, now
            running.soft_at = now + item.soft_time_limit if item.soft_time_limit else None
            running.hard_at = now + item.time_limit if item.time_limit else None
        if running.soft_at is not None or running.hard_at is not None:
            # Only a deadline needs the watchdog: a wake per task costs a thread switch.
            self._watchdog_wake.set()
        try:
            running.outcome = execute(self.app, item, limits=running.gate, guard=running.guard)
        except _INTERRUPTS:
            raise
        except BaseException as exc:  # noqa: BLE001 - a bug in execute must not kill the thread
            logger.exception("Job %s: running it failed", item.job_id)
            running.outcome = Outcome(item.job_id, states.FAILURE, time.monotonic() - now,
                                      exception=repr(exc))
        return running.outcome

    def _end(self, running: _Running) -> None:
        """No interruption is sent for the job from now on. One sent before lands at the latest
        at the ``pop`` (a call, inside the lock's block: its exit releases the lock)."""
        with self._lock:
            self._running.pop(running.item.job_id, None)

    def _watchdog(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            wait = 1.0
            with self._lock:
                for running in self._running.values():
                    if running.gate.closed or running.guard.closed:  # its task's code has ended
                        continue
                    # A deadline passed before the task's code began is kept for when it does.
                    if running.soft_at is not None and now >= running.soft_at \
                            and _interrupt(running, running.errors[0]):
                        running.soft_at = None
                    if running.hard_at is not None and now >= running.hard_at \
                            and _interrupt(running, running.errors[1]):
                        running.hard_at = None
                    for at in (running.soft_at, running.hard_at):
                        if at is not None:
                            wait = min(wait, at - now)
            self._watchdog_wake.wait(max(wait, 0.005))
            self._watchdog_wake.clear()

    def apply(self, item: WorkItem) -> bool:
        running = _Running(item, limit_errors(self.app, item.message.task))
        with self._lock:
            if len(self._running) >= self.concurrency:
                return False
            self._running[item.job_id] = running
        self._queue.put(running)
        return True

    @property
    def free_slots(self) -> int:
        with self._lock:
            return max(0, self.concurrency - len(self._running))

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._running)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "threads": sum(1 for t in self._threads if t.is_alive())}

    def grow(self, n: int = 1) -> None:
        self.concurrency += n
        self._threads = [t for t in self._threads if t.is_alive()]
        for _ in range(n):
            self._add_thread()

    def shrink(self, n: int = 1) -> None:
        n = min(n, self.concurrency - 1)
        self.concurrency -= n
        for _ in range(n):
            self._queue.put(_STOP)

    def signal(self, job_id: int, signum: int) -> bool:
        """Terminate the job: interrupt its task's code; a job whose task's code has not begun
        (queued for a thread, in ``task_prerun``, storing STARTED) is stopped as it would begin
        (REVOKED, never run). False once its task's code has ended."""
        with self._lock:
            running = self._running.get(job_id)
            if running is None:
                return False
            if _interrupt(running, TaskRevokedError):
                return True
            if not running.gate.armed:  # no call between this test and the flag
                running.gate.revoked = True
                return True
            return False

    def stop(self) -> None:
        self._stopping = True
        self._watchdog_wake.set()
        for _ in self._threads:
            self._queue.put(_STOP)

    def terminate(self) -> None:
        """Threads cannot be killed; they are daemons and end with the process."""
        self.stop()
