"""Following a finished task's canvas, as Celery's worker does (``celery/app/trace.py`` and
``celery/backends/base.py``), so chains, links and chords sent by Celery or qtui go on.

After a success: each ``callbacks`` signature gets the result prepended to its arguments
(unless immutable), then the next ``chain`` step is sent with the rest of the chain (both with
the task's priority under ``task_inherit_parent_priority``), then a
chord part is counted. After a failure: the chord part is counted, the tasks left in the chain
are stored as failed too, and each ``errbacks`` signature is called -- in this process with
``(request, exc, traceback)`` when it is a task registered here that takes more than one
argument, otherwise sent as a task with the failed task's id. A send the broker refuses for a
while (Redis's ``READONLY``, ``OOM``, ...) is sent again until it is taken
(:func:`qtui.core.refused.wait_out`), or until the worker's shutdown grace ends: the task then
goes back to its queue; what cannot be followed otherwise fails the task with the
reason: its state, the log and the dead-letter queue.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qtui.core import sending, states
from qtui.core.brokers.family import family_for
from qtui.core.canvas import apply, signature_of
from qtui.core.exceptions import CanvasError, NotRegistered, SendFailed
from qtui.core.lineage import inherited_priority
from qtui.core.refused import wait_out

if TYPE_CHECKING:
    from qtui.core.app import App
    from qtui.core.protocol import TaskMessage
    from qtui.core.sending import Outgoing

    from .execution import Outcome

logger = logging.getLogger("qtui.worker")


def before_store(app: App, message: TaskMessage, outcome: Outcome, value: Any,
                 sent: Callable[[bool], None] = lambda whole: None) -> Any:
    """After a success, send the links and the next chain step before the result is stored,
    as Celery does: a client never sees a success whose continuation was lost. Returns the
    value to store -- a CanvasError, with ``outcome`` turned into that failure, when the
    continuation could not be sent. ``sent`` is told after each send the broker took, with
    whether all are sent."""
    if outcome.state != states.SUCCESS or not (message.callbacks or message.chain):
        return value
    try:
        _after_success(app, message, value, sent)
    except Unsent as exc:
        _given_back(message, outcome, exc)
    except Exception as exc:  # CanvasError, or the broker refused the next message
        return _failed(message, outcome, exc)
    return value


def after_store(app: App, message: TaskMessage, outcome: Outcome, value: Any) -> None:
    """Once the outcome is stored: count the chord part; after a failure, fail the rest of the
    chain and call the errbacks. When that fails, the task fails with the reason."""
    if not (message.errbacks or message.chain or message.chord):
        return
    try:
        _after_store(app, message, outcome.state, value, outcome.traceback)
        return
    except Unsent as exc:
        _given_back(message, outcome, exc)
        return
    except Exception as exc:  # CanvasError, or the broker or the backend refused
        error = _failed(message, outcome, exc)
    try:
        app.backend.store_result(message.id, error, states.FAILURE, request=message)
    except Exception as exc:  # the backend is down: the dead letter still keeps the message
        logger.error("Task %s[%s]: cannot store its failure: %s", message.task, message.id, exc)


def _given_back(message: TaskMessage, outcome: Outcome, exc: Unsent) -> None:
    """Turn the outcome into a requeue: the task runs again and sends what follows it then
    (acked early, it cannot go back to its queue: the settlement dead-letters it instead)."""
    logger.error("Task %s[%s]: %s; the task will run again", message.task, message.id, exc)
    outcome.state = states.REJECTED
    outcome.requeue = True
    outcome.exception = str(exc)


def _failed(message: TaskMessage, outcome: Outcome, exc: Exception) -> CanvasError:
    """Turn the outcome into a failure that says why the canvas could not be followed."""
    detail = str(exc) if isinstance(exc, CanvasError) else f"{type(exc).__name__}: {exc}"
    reason = f"cannot follow its canvas: {detail}"
    logger.error("Task %s[%s] %s", message.task, message.id, reason)
    error = CanvasError(reason)
    outcome.state = states.FAILURE
    outcome.exception = repr(error)
    outcome.dead_letter = reason
    return error


class Unsent(Exception):
    """The shutdown grace ended while the broker still refused what follows a task: the task
    goes back to its queue, to run again and send it then."""


def _send(app: App, value: Any, args: tuple[Any, ...], **options: Any) -> None:
    """Send a signature as :func:`apply` does, again after each pause while the broker refuses
    it for a while: a refusal ends, so it neither fails the task nor dead-letters it. Its
    messages are built once, and a send refused part way sends again only those the broker
    did not take; past the worker's shutdown grace it gives up (:class:`Unsent`)."""
    held: list[Outgoing] | None = None

    def send() -> None:
        nonlocal held
        if held is None:
            with app.holding() as built:
                apply(app, value, args, **options)
            held = built
        if not held:
            return
        try:
            sending.send(app, held)
        except SendFailed as exc:
            left = set(exc.unsent)
            held = [outgoing for outgoing in held if outgoing.task_id in left]
            raise

    def refusal(exc: BaseException) -> str | None:
        if isinstance(exc, SendFailed) and exc.in_doubt:
            return None  # sent again, those in doubt could be stored twice
        return family_for(app.connection_for_write()).refusal(exc)

    def warn(refused: str) -> None:
        logger.warning("%s: what follows task %s is sent again until the broker takes it",
                       refused, options.get("parent_id"))

    stop = app.backend.stop_retrying
    try:
        wait_out(send, refusal, warn=warn, stop=stop)
    except Exception as exc:
        refused = refusal(exc)
        if refused is None or not stop.is_set():
            raise
        unsent = _ids(held) if held else "its next message"
        raise Unsent(f"{refused} until the end of the shutdown grace: what follows task "
                     f"{options.get('parent_id')} was not sent ({unsent})") from exc


def _ids(held: list[Outgoing], shown: int = 5) -> str:
    """The ids of what was not sent: the first few and how many in all."""
    ids = [outgoing.task_id for outgoing in held]
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return f"{', '.join(ids[:shown])}{more}"


def _parent(message: TaskMessage) -> dict[str, Any]:
    return {"parent_id": message.id, "root_id": message.root_id or message.id}


def _next_options(app: App, message: TaskMessage) -> dict[str, Any]:
    """The options a success gives its links and next chain step: its ids, and its priority
    under ``task_inherit_parent_priority``."""
    return {**_parent(message), **inherited_priority(app, {"priority": message.priority})}


def after_lost(app: App, message: TaskMessage, state: str, exc: BaseException,
               some_sent: bool = False, all_sent: bool = False, retake: bool = False) -> None:
    """A task whose process was killed (time limit, terminate, died for good) still ends its
    chord part, its chain and its errbacks, as Celery's ``mark_as_failure`` does. One killed
    once some of its success's links were sent (``some_sent``) ends its chord part and fails
    the chain steps not sent, and no errback runs (its links went as for a success); once its
    links and next step were all sent (``all_sent``), its chord part only: its chain goes on.
    ``retake``: the worker reaped the task's process (see :func:`_count_part`)."""
    if some_sent or all_sent:
        def end() -> None:
            _count_part(app, message, state, exc, retake)
            if not all_sent:
                _fail_chain(app, message.chain or [], exc, None)
        _ended_by_worker(end, message)
    elif message.callbacks or message.errbacks or message.chain or message.chord:
        _ended_by_worker(lambda: follow(app, message, state, exc, None, retake), message)


def after_stored(app: App, message: TaskMessage, state: str, value: Any,
                 traceback: str | None) -> None:
    """A task whose process was killed once its outcome was stored (and a success's links and
    next step sent): what :func:`after_store` does, from the stored outcome. The chord part is
    counted once even if the child had counted it (both backends record each part once); a
    chain step failed again stores the same FAILURE; an errback the child had sent already is
    sent again (at least once)."""
    if message.errbacks or message.chain or message.chord:
        _ended_by_worker(lambda: _after_store(app, message, state, value, traceback,
                                              retake=True), message)


def _ended_by_worker(end: Callable[[], None], message: TaskMessage) -> None:
    try:
        end()
    except Exception as error:  # CanvasError, or the broker or backend refusing: say so
        logger.error("Task %s[%s] cannot follow its canvas: %s", message.task, message.id, error)


def follow(app: App, message: TaskMessage, state: str, value: Any,
           traceback: str | None, retake: bool = False) -> None:
    """Everything that comes after an outcome, in Celery's order (see the module docstring).
    ``retake``: the worker ends a task whose process it reaped (see :func:`_count_part`)."""
    if state == states.SUCCESS:
        _after_success(app, message, value)
    _after_store(app, message, state, value, traceback, retake)


def _after_success(app: App, message: TaskMessage, value: Any,
                   sent: Callable[[bool], None] = lambda whole: None) -> None:
    """Send the links, then the next chain step, with the success's ``value`` (and its priority
    under ``task_inherit_parent_priority``); ``sent`` is told after each send, with whether all
    are sent."""
    parent = _next_options(app, message)
    _callbacks(app, message.callbacks or [], value, parent, sent)
    if message.chain:
        _send(app, message.chain[-1], (value,), chain=message.chain[:-1] or None, **parent)
    sent(True)


def _after_store(app: App, message: TaskMessage, state: str, value: Any,
                 traceback: str | None, retake: bool = False) -> None:
    _count_part(app, message, state, value, retake)
    if state == states.FAILURE:
        _fail_chain(app, message.chain or [], value, traceback)
        _errbacks(app, message, value, traceback, _parent(message))


def _count_part(app: App, message: TaskMessage, state: str, value: Any,
                retake: bool = False) -> None:
    """``retake``: the worker ends a part whose process it reaped; it takes back a chord claim
    that process held (only then: a duplicate run of the part cannot take it)."""
    if state in (states.SUCCESS, states.FAILURE, states.REVOKED) and message.chord:
        app.backend.on_chord_part_return(message, state, value, send=_send, retake=retake)


def _callbacks(app: App, callbacks: list[Any], value: Any, parent: dict[str, Any],
               sent: Callable[[bool], None]) -> None:
    """One callback is sent as it is; several go as one group (each group callback apart)."""
    if len(callbacks) == 1:
        _send(app, callbacks[0], (value,), **parent)
        sent(False)
        return
    sigs = [signature_of(c) for c in callbacks]
    for group in (s for s in sigs if s.get("subtask_type") == "group"):
        _send(app, group, (value,), **parent)
        sent(False)
    tasks = [s for s in sigs if s.get("subtask_type") != "group"]
    if tasks:
        _send(app, {"task": "celery.group", "subtask_type": "group", "args": (),
                    "kwargs": {"tasks": tasks}, "options": {}}, (value,), **parent)
        sent(False)


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
        _send(app, by_id[0], (message.id,), **parent)
    elif by_id:
        _send(app, {"task": "celery.group", "subtask_type": "group", "args": (),
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
