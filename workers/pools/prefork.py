"""The prefork pool: qtui's own process pool, one task at a time per child.

Design: the worker forks its children from its main thread (they inherit the app and its
registered tasks). Each child has two pipes of its own: the parent writes a work item to the
child's job pipe only when that child is idle (per-child dispatch: the parent always knows which
child runs which task), and the child writes the outcome back on its result pipe. One thread in
the parent waits on every result pipe and every child's pidfd at once. A child's death is seen
by its pid (the pidfd turns readable; ``waitpid`` polling where there are no pidfds), not by
end-of-file on its result pipe, which a grandchild the task forked may keep open; a grandchild
does not get the pool's pipes anyway (closed after ``fork``, close-on-exec for ``exec``). The
task a dead child was running is reported lost -- killed at its hard time limit, signalled by
``revoke(terminate=True)`` (still killed at the hard limit if it survives the signal), or died
for any other reason (then the worker delivers the task again). The main thread respawns
missing children on every turn of its loop, so a child that died, retired after
``max_tasks_per_child`` (or above ``worker_max_memory_per_child``) or was added by
:meth:`grow` is replaced at once.

Children run in their own process group (a Ctrl-C or a group signal reaches the worker, which
then shuts them down in order) and die with the worker (``PR_SET_PDEATHSIG``), so no orphan ever
keeps running a task whose message went back to the queue.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import multiprocessing
import os
import resource
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from ..execution import Lost, Outcome, WorkItem, execute
from .base import Pool

if TYPE_CHECKING:
    from qtui.core import App

logger = logging.getLogger("qtui.worker")
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # the C library the interpreter is linked with


@dataclass(eq=False)
class _Child:
    index: int
    pid: int
    jobs: Connection
    results: Connection
    exits: int | None
    """A pidfd that turns readable when the child exits (None where the OS has none)."""
    item: WorkItem | None = None
    deadline: float | None = None
    tasks_done: int = 0
    retiring: bool = False
    dead: bool = False
    cause: str | None = None
    """Why the parent signalled it while it ran a task: "time-limit" or "signalled"."""
    signum: int | None = None
    killed: bool = False
    """SIGKILLed at its hard time limit (after a terminate-revoke too, if it outlived that)."""


class PreforkPool(Pool):
    name = "prefork"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._children: list[_Child] = []
        self._lock = threading.RLock()
        self._indexes = itertools.count(1)
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        self._stopping = False
        self._thread: threading.Thread | None = None

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.maintain()
        self._thread = threading.Thread(target=self._collect, name="qtui-prefork-results",
                                        daemon=True)
        self._thread.start()

    def maintain(self) -> None:
        """Fork children until the pool has ``concurrency`` of them (main thread only)."""
        if self._stopping:
            return
        with self._lock:
            missing = self.concurrency - sum(1 for c in self._children
                                             if not c.dead and not c.retiring)
        for _ in range(missing):
            self._spawn()
        if missing > 0:
            self._wake()

    def _spawn(self) -> None:
        jobs_r, jobs_w = multiprocessing.Pipe(duplex=False)
        results_r, results_w = multiprocessing.Pipe(duplex=False)
        index = next(self._indexes)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child
            code = 0
            try:
                for child in self._children:
                    child.jobs.close()
                    child.results.close()
                    if child.exits is not None:
                        os.close(child.exits)
                self._wake_r.close()
                self._wake_w.close()
                jobs_w.close()
                results_r.close()
                _child_main(self.app, jobs_r, results_w, parent, index, self.max_tasks_per_child,
                            self.app.conf.worker_max_memory_per_child)
            except BaseException:  # noqa: BLE001 - a child must never return into the worker
                logger.exception("pool child %d failed", index)
                code = 1
            finally:
                os._exit(code)
        jobs_r.close()
        results_w.close()
        with self._lock:
            self._children.append(_Child(index, pid, jobs_w, results_r, _watch_exit(pid)))

    def stop(self) -> None:
        self._stopping = True
        with self._lock:
            children = list(self._children)
        for child in children:
            try:
                child.jobs.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 5.0
        for child in children:
            while not child.dead and time.monotonic() < deadline:
                time.sleep(0.01)
        self.terminate()

    def terminate(self) -> None:
        self._stopping = True
        with self._lock:
            children = [c for c in self._children if not c.dead]
        for child in children:
            try:
                os.kill(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for child in children:
            try:
                os.waitpid(child.pid, 0)
            except ChildProcessError:
                pass
        self._wake()

    # dispatch --------------------------------------------------------------------------------
    def apply(self, item: WorkItem) -> bool:
        with self._lock:
            for child in self._children:
                if child.dead or child.retiring or child.item is not None:
                    continue
                try:
                    child.jobs.send(item)
                except OSError:
                    continue  # dying: the results thread will see it go
                child.item = item
                child.deadline = time.monotonic() + item.time_limit if item.time_limit else None
                child.cause, child.killed = None, False
                if child.deadline is not None:
                    self._wake()
                return True
        return False

    @property
    def free_slots(self) -> int:
        with self._lock:
            return sum(1 for c in self._children
                       if not c.dead and not c.retiring and c.item is None)

    @property
    def active(self) -> int:
        with self._lock:
            return sum(1 for c in self._children if not c.dead and c.item is not None)

    def pids(self) -> list[int]:
        with self._lock:
            return [c.pid for c in self._children if not c.dead]

    def pid_of(self, job_id: int) -> int | None:
        with self._lock:
            return next((c.pid for c in self._children
                         if c.item is not None and c.item.job_id == job_id), None)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "processes": self.pids(),
                "max-tasks-per-child": self.max_tasks_per_child or "N/A",
                "put-guarded-by-semaphore": False, "timeouts": self._timeouts(),
                "writes": "N/A"}

    def _timeouts(self) -> list[float]:
        """(soft, hard) of the task time limits set in config, 0 for none (Celery's order)."""
        conf = self.app.conf
        return [conf.task_soft_time_limit or 0, conf.task_time_limit or 0]

    def grow(self, n: int = 1) -> None:
        self.concurrency += n
        self.maintain()

    def shrink(self, n: int = 1) -> None:
        """Retire ``n`` children: idle ones at once, busy ones after their current task."""
        n = min(n, self.concurrency - 1)
        self.concurrency -= n
        with self._lock:
            candidates = sorted((c for c in self._children if not c.dead and not c.retiring),
                                key=lambda c: c.item is not None)
            for child in candidates[:n]:
                child.retiring = True
                try:
                    child.jobs.send(None)
                except OSError:
                    pass

    def signal(self, job_id: int, signum: int) -> bool:
        with self._lock:
            for child in self._children:
                if child.item is not None and child.item.job_id == job_id and not child.dead:
                    child.cause, child.signum = "signalled", signum
                    try:
                        os.kill(child.pid, signum)
                    except ProcessLookupError:
                        return False
                    return True
        return False

    # results ---------------------------------------------------------------------------------
    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b"")
        except OSError:
            pass

    def _collect(self) -> None:
        """The results thread: outcomes, dead children and hard time limits. It must outlive
        any surprise: without it no task would ever finish."""
        while True:
            try:
                if not self._collect_once():
                    return
            except Exception:  # noqa: BLE001 - logged; the next turn goes on
                logger.exception("prefork pool: the results thread hit an error; going on")
                time.sleep(0.1)

    def _collect_once(self) -> bool:
        """One wait for outcomes; False once the pool stopped and no child is left."""
        with self._lock:
            children = [c for c in self._children if not c.dead]
        if self._stopping and not children:
            return False
        # Any keys: wait() hands each pipe back typed as any waitable
        results: dict[Any, _Child] = {c.results: c for c in children}
        exits: dict[Any, _Child] = {c.exits: c for c in children if c.exits is not None}
        deadlines = [c.deadline for c in children if c.deadline is not None and not c.killed]
        # At most a second: a wait far in the future overflows the poll timeout.
        timeout = min(1.0, max(0.0, min(deadlines) - time.monotonic())) if deadlines else 1.0
        for ready in wait([*results, *exits, self._wake_r], timeout):
            if ready is self._wake_r:
                try:
                    self._wake_r.recv_bytes()
                except (EOFError, OSError):
                    pass
            elif ready in exits:
                self._on_exit(exits[ready])
            elif not results[ready].dead:
                self._receive(results[ready])
        for child in children:
            if child.exits is None and not child.dead:
                try:
                    pid, status = os.waitpid(child.pid, os.WNOHANG)
                except ChildProcessError:  # reaped by terminate()
                    pid, status = child.pid, 0
                if pid:
                    self._on_exit(child, status)
        self._enforce_hard_limits()
        return True

    def _receive(self, child: _Child) -> None:
        """Read one outcome; end-of-file means the child is gone."""
        try:
            outcome = child.results.recv()
        except (EOFError, OSError):
            self._on_exit(child)
            return
        self._on_outcome(child, outcome)

    def _on_outcome(self, child: _Child, outcome: Outcome) -> None:
        with self._lock:
            child.item = child.deadline = None
            child.tasks_done += 1
            if outcome.retiring or (self.max_tasks_per_child
                                    and child.tasks_done >= self.max_tasks_per_child):
                child.retiring = True  # it exits by itself; maintain() replaces it
        self.report(outcome)

    def _on_exit(self, child: _Child, status: int | None = None) -> None:
        """The child is gone (or going: its pipe is closed): take what it sent before it
        exited, reap it, and report the task it was running, if any."""
        if child.dead:
            return
        try:
            while child.results.poll(0):  # an outcome sent just before exiting (a retirement)
                self._on_outcome(child, child.results.recv())
        except (EOFError, OSError):
            pass
        if status is None:
            try:
                _, status = os.waitpid(child.pid, 0)
            except ChildProcessError:
                status = 0
        with self._lock:
            child.dead = True
            item, cause, signum = child.item, child.cause, child.signum
            child.item = None
            self._children.remove(child)
        child.jobs.close()
        child.results.close()
        if child.exits is not None:
            os.close(child.exits)
        if item is None:
            return
        exitcode = os.waitstatus_to_exitcode(status) if status else 0
        killed_by = -exitcode if exitcode < 0 else None
        self.report(Lost(item.job_id, cause or "died", child.pid, exitcode,
                         signum if cause == "signalled" else killed_by))

    def _enforce_hard_limits(self) -> None:
        now = time.monotonic()
        with self._lock:
            for child in self._children:
                if (child.deadline is not None and not child.killed and not child.dead
                        and now >= child.deadline):
                    if child.cause == "signalled":
                        logger.warning("pool child %d outlived signal %s (revoked with "
                                       "terminate); killed at its hard time limit",
                                       child.pid, child.signum)
                    child.cause, child.killed = child.cause or "time-limit", True
                    try:
                        os.kill(child.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


def _child_main(app: App, jobs: Connection, results: Connection, parent: int, index: int,
                max_tasks: int | None, max_memory: int | None = None) -> None:
    """A child's life: take a work item, run it, send the outcome; until told to stop."""
    _die_with(parent)
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGALRM):
        signal.signal(signum, signal.SIG_DFL)
    multiprocessing.current_process().name = f"ForkPoolWorker-{index}"
    # A task that forks must not hand the pool's pipes on: a grandchild holding the result pipe
    # would keep it open after this child dies. (``exec`` drops them anyway: close-on-exec.)
    def close_pipes() -> None:
        jobs.close()
        results.close()
    os.register_at_fork(after_in_child=close_pipes)
    app.after_fork()
    done = 0
    while True:
        try:
            item = jobs.recv()
        except (EOFError, OSError):
            return
        if item is None:
            return
        outcome = execute(app, item, use_alarm=True)
        # Peak resident size in KiB on Linux, as Celery's --max-memory-per-child measures it.
        outcome.retiring = bool(
            max_memory and resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > max_memory)
        if outcome.retiring:
            logger.warning("pool child %d: resident memory above %d KiB after task %s[%s]; "
                           "it is replaced", os.getpid(), max_memory, item.message.task,
                           item.message.id)
        results.send(outcome)
        done += 1
        if outcome.retiring or (max_tasks and done >= max_tasks):
            return


def _watch_exit(pid: int) -> int | None:
    """A pidfd for ``pid`` (Linux 5.3+), or None: the pool then polls ``waitpid``."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return pidfd_open(pid)
    except OSError:  # ENOSYS on older kernels, EPERM under some sandboxes
        return None


def _die_with(parent: int) -> None:
    """Have the kernel kill this child when the worker dies, whatever kills the worker."""
    prctl = getattr(_LIBC, "prctl", None)
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the worker died before prctl took effect
        os._exit(1)
