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
from typing import Any

from qtui.core import App
from qtui.core.protocol import ARGSREPR_MAXSIZE, KWARGSREPR_MAXSIZE, saferepr

logger = logging.getLogger("qtui.console")

Arguments = tuple[list[Any], dict[str, Any]]
"""A task's positional and keyword arguments."""

#: Seconds the workers have to answer ``task_arguments``.
TIMEOUT = 1.0


def lookup(app: App, task_id: str, worker: str | None = None) -> Arguments | None:
    """The complete arguments of ``task_id`` from its worker (``worker``: its hostname, where
    known), any worker, or the result backend; None when none of them has them."""
    if worker:
        found = _ask_workers(app, task_id, [worker])
        if found is not None:
            return found
    found = _ask_workers(app, task_id, None)
    if found is not None:
        return found
    try:
        meta = app.backend.get_task_meta(task_id)
    except Exception as exc:  # noqa: BLE001 - no backend, or one down: the arguments are unknown
        logger.info("task arguments unavailable from the result backend: %s", exc)
        return None
    return _complete(meta)


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
                known = _complete(answer.get(task_id))
                if known is not None:
                    found.setdefault(task_id, known)
    for task_id in task_ids:
        if task_id in found:
            continue
        try:
            meta = app.backend.get_task_meta(task_id)
        except Exception as exc:  # noqa: BLE001 - no backend, or one down: the rest are unknown
            logger.info("task arguments unavailable from the result backend: %s", exc)
            break
        known = _complete(meta)
        if known is not None:
            found[task_id] = known
    return found


def _ask_workers(app: App, task_id: str, destination: list[str] | None) -> Arguments | None:
    """``task_arguments`` from the workers in ``destination`` (None: all of them)."""
    try:
        replies = app.control.broadcast("task_arguments", {"ids": [task_id]},
                                        destination=destination, reply=True, timeout=TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - the broker down, or a worker's reply unreadable:
        # the next source is asked, and a lookup that finds nothing says so in the console
        logger.info("task_arguments unavailable: %s", exc)
        return None
    for reply in replies or []:
        for answer in reply.values():
            found = _complete(answer.get(task_id) if isinstance(answer, Mapping) else None)
            if found is not None:
                return found
    return None


def _complete(found: Any) -> Arguments | None:
    """(args, kwargs) from a worker's ``task_arguments`` answer or a backend's task meta, when
    both are there and of the right types."""
    if isinstance(found, Mapping) and isinstance(found.get("args"), list) \
            and isinstance(found.get("kwargs"), Mapping):
        return list(found["args"]), dict(found["kwargs"])
    return None


def masked(args_shown: str | None, kwargs_shown: str | None, found: Arguments) -> bool:
    """Whether the sender gave its own ``argsrepr``/``kwargsrepr`` (Celery's way to keep a
    secret argument out of monitors): the reprs the events carried are not those of the
    complete arguments, as a qtui or Celery client writes them. The console then shows those
    reprs, never the arguments themselves (a retry still sends the arguments)."""
    args, kwargs = found
    args_masked = bool(args_shown) and args_shown not in (
        saferepr(tuple(args), ARGSREPR_MAXSIZE), saferepr(list(args), ARGSREPR_MAXSIZE))
    kwargs_masked = bool(kwargs_shown) and kwargs_shown != saferepr(kwargs, KWARGSREPR_MAXSIZE)
    return args_masked or kwargs_masked


def from_events(args: Any, kwargs: Any) -> Arguments | None:
    """The task's real arguments from what events carry: full values, or reprs that are complete
    Python literals. None when only a truncated repr is known (it cannot be re-sent faithfully)."""
    parsed_args = _literal(args, (list, tuple))
    parsed_kwargs = _literal(kwargs, (dict,))
    if parsed_args is None or parsed_kwargs is None:
        return None
    return list(parsed_args), dict(parsed_kwargs)


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
