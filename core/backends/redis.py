"""Redis result backend in Celery's layout: ``celery-task-meta-<id>`` set with its expiry, then
PUBLISH.

``get()`` subscribes to the key's channel and reads the key on the same connection after the
subscription (:mod:`.redis_listener`), so a result written before is found and one written after
is published to it; it then waits on the publication instead of polling. Each thread keeps its
subscriber connection from one ``get()`` to the next (a new connection costs a handshake of
several round trips) and closes it when the thread ends. The connection holds one subscription:
the task a ``get()`` waits for or waited for last, or the last task the thread sent (in a thread
that has waited before, a task sent alone is subscribed to before it is sent, without waiting,
so that a ``get()`` right after finds the subscription made, and the result itself when it was
published already); the next subscription lets the previous one go, in its own write. A thread
that only sends opens no subscriber connection. A server without RESP3 (``HELLO``) is polled
instead."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

import redis

from .. import exceptions, states
from ..brokers.redis import wire
from ..brokers.redis.refusals import describe as describe_refusal
from ..brokers.redis.urls import client_url
from ..exceptions import BackendError
from ..refused import wait_out
from .base import ResultBackend, pending_meta
from .chord import Send
from .redis_chord import RedisChordJoin
from .redis_listener import Ended, Listener, NoResp3

if TYPE_CHECKING:
    from ..app import App
    from ..protocol import TaskMessage

logger = logging.getLogger("qtui.backend")

KEY_PREFIX = "celery-task-meta-"
#: Seconds a ``get()`` without a timeout keeps reconnecting to a Redis it lost before it gives
#: up (a ``get()`` with a timeout keeps trying until its timeout).
RECONNECT_FOR = 60.0
#: Pause before the first reconnect; it doubles up to the second figure.
RECONNECT_PAUSE = (0.1, 1.0)


class _Held:
    """A thread's listener, kept in the thread's local state: when the thread ends the state
    goes, and a finalizer closes the listener's connection."""

    __slots__ = ("__weakref__", "listener", "pid")

    def __init__(self, listener: Listener) -> None:
        self.pid, self.listener = os.getpid(), listener
        weakref.finalize(self, listener.end)


class _Writer:
    """A thread's connection for result writes, kept in the thread's local state from one write
    to the next (a checkout from redis-py's pool costs a readiness poll, two locked updates and
    its metrics hooks, on every task's path); given back to the pool when the thread ends."""

    __slots__ = ("__weakref__", "conn", "pid")

    def __init__(self, pool: redis.ConnectionPool) -> None:
        self.pid, self.conn = os.getpid(), pool.get_connection()
        weakref.finalize(self, pool.release, self.conn)


class RedisBackend(ResultBackend):
    def __init__(self, app: App, url: str) -> None:
        super().__init__(app, url)
        try:
            self.client = redis.Redis.from_url(client_url(url), socket_connect_timeout=5,
                                               health_check_interval=30)
        except ValueError as exc:
            raise exceptions.ImproperlyConfigured(f"result_backend: bad Redis URL: {exc}") from exc
        self._local = threading.local()
        #: Every thread's listener, for close(); a thread's ends with the thread.
        self._listeners: weakref.WeakSet[Listener] = weakref.WeakSet()
        self._listeners_lock = threading.Lock()
        self._closed = False
        #: The server refused RESP3: get() polls the key.
        self._resp2 = False

    @staticmethod
    def key(task_id: str) -> str:
        return f"{KEY_PREFIX}{task_id}"

    def _set(self, task_id: str, payload: bytes, meta: dict[str, Any],
             request: TaskMessage | None) -> None:
        """Write the result; one Redis refuses for a while (``READONLY``, ``OOM``, ...) is
        written again until it goes through or ``result_backend_max_retries`` are spent
        (:func:`wait_out`), then fails as a write to an unreachable Redis does."""
        key = self.key(task_id)
        expiry = ("EX", max(1, int(self.expires))) if self.expires else ()
        commands: list[tuple[Any, ...]] = [("SET", key, payload, *expiry),
                                           ("PUBLISH", key, payload)]
        max_retries = self.app.conf.result_backend_max_retries

        def warn(refused: str) -> None:
            self._waiting_out(task_id, refused)
            logger.warning("%s: the result of task %s is written again %s", refused, task_id,
                           "until it is taken" if max_retries is None
                           else f"up to {max_retries:g} times")

        try:
            wait_out(lambda: self._pipeline(commands), self._retried, warn=warn,
                     max_retries=math.inf if max_retries is None else max_retries,
                     stop=self.stop_retrying)
        except redis.RedisError as exc:
            told = self.waiting_out.get(task_id)  # the refusal warned about, named again
            raise BackendError(f"cannot store the result of task {task_id} in Redis: "
                               f"{f'{told}: ' if told else ''}{exc}") from exc
        finally:
            self._waited_out(task_id)

    def _retried(self, exc: BaseException) -> str | None:
        """What a failed write waits out: a refusal, and with ``result_backend_always_retry``
        an unreachable Redis; None for an error that is not retried."""
        refused = describe_refusal(exc)
        if refused is None and self.app.conf.result_backend_always_retry \
                and isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            return f"Redis is unreachable ({exc})"
        return refused

    def _pipeline(self, commands: list[tuple[Any, ...]]) -> None:
        """``commands`` in one write, their replies read in order, the first error reply raised
        once all are read: redis-py's pipeline without its per-command bookkeeping (a third
        less CPU for the result write on every task's path), packed by :mod:`wire` rather than
        redis-py's packer, on the thread's own connection (:class:`_Writer`), sent once more on a
        new connection when the server dropped the kept one (:func:`wire.send_kept`). Resending
        is safe: SET stores the same value again and a second PUBLISH of it is ignored by a
        ``get()`` that already has it."""
        writer: _Writer | None = getattr(self._local, "writer", None)
        if writer is None or writer.pid != os.getpid():  # none yet, or the parent's (a fork)
            writer = self._local.writer = _Writer(self.client.connection_pool)
        wire.send_kept(writer.conn, commands)

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

    def on_chord_part_return(self, message: TaskMessage, state: str, result: Any,
                             send: Send | None = None, retake: bool = False) -> None:
        self._chords.on_chord_part_return(message, state, result, send, retake)

    def _held(self) -> Listener | None:
        """This thread's subscriber connection if it has one (none after a fork)."""
        held: _Held | None = getattr(self._local, "held", None)
        return held.listener if held is not None and held.pid == os.getpid() else None

    def _listener(self) -> Listener:
        """This thread's subscriber connection, made on first use."""
        if self._closed:
            raise BackendError("the result backend is closed")
        listener = self._held()
        if listener is None:
            listener = Listener(self.client)
            with self._listeners_lock:
                self._listeners.add(listener)
            self._local.held = _Held(listener)
        return listener

    def expect_result(self, task_id: str) -> None:
        """Subscribe to the task's channel now, without waiting (the previous such
        subscription, whose task nobody waited for, goes), if this thread has a subscriber
        connection (it waited before): each short-lived sending thread would otherwise keep a
        connection until :meth:`close`. A failure only leaves the subscription to ``get()``."""
        listener = self._held()
        if listener is None or self._resp2:
            return
        try:
            listener.expect(self.key(task_id))
        except (OSError, redis.RedisError):
            self._drop_listener(listener)

    def _drop_listener(self, listener: Listener) -> None:
        self._local.held = None
        with self._listeners_lock:
            self._listeners.discard(listener)
        listener.end()

    def _wait(self, task_id: str, timeout: float | None, interval: float) -> dict[str, Any]:
        if self._resp2:
            return super()._wait(task_id, timeout, interval)
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

        lost_since: float | None = None
        pause = RECONNECT_PAUSE[0]
        while True:
            try:
                meta: dict[str, Any] = listener.wait(key, ready, wake)
                return meta
            except exceptions.TimeoutError:
                self._let_go(listener, key)  # the connection stays for the next get()
                raise
            except NoResp3 as exc:
                self._drop_listener(listener)
                self._resp2 = True
                logger.warning("result_backend: this Redis refused HELLO (RESP3, Redis 6 or "
                               "later): get() polls the result key instead (%s)", exc)
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                return super()._wait(task_id, remaining, interval)
            except (OSError, redis.ConnectionError) as exc:
                # A lost connection: the next attempt connects again, subscribes and reads
                # the key, so nothing published meanwhile is missed.
                answered = listener.answered
                listener.close()
                if self._closed or isinstance(exc, Ended):
                    raise BackendError(f"the result backend was closed while waiting for "
                                       f"task {task_id}") from exc
                now = time.monotonic()
                if answered or lost_since is None:  # the first loss, or a reconnect that worked
                    lost_since, pause = now, RECONNECT_PAUSE[0]
                give_up = lost_since + RECONNECT_FOR if deadline is None else deadline
                if now + pause > give_up:
                    self._drop_listener(listener)
                    raise BackendError(f"lost Redis while waiting for task {task_id} (tried "
                                       f"for {now - lost_since:.1f}s): {exc}") from exc
                time.sleep(pause)
                pause = min(pause * 2, RECONNECT_PAUSE[1])
            except redis.RedisError as exc:
                self._drop_listener(listener)
                raise BackendError(
                    f"cannot read the result of task {task_id} from Redis: {exc}") from exc
            except BaseException:
                self._drop_listener(listener)
                raise

    def _let_go(self, listener: Listener, key: str) -> None:
        """Unsubscribe from ``key`` after a wait that timed out; the replies it still expects
        are skipped later (counted stale by the listener)."""
        try:
            listener.unsubscribe(key)
        except (OSError, redis.RedisError):
            self._drop_listener(listener)

    def close(self) -> None:
        """Close every thread's subscriber connection; a ``get()`` waiting on one raises
        BackendError instead of connecting again."""
        self._closed = True
        with self._listeners_lock:
            listeners = list(self._listeners)
            self._listeners.clear()
        for listener in listeners:
            listener.end()
        self.client.close()
