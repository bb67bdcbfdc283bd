"""Queue inspection: which queues a broker holds, how many messages wait in each, who consumes.

One small interface, :class:`QueueInspector` (``queues()``, ``purge()``), and one
implementation per broker family, because each answers the question differently:

- Redis: a queue is up to four lists (the name, then ``name\\x06\\x16{3,6,9}`` for priorities),
  LLEN summed; every queue kombu bound is listed in its ``_kombu.binding.<exchange>`` sets, so
  queues nobody consumes are found too. Redis cannot count consumers.
- AMQP: passive ``queue_declare`` gives messages and consumers of a named queue; with
  ``broker_management_url`` the RabbitMQ management API lists every queue of the vhost.
- qtui's embedded SQLite broker lists its queues and depths itself.
- Any other kombu transport: passive declare of the named queues.

Queues that exist only for the protocol (event receivers ``celeryev.*``, remote-control
``*.pidbox`` mailboxes and reply queues, ``rpc://`` result queues named by a UUID) are left out
of listings.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from kombu import Connection
from kombu.exceptions import ChannelError

from . import delayed
from .config import mask_url
from .delayed import is_store_queue
from .events import EVENT_QUEUE_PREFIX
from .exceptions import QtuiError

if TYPE_CHECKING:
    from .app import App

#: Seconds to wait for the RabbitMQ management API.
MANAGEMENT_TIMEOUT = 5.0


class QueueInspectionError(QtuiError):
    """The broker could not say what its queues hold; the message says where it failed."""


@dataclass(frozen=True)
class QueueInfo:
    """One queue: messages waiting (ready to deliver), consumers, messages delivered but not
    yet acknowledged, and ETA tasks held in the broker's delayed store (``scheduled``); None
    where the broker cannot tell."""

    name: str
    messages: int | None
    consumers: int | None = None
    unacked: int | None = None
    scheduled: int | None = None


@dataclass(frozen=True)
class QueueHead:
    """A message a queue delivers next: its task id, and when it was put in the queue where
    the broker records that (None where it does not: then only the task's ``task-sent`` event
    can date it)."""

    task_id: str | None
    enqueued_at: float | None = None


def oldest_age(messages: int | None, heads: Iterable[QueueHead],
               sent_at: Callable[[str], float | None], now: float) -> float | None:
    """Seconds the oldest waiting message of a queue has waited: 0 when none waits; from when
    the broker says it was enqueued, else from when the task was sent (``sent_at`` of its id:
    its ``task-sent`` event); None when neither is known."""
    if messages == 0:
        return 0.0
    ages = []
    for head in heads:
        since = head.enqueued_at
        if since is None and head.task_id is not None:
            since = sent_at(head.task_id)
        if since is not None:
            ages.append(max(0.0, now - since))
    return max(ages) if ages else None


def is_internal(name: str) -> bool:
    """Queues the protocol makes for itself: event receivers, pidbox mailboxes and replies,
    the reply queues of ``rpc://`` result backends, and the queues of qtui's delayed (ETA)
    store (counted as their task queue's ``scheduled``)."""
    return name.startswith(f"{EVENT_QUEUE_PREFIX}.") or name.endswith(".pidbox") \
        or is_rpc_reply_queue(name) or is_store_queue(name)


def is_rpc_reply_queue(name: str) -> bool:
    """``rpc://`` clients (qtui's and Celery's) name their reply queue by a bare UUID."""
    if len(name) != 36:
        return False
    try:
        return str(uuid.UUID(name)) == name.lower()
    except ValueError:  # not a UUID: a user's queue
        return False


class QueueInspector(ABC):
    """Reads queue depths from one broker connection; use as a context manager."""

    lists_all: bool = False
    """Whether :meth:`queues` finds queues nobody named (False: only the names given)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def __enter__(self) -> QueueInspector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.connection.release()

    @abstractmethod
    def queues(self, names: Iterable[str] = ()) -> list[QueueInfo]:
        """Every queue the broker lists, plus each of ``names`` (0 messages if it has none),
        sorted by name."""

    def heads(self, names: Iterable[str]) -> dict[str, list[QueueHead]]:
        """The next message of each named queue (one per priority list where a broker keeps
        several); a queue this broker cannot look into without taking a message (AMQP) is
        left out."""
        return {}

    def with_scheduled(self, queues: list[QueueInfo]) -> list[QueueInfo]:
        """``queues`` with the number of ETA tasks the broker's delayed store holds for each
        (None on a broker without one)."""
        counts = delayed.counts(self.connection, [q.name for q in queues])
        return [replace(q, scheduled=counts.get(q.name)) for q in queues]

    def purge_scheduled(self, name: str) -> int:
        """Discard the ETA tasks of a queue held in the broker's delayed store; returns how
        many (0 on a broker without one)."""
        reader = delayed.delayed_for(self.connection)
        return 0 if reader is None else reader.purge(name)

    def purge(self, name: str) -> int:
        """Remove every waiting message of a queue; returns how many. An absent queue has none."""
        channel = self.connection.channel()
        try:
            return channel.queue_purge(name) or 0
        except ChannelError as exc:
            if _not_found(exc):
                return 0
            raise
        finally:
            _close_quietly(channel)


def _not_found(exc: ChannelError) -> bool:
    """404: AMQP's (and kombu's virtual transports') way to say there is no such queue."""
    return str(getattr(exc, "reply_code", "")) == "404"


def _close_quietly(channel: Any) -> None:
    try:
        channel.close()
    except Exception:  # noqa: BLE001 - a channel the broker already closed (404) is fine
        pass


class RedisQueues(QueueInspector):
    """Redis: LLEN over each queue's priority lists; queues found in kombu's binding sets."""

    lists_all = True
    BINDING_PREFIX = "_kombu.binding."

    def queues(self, names: Iterable[str] = ()) -> list[QueueInfo]:
        channel: Any = self.connection.default_channel  # kombu types it as the base Channel
        client = channel.client
        found = set(names) | self._bound_queues(channel)
        ordered = sorted(found)
        with client.pipeline() as pipe:
            for name in ordered:
                for key in self.priority_keys(channel, name):
                    pipe.llen(key)
            sizes = pipe.execute()
        per_queue = len(sizes) // len(ordered) if ordered else 0
        return [QueueInfo(name, sum(sizes[i * per_queue:(i + 1) * per_queue]))
                for i, name in enumerate(ordered)]

    def heads(self, names: Iterable[str]) -> dict[str, list[QueueHead]]:
        channel: Any = self.connection.default_channel
        ordered = sorted(set(names))
        keys = [(name, key) for name in ordered for key in self.priority_keys(channel, name)]
        with channel.client.pipeline() as pipe:
            for _, key in keys:
                pipe.lindex(key, -1)  # kombu pushes on the left and pops on the right
            found = pipe.execute()
        heads: dict[str, list[QueueHead]] = {}
        for (name, _), raw in zip(keys, found, strict=True):
            if raw is not None:
                heads.setdefault(name, []).append(QueueHead(_envelope_task_id(raw)))
        return heads

    @staticmethod
    def priority_keys(channel: Any, name: str) -> list[str]:
        """The lists holding one queue: its name for priority 0, then one per priority step."""
        return [name] + [f"{name}{channel.sep}{step}" for step in channel.priority_steps if step]

    def _bound_queues(self, channel: Any) -> set[str]:
        prefix = channel.global_keyprefix or ""
        client = channel.client
        found: set[str] = set()
        for raw_key in client.scan_iter(match=f"{prefix}{self.BINDING_PREFIX}*", count=500):
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            key = key[len(prefix):]
            exchange = key[len(self.BINDING_PREFIX):]
            if exchange == EVENT_QUEUE_PREFIX or exchange.endswith(".pidbox"):
                continue
            for member in client.smembers(key):  # the client adds the prefix itself
                text = member.decode() if isinstance(member, bytes) else member
                queue = text.split(channel.sep)[-1]
                if queue and not is_internal(queue):
                    found.add(queue)
        return found


def _envelope_task_id(raw: bytes | str) -> str | None:
    """The task id of a kombu Redis envelope (protocol v2 ``id`` header, else the
    correlation id); None for a message of another shape."""
    try:
        envelope = json.loads(raw)
    except ValueError:  # not kombu's JSON envelope: a message qtui cannot date
        return None
    if not isinstance(envelope, Mapping):
        return None
    headers, properties = envelope.get("headers"), envelope.get("properties")
    found = headers.get("id") if isinstance(headers, Mapping) else None
    if found is None and isinstance(properties, Mapping):
        found = properties.get("correlation_id")
    return found if isinstance(found, str) else None


class DeclaredQueues(QueueInspector):
    """Passive ``queue_declare`` of named queues: messages, and consumers where the broker
    counts them (AMQP does; kombu's virtual transports always say 0, reported as unknown)."""

    counts_consumers = False

    def queues(self, names: Iterable[str] = ()) -> list[QueueInfo]:
        return sorted((self._declare(name) for name in set(names)), key=lambda q: q.name)

    def _declare(self, name: str) -> QueueInfo:
        channel = self.connection.channel()
        try:
            ok = channel.queue_declare(queue=name, passive=True)
        except ChannelError as exc:
            if _not_found(exc):  # no such queue: nothing waits in it
                return QueueInfo(name, 0, 0 if self.counts_consumers else None)
            raise
        finally:
            _close_quietly(channel)
        return QueueInfo(name, ok.message_count,
                         ok.consumer_count if self.counts_consumers else None)


class AmqpQueues(DeclaredQueues):
    """RabbitMQ: the management API lists every queue when its URL is set; passive declare
    counts the named ones otherwise (and those the API does not know yet)."""

    counts_consumers = True

    def __init__(self, connection: Connection, management_url: str | None = None) -> None:
        super().__init__(connection)
        self.management_url = management_url
        self.lists_all = bool(management_url)

    def queues(self, names: Iterable[str] = ()) -> list[QueueInfo]:
        wanted = set(names)
        listed: dict[str, QueueInfo] = {}
        if self.management_url:
            vhost = self.connection.virtual_host or "/"
            listed = {q.name: q for q in fetch_management_queues(
                self.management_url, vhost, self.connection.userid, self.connection.password)
                if not is_internal(q.name)}
        listed.update({q.name: q for q in super().queues(wanted - set(listed))})
        return sorted(listed.values(), key=lambda q: q.name)


def fetch_management_queues(url: str, vhost: str, userid: str | None = None,
                            password: str | None = None,
                            timeout: float = MANAGEMENT_TIMEOUT) -> list[QueueInfo]:
    """``GET /api/queues/<vhost>`` of the RabbitMQ management API. Credentials come from the
    URL (``http://user:password@host:15672/``), else from the broker connection."""
    parts = urllib.parse.urlsplit(url)
    user = urllib.parse.unquote(parts.username) if parts.username else userid
    secret = urllib.parse.unquote(parts.password) if parts.password else password
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    endpoint = (f"{base}/api/queues/{urllib.parse.quote(vhost, safe='')}"
                "?columns=name,vhost,messages_ready,messages_unacknowledged,consumers")
    request = urllib.request.Request(endpoint, headers={"Accept": "application/json"})
    if user is not None:
        token = base64.b64encode(f"{user}:{secret or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            payload = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise QueueInspectionError(
            f"the RabbitMQ management API at {mask_url(url)} answered {exc.code} {exc.reason} "
            "(check the user, password and vhost in broker_management_url)") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise QueueInspectionError(
            f"cannot read queues from the RabbitMQ management API at {mask_url(url)}: {exc}. "
            "Is the rabbitmq_management plugin enabled? Unset broker_management_url to look "
            "queues up by name instead.") from exc
    return parse_management_queues(payload, vhost)


def parse_management_queues(payload: Any, vhost: str | None = None) -> list[QueueInfo]:
    """Queues from a management API ``/api/queues`` answer (optionally one vhost's)."""
    if not isinstance(payload, list):
        raise QueueInspectionError("the RabbitMQ management API did not answer with a list of "
                                   f"queues: {str(payload)[:200]}")
    found = []
    for entry in payload:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            continue
        if vhost is not None and entry.get("vhost", vhost) != vhost:
            continue
        found.append(QueueInfo(entry["name"], _count(entry.get("messages_ready")),
                               _count(entry.get("consumers")),
                               _count(entry.get("messages_unacknowledged"))))
    return sorted(found, key=lambda q: q.name)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class SqliteQueues(QueueInspector):
    """qtui's embedded broker: its ``Channel.list_queues()`` gives (name, ready, unacked) for
    every queue in the file."""

    lists_all = True

    def queues(self, names: Iterable[str] = ()) -> list[QueueInfo]:
        channel: Any = self.connection.default_channel  # kombu types it as the base Channel
        listed = {name: QueueInfo(name, ready, None, unacked)
                  for name, ready, unacked in channel.list_queues()
                  if not is_internal(name)}
        for name in names:
            listed.setdefault(name, QueueInfo(name, 0, None, 0))
        return sorted(listed.values(), key=lambda q: q.name)

    def heads(self, names: Iterable[str]) -> dict[str, list[QueueHead]]:
        channel: Any = self.connection.default_channel  # kombu types it as the base Channel
        heads: dict[str, list[QueueHead]] = {}
        for name in set(names):
            enqueued = channel.db.oldest_ready(name)
            if enqueued is not None:
                heads[name] = [QueueHead(None, enqueued)]
        return heads


def inspector_for(app: App, connection: Connection | None = None) -> QueueInspector:
    """The inspector that fits the app's broker (or the given connection)."""
    conn = connection.clone() if connection is not None else app.connection_for_read()
    driver = conn.transport.driver_type
    if driver == "redis":
        return RedisQueues(conn)
    if driver == "amqp":
        return AmqpQueues(conn, app.conf.broker_management_url)
    if hasattr(conn.transport.Channel, "list_queues"):
        return SqliteQueues(conn)
    return DeclaredQueues(conn)
