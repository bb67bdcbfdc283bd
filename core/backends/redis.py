"""Redis result backend in Celery's layout: ``celery-task-meta-<id>`` set with its expiry, then
PUBLISH.

``get()`` subscribes to the key's channel before reading the key, so a result written in between
is never missed, and then waits on the publication instead of polling. Each thread keeps its
subscriber connection from one ``get()`` to the next (a new connection costs a handshake of
several round trips); it only ever holds the subscription of the task it waits for, or of the
last task it sent: in a thread that has waited before, a task sent alone is subscribed to before
it is sent (the ``SUBSCRIBE`` goes out without waiting), so that a ``get()`` right after finds
the subscription confirmed and reads the key at once, one round trip instead of two. A thread
that only sends opens no subscriber connection.
"""

from __future__ import annotations

import os
import threading
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

import redis

from .. import exceptions, states
from ..exceptions import BackendError
from .base import ResultBackend
from .redis_chord import RedisChordJoin

if TYPE_CHECKING:
    from ..app import App
    from ..protocol import TaskMessage

KEY_PREFIX = "celery-task-meta-"
#: Subscriptions made at send time between two reads of the subscriber connection: their
#: confirmations (and results) are then read without waiting, so a thread that sends and never
#: waits does not fill its connection.
EXPECTED_UNREAD_MAX = 32


class RedisBackend(ResultBackend):
    def __init__(self, app: App, url: str) -> None:
        super().__init__(app, url)
        try:
            self.client = redis.Redis.from_url(url, socket_connect_timeout=5,
                                               health_check_interval=30)
        except ValueError as exc:
            raise exceptions.ImproperlyConfigured(f"result_backend: bad Redis URL: {exc}") from exc
        self._local = threading.local()
        self._listeners: list[redis.client.PubSub] = []
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
        less CPU for the result write on every task's path). Retried on a broken connection as
        the client's commands are."""
        pool = self.client.connection_pool
        conn = pool.get_connection()

        def run() -> None:
            conn.send_packed_command(conn.pack_commands(commands))
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

    def _listener(self) -> redis.client.PubSub:
        """This thread's subscriber connection (a new one after a fork)."""
        found = getattr(self._local, "listener", None)
        if found is None or found[0] != os.getpid():
            pubsub = self.client.pubsub()
            with self._listeners_lock:
                self._listeners.append(pubsub)
            found = self._local.listener = (os.getpid(), pubsub)
        listener: redis.client.PubSub = found[1]
        return listener

    def expect_result(self, task_id: str) -> None:
        """Subscribe to the task's channel now, without waiting (the previous such
        subscription, whose task nobody waited for, goes), if this thread has a subscriber
        connection (it waited before): each short-lived sending thread would otherwise keep a
        connection until :meth:`close`. A failure only leaves the subscription to ``get()``."""
        local = self._local
        found = getattr(local, "listener", None)
        if found is None or found[0] != os.getpid():
            return
        pubsub: redis.client.PubSub = found[1]
        try:
            expected = getattr(local, "expected", None)
            if expected is not None:
                pubsub.unsubscribe(expected)
            local.expected = None
            local.unread = getattr(local, "unread", 0) + 1
            if local.unread > EXPECTED_UNREAD_MAX:
                while pubsub.get_message(timeout=0) is not None:
                    pass
                local.unread = 0
            key = self.key(task_id)
            pubsub.subscribe(key)
            local.expected = key
        except redis.RedisError:
            self._drop_listener(pubsub)

    def _drop_listener(self, pubsub: redis.client.PubSub) -> None:
        self._local.listener = None
        self._local.expected = None
        with self._listeners_lock:
            if pubsub in self._listeners:
                self._listeners.remove(pubsub)
        pubsub.close()

    def _wait(self, task_id: str, timeout: float | None, interval: float) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        key = self.key(task_id)
        channel = key.encode()
        pubsub = self._listener()

        def next_message() -> dict[str, Any] | None:
            """The next message about this task, None after a quiet while; messages left
            over from earlier tasks are skipped."""
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise exceptions.TimeoutError(f"task {task_id} not ready after {timeout}s")
            # Wake at least every few seconds to re-read the key: a publication can be lost
            # if the pub/sub connection drops, the stored key cannot.
            message: dict[str, Any] | None = pubsub.get_message(
                timeout=5.0 if remaining is None else min(remaining, 5.0))
            if message is not None and message["channel"] != channel:
                return {"type": "other"}
            return message

        try:
            expected, self._local.expected, self._local.unread = \
                getattr(self._local, "expected", None), None, 0
            if expected != key:  # not subscribed when it was sent (or another task since)
                if expected is not None:
                    pubsub.unsubscribe(expected)
                pubsub.subscribe(key)
            meta = None
            # Once the subscription is confirmed no publication can be missed: read the key.
            while meta is None:
                message = next_message()
                if message is None or message["type"] == "subscribe":
                    meta = self.get_task_meta(task_id)
                elif message["type"] == "message":
                    meta = self.decode(message["data"])
            while meta["status"] not in states.READY_STATES:
                message = next_message()
                if message is None:
                    meta = self.get_task_meta(task_id)
                elif message["type"] == "message":
                    meta = self.decode(message["data"])
            pubsub.unsubscribe(key)  # sent, not waited for: its answer is skipped later
            return meta
        except redis.RedisError as exc:
            self._drop_listener(pubsub)
            raise BackendError(f"lost Redis while waiting for task {task_id}: {exc}") from exc
        except BaseException:
            self._drop_listener(pubsub)  # a timeout: leave no subscription behind
            raise

    def close(self) -> None:
        with self._listeners_lock:
            listeners, self._listeners = self._listeners, []
        for pubsub in listeners:
            pubsub.close()
        self.client.close()
