"""The prefork pool: qtui's own process pool, one task at a time per child.

Design: the worker forks its children from its main thread (they inherit the app and its
registered tasks). Each child has two pipes of its own: the parent writes a work item to the
child's job pipe only when that child is idle (per-child dispatch: the parent always knows which
child runs which task), and the child writes the outcome back on its result pipe. The worker's
main thread reads the result pipes itself (:meth:`PreforkPool.collect`, one ``poll`` over them
all, one ``read`` for an outcome's length and payload together: with per-child dispatch a
pipe holds at most one outcome, as a child gets its next item only after it is read), so an
outcome reaches the acks without a hand-over between threads. Work items and outcomes cross the
pipes as plain values, which pickle faster than the dataclasses they stand for, each after its
length (one ``write`` to send one, one ``read`` to take whatever a pipe holds). One watch
thread in the parent waits on every child's pidfd and kills a child at its hard time limit. A
child's death is seen by its pid (the pidfd turns readable; ``waitpid`` polling where there are no
pidfds), not by end-of-file on its result pipe, which a grandchild the task forked may keep
open; a grandchild does not get the pool's pipes anyway (closed after ``fork``, close-on-exec
for ``exec``). The task a dead child was running is reported lost -- killed at its hard time
limit, signalled by ``revoke(terminate=True)`` (still killed at the hard limit if it survives
the signal), or died for any other reason (then the worker delivers the task again). A terminate
is sent only while the task's own code runs (see :class:`_CodeEnd`). The main
thread respawns missing children on every turn of its loop, so a child that died, retired after
``max_tasks_per_child`` (or above ``worker_max_memory_per_child``) or was added by :meth:`grow`
is replaced at once.

Children run in their own process group (a Ctrl-C or a group signal reaches the worker, which
then shuts them down in order) and die with the worker (``PR_SET_PDEATHSIG``), so no orphan ever
keeps running a task whose message went back to the queue.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import math
import mmap
import multiprocessing
import operator
import os
import pickle
import resource
import select
import signal
import struct
import threading
import time
from collections import deque
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from qtui.core import states
from qtui.core.protocol import TaskMessage

from ..execution import Lost, Outcome, Phase, WorkItem, execute
from .base import Pool

if TYPE_CHECKING:
    from qtui.core import App

logger = logging.getLogger("qtui.worker")
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # the C library the interpreter is linked with
#: Longest the watch thread waits for a child with no pidfd to exit before polling ``waitpid``.
_WAITPID_POLL = 0.1
#: The length that goes before each work item and each outcome on the pipes.
_LENGTH = struct.Struct("!I")
#: Most bytes taken from a pipe in one read (a pipe holds 64 KiB).
_READ_SIZE = 65536
#: Longest a terminate waits for a child that is saying its task's code has ended.
_CODE_END_WAIT = 1.0
#: The outcomes a child's shared bytes name, by their place here plus one (0: none yet).
_STATES = (states.SUCCESS, states.FAILURE, states.REVOKED, states.RETRY, states.IGNORED,
           states.REJECTED)
#: What the parent sends a child on its job pipe to have it exit.
_STOP = b""
#: An outcome's fields as a tuple, in the order :class:`Outcome` takes them back.
_OUTCOME_VALUES = operator.attrgetter(*(f.name for f in fields(Outcome)))
#: A work item's fields but its message, and its message's fields, each as a tuple in this
#: order: the names are not pickled with every item.
_ITEM_FIELDS = tuple(f.name for f in fields(WorkItem) if f.name != "message")
_ITEM_VALUES = operator.attrgetter(*_ITEM_FIELDS)
_MESSAGE_FIELDS = tuple(f.name for f in fields(TaskMessage))
_MESSAGE_VALUES = operator.attrgetter(*_MESSAGE_FIELDS)


class _Frames:
    """Length-framed payloads read from a pipe (each after its length, as :func:`_write` writes
    them): one ``read`` takes whatever the pipe holds, whole frames are handed out and the rest
    kept for the next read."""

    def __init__(self) -> None:
        self.unread = bytearray()

    def read(self, fd: int) -> list[bytes] | None:
        """The frames one read of ``fd`` completes (maybe none); None at its end. The read
        blocks while the pipe is empty."""
        data = os.read(fd, _READ_SIZE)
        if not data:
            return None
        if not self.unread and len(data) >= _LENGTH.size \
                and _LENGTH.unpack_from(data)[0] == len(data) - _LENGTH.size:
            return [data[_LENGTH.size:]]  # one whole frame, the common case: nothing to keep
        unread = self.unread
        unread += data
        frames, start = [], 0
        with memoryview(unread) as view:
            while len(view) - start >= _LENGTH.size:
                (size,) = _LENGTH.unpack_from(view, start)
                end = start + _LENGTH.size + size
                if end > len(view):
                    break  # the rest of this one comes with the next read
                frames.append(view[start + _LENGTH.size:end].tobytes())
                start = end
        del unread[:start]
        return frames


class _CodeEnd(AbstractContextManager[None]):
    """How far a child's task has got past its own code (a :class:`~qtui.workers.execution.Phase`,
    the outcome's state and whether it is dead-lettered), in three bytes both processes map. A
    terminate stops a task in its code or not at all, never in its result write or canvas
    follow-up, SIGKILL excepted: the child leaves the code (this is the ``guard`` of
    :func:`~qtui.workers.execution.execute`) under a lock the parent holds while it tests the
    phase and signals. The parent reads the bytes of a child that died (killed at the hard time
    limit or by a SIGKILL, anywhere) to end its task from there (these are the ``phases`` of
    ``execute``)."""

    def __init__(self) -> None:
        # The fork context's: unlinked at once, no resource tracker, whatever start method
        # the application set (the pool forks its children itself).
        self._lock = multiprocessing.get_context("fork").Lock()
        self._bytes = mmap.mmap(-1, 3)

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            if self._bytes[0] == Phase.CODE:
                self._bytes[0] = Phase.ENDED

    def reached(self, phase: Phase, state: str, dead_letter: bool = False) -> None:
        """The child passed ``phase`` with an outcome in ``state`` (dead-lettered or not): the
        state first, so that the parent never reads a phase with the state of the task before."""
        self._bytes[2] = dead_letter
        self._bytes[1] = _STATES.index(state) + 1 if state in _STATES else 0
        self._bytes[0] = phase

    def passed(self) -> tuple[Phase, str | None, bool]:
        """The phase the child last passed, the outcome's state and whether it is dead-lettered
        (read once it is dead)."""
        state = self._bytes[1]
        return Phase(self._bytes[0]), _STATES[state - 1] if state else None, bool(self._bytes[2])

    def rearm(self) -> None:
        """The child is about to be given its next task (it is idle: it does not touch the
        bytes now)."""
        self._bytes[2] = 0
        self._bytes[1] = 0
        self._bytes[0] = Phase.CODE

    def signal(self, pid: int, pidfd: int | None, signum: int) -> bool:
        """Send ``signum`` to the child unless its task's code has ended: whether it was sent.
        A signal at its default action (the child leaves SIGTERM and the others so) ends the
        child before ``kill`` returns, so it cannot get past the lock after the test. SIGKILL,
        the operator's last resort, is sent wherever the child is (stuck past its code: a
        result write to a frozen backend, a handler that blocks), the bytes and lock unasked."""
        if signum == signal.SIGKILL:
            return _kill(pid, pidfd, signum)
        if not self._lock.acquire(timeout=_CODE_END_WAIT):
            return False  # the child is saying its code ended, or died saying it
        try:
            return self._bytes[0] == Phase.CODE and _kill(pid, pidfd, signum)
        finally:
            self._lock.release()

    def close(self) -> None:
        self._bytes.close()


@dataclass(eq=False)
class _Child:
    index: int
    pid: int
    jobs: Connection
    results: Connection
    exits: int | None
    """A pidfd that turns readable when the child exits (None where the OS has none)."""
    code_end: _CodeEnd
    jobs_fd: int = field(init=False)
    results_fd: int = field(init=False)
    """The pipes' file descriptors, asked of them once (used under the pool's lock while the
    child is not dead: its pipes are closed only after it is marked so)."""
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
    frames: _Frames = field(default_factory=_Frames)
    """What was read from the result pipe past the last whole outcome."""
    refused: str | None = None
    """The refusal its task's result write waits out now, as the child last said."""

    def __post_init__(self) -> None:
        self.jobs_fd, self.results_fd = self.jobs.fileno(), self.results.fileno()

    def read_outcomes(self) -> list[Outcome] | None:
        """The outcomes one read of the result pipe completes (length and payload in one read, up
        to :data:`_READ_SIZE`; at most one outcome, as a child has one task at a time, and none
        while a large one is still arriving); None at its end. Only when the pipe is readable: the
        read blocks otherwise. What the child said of a refused result write is kept in
        :attr:`refused`."""
        frames = self.frames.read(self.results_fd)
        if frames is None:
            return None
        outcomes = []
        for frame in frames:
            value = _unpack(frame)
            if isinstance(value, Outcome):
                outcomes.append(value)
            else:
                self.refused = value
        return outcomes


class PreforkPool(Pool):
    name = "prefork"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._children: list[_Child] = []
        self._lock = threading.RLock()
        self._indexes = itertools.count(1)
        self._wake_r, self._wake_w = multiprocessing.Pipe(duplex=False)
        """Wakes the watch thread (a new deadline, a new child, stopping)."""
        self._alert_r, self._alert_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        """Wakes the main thread's :meth:`collect` when the watch thread reported something."""
        self._generation = 0
        """Counts the changes to the set of children, so that :meth:`collect` knows when to
        poll another set of result pipes."""
        self._polled = -1
        self._poll = select.poll()
        self._poll.register(self._alert_r, select.POLLIN)
        self._polled_children: dict[int, _Child] = {}
        """The children whose result pipes :attr:`_poll` watches, by file descriptor."""
        self._stopping = False
        self._thread: threading.Thread | None = None

    # lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.maintain()
        self._thread = threading.Thread(target=self._watch, name="qtui-prefork-watch",
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
        code_end = _CodeEnd()
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
                os.close(self._alert_r)
                os.close(self._alert_w)
                jobs_w.close()
                results_r.close()
                _child_main(self.app, jobs_r, results_w, parent, index, self.max_tasks_per_child,
                            self.app.conf.worker_max_memory_per_child, code_end)
            except BaseException:  # noqa: BLE001 - a child must never return into the worker
                logger.exception("pool child %d failed", index)
                code = 1
            finally:
                os._exit(code)
        jobs_r.close()
        results_w.close()
        with self._lock:
            self._children.append(_Child(index, pid, jobs_w, results_r, _watch_exit(pid),
                                         code_end))
            self._generation += 1

    def stop(self) -> None:
        self._stopping = True
        with self._lock:
            children = list(self._children)
        for child in children:
            try:
                _write(child.jobs.fileno(), _STOP)
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
                child.code_end.rearm()  # before the child can have the item and end its code
                try:
                    _write(child.jobs_fd, _pack_item(item))
                except OSError:
                    continue  # dying: the watch thread will see it go
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

    @property
    def results_refused(self) -> str | None:
        # Read on every turn of the worker's loop: no lock (a child that exits leaves the list).
        return next((c.refused for c in self._children if c.refused is not None), None)

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
                    _write(child.jobs.fileno(), _STOP)
                except OSError:
                    pass

    def signal(self, job_id: int, signum: int) -> bool:
        with self._lock:
            for child in self._children:
                if child.item is not None and child.item.job_id == job_id and not child.dead:
                    if child.code_end.signal(child.pid, child.exits, signum):
                        child.cause, child.signum = "signalled", signum  # read under this lock
                        return True
                    message = child.item.message
                    logger.warning("Task %s[%s] was past its code when the terminate came (or "
                                   "its process had ended): not signalled", message.task,
                                   message.id)
                    return False
        return False

    # outcomes (main thread) ------------------------------------------------------------------
    def collect(self, timeout: float) -> bool:
        """Read the outcomes the children sent, waiting up to ``timeout`` seconds for one, and
        report them from this (the main) thread."""
        if self._polled != self._generation:
            self._watch_result_pipes()
        for fd, _ in self._poll.poll(max(0, math.ceil(timeout * 1000))):  # < 0: forever
            if fd == self._alert_r:
                _drain(fd)
                continue
            child = self._polled_children.get(fd)
            if child is not None and not self._read(child):
                self._poll.unregister(fd)  # end of file: the watch thread reports the exit
                del self._polled_children[fd]
        return True

    def _watch_result_pipes(self) -> None:
        with self._lock:
            self._polled = self._generation
            children = {c.results.fileno(): c for c in self._children if not c.dead}
        for fd in self._polled_children.keys() - children.keys():
            self._poll.unregister(fd)  # a closed one too: unregister takes the number alone
        for fd in children.keys() - self._polled_children.keys():
            self._poll.register(fd, select.POLLIN)
        self._polled_children = children

    def _read(self, child: _Child) -> bool:
        """Report the outcome ``child``'s result pipe holds (one read, not one for its length and
        one for its payload); False once the pipe is at its end (the child exited) or the watch
        thread took the child's exit first."""
        with self._lock:  # the watch thread reads what a child sent before it exited
            if child.dead:
                return False
            try:
                outcomes = child.read_outcomes()
            except OSError:
                return False
            if outcomes is None:
                return False
            for outcome in outcomes:
                self._on_outcome(child, outcome)
        return True

    # the watch thread: exits and hard time limits -------------------------------------------
    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b"")
        except OSError:
            pass

    def _watch(self) -> None:
        """The watch thread: dead children and hard time limits. It must outlive any surprise:
        without it no lost task would ever be reported."""
        while True:
            try:
                if not self._watch_once():
                    return
            except Exception:  # noqa: BLE001 - logged; the next turn goes on
                logger.exception("prefork pool: the watch thread hit an error; going on")
                time.sleep(0.1)

    def _watch_once(self) -> bool:
        """One wait for exits and deadlines; False once the pool stopped and no child is left."""
        with self._lock:
            children = [c for c in self._children if not c.dead]
        if self._stopping and not children:
            return False
        # Any keys: wait() hands each pidfd back typed as any waitable
        exits: dict[Any, _Child] = {c.exits: c for c in children if c.exits is not None}
        deadlines = [c.deadline for c in children if c.deadline is not None and not c.killed]
        # At most a second: a wait far in the future overflows the poll timeout.
        timeout = min(1.0, max(0.0, min(deadlines) - time.monotonic())) if deadlines else 1.0
        if len(exits) < len(children):
            timeout = min(timeout, _WAITPID_POLL)
        for ready in wait([*exits, self._wake_r], timeout):
            if ready is self._wake_r:
                try:
                    self._wake_r.recv_bytes()
                except (EOFError, OSError):
                    pass
            else:
                self._on_exit(exits[ready])
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

    def _on_outcome(self, child: _Child, outcome: Outcome) -> None:
        with self._lock:
            child.item = child.deadline = None
            child.tasks_done += 1
            if outcome.retiring or (self.max_tasks_per_child
                                    and child.tasks_done >= self.max_tasks_per_child):
                child.retiring = True  # it exits by itself; maintain() replaces it
        self.report(outcome)

    def _on_exit(self, child: _Child, status: int | None = None) -> None:
        """The child is gone: take what it sent before it exited, reap it, report the task it
        was running, if any, and wake the main thread for what was reported."""
        if child.dead:
            return
        if status is None:
            try:
                _, status = os.waitpid(child.pid, 0)
            except ChildProcessError:
                status = 0
        with self._lock:  # the main thread's collect() reads the same pipe under it
            try:
                while child.results.poll(0):  # an outcome sent just before exiting (retiring)
                    outcomes = child.read_outcomes()
                    if outcomes is None:
                        break
                    for outcome in outcomes:
                        self._on_outcome(child, outcome)
            except OSError:
                pass
            child.dead = True
            item, cause, signum = child.item, child.cause, child.signum
            child.item = None
            self._children.remove(child)
            self._generation += 1
            child.jobs.close()
            child.results.close()
        if child.exits is not None:
            os.close(child.exits)
        phase, state, dead_letter = child.code_end.passed()
        child.code_end.close()
        if item is not None:
            exitcode = os.waitstatus_to_exitcode(status) if status else 0
            killed_by = -exitcode if exitcode < 0 else None
            self.report(Lost(item.job_id, cause or "died", child.pid, exitcode,
                             signum if cause == "signalled" else killed_by, phase, state,
                             dead_letter))
        try:
            os.write(self._alert_w, b"\0")
        except BlockingIOError:
            pass  # full: the main thread has wake-ups enough waiting

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
                    _kill(child.pid, child.exits, signal.SIGKILL)


def _child_main(app: App, jobs: Connection, results: Connection, parent: int, index: int,
                max_tasks: int | None, max_memory: int | None, code_end: _CodeEnd) -> None:
    """A child's life: take a work item, run it, send the outcome; until told to stop."""
    _die_with(parent)
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGALRM):
        signal.signal(signum, signal.SIG_DFL)
    multiprocessing.current_process().name = f"ForkPoolWorker-{index}"
    # A task that forks must not hand the pool's pipes on: a grandchild holding the result pipe
    # would keep it open after this child dies. (``exec`` drops them anyway: close-on-exec.)
    # Nor the telling of refused result writes, whose pipe it no longer has.
    def close_pipes() -> None:
        jobs.close()
        results.close()
        app.backend.on_refused = None
    os.register_at_fork(after_in_child=close_pipes)
    app.after_fork()
    # A result write waiting out a refusal says so to the parent, which fetches no task meanwhile.
    app.backend.on_refused = lambda refused: _write(results.fileno(), _pack_refused(refused))
    done, frames, waiting = 0, _Frames(), deque[bytes]()
    while True:
        while not waiting:
            try:
                read = frames.read(jobs.fileno())
            except OSError:
                return
            if read is None:
                return
            waiting.extend(read)
        data = waiting.popleft()
        if data == _STOP:
            return
        item = _unpack_item(data)
        outcome = execute(app, item, use_alarm=True, guard=code_end, phases=code_end)
        # Peak resident size in KiB on Linux, as Celery's --max-memory-per-child measures it.
        outcome.retiring = bool(
            max_memory and resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > max_memory)
        if outcome.retiring:
            logger.warning("pool child %d: resident memory above %d KiB after task %s[%s]; "
                           "it is replaced", os.getpid(), max_memory, item.message.task,
                           item.message.id)
        _write(results.fileno(), _pack_outcome(outcome))
        done += 1
        if outcome.retiring or (max_tasks and done >= max_tasks):
            return


# The wire between the parent and its children: plain values (tuples) pickle and unpickle
# several times faster than the dataclasses they are made from, and than dicts of them.
def _pack_item(item: WorkItem) -> bytes:
    return pickle.dumps((_MESSAGE_VALUES(item.message), _ITEM_VALUES(item)),
                        pickle.HIGHEST_PROTOCOL)


def _unpack_item(data: bytes) -> WorkItem:
    message_values, item_values = pickle.loads(data)
    message = object.__new__(TaskMessage)
    # As sent: __post_init__ must not fill in again.
    message.__dict__.update(zip(_MESSAGE_FIELDS, message_values, strict=True))
    return WorkItem(message=message, **dict(zip(_ITEM_FIELDS, item_values, strict=True)))


def _pack_outcome(outcome: Outcome) -> bytes:
    return pickle.dumps(_OUTCOME_VALUES(outcome), pickle.HIGHEST_PROTOCOL)


def _pack_refused(refused: str | None) -> bytes:
    """What a child says of its result write, beside its outcomes: the refusal it waits out,
    or None once it waits no more."""
    return pickle.dumps(refused, pickle.HIGHEST_PROTOCOL)


def _unpack(data: bytes | memoryview) -> Outcome | str | None:
    """An outcome (sent as a tuple), or what the child said of its result write."""
    value = pickle.loads(data)
    return Outcome(*value) if isinstance(value, tuple) else value


def _write(fd: int, data: bytes) -> None:
    """Write ``data`` on the pipe ``fd`` after its length, as :class:`_Frames` reads it: one
    ``write`` unless the pipe is full."""
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _drain(fd: int) -> None:
    """Empty the non-blocking pipe ``fd``."""
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _watch_exit(pid: int) -> int | None:
    """A pidfd for ``pid`` (Linux 5.3+), or None: the pool then polls ``waitpid``."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        return pidfd_open(pid)
    except OSError:  # ENOSYS on older kernels, EPERM under some sandboxes
        return None


def _kill(pid: int, pidfd: int | None, signum: int) -> bool:
    """Signal a child through its pidfd where it has one (a pid is free for reuse from the
    moment the child is reaped, before the pool marks it dead); whether it was still there."""
    try:
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signum)
        else:
            os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def _die_with(parent: int) -> None:
    """Have the kernel kill this child when the worker dies, whatever kills the worker."""
    prctl = getattr(_LIBC, "prctl", None)
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the worker died before prctl took effect
        os._exit(1)
