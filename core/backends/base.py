"""The result backend interface and what every backend shares: meta layout and exception transport.

A backend stores one *meta* per task, in Celery's layout, so Celery clients and monitors read
qtui's results and the other way round::

    {"status": "SUCCESS", "result": 8, "traceback": None, "children": [],
     "date_done": "2026-11-24T06:00:00.000000+00:00", "task_id": "..."}

A failure's ``result`` is ``{"exc_type", "exc_message", "exc_module"}``. Reading it back never
imports or executes anything named by stored data: a type is taken from ``builtins``, from qtui's
own exceptions, or from a module this process already imported; otherwise a stand-in class with
the same name is made. What comes back is always an ``Exception``: a stored ``SystemExit`` or
``KeyboardInterrupt`` would end the reader's process or slip past its ``except Exception``.
"""

from __future__ import annotations

import builtins
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NoReturn

from kombu.serialization import dumps, loads, prepare_accept_content, registry

from .. import exceptions, states
from ..exceptions import BackendError, RemoteTaskError

if TYPE_CHECKING:
    from ..app import App
    from ..protocol import TaskMessage

#: Celery's key prefix of a saved group (and of a chord's join keys).
GROUP_PREFIX = "celery-taskset-meta-"

_STANDIN_TYPES: dict[tuple[str, str], type[RemoteTaskError]] = {}


def exception_to_meta(exc: BaseException) -> dict[str, Any]:
    """Celery's JSON form of an exception: type name, message arguments and module."""
    exc_type = type(exc)
    return {"exc_type": exc_type.__qualname__,
            "exc_message": [_jsonable(a) for a in exc.args],
            "exc_module": exc_type.__module__}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def exception_from_meta(meta: Any) -> Exception:
    """Rebuild an exception from stored data without importing anything it names."""
    if isinstance(meta, Exception):
        return meta
    if isinstance(meta, BaseException):
        return _not_an_exception(type(meta).__module__, type(meta).__qualname__)
    if not isinstance(meta, Mapping) or not isinstance(meta.get("exc_type"), str):
        return RemoteTaskError(
            f"the task failed; its stored exception is unreadable: {meta!r:.200}")
    name, module = meta["exc_type"], meta.get("exc_module") or "builtins"
    message = meta.get("exc_message", ())
    args = tuple(message) if isinstance(message, (list, tuple)) else (message,)
    known = _known_exception_type(module, name)
    if known is not None and not issubclass(known, Exception):
        return _not_an_exception(module, name)
    cls = known or _standin_type(module, name)
    try:
        return cls(*args)
    except Exception:  # a real type whose __init__ wants other arguments
        standin = _standin_type(module, name)
        return standin(*args)


def _not_an_exception(module: str, name: str) -> RemoteTaskError:
    return RemoteTaskError(f"the task failed with {module}.{name}, which is not an Exception "
                           "subclass; it is reported as this error instead of being raised")


def _known_exception_type(module: str, name: str) -> type[BaseException] | None:
    if module == "builtins":
        found = getattr(builtins, name, None)
    elif module in (exceptions.__name__, "celery.exceptions") and hasattr(exceptions, name):
        found = getattr(exceptions, name)
    else:
        found = sys.modules.get(module)
        for part in name.split("."):
            found = getattr(found, part, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def _standin_type(module: str, name: str) -> type[RemoteTaskError]:
    key = (module, name)
    if key not in _STANDIN_TYPES:
        _STANDIN_TYPES[key] = type(name.rpartition(".")[2] or "RemoteError", (RemoteTaskError,),
                                   {"__module__": module, "__qualname__": name})
    return _STANDIN_TYPES[key]


def pending_meta(task_id: str) -> dict[str, Any]:
    return {"status": states.PENDING, "result": None, "traceback": None, "children": [],
            "date_done": None, "task_id": task_id}


class ResultBackend(ABC):
    """Stores and reads task metas. Subclasses implement the storage verbs only."""

    #: Whether results survive the client that sent the task (rpc:// does not).
    persistent = True

    def __init__(self, app: App, url: str) -> None:
        self.app = app
        self.url = url
        self.serializer: str = app.conf.result_serializer
        try:
            self.content_type = registry.name_to_type[self.serializer]
        except KeyError:
            raise exceptions.ImproperlyConfigured(
                f"result_serializer {self.serializer!r} is not a known serializer; "
                f"known: {', '.join(sorted(registry.name_to_type))}") from None
        accept = app.conf.result_accept_content or app.conf.accept_content
        self.accept: set[str] = prepare_accept_content(accept)
        self.expires: float | None = app.conf.result_expires
        #: The refusal each result write waiting one out now has met, by task id.
        self.waiting_out: dict[str, str] = {}
        #: Set when refused writes (results, a worker's canvas sends) must stop waiting (a
        #: worker's shutdown grace is over).
        self.stop_retrying = threading.Event()

        #: Called with :attr:`refused` each time a write starts or stops waiting one out (a
        #: prefork child tells its parent, which fetches no new task meanwhile).
        self.on_refused: Callable[[str | None], None] | None = None

    @property
    def refused(self) -> str | None:
        """The refusal a result write is waiting out now (None while writes go through): a
        worker fetches no new task meanwhile, whose result would wait too."""
        refusals = list(self.waiting_out.values())  # one C call: safe while writers change it
        return refusals[0] if refusals else None

    def _waiting_out(self, task_id: str, refused: str) -> None:
        """The result write of ``task_id`` waits out ``refused``."""
        self.waiting_out[task_id] = refused
        if self.on_refused is not None:
            self.on_refused(self.refused)

    def _waited_out(self, task_id: str) -> None:
        """The result write of ``task_id`` waits no more (written, or given up)."""
        if self.waiting_out.pop(task_id, None) is not None and self.on_refused is not None:
            self.on_refused(self.refused)

    # storage verbs --------------------------------------------------------------------------
    @abstractmethod
    def _set(self, task_id: str, payload: bytes, meta: dict[str, Any],
             request: TaskMessage | None) -> None:
        """Store the encoded meta (and notify waiters)."""

    @abstractmethod
    def _get(self, task_id: str) -> bytes | None:
        """The encoded meta, or None when nothing is stored."""

    @abstractmethod
    def _delete(self, task_id: str) -> None:
        """Forget the stored meta."""

    def _wait(self, task_id: str, timeout: float | None, interval: float) -> dict[str, Any]:
        """Block until the task is ready. Default: poll every ``interval`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            meta = self.get_task_meta(task_id)
            if meta["status"] in states.READY_STATES:
                return meta
            if deadline is not None and time.monotonic() >= deadline:
                raise exceptions.TimeoutError(f"task {task_id} not ready after {timeout}s")
            sleep = interval if deadline is None else min(interval, deadline - time.monotonic())
            time.sleep(max(sleep, 0.0))

    # encoding ---------------------------------------------------------------------------------
    def encode(self, meta: Mapping[str, Any] | list[Any]) -> bytes:
        _content_type, _encoding, payload = dumps(meta, serializer=self.serializer)
        return payload if isinstance(payload, bytes) else payload.encode()

    def decode(self, payload: bytes | str) -> dict[str, Any]:
        try:
            meta = loads(payload, self.content_type, "utf-8", accept=self.accept)
        except Exception as exc:
            raise BackendError(
                f"stored result cannot be read with {self.serializer!r}: {exc}") from exc
        if not isinstance(meta, Mapping) or "status" not in meta:
            raise BackendError(f"stored result is not a task meta: {meta!r:.200}")
        return dict(meta)

    def make_meta(self, task_id: str, result: Any, state: str, traceback: str | None = None,
                  request: TaskMessage | None = None) -> dict[str, Any]:
        if isinstance(result, BaseException):
            result = exception_to_meta(result)
        meta: dict[str, Any] = {
            "status": state, "result": result, "traceback": traceback, "children": [],
            "date_done": datetime.now(timezone.utc).isoformat()
            if state in states.READY_STATES else None,
            "task_id": task_id,
        }
        if request is not None:
            if request.group:
                meta["group_id"] = request.group
            if request.parent_id:
                meta["parent_id"] = request.parent_id
            if self.app.conf.result_extended:
                meta.update(name=request.task, args=list(request.args), kwargs=request.kwargs,
                            retries=request.retries)
        return meta

    # the interface ----------------------------------------------------------------------------
    def store_result(self, task_id: str, result: Any, state: str, traceback: str | None = None,
                     request: TaskMessage | None = None, **extra: Any) -> dict[str, Any]:
        """Store a task's state and result. A result the serializer cannot encode is stored as
        a FAILURE that says so, rather than lost."""
        meta = self.make_meta(task_id, result, state, traceback, request)
        meta.update(extra)
        try:
            payload = self.encode(meta)
        except Exception as exc:
            error = BackendError(f"the result of task {task_id} ({type(result).__name__}) cannot "
                                 f"be serialized with {self.serializer!r}: {exc}")
            meta = self.make_meta(task_id, error, states.FAILURE, traceback, request)
            payload = self.encode(meta)
        self._set(task_id, payload, meta, request)
        return meta

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        payload = self._get(task_id)
        return pending_meta(task_id) if payload is None else self.decode(payload)

    def wait_for(self, task_id: str, timeout: float | None = None,
                 interval: float = 0.5) -> dict[str, Any]:
        return self._wait(task_id, timeout, interval)

    def forget(self, task_id: str) -> None:
        self._delete(task_id)

    def set_chord_size(self, group_id: str, size: int) -> None:
        """Record how many header results a chord waits for (before its last part is sent)."""
        raise exceptions.CanvasError(f"the result backend {self.url.partition(':')[0]}:// "
                                     "cannot join a chord's header; use Redis")

    def on_chord_part_return(self, message: TaskMessage, state: str, result: Any,
                             send: Callable[..., Any] | None = None,
                             retake: bool = False) -> None:
        """Count one finished header task of a chord; the last one sends the body (with
        ``send``, see :data:`.chord.Send`). ``retake``: the worker ends a part whose process it
        reaped, which may have held the chord's claim; it takes that claim back."""
        raise exceptions.CanvasError(f"the result backend {self.url.partition(':')[0]}:// "
                                     "cannot join a chord's header; use Redis")

    def save_group(self, group_id: str, result: Any) -> None:
        """Store a GroupResult's tuple as Celery does: ``{"result": <tuple>}`` under
        ``celery-taskset-meta-<id>``."""
        self._set_group(GROUP_PREFIX + group_id, self.encode({"result": result}))

    def restore_group(self, group_id: str) -> Any:
        """The saved tuple of a group, or None."""
        payload = self._get_group(GROUP_PREFIX + group_id)
        if payload is None:
            return None
        try:
            stored = loads(payload, self.content_type, "utf-8", accept=self.accept)
        except Exception as exc:
            raise BackendError(f"saved group {group_id} cannot be read: {exc}") from exc
        return stored.get("result") if isinstance(stored, Mapping) else None

    def delete_group(self, group_id: str) -> None:
        self._set_group(GROUP_PREFIX + group_id, None)

    def _set_group(self, key: str, payload: bytes | None) -> None:
        """Store (None: delete) a saved group's record."""
        raise self._no_groups()

    def _get_group(self, key: str) -> bytes | None:
        raise self._no_groups()

    def _no_groups(self) -> Exception:
        return exceptions.ImproperlyConfigured(
            f"the result backend {self.url.partition(':')[0]}:// cannot save a group's "
            "results; use Redis or SQLite")

    def reply_to(self) -> str | None:
        """Where results of tasks sent later on this client's behalf (the steps of a chain)
        must go; None when results are stored, not sent back."""
        return None

    #: Whether :meth:`on_task_call` does anything: a send builds a task's message for it
    #: only then (most fill a template instead). Worked out from the override.
    hears_of_calls = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.hears_of_calls = cls.on_task_call is not ResultBackend.on_task_call

    def on_task_call(self, message: TaskMessage) -> None:
        """Called before a task is sent, by backends that override it (rpc:// sets
        ``reply_to`` here)."""

    def expect_result(self, task_id: str) -> None:
        """Called before a task whose result is stored is sent alone (not in a batch): its
        ``get()`` may follow at once (Redis subscribes to its channel here)."""

    def cleanup(self) -> None:
        """Remove expired results where the store does not expire them itself."""

    def close(self) -> None:
        """Release connections."""

    def __repr__(self) -> str:
        from ..config import mask_url
        return f"<{type(self).__name__} {mask_url(self.url)}>"


class DisabledBackend(ResultBackend):
    """No result backend configured: sending works, asking for a result says how to get one."""

    persistent = False

    def __init__(self, app: App, url: str = "disabled://") -> None:
        super().__init__(app, url)

    def _fail(self) -> NoReturn:
        raise exceptions.ImproperlyConfigured(
            "no result backend is configured, so results are not stored. Set result_backend "
            "(for example 'redis://127.0.0.1:6379/0', 'rpc://' or 'sqlite://results.sqlite') "
            "in App(backend=...) or the config file.")

    def _set(self, task_id: str, payload: bytes, meta: dict[str, Any],
             request: TaskMessage | None) -> None:
        """Nothing is stored."""

    def _get(self, task_id: str) -> bytes | None:
        return self._fail()

    def _delete(self, task_id: str) -> None:
        """Nothing is stored, so nothing to forget."""

    def store_result(self, task_id: str, result: Any, state: str, traceback: str | None = None,
                     request: TaskMessage | None = None, **extra: Any) -> dict[str, Any]:
        return self.make_meta(task_id, None, state, None, request)

    def wait_for(self, task_id: str, timeout: float | None = None,
                 interval: float = 0.5) -> dict[str, Any]:
        return self._fail()
