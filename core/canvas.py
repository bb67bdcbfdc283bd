"""Celery's canvas on the wire: signatures as the dicts Celery sends, and how to apply them.

A signature is Celery's dict ``{"task", "args", "kwargs", "options", "subtask_type",
"immutable", "chord_size"}``: ``subtask_type`` is None for one task, else ``"group"``,
``"chain"`` or ``"chord"``. A worker applies what a finished task carries (link, link_error, the
rest of a chain, a chord body) with :func:`apply`, the way ``Signature.apply_async`` does in
``celery/canvas.py``, so the next message is the one a Celery worker would have sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .exceptions import CanvasError

if TYPE_CHECKING:
    from .app import App

#: Signature options that map onto ``App.send_task`` arguments of the same meaning.
_SEND_OPTIONS = {
    "task_id": "task_id", "group_id": "group_id", "group_index": "group_index",
    "queue": "queue", "routing_key": "routing_key", "exchange": "exchange",
    "priority": "priority", "countdown": "countdown", "eta": "eta", "expires": "expires",
    "time_limit": "time_limit", "soft_time_limit": "soft_time_limit", "headers": "headers",
    "parent_id": "parent_id", "root_id": "root_id", "reply_to": "reply_to",
    "serializer": "serializer", "ignore_result": "ignore_result", "link": "link",
    "link_error": "link_error", "chain": "chain", "chord": "chord",
}


def signature_of(value: Any) -> dict[str, Any]:
    """A signature dict from what arrived in a message; anything else is a CanvasError."""
    if not isinstance(value, Mapping) or not isinstance(value.get("task"), str):
        raise CanvasError(f"not a signature: {value!r:.200}")
    sig = dict(value)
    sig["args"] = tuple(sig.get("args") or ())
    sig["kwargs"] = dict(sig.get("kwargs") or {})
    sig["options"] = dict(sig.get("options") or {})
    return sig


def apply(app: App, value: Any, args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None,
          **options: Any) -> str:
    """Send a signature with ``args`` prepended to its own (unless it is immutable) and
    ``options`` over its own, as ``Signature.apply_async`` does; returns the id it runs under
    (a task's id, a group's id, a chord body's id)."""
    sig = signature_of(value)
    kind = sig.get("subtask_type")
    if not sig.get("immutable"):
        args = tuple(args) + sig["args"]
        kwargs = {**sig["kwargs"], **(kwargs or {})}
    else:
        args, kwargs = sig["args"], sig["kwargs"]
    merged = {**sig["options"], **options}
    if kind is None:
        return _apply_task(app, sig["task"], args, kwargs, merged)
    if kind == "group":
        return _apply_group(app, sig, args if not sig.get("immutable") else (), merged)
    if kind == "chain":
        return _apply_chain(app, sig, args if not sig.get("immutable") else (), merged)
    if kind == "chord":
        return _apply_chord(app, sig, args if not sig.get("immutable") else (), merged)
    raise CanvasError(f"a {kind!r} signature ({sig['task']}) cannot be applied by qtui; "
                      "supported: a task, group, chain, chord")


def _apply_task(app: App, name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any],
                options: Mapping[str, Any]) -> str:
    send = {_SEND_OPTIONS[k]: v for k, v in options.items() if k in _SEND_OPTIONS and v is not None}
    if isinstance(send.get("eta"), str):
        send["eta"] = datetime.fromisoformat(send["eta"])
    if isinstance(send.get("expires"), str):
        send["expires"] = datetime.fromisoformat(send["expires"])
    send.setdefault("task_id", str(uuid.uuid4()))
    app.send_task(name, list(args), dict(kwargs), **send)
    return str(send["task_id"])


def _tasks_of(sig: Mapping[str, Any]) -> list[Any]:
    tasks = sig["kwargs"].get("tasks")
    if not isinstance(tasks, (list, tuple)):
        raise CanvasError(f"a {sig.get('subtask_type')} signature without its tasks: {sig!r:.200}")
    return list(tasks)


def _apply_group(app: App, sig: Mapping[str, Any], args: tuple[Any, ...],
                 options: dict[str, Any]) -> str:
    """Each task with the group's id and its index, as ``group._apply_tasks`` sends them."""
    group_id = options.pop("task_id", None) or str(uuid.uuid4())
    for index, task in enumerate(_tasks_of(sig)):
        apply(app, task, args, group_id=group_id, group_index=index, **_inherited(options))
    return group_id


def _apply_chain(app: App, sig: Mapping[str, Any], args: tuple[Any, ...],
                 options: dict[str, Any]) -> str:
    """The first step now; the rest travels reversed in its message's ``chain`` field."""
    tasks = _tasks_of(sig)
    if not tasks:
        raise CanvasError("an empty chain cannot be applied")
    rest = [signature_of(t) for t in reversed(tasks[1:])]
    if any(t.get("subtask_type") == "group" for t in rest[1:]):
        raise CanvasError("a chain with a group before its last step must be sent as a chord "
                          "(Celery's client does this); qtui's worker does not rewrite it")
    return apply(app, tasks[0], args, chain=rest or None, **_inherited(options))


def _apply_chord(app: App, sig: Mapping[str, Any], args: tuple[Any, ...],
                 options: dict[str, Any]) -> str:
    """The header tasks as one group carrying the body in their ``chord`` field; the backend
    joins them (``set_chord_size`` first, as ``group._apply_tasks`` does)."""
    header, body = sig["kwargs"].get("header"), sig["kwargs"].get("body")
    if body is None:
        raise CanvasError(f"a chord without a body: {sig!r:.200}")
    if isinstance(header, Mapping):
        header_sig = signature_of(header)
        tasks, group_id = _tasks_of(header_sig), header_sig["options"].get("task_id")
    else:
        tasks, group_id = list(header or ()), None
    group_id = group_id or str(uuid.uuid4())
    body_sig = signature_of(body)
    body_id = options.pop("task_id", None) or body_sig["options"].get("task_id") \
        or str(uuid.uuid4())
    root_id = options.get("root_id")
    body_sig["options"].update(task_id=body_id, group_id=group_id)
    if root_id:
        body_sig["options"]["root_id"] = root_id
    if not tasks:
        apply(app, body_sig, ([],))
        return body_id
    for task in tasks:
        if signature_of(task).get("subtask_type") is not None:
            raise CanvasError("a chord header of groups, chains or chords is not supported by "
                              "qtui's worker; make each header part one task")
    app.backend.set_chord_size(group_id, len(tasks))
    for index, task in enumerate(tasks):
        apply(app, task, args, group_id=group_id, group_index=index, chord=body_sig,
              **_inherited(options))
    return body_id


def _inherited(options: Mapping[str, Any]) -> dict[str, Any]:
    """What a group or chain hands down to its parts (not its own id or canvas fields)."""
    return {k: v for k, v in options.items()
            if k not in ("task_id", "group_id", "group_index", "chain", "chord")}
