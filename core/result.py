"""AsyncResult: a handle on a sent task's state and result, read from the app's result backend."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import states
from .backends import exception_from_meta
from .exceptions import TaskRevokedError

if TYPE_CHECKING:
    from .app import App
    from .backends import ResultBackend


class AsyncResult:
    """The state and outcome of one task, as Celery's ``AsyncResult``.

    A ready meta is cached: once a task is ready its result never changes.
    """

    # Slots: a bulk send makes one per task. ``__dict__`` still takes other attributes.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_backend",
        "_cache",
        "app",
        "id",
        "name",
        "parent",
    )

    def __init__(self, id: str, app: App | None = None, backend: ResultBackend | None = None,
                 task_name: str | None = None) -> None:
        if app is None:
            from .app import current_app
            app = current_app()
        self.id = id
        self.app = app
        self.name = task_name
        self._backend = backend
        self._cache: dict[str, Any] | None = None
        self.parent: AsyncResult | GroupResult | None = None
        """The result of the step before this one in a chain (or a chord's header)."""

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its id, task name and parent, as Celery's: the app (with its connections)
        is not pickled; the copy that comes back reads the current app's result backend."""
        return self.__class__, (self.id, None, None, self.name), (None, {"parent": self.parent})

    @property
    def task_id(self) -> str:
        return self.id

    @property
    def backend(self) -> ResultBackend:
        return self._backend or self.app.backend

    def _meta(self) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        meta = self.backend.get_task_meta(self.id)
        if meta["status"] in states.READY_STATES:
            self._cache = meta
        return meta

    @property
    def state(self) -> str:
        return str(self._meta()["status"])

    status = state

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    @property
    def result(self) -> Any:
        """The return value, or the exception for a failed, retried or revoked task."""
        meta = self._meta()
        if meta["status"] in states.EXCEPTION_STATES:
            return self._exception(meta)
        return meta.get("result")

    info = result

    @property
    def traceback(self) -> str | None:
        return self._meta().get("traceback")

    @property
    def date_done(self) -> datetime | None:
        value = self._meta().get("date_done")
        return datetime.fromisoformat(value) if isinstance(value, str) else value

    @property
    def args(self) -> list[Any] | None:
        return self._meta().get("args")

    @property
    def kwargs(self) -> dict[str, Any] | None:
        return self._meta().get("kwargs")

    @property
    def retries(self) -> int | None:
        return self._meta().get("retries")

    def _exception(self, meta: dict[str, Any]) -> BaseException:
        if meta["status"] == states.REVOKED and not isinstance(meta.get("result"), dict):
            return TaskRevokedError(meta.get("result") or f"task {self.id} was revoked")
        return exception_from_meta(meta.get("result"))

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.5) -> Any:
        """Wait until the task is ready and return its result.

        With ``propagate`` a failed (or revoked, or rejected) task raises its exception here;
        without it the exception is returned. Raises ``qtui.core.exceptions.TimeoutError``
        when ``timeout`` seconds pass first.
        """
        if self._cache is None:
            self._cache = self.backend.wait_for(self.id, timeout=timeout, interval=interval)
        meta = self._cache
        if meta["status"] in states.PROPAGATE_STATES:
            exc = self._exception(meta)
            if propagate:
                raise exc
            return exc
        return meta.get("result")

    wait = get

    def forget(self) -> None:
        """Delete the stored result."""
        self._cache = None
        self.backend.forget(self.id)

    def revoke(self, terminate: bool = False, signal: str = "SIGTERM") -> None:
        """Ask every worker not to run this task (and to kill it if running and ``terminate``)."""
        self.app.control.revoke(self.id, terminate=terminate, signal=signal)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        if isinstance(other, str):
            return other == self.id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __str__(self) -> str:
        return self.id

    def as_tuple(self) -> Any:
        """Celery's serializable form, as ``GroupResult.save`` stores it."""
        return [[self.id, self.parent.as_tuple() if self.parent else None], None]

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"


class GroupResult:
    """The results of a group's tasks, as Celery's ``GroupResult``; ``save`` and ``restore``
    use Celery's ``celery-taskset-meta-<id>`` record, so either side can restore it."""

    def __init__(self, id: str, results: list[Any], app: App | None = None) -> None:
        if app is None:
            from .app import current_app
            app = current_app()
        self.id = id
        self.results: list[AsyncResult | GroupResult] = list(results)
        """AsyncResults, or GroupResults for a group of groups."""
        self.app = app
        self.parent: AsyncResult | GroupResult | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its id, results and parent: the copy uses the current app."""
        return self.__class__, (self.id, self.results), {"parent": self.parent}

    @property
    def children(self) -> list[AsyncResult | GroupResult]:
        return self.results

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def completed_count(self) -> int:
        """How many of the tasks succeeded."""
        return sum(1 for r in self.results if r.successful())

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.5) -> list[Any]:
        """Every result, in the group's order; ``timeout`` bounds the whole wait."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            values.append(result.get(timeout=remaining, propagate=propagate, interval=interval))
        return values

    join = get

    def forget(self) -> None:
        for result in self.results:
            result.forget()
        self.app.backend.delete_group(self.id)

    def revoke(self, terminate: bool = False, signal: str = "SIGTERM") -> None:
        for result in self.results:
            result.revoke(terminate=terminate, signal=signal)

    def save(self) -> GroupResult:
        self.app.backend.save_group(self.id, self.as_tuple())
        return self

    @classmethod
    def restore(cls, id: str, app: App | None = None) -> GroupResult | None:
        """The saved group, or None when nothing was saved under ``id``."""
        if app is None:
            from .app import current_app
            app = current_app()
        stored = app.backend.restore_group(id)
        restored = None if stored is None else result_from_tuple(stored, app)
        return restored if isinstance(restored, GroupResult) else None

    def as_tuple(self) -> Any:
        return [[self.id, self.parent.as_tuple() if self.parent else None],
                [r.as_tuple() for r in self.results]]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Any:
        return iter(self.results)

    def __getitem__(self, index: int) -> AsyncResult | GroupResult:
        return self.results[index]

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"


def result_from_tuple(value: Any, app: App) -> AsyncResult | GroupResult:
    """Celery's ``result_from_tuple``: ``[[id, parent], None]`` or ``[[id, parent], [results]]``."""
    (id_, parent), nodes = value
    result: AsyncResult | GroupResult
    if nodes is not None:
        result = GroupResult(id_, [], app=app)
        result.results = [result_from_tuple(n, app) for n in nodes]
    else:
        result = AsyncResult(id_, app=app)
    if parent:
        result.parent = result_from_tuple(parent, app)
    return result
