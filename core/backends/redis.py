"""Redis result backend in Celery's layout: ``celery-task-meta-<id>`` set with its expiry, then PUBLISH.

``get()`` subscribes to the key's channel before reading the key, so a result written in between
is never missed, and then waits on the publication instead of polling.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import redis

from .. import exceptions, states
from ..exceptions import BackendError
from .base import ResultBackend

if TYPE_CHECKING:
    from ..app import App
    from ..protocol import TaskMessage

KEY_PREFIX = "celery-task-meta-"


class RedisBackend(ResultBackend):
    def __init__(self, app: App, url: str) -> None:
        super().__init__(app, url)
        try:
            self.client = redis.Redis.from_url(url, socket_connect_timeout=5,
                                               health_check_interval=30)
        except ValueError as exc:
            raise exceptions.ImproperlyConfigured(f"result_backend: bad Redis URL: {exc}") from exc

    @staticmethod
    def key(task_id: str) -> str:
        return f"{KEY_PREFIX}{task_id}"

    def _set(self, task_id: str, payload: bytes, meta: dict[str, Any],
             request: TaskMessage | None) -> None:
        key = self.key(task_id)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.set(key, payload, ex=max(1, int(self.expires)) if self.expires else None)
                pipe.publish(key, payload)
                pipe.execute()
        except redis.RedisError as exc:
            raise BackendError(f"cannot store the result of task {task_id} in Redis: {exc}") from exc

    def _get(self, task_id: str) -> bytes | None:
        try:
            return self.client.get(self.key(task_id))
        except redis.RedisError as exc:
            raise BackendError(f"cannot read the result of task {task_id} from Redis: {exc}") from exc

    def _delete(self, task_id: str) -> None:
        self.client.delete(self.key(task_id))

    def _wait(self, task_id: str, timeout: float | None, interval: float) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.key(task_id))
            meta = self.get_task_meta(task_id)
            while meta["status"] not in states.READY_STATES:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise exceptions.TimeoutError(f"task {task_id} not ready after {timeout}s")
                # Wake at least every few seconds to re-read the key: a publication can be lost
                # if the pub/sub connection drops, the stored key cannot.
                wait = 5.0 if remaining is None else min(remaining, 5.0)
                message = pubsub.get_message(timeout=wait)
                meta = (self.decode(message["data"]) if message and message["type"] == "message"
                        else self.get_task_meta(task_id))
            return meta
        except redis.RedisError as exc:
            raise BackendError(f"lost Redis while waiting for task {task_id}: {exc}") from exc
        finally:
            pubsub.close()

    def close(self) -> None:
        self.client.close()
