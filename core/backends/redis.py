"""Redis result backend in Celery's layout: ``celery-task-meta-<id>`` set with its expiry, then
PUBLISH.

``get()`` subscribes to the key's channel and reads the key on the same connection after the
subscription (:mod:`.redis_listener`), so a result written before is found and one written after
is published to it; it then waits on the publication instead of polling. Each thread keeps its
subscriber connection from one ``get()`` to the next (a new connection costs a handshake of
several round trips); it only ever holds the subscription of the task it waits for, or of the
last task it sent: in a thread that has waited before, a task sent alone is subscribed to before
it is sent (the ``SUBSCRIBE`` goes out without waiting), so that a ``get()`` right after finds
the subscription made, and the result itself when it was published already (no ``GET`` then).
A thread that only sends opens no subscriber connection."""

from __future__ import annotations

import os
import threading
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

import redis

from .. import exceptions, states
from ..brokers.redis import wire
from ..exceptions import BackendError
from .base import ResultBackend, pending_meta
from .redis_chord import RedisChordJoin
from .redis_listener import Listener

if TYPE_CHECKING:
    from ..app import App
    from ..protocol import TaskMessage

KEY_PREFIX = "celery-task-meta-"
#: Connections lost during one ``get()`` before it gives up.
LOSSES_MAX = 3


class RedisBackend(ResultBackend):
    def __init__(self, app: App, url: str) -> None:
        super().__init__(app, url)
        try:
            self.client = redis.Redis.from_url(url, socket_connect_timeout=5,
                                               health_check_interval=30)
        except ValueError as exc:
            raise exceptions.ImproperlyConfigured(f"result_backend: bad Redis URL: {exc}") from exc
        self._local = threading.local()
        self._listeners: list[Listener] = []
        self._listeners_lock = threading.Lock()

    @staticmethod
    def key(task_id: str) -> str:
        return f"{KEY_PREFIX}{task_id}"

    def _set(self, task_id: str, payload: bytes, meta: dict[str, Any],
             request: TaskMessage | None) -> None:
        key = self.key(task_id)
        expiry = ("EX", max(1, int(self.expires))) if self.expires else ()
        try:
            self._pipeline([("SET", key, payload, *expiry), ("PUBLISH", key, payload)])
        except redis.RedisError as exc:
            raise BackendError(
                f"cannot store the result of task {task_id} in Redis: {exc}") from exc

    def _pipeline(self, commands: list[tuple[Any, ...]]) -> None:
        """``commands`` in one write, their replies read in order, the first error reply raised
        once all are read: redis-py's pipeline without its per-command bookkeeping (a third
        less CPU for the result write on every task's path), packed by :mod:`wire` rather than
        redis-py's packer. Retried on a broken connection as the client's commands are."""
        pool = self.client.connection_pool
        conn = pool.get_connection()

        def run() -> None:
            conn.send_packed_command([b"".join(wire.command(conn, list(c)) for c in commands)])
            refused: list[redis.ResponseError] = []
            for _ in commands:
                try:
                    conn.read_response()
                except redis.ResponseError as exc:
                    refused.append(exc)
            if refused:
                raise refused[0]

        try:
            conn.retry.call_with_retry(run, lambda error: conn.disconnect())
        finally:
            pool.release(conn)

    def _get(self, task_id: str) -> bytes | None:
        try:
            return cast("bytes | None", self.client.get(self.key(task_id)))  # never decoded
        except redis.RedisError as exc:
            raise BackendError(
                f"cannot read the result of task {task_id} from Redis: {exc}") from exc

    def _delete(self, task_id: str) -> None:
        self.client.delete(self.key(task_id))

    def _set_group(self, key: str, payload: bytes | None) -> None:
        if payload is None:
            self.client.delete(key)
        else:
            self.client.set(key, payload, ex=max(1, int(self.expires)) if self.expires else None)

    def _get_group(self, key: str) -> bytes | None:
        return cast("bytes | None", self.client.get(key))  # never decoded

    @cached_property
    def _chords(self) -> RedisChordJoin:
        return RedisChordJoin(self)

    def set_chord_size(self, group_id: str, size: int) -> None:
        self._chords.set_chord_size(group_id, size)

    def on_chord_part_return(self, message: TaskMessage, state: str, result: Any) -> None:
        self._chords.on_chord_part_return(message, state, result)

    def _listener(self) -> Listener:
        """This thread's subscriber connection (a new one after a fork)."""
        found = getattr(self._local, "listener", None)
        if found is None or found[0] != os.getpid():
            listener = Listener(self.client)
            with self._listeners_lock:
                self._listeners.append(listener)
            found = self._local.listener = (os.getpid(), listener)
        return cast("Listener", found[1])

    def expect_result(self, task_id: str) -> None:
        """Subscribe to the task's channel now, without waiting (the previous such
        subscription, whose task nobody waited for, goes), if this thread has a subscriber
        connection (it waited before): each short-lived sending thread would otherwise keep a
        connection until :meth:`close`. A failure only leaves the subscription to ``get()``."""
        found = getattr(self._local, "listener", None)
        if found is None or found[0] != os.getpid():
            return
        try:
            found[1].expect(self.key(task_id))
        except (OSError, redis.RedisError):
            self._drop_listener(found[1])

    def _drop_listener(self, listener: Listener) -> None:
        self._local.listener = None
        with self._listeners_lock:
            if listener in self._listeners:
                self._listeners.remove(listener)
        listener.close()

    def _wait(self, task_id: str, timeout: float | None, interval: float) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        key = self.key(task_id)
        listener = self._listener()

        def ready(payload: bytes | None) -> dict[str, Any] | None:
            meta = pending_meta(task_id) if payload is None else self.decode(payload)
            return meta if meta["status"] in states.READY_STATES else None

        def wake() -> float:
            """Wake at least every few seconds to re-read the key: a publication can be lost
            if the connection drops, the stored key cannot."""
            if deadline is None:
                return 5.0
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise exceptions.TimeoutError(f"task {task_id} not ready after {timeout}s")
            return min(remaining, 5.0)

        losses = 0
        while True:
            try:
                meta: dict[str, Any] = listener.wait(key, ready, wake)
                listener.unsubscribe(key)
                return meta
            except exceptions.TimeoutError:
                self._drop_listener(listener)  # leave no subscription behind
                raise
            except (OSError, redis.ConnectionError) as exc:
                # A lost connection: the next attempt connects again, subscribes and reads
                # the key, so nothing published meanwhile is missed.
                listener.close()
                losses += 1
                if losses > LOSSES_MAX:
                    self._drop_listener(listener)
                    raise BackendError(
                        f"lost Redis while waiting for task {task_id}: {exc}") from exc
            except redis.RedisError as exc:
                self._drop_listener(listener)
                raise BackendError(
                    f"cannot read the result of task {task_id} from Redis: {exc}") from exc
            except BaseException:
                self._drop_listener(listener)
                raise

    def close(self) -> None:
        with self._listeners_lock:
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.close()
        self.client.close()
