"""Running one task, in whatever process or thread the pool gives it.

:func:`execute` pushes the request, calls the task, stores the outcome in the result backend
and returns an :class:`Outcome` small enough to cross a pipe. It handles ``Retry``,
``autoretry_for``, failures and results the backend cannot serialize.

Time limits: in a process's main thread (prefork children, the solo pool) :func:`alarm_limits`
arms ``SIGALRM`` with ``signal.setitimer``, so ``SoftTimeLimitExceeded`` is raised inside the
task when its soft limit passes (and, for solo, ``TimeLimitExceeded`` at the hard limit; a prefork
child is killed by its parent instead). A thread cannot be interrupted that way: the threads pool
raises the same exceptions asynchronously in the task's thread, which takes effect at its next
Python instruction, not inside a blocking C call -- limits there are cooperative.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Protocol

from qtui.core import states
from qtui.core.celery_app import CeleryTask
from qtui.core.exceptions import (
    Retry,
    SoftTimeLimitExceeded,
    TaskRevokedError,
    TimeLimitExceeded,
)
from qtui.core.handlers import TaskHandlers
from qtui.core.protocol import TaskMessage, saferepr
from qtui.core.task import ExceptionInfo, Request, Task

from . import canvas
from .redelivery import TRANSIENT_HEADERS

if TYPE_CHECKING:
    from qtui.core.app import App

logger = logging.getLogger("qtui.worker")

RESULT_REPR_MAXSIZE = 256
#: The longest time limit a run gets, in seconds (a year); OS timers overflow far above it.
MAX_TIME_LIMIT = 365 * 24 * 3600.0

_pid = os.getpid()
"""This process's id, for each outcome without a system call per task."""


def _forget_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forget_pid)


@dataclass(frozen=True)
class WorkItem:
    """What a pool needs to run one task; picklable, so it crosses a pipe to a prefork child."""

    job_id: int
    message: TaskMessage
    delivery_info: dict[str, Any]
    hostname: str
    time_limit: float | None = None
    soft_time_limit: float | None = None


@dataclass
class Outcome:
    """How a task run ended, as the worker needs it to ack, log and call its hooks."""

    job_id: int
    state: str
    runtime: float
    pid: int = field(default_factory=lambda: _pid)
    result: str | None = None
    """The result's repr (bounded), for the log line."""
    exception: str | None = None
    """The exception's repr, for FAILURE, RETRY and REVOKED."""
    traceback: str | None = None
    retry_when: float | None = None
    dead_letter: str | None = None
    """Set when the message must go to the dead-letter queue (for example an unstorable result)."""
    requeue: bool = False
    """For REJECTED (a Celery task raised ``Reject``): the message goes back to its queue."""
    retiring: bool = False
    """The prefork child that ran it exits after sending it (``worker_max_memory_per_child``)."""


class Phase(IntEnum):
    """How far a run got past its task's code, as a pool that can lose it midway (prefork)
    keeps it: the worker ends a lost run from there, so that nothing is stored or followed
    twice."""

    CODE = 0
    """In the task's own code (or nothing said): the run is lost."""
    ENDED = 1
    """The code ended; nothing stored or sent yet (a success's links and next chain step may
    be being sent, none of them taken yet)."""
    SENDING = 2
    """Some of a success's links are sent, its next chain step is not; nothing stored yet."""
    SENT = 3
    """A success's links and next chain step are all sent; nothing stored yet."""
    STORED = 4
    """The outcome is stored (or was not to be) and a success's links and chain step sent;
    the chord part, the failed chain and the errbacks not yet done."""
    FOLLOWED = 5
    """The chord part counted, the chain and errbacks done, or the outcome given back (a
    follow-up the broker refused to the end of the shutdown grace: REJECTED, it runs again):
    only the telling is left."""


class Phases(Protocol):
    """Told by :func:`execute` as a run passes each :class:`Phase` after its code, with the
    outcome's state and whether it goes to the dead-letter queue."""

    def reached(self, phase: Phase, state: str, dead_letter: bool = False) -> None: ...


class _NoPhases:
    def reached(self, phase: Phase, state: str, dead_letter: bool = False) -> None:
        pass


#: The default ``phases`` of :func:`execute`: a pool that never loses a run midway.
NO_PHASES: Phases = _NoPhases()


@dataclass
class Lost:
    """The pool lost a running task without an outcome: its process died or was killed.

    ``cause`` is ``"time-limit"`` (killed at the hard limit), ``"signalled"`` (revoked with
    terminate) or ``"died"`` (anything else: the task will be delivered again). ``phase``,
    ``state`` and ``dead_letter`` say how far the run had got past its code, with which
    outcome, and whether that outcome goes to the dead-letter queue.
    """

    job_id: int
    cause: str
    pid: int | None = None
    exitcode: int | None = None
    signum: int | None = None
    phase: Phase = Phase.CODE
    state: str | None = None
    dead_letter: bool = False


@dataclass(frozen=True)
class TaskOptions:
    """The options of one task type the worker needs for every message of that type."""

    acks_late: bool
    time_limit: float | None
    soft_time_limit: float | None

    @classmethod
    def of(cls, app: App, name: str) -> TaskOptions:
        """From the task (decorator, ``task_annotations``, config defaults)."""
        task = app.get_task(name)
        hard, soft = task.time_limit, task.soft_time_limit
        return cls(bool(task.acks_late), float(hard) if hard else None,
                   float(soft) if soft else None)

    def limits(self, message: TaskMessage) -> tuple[float | None, float | None]:
        """(hard, soft): the message's ``timelimit`` header first, then the task's own; at most
        :data:`MAX_TIME_LIMIT` (a bigger one, even infinite, means that long: timers overflow)."""
        hard = message.time_limit or self.time_limit
        soft = message.soft_time_limit or self.soft_time_limit
        return (min(hard, MAX_TIME_LIMIT) if hard else None,
                min(soft, MAX_TIME_LIMIT) if soft else None)


#: The default ``guard`` of :func:`execute`: nothing to do around the limits.
NO_GUARD: AbstractContextManager[None] = nullcontext()
#: The ``limits`` of a run without time limits (reusable: no context manager made per task).
NO_LIMITS: AbstractContextManager[None] = nullcontext()

LimitErrors = tuple[type[SoftTimeLimitExceeded], type[TimeLimitExceeded]]
"""The exceptions a task's (soft, hard) time limits raise in it."""


def limit_errors(app: App, name: str) -> LimitErrors:
    """qtui's, or for a Celery app's task ones that are Celery's as well, so that ``except
    celery.exceptions.SoftTimeLimitExceeded`` in the task catches its soft limit."""
    if isinstance(app.tasks.get(name), CeleryTask):
        from .celery_trace import CELERY_LIMIT_ERRORS
        return CELERY_LIMIT_ERRORS
    return SoftTimeLimitExceeded, TimeLimitExceeded


class _Alarm:
    """SIGALRM-driven time limits for the calling (main) thread."""

    def __init__(self, soft: float | None, hard: float | None, errors: LimitErrors) -> None:
        self.errors = errors
        now = time.monotonic()
        self.soft_at = now + soft if soft else None
        self.hard_at = now + hard if hard else None
        self.soft_limit, self.hard_limit = soft, hard

    def arm(self) -> None:
        pending = [t for t in (self.soft_at, self.hard_at) if t is not None]
        if pending:
            signal.setitimer(signal.ITIMER_REAL, max(min(pending) - time.monotonic(), 0.001))

    def __call__(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.soft_at is not None and now >= self.soft_at - 0.001:
            self.soft_at = None
            self.arm()
            raise self.errors[0](f"soft time limit ({self.soft_limit}s) exceeded")
        if self.hard_at is not None and now >= self.hard_at - 0.001:
            self.hard_at = None
            raise self.errors[1](self.hard_limit)
        self.arm()


@contextmanager
def alarm_limits(soft: float | None, hard: float | None = None,
                 errors: LimitErrors = (SoftTimeLimitExceeded, TimeLimitExceeded)
                 ) -> Iterator[None]:
    """Raise SoftTimeLimitExceeded (and TimeLimitExceeded when ``hard`` is given) in this thread."""
    if not soft and not hard:
        yield
        return
    alarm = _Alarm(soft, hard, errors)
    previous = signal.signal(signal.SIGALRM, alarm)
    alarm.arm()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def execute(app: App, item: WorkItem, use_alarm: bool = False, hard_by_alarm: bool = False,
            limits: AbstractContextManager[None] | None = None,
            guard: AbstractContextManager[Any] = NO_GUARD, phases: Phases = NO_PHASES) -> Outcome:
    """Run the task of ``item`` here, store its state and return the outcome.

    ``use_alarm`` arms the soft limit with SIGALRM (main thread only); ``hard_by_alarm`` arms the
    hard limit the same way (solo: there is no parent to kill the process). ``limits`` replaces
    both: a context manager that enforces the limits while it is entered. Either way only the
    task's own code is bounded, never the result write after it. ``guard`` is entered just
    before ``limits`` and left just after it: its exit runs when a profiler or tracer made the
    interpreter skip ``limits``' own (the threads pool closes its gate there too). ``phases``
    is told each :class:`Phase` the run passes after its code (not by Celery's tracer, which
    stores and follows up inside the guarded call).
    """
    message = item.message
    task = app.get_task(message.task)
    if limits is None:
        soft, hard = item.soft_time_limit, item.time_limit if hard_by_alarm else None
        limits = alarm_limits(soft, hard, limit_errors(app, message.task)) \
            if use_alarm and (soft or hard) else NO_LIMITS
    if isinstance(task, CeleryTask):
        from . import celery_trace
        return celery_trace.run(task, item, limits, guard)
    request = Request.from_message(message, item.hostname, item.delivery_info)
    request.time_limit, request.soft_time_limit = item.time_limit, item.soft_time_limit
    # What describes this delivery (its count, the broker's flags) must not follow a retry.
    request.headers = {k: v for k, v in request.headers.items()
                       if not k.startswith("x-qtui-") and k not in TRANSIENT_HEADERS}
    store = not (message.ignore_result or task.ignore_result)
    started = time.monotonic()
    handlers = TaskHandlers(task, request)
    task.push_request(request)
    state, value = states.FAILURE, None
    try:
        handlers.started()
        if store and task.track_started:
            store_state(app, message, {"pid": os.getpid(), "hostname": item.hostname},
                        states.STARTED, where=where_it_ran(item))
        outcome, value = _run(app, item, task, store, limits, guard, phases, handlers, started)
        state = outcome.state
        return outcome
    finally:
        handlers.finished(state, value)
        task.pop_request()


def _run(app: App, item: WorkItem, task: Task, store: bool,
         limits: AbstractContextManager[None], guard: AbstractContextManager[Any],
         phases: Phases, handlers: TaskHandlers, started: float) -> tuple[Outcome, Any]:
    """Run the task, store its state and call its handlers; (the outcome, what it returned or
    raised)."""
    message = item.message
    try:
        with guard, limits:
            try:
                handlers.before_start()
                value = task(*message.args, **message.kwargs)
            except Retry:
                raise
            except TaskRevokedError:
                raise
            except Exception as exc:
                autoretry = task.autoretry_for
                if autoretry and isinstance(exc, tuple(autoretry)):
                    task.retry(exc=exc, **dict(task.retry_kwargs or {}))
                raise
    except Retry as retry:
        reason = retry.exc if retry.exc is not None else retry
        outcome = _finish(app, item, store, states.RETRY, reason, started,
                          retry_when=retry.when, trace=traceback.format_exc(), phases=phases)
        handlers.retried(retry, ExceptionInfo(retry, outcome.traceback or ""))
        return outcome, reason
    except TaskRevokedError as exc:
        return _finish(app, item, store, states.REVOKED, exc, started, trace=None,
                       phases=phases), exc
    except Exception as exc:
        outcome = _finish(app, item, store, states.FAILURE, exc, started,
                          trace=traceback.format_exc(), phases=phases)
        einfo = ExceptionInfo(exc, outcome.traceback or "")
        handlers.failed(exc, einfo)
        handlers.returned(states.FAILURE, exc, einfo)
        return outcome, exc
    outcome = _finish(app, item, store, states.SUCCESS, value, started, trace=None,
                      phases=phases)
    if outcome.state == states.SUCCESS:  # not when its continuation could not be sent (canvas)
        handlers.succeeded(value)
    handlers.returned(outcome.state, value, None)
    return outcome, value


def interrupted(app: App, item: WorkItem, exc: BaseException, started: float) -> Outcome:
    """The outcome of a run that an interruption (a terminate, a time limit) ended outside the
    task's own code: stored and reported as that interruption (REVOKED, or a FAILURE)."""
    task = app.get_task(item.message.task)
    store = not (item.message.ignore_result or task.ignore_result)
    state = states.REVOKED if isinstance(exc, TaskRevokedError) else states.FAILURE
    return _finish(app, item, store, state, exc, started, trace=None)


def _finish(app: App, item: WorkItem, store: bool, state: str, value: Any, started: float,
            trace: str | None, retry_when: float | None = None,
            phases: Phases = NO_PHASES) -> Outcome:
    runtime = time.monotonic() - started
    outcome = Outcome(job_id=item.job_id, state=state, runtime=runtime, traceback=trace,
                      retry_when=retry_when)
    if isinstance(value, BaseException):
        outcome.exception = _safe_repr(value)
    else:
        outcome.result = _safe_repr(value)
    value = canvas.before_store(app, item.message, outcome, value,
                                sent=lambda whole: phases.reached(
                                    Phase.SENT if whole else Phase.SENDING, state))
    if outcome.state == states.REJECTED:  # what follows it was not sent: it runs again
        phases.reached(Phase.FOLLOWED, outcome.state)
        return outcome
    if store:
        outcome.dead_letter = store_state(app, item.message, value, outcome.state, trace,
                                          where=where_it_ran(item)) or outcome.dead_letter
    phases.reached(Phase.STORED, outcome.state, bool(outcome.dead_letter))
    canvas.after_store(app, item.message, outcome, value)
    phases.reached(Phase.FOLLOWED, outcome.state, bool(outcome.dead_letter))
    return outcome


def where_it_ran(item: WorkItem) -> dict[str, Any]:
    """What ``result_extended`` adds about the run, as Celery names it: the worker's hostname
    and the queue (Celery stores the delivery's routing key)."""
    return {"worker": item.hostname, "queue": item.delivery_info.get("routing_key")}


def store_state(app: App, message: TaskMessage, value: Any, state: str,
                trace: str | None = None, where: dict[str, Any] | None = None) -> str | None:
    """Store a state in the result backend. Returns a dead-letter reason when the value could not
    be stored as it is (it is then stored as a FAILURE that says why), else None. ``where``
    (see :func:`where_it_ran`) is stored with it under ``result_extended``."""
    extended = where if where and app.conf.result_extended else {}
    try:
        meta = app.backend.store_result(message.id, value, state, traceback=trace,
                                        request=message, **extended)
    except Exception as exc:  # a result whose repr raises, or a backend that is down
        logger.error("Task %s[%s]: cannot store its %s state: %s", message.task, message.id,
                     state, exc)
        return None
    if meta.get("status") != state:
        reason = f"unserializable result: {meta.get('result', {}).get('exc_message', [''])[0]}"
        logger.error("Task %s[%s]: %s", message.task, message.id, reason)
        return reason
    return None


def _safe_repr(value: Any) -> str:
    try:
        return saferepr(value, RESULT_REPR_MAXSIZE)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"
