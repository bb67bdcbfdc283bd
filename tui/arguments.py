"""A task's complete arguments, for the task detail and for retry: every way the console finds
them, in one place.

Events carry ``argsrepr``/``kwargsrepr``, cut to a few hundred characters, so the complete
values are asked for, in this order:

1. the worker that ran the task (``task_arguments``, addressed to it alone: it answers at once,
   where a broadcast waits the whole timeout for every worker);
2. every worker (the task may have run elsewhere, or the console may not know where);
3. the result backend, where it stores them (``result_extended``);
4. last, what the events carried, when that is a complete Python literal
   (:func:`from_events`); never a cut repr, which could not be sent again faithfully.

:func:`lookup` blocks on the network (the console calls it from thread workers).
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from qtui.core import App
from qtui.core.protocol import masks

logger = logging.getLogger("qtui.console")

@dataclass(frozen=True)
class Arguments:
    """A task's complete arguments, and what its sender let monitors see of them."""

    args: list[Any]
    kwargs: dict[str, Any]
    masked: bool | None = None
    """Whether the sender's ``argsrepr``/``kwargsrepr`` hide these arguments, as the worker
    that received the task says; None when the source does not say (the result backend)."""
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    """The reprs the task's message carried, where the worker said them."""
    name: str | None = None
    """The task's registered name, where the worker said it (events may show its shadow)."""
    shadow: str | None = None
    """The name the sender had monitors show instead (Celery's ``shadow``)."""
    from_events: bool = False
    """Parsed from the reprs the events carried: no worker or backend had the arguments."""
    complete: bool = True
    """False: a worker kept only the reprs (the arguments were too big) and says they mask
    them; ``args``/``kwargs`` are then empty, nothing to show or send again."""


#: Seconds the workers have to answer ``task_arguments``.
TIMEOUT = 1.0


def lookup(app: App, task_id: str, worker: str | None = None) -> Arguments | None:
    """The complete arguments of ``task_id`` from its worker (``worker``: its hostname, where
    known), any worker, or the result backend; None when none of them has them. A worker that
    kept only the reprs, masking them, gives an incomplete record (:attr:`Arguments.complete`)."""
    word: Arguments | None = None
    destinations: list[list[str] | None] = [[worker]] if worker else []
    for destination in [*destinations, None]:
        found = _ask_workers(app, task_id, destination)
        if found is not None and found.complete:
            return found
        word = word or found
    try:
        meta = app.backend.get_task_meta(task_id)
    except Exception as exc:  # noqa: BLE001 - no backend, or one down: the arguments are unknown
        logger.info("task arguments unavailable from the result backend: %s", exc)
        return word
    return _with_word(_answer(meta), word)


def lookup_many(app: App, task_ids: Sequence[str]) -> dict[str, Arguments]:
    """:func:`lookup` of several tasks (a bulk retry): one ``task_arguments`` broadcast asks
    every worker for all of them, then the result backend is asked for those no worker
    remembers. Tasks whose arguments neither knows are left out."""
    found: dict[str, Arguments] = {}
    try:
        replies = app.control.broadcast("task_arguments", {"ids": list(task_ids)},
                                        reply=True, timeout=TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - as in _ask_workers: the backend is asked next
        logger.info("task_arguments unavailable: %s", exc)
        replies = []
    for reply in replies or []:
        for answer in reply.values():
            for task_id in task_ids if isinstance(answer, Mapping) else ():
                known = _answer(answer.get(task_id))
                if known is not None and (task_id not in found or not found[task_id].complete):
                    found[task_id] = known
    for task_id in task_ids:
        if task_id in found and found[task_id].complete:
            continue
        try:
            meta = app.backend.get_task_meta(task_id)
        except Exception as exc:  # noqa: BLE001 - no backend, or one down: the rest are unknown
            logger.info("task arguments unavailable from the result backend: %s", exc)
            break
        known = _with_word(_answer(meta), found.get(task_id))
        if known is not None:
            found[task_id] = known
    return found


def _ask_workers(app: App, task_id: str, destination: list[str] | None) -> Arguments | None:
    """``task_arguments`` from the workers in ``destination`` (None: all of them): a complete
    answer first, else a worker's word that the reprs mask arguments it did not keep."""
    try:
        replies = app.control.broadcast("task_arguments", {"ids": [task_id]},
                                        destination=destination, reply=True, timeout=TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - the broker down, or a worker's reply unreadable:
        # the next source is asked, and a lookup that finds nothing says so in the console
        logger.info("task_arguments unavailable: %s", exc)
        return None
    answers = [_answer(answer.get(task_id) if isinstance(answer, Mapping) else None)
               for reply in replies or [] for answer in reply.values()]
    return next((a for a in answers if a is not None and a.complete),
                next((a for a in answers if a is not None), None))


def _answer(found: Any) -> Arguments | None:
    """The arguments in a worker's ``task_arguments`` answer or a backend's task meta (with
    what a worker says of their reprs); a worker's answer without them counts only when it says
    the reprs mask them (an incomplete record)."""
    if not isinstance(found, Mapping):
        return None
    def text(key: str) -> str | None:
        value = found.get(key)
        return value if isinstance(value, str) else None
    masked = found.get("masked")
    complete = isinstance(found.get("args"), list) and isinstance(found.get("kwargs"), Mapping)
    if not complete and masked is not True:
        return None
    return Arguments(list(found["args"]) if complete else [],
                     dict(found["kwargs"]) if complete else {},
                     masked if isinstance(masked, bool) else None, text("argsrepr"),
                     text("kwargsrepr"), text("name"), text("shadow"), complete=complete)


def _with_word(found: Arguments | None, word: Arguments | None) -> Arguments | None:
    """The backend's arguments (``found``) with what a worker said of their reprs (``word``,
    an incomplete record), or that word alone when the backend has none."""
    if found is None or word is None:
        return found or word
    return replace(found, masked=word.masked, argsrepr=word.argsrepr, kwargsrepr=word.kwargsrepr,
                   name=word.name, shadow=word.shadow)


def hidden(args_shown: str | None, kwargs_shown: str | None, found: Arguments) -> bool:
    """Whether the console must show the reprs (``args_shown``/``kwargs_shown``: what the events
    carried), never ``found``'s arguments: the sender masked them (Celery's ``argsrepr``, to
    keep a secret out of monitors). The worker that received the task says so; without its
    word, the events' reprs are compared with those of the arguments, and when the events
    carried none (the console missed ``task-received``) nothing shows they are not masked."""
    if found.masked is not None:
        return found.masked
    if found.from_events:
        return False  # they are the reprs
    if args_shown is None and kwargs_shown is None:
        return True
    return masks(found.args, found.kwargs, args_shown, kwargs_shown)


def resent_reprs(args_shown: str | None, kwargs_shown: str | None,
                 found: Arguments) -> tuple[str | None, str | None]:
    """The ``argsrepr``/``kwargsrepr`` a retry of the task sends: the sender's when they hide
    the arguments (:func:`hidden`), so the new task's events, rows and history show the mask,
    never the secret; (None, None) otherwise (the client writes the reprs of the arguments).
    Celery's own ``Task.retry`` drops them (celery/celery#6086): qtui keeps them."""
    if not hidden(args_shown, kwargs_shown, found):
        return None, None
    return (found.argsrepr if found.argsrepr is not None else args_shown or "",
            found.kwargsrepr if found.kwargsrepr is not None else kwargs_shown or "")


def from_events(args: Any, kwargs: Any) -> Arguments | None:
    """The task's real arguments from what events carry: full values, or reprs that are complete
    Python literals. None when only a truncated repr is known (it cannot be re-sent faithfully)."""
    parsed_args = _literal(args, (list, tuple))
    parsed_kwargs = _literal(kwargs, (dict,))
    if parsed_args is None or parsed_kwargs is None:
        return None
    return Arguments(list(parsed_args), dict(parsed_kwargs), from_events=True)


def _literal(value: Any, types: tuple[type, ...]) -> Any:
    if isinstance(value, types):
        return value
    if value in (None, ""):
        return types[0]()
    if not isinstance(value, str):
        return None
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return parsed if isinstance(parsed, types) else None
