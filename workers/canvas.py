"""Following a finished task's canvas, as Celery's worker does (``celery/app/trace.py`` and
``celery/backends/base.py``), so chains, links and chords sent by Celery or qtui go on.

After a success: each ``callbacks`` signature gets the result prepended to its arguments
(unless immutable), then the next ``chain`` step is sent with the rest of the chain, then a
chord part is counted. After a failure: the chord part is counted, the tasks left in the chain
are stored as failed too, and each ``errbacks`` signature is called -- in this process with
``(request, exc, traceback)`` when it is a task registered here that takes more than one
argument, otherwise sent as a task with the failed task's id. What cannot be followed fails the
task with the reason: its state, the log and the dead-letter queue.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any

from qtui.core import states
from qtui.core.canvas import apply, signature_of
from qtui.core.exceptions import CanvasError, NotRegistered

if TYPE_CHECKING:
    from qtui.core.app import App
    from qtui.core.protocol import TaskMessage

    from .execution import Outcome

logger = logging.getLogger("qtui.worker")


def after_outcome(app: App, message: TaskMessage, outcome: Outcome, value: Any) -> None:
    """Follow the message's canvas once its outcome is stored; when that fails, the task
    fails with the reason (``outcome`` is changed so the worker logs and dead-letters it)."""
    if not (message.callbacks or message.errbacks or message.chain or message.chord):
        return
    try:
        follow(app, message, outcome.state, value, outcome.traceback)
        return
    except CanvasError as exc:
        reason = f"cannot follow its canvas: {exc}"
    except Exception as exc:  # the broker or the backend refused the next message
        reason = f"cannot follow its canvas: {type(exc).__name__}: {exc}"
    logger.error("Task %s[%s] %s", message.task, message.id, reason)
    error = CanvasError(reason)
    try:
        app.backend.store_result(message.id, error, states.FAILURE, request=message)
    except Exception as exc:  # the backend is down: the dead letter still keeps the message
        logger.error("Task %s[%s]: cannot store its failure: %s", message.task, message.id, exc)
    outcome.state = states.FAILURE
    outcome.exception = repr(error)
    outcome.dead_letter = reason


def after_lost(app: App, message: TaskMessage, state: str, exc: BaseException) -> None:
    """A task whose process was killed (time limit, terminate, died for good) still ends its
    chord part, its chain and its errbacks, as Celery's ``mark_as_failure`` does."""
    if not (message.callbacks or message.errbacks or message.chain or message.chord):
        return
    try:
        follow(app, message, state, exc, None)
    except Exception as error:  # CanvasError, or the broker or backend refusing: say so
        logger.error("Task %s[%s] cannot follow its canvas: %s", message.task, message.id, error)


def follow(app: App, message: TaskMessage, state: str, value: Any,
           traceback: str | None) -> None:
    """Send what comes after this outcome (see the module's docstring)."""
    parent = {"parent_id": message.id, "root_id": message.root_id or message.id}
    if state == states.SUCCESS:
        _callbacks(app, message.callbacks or [], value, parent)
        if message.chain:
            apply(app, message.chain[-1], (value,), chain=message.chain[:-1] or None, **parent)
        if message.chord:
            app.backend.on_chord_part_return(message, state, value)
    elif state in (states.FAILURE, states.REVOKED):
        if message.chord:
            app.backend.on_chord_part_return(message, state, value)
        if state == states.FAILURE:
            _fail_chain(app, message.chain or [], value, traceback)
            _errbacks(app, message, value, traceback, parent)


def _callbacks(app: App, callbacks: list[Any], value: Any, parent: dict[str, Any]) -> None:
    """One callback is sent as it is; several go as one group (each group callback apart)."""
    if len(callbacks) == 1:
        apply(app, callbacks[0], (value,), **parent)
        return
    sigs = [signature_of(c) for c in callbacks]
    for group in (s for s in sigs if s.get("subtask_type") == "group"):
        apply(app, group, (value,), **parent)
    tasks = [s for s in sigs if s.get("subtask_type") != "group"]
    if tasks:
        apply(app, {"task": "celery.group", "subtask_type": "group", "args": (),
                    "kwargs": {"tasks": tasks}, "options": {}}, (value,), **parent)


def _fail_chain(app: App, chain: list[Any], exc: Any, traceback: str | None) -> None:
    """The steps that will never run are stored as failed, so waiting on the chain ends."""
    steps = list(chain)
    while steps:
        sig = signature_of(steps.pop())
        if sig.get("subtask_type") == "chord":  # it completes when its body does
            steps.append(sig["kwargs"].get("body"))
            continue
        task_id = sig["options"].get("task_id")
        if task_id:
            app.backend.store_result(task_id, exc, states.FAILURE, traceback=traceback)


def _errbacks(app: App, message: TaskMessage, exc: Any, traceback: str | None,
              parent: dict[str, Any]) -> None:
    from qtui.core.task import Request

    by_id = []
    for value in message.errbacks or []:
        sig = signature_of(value)
        task = _local_task(app, sig["task"])
        if task is None or task.bind or not _takes_more_than_one(task.run, sig):
            by_id.append(sig)
            continue
        args = () if sig.get("immutable") else sig["args"]
        try:
            task(Request.from_message(message), exc, traceback, *args, **sig["kwargs"])
        except Exception:  # an errback's own failure is logged, as Celery does
            logger.exception("Errback %s of task %s[%s] raised", sig["task"], message.task,
                             message.id)
    if len(by_id) == 1:
        apply(app, by_id[0], (message.id,), **parent)
    elif by_id:
        apply(app, {"task": "celery.group", "subtask_type": "group", "args": (),
                    "kwargs": {"tasks": by_id}, "options": {}}, (message.id,), **parent)


def _local_task(app: App, name: str) -> Any:
    try:
        return app.get_task(name)
    except NotRegistered:
        return None


def _takes_more_than_one(fun: Any, sig: dict[str, Any]) -> bool:
    """Celery's ``arity_greater(fun, 1)`` on what the failure still supplies."""
    try:
        params = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    bound = 0 if sig.get("immutable") else len(sig["args"])
    return len(positional) - bound > 1
