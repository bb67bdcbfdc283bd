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
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from qtui.core import states
from qtui.core.exceptions import SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded

from ..execution import LimitErrors, Outcome, WorkItem, execute, limit_errors
from .base import Pool

logger = logging.getLogger("qtui.worker")
_STOP = object()


@dataclass
class _Running:
    item: WorkItem
    thread_id: int
    soft_at: float | None
    hard_at: float | None
    errors: LimitErrors
    armed: bool = False
    """True while the task's own code runs: the only time an exception may be raised in it."""
    interrupted: bool = False
    """An interruption was sent (a limit or ``terminate``): one may still be pending when the
    job is disarmed."""


class _Armed:
    """Lets the watchdog (and ``terminate``) interrupt the task only inside this block. A
    class, not a generator-based context manager: entered once per task."""

    def __init__(self, pool: ThreadsPool, running: _Running) -> None:
        self.pool, self.running = pool, running

    def __enter__(self) -> None:
        running = self.running
        try:
            # No lock: the watchdog and ``signal`` read the flag under it, and act on it at
            # their next pass at the latest.
            running.armed = True
            if running.soft_at is not None or running.hard_at is not None:
                # Only a deadline needs the watchdog: a wake per task costs a thread switch.
                self.pool._watchdog_wake.set()
        except BaseException:  # a limit landed before the block: __exit__ will not run
            self.pool._disarm(running)
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.pool._disarm(self.running)


class _Disarmed(BaseException):
    """Takes the place of an interruption still pending when its job is disarmed."""


def _raise_in(thread_id: int, exc_type: type[BaseException]) -> None:
    """Raise ``exc_type`` in a thread at its next Python instruction (the calling thread: as
    this call returns)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc_type))


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
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, WorkItem)
            now = time.monotonic()
            running = _Running(item, threading.get_ident(),
                               now + item.soft_time_limit if item.soft_time_limit else None,
                               now + item.time_limit if item.time_limit else None,
                               limit_errors(self.app, item.message.task))
            with self._lock:
                self._pending -= 1
                self._running[item.job_id] = running
            outcome: Outcome | None = None
            try:
                outcome = execute(self.app, item, limits=_Armed(self, running))
            except BaseException as exc:  # noqa: BLE001 - a bug in execute must not kill the thread
                logger.exception("Job %s: running it failed", item.job_id)
                outcome = Outcome(item.job_id, states.FAILURE, time.monotonic() - now,
                                  exception=repr(exc))
            finally:
                with self._lock:
                    self._running.pop(item.job_id, None)
            self.report(outcome)

    def _disarm(self, running: _Running) -> None:
        """Stop interrupting the job (in its own thread), and drop an interruption still
        pending: it fired as the task ended, too late to matter. Repeated if one lands here
        before the flag is down. Under the lock: the watchdog raises only while holding it, so
        none is on its way once the flag is down.

        A pending interruption is replaced by :class:`_Disarmed`, taken here, never cancelled
        (``PyThreadState_SetAsyncExc`` with NULL): on CPython 3.11 a cancel leaves the
        interpreter's eval breaker set for good, and a thread with a profiler or tracer
        (cProfile, yappi, coverage, a debugger) then spins at its next call."""
        while True:
            try:
                with self._lock:
                    running.armed = False
                if running.interrupted:
                    _raise_in(running.thread_id, _Disarmed)
                return
            except _Disarmed:
                return
            except (SoftTimeLimitExceeded, TimeLimitExceeded, TaskRevokedError):
                continue

    def _watchdog(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            wait = 1.0
            with self._lock:
                for running in self._running.values():
                    if not running.armed:
                        continue
                    if running.soft_at is not None and now >= running.soft_at:
                        running.soft_at, running.interrupted = None, True
                        _raise_in(running.thread_id, running.errors[0])
                    if running.hard_at is not None and now >= running.hard_at:
                        running.hard_at, running.interrupted = None, True
                        _raise_in(running.thread_id, running.errors[1])
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
            if running is None or not running.armed:
                return False
            running.interrupted = True
            _raise_in(running.thread_id, TaskRevokedError)
        return True

    def stop(self) -> None:
        self._stopping = True
        self._watchdog_wake.set()
        for _ in self._threads:
            self._queue.put(_STOP)

    def terminate(self) -> None:
        """Threads cannot be killed; they are daemons and end with the process."""
        self.stop()
