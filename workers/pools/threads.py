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
from dataclasses import dataclass
from typing import Any

from qtui.core import states
from qtui.core.exceptions import TaskRevokedError

from ..execution import LimitErrors, Outcome, WorkItem, execute, limit_errors
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

    def __enter__(self) -> None:  # type: ignore[override]
        self.armed = True  # the last instruction before the block: none can land after it


@dataclass
class _Running:
    item: WorkItem
    thread_id: ctypes.c_ulong
    soft_at: float | None
    hard_at: float | None
    errors: LimitErrors
    gate: _Armed


#: ``PyThreadState_SetAsyncExc``: raises an exception in a thread at its next Python instruction
#: (with the GIL held: the thread is parked at an instruction, or in a blocking C call).
_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc


def _interrupt(running: _Running, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` in the job's thread if its task's code runs (see :class:`_Armed`).
    Between the test and the raise is no call and no jump back, where the interpreter could
    let the job's thread run on (out of the block) before the raise."""
    exc = ctypes.py_object(exc_type)
    gate = running.gate
    if gate.armed and not gate.closed:
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
        self._pending = 0
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
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, WorkItem)
            now = time.monotonic()
            running = _Running(item, thread_id,
                               now + item.soft_time_limit if item.soft_time_limit else None,
                               now + item.time_limit if item.time_limit else None,
                               limit_errors(self.app, item.message.task), _Armed())
            with self._lock:
                self._pending -= 1
                self._running[item.job_id] = running
            if running.soft_at is not None or running.hard_at is not None:
                # Only a deadline needs the watchdog: a wake per task costs a thread switch.
                self._watchdog_wake.set()
            outcome: Outcome | None = None
            try:
                outcome = execute(self.app, item, limits=running.gate)
            except BaseException as exc:  # noqa: BLE001 - a bug in execute must not kill the thread
                logger.exception("Job %s: running it failed", item.job_id)
                outcome = Outcome(item.job_id, states.FAILURE, time.monotonic() - now,
                                  exception=repr(exc))
            finally:
                with self._lock:
                    self._running.pop(item.job_id, None)
            self.report(outcome)

    def _watchdog(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            wait = 1.0
            with self._lock:
                for running in self._running.values():
                    if running.gate.closed:  # its task's code has ended
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
        with self._lock:
            if self._pending + len(self._running) >= self.concurrency:
                return False
            self._pending += 1
        self._queue.put(item)
        return True

    @property
    def free_slots(self) -> int:
        with self._lock:
            return max(0, self.concurrency - self._pending - len(self._running))

    @property
    def active(self) -> int:
        with self._lock:
            return self._pending + len(self._running)

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
        with self._lock:
            running = self._running.get(job_id)
            return running is not None and _interrupt(running, TaskRevokedError)

    def stop(self) -> None:
        self._stopping = True
        self._watchdog_wake.set()
        for _ in self._threads:
            self._queue.put(_STOP)

    def terminate(self) -> None:
        """Threads cannot be killed; they are daemons and end with the process."""
        self.stop()
