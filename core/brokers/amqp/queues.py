"""Queue inspection on RabbitMQ: the management API lists every queue of the vhost when
``broker_management_url`` is set; passive declares count the named queues otherwise. Peeking
takes and requeues (the management API's get, else basic.get and reject), since AMQP has no
way to read a queue without taking from it; deleting or moving one message gets messages from
the head until it is found, and requeues the others. Pauses are kept in a stream queue
(:mod:`.pauses`)."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from amqp.exceptions import MessageNacked
from kombu import Connection, Producer
from kombu.exceptions import ChannelError
from kombu.message import Message
from kombu.transport import pyamqp

from ...config import mask_url
from ...pauses import Pause
from ...peek import PAGE, SUMMARY_SAMPLE, Peek, PeekError, Summary, WaitingMessage
from ...protocol import COMPRESSION_HEADER, DELIVERY_HEADERS, SENT_AT_HEADER, resent_properties
from ...queues import (
    DeclaredQueues,
    QueueInfo,
    QueueInspectionError,
    _close_quietly,
    _not_found,
    is_internal,
    queue_exists,
)
from . import frames
from .pauses import PAUSE_STREAM, Pauses, PauseStream, is_pause_queue, kept

#: Seconds to wait for the RabbitMQ management API.
MANAGEMENT_TIMEOUT = 5.0


class AmqpQueues(DeclaredQueues):
    """RabbitMQ: the management API lists every queue when its URL is set; passive declare
    counts the named ones otherwise (and those the API does not know yet)."""

    counts_consumers = True

    def __init__(self, connection: Connection, management_url: str | None = None) -> None:
        super().__init__(connection)
        self.management_url = management_url
        self.lists_all = bool(management_url)
        self.peek_method = MANAGEMENT_PEEK if management_url else GET_PEEK

    def queues(self, names: Iterable[str] = ()) -> list[QueueInfo]:
        wanted = set(names)
        listed: dict[str, QueueInfo] = {}
        if self.management_url:
            vhost = self.connection.virtual_host or "/"
            listed = {q.name: q for q in fetch_management_queues(
                self.management_url, vhost, self.connection.userid, self.connection.password)
                if not is_internal(q.name) and not is_pause_queue(q.name)}
        listed.update({q.name: q for q in super().queues(wanted - set(listed))})
        return sorted(listed.values(), key=lambda q: q.name)

    pause_stream = PAUSE_STREAM
    """The stream queue that keeps the pauses (:mod:`.pauses`)."""

    def pauses(self) -> dict[str, Pause]:
        return self._pauses().read()

    def pause(self, pause: Pause) -> Pause:
        return self._pauses().change(lambda pauses: kept(pauses, pause))[pause.queue]

    def resume(self, queue: str) -> Pause | None:
        removed: list[Pause] = []

        def resumed(pauses: Pauses) -> Pauses:
            if queue in pauses:
                removed.append(pauses.pop(queue))
            return pauses
        self._pauses().change(resumed)
        return removed[0] if removed else None

    def note_paused_consumer(self, queue: str, hostname: str) -> None:
        noted = Pause(queue, 0.0, "", (hostname,))
        self._pauses().change(  # a queue resumed since the worker read it: none
            lambda pauses: kept(pauses, noted) if queue in pauses else pauses)

    def _pauses(self) -> PauseStream:
        return PauseStream(self.connection, self.pause_stream)

    def peek(self, name: str, offset: int = 0, limit: int = PAGE) -> Peek:
        if self.management_url:
            vhost = urllib.parse.quote(self.connection.virtual_host or "/", safe="")
            found = management_call(
                self.management_url, f"queues/{vhost}/{urllib.parse.quote(name, safe='')}/get",
                self.connection.userid, self.connection.password,
                data={"count": offset + limit, "ackmode": "ack_requeue_true",
                      "encoding": "base64"})
            return Peek(name, parse_management_messages(found)[offset:], self.peek_method)
        messages: list[WaitingMessage] = []
        self._each(name, offset + limit, lambda position, message: messages.append(
            _waiting(position, message)) if position >= offset else None)
        return Peek(name, messages, self.peek_method)

    def summary(self, name: str, sample: int = SUMMARY_SAMPLE) -> Summary:
        """Over the first page only: each message read here is taken and requeued."""
        return super().summary(name, min(sample, PAGE))

    def delete(self, name: str, messages: Sequence[WaitingMessage]) -> int:
        return len(self._take(name, messages, lambda message, waiting: None))

    def move_found(self, name: str, messages: Sequence[WaitingMessage],
                   to: Callable[[WaitingMessage], str], without_headers: Iterable[str] = ()
                   ) -> list[WaitingMessage]:
        without = set(without_headers)
        for target in sorted({to(m) for m in messages}):
            if not queue_exists(self.connection, target):
                raise PeekError(f"there is no queue {target!r} on this RabbitMQ (its default "
                                "exchange would drop what is sent there): nothing was moved. "
                                "Start a worker that consumes it, which declares it, first.")
        # The original is acked only once the broker confirmed the copy reached a queue:
        # mandatory makes an unroutable copy (its queue deleted since the check) an error.
        # The move's own connection confirms, whatever the inspector's was made with.
        confirming = self.connection.clone(transport_options={
            **(self.connection.transport_options or {}), "confirm_publish": True})
        moved = 0

        def publish(message: Message, waiting: WaitingMessage) -> None:
            nonlocal moved
            headers = {k: v for k, v in (message.headers or {}).items()
                       if k not in without and k not in DELIVERY_HEADERS}
            headers[SENT_AT_HEADER] = time.time()  # a new publish: its age starts now
            properties = resent_properties(message.properties, message.headers,
                                           keep_user_id=False)
            target = to(waiting)
            try:
                Producer(confirming.default_channel).publish(
                    message.body, exchange="", routing_key=target, headers=headers,
                    content_type=message.content_type or "application/data",
                    content_encoding=message.content_encoding or "binary", delivery_mode=2,
                    mandatory=True, **properties)
            except (*confirming.channel_errors, MessageNacked) as exc:
                raise PeekError(f"RabbitMQ did not take the message for {target!r} ({exc}): "
                                f"it stays in {name!r}; {moved} moved before it. Is the queue "
                                "still there?") from exc
            moved += 1
        with confirming:
            return self._take(name, messages, publish)

    def _take(self, name: str, messages: Sequence[WaitingMessage],
              act: Callable[[Message, WaitingMessage], None]) -> list[WaitingMessage]:
        """Get messages from the head until each wanted one (by :func:`_handle`) is found,
        ``act`` on it and ack it; every other message got is held, and requeued at the end
        (RabbitMQ cannot take one message from the middle of a queue). A connection lost half
        way gives every held message back: nothing is lost. Returns those of ``messages``
        taken."""
        wanted: dict[Any, list[WaitingMessage]] = {}
        for chosen in messages:
            wanted.setdefault(chosen.handle, []).append(chosen)
        done: list[WaitingMessage] = []

        def visit(position: int, message: Message) -> bool:
            waiting = _waiting(position, message)
            if not wanted.get(waiting.handle):
                return False
            try:
                act(message, waiting)
            except PeekError:  # the broker refused the act: the original goes back, not lost
                message.reject(requeue=True)
                raise
            message.ack()
            done.append(wanted[waiting.handle].pop(0))
            return True
        self._each(name, None, visit, until=lambda: not any(wanted.values()))
        return done

    def _each(self, name: str, limit: int | None, visit: Callable[[int, Message], Any],
              until: Callable[[], bool] = lambda: False) -> None:
        """basic.get the messages of ``name`` from the head (at most ``limit``, and no more
        than it held when this began), hand each to ``visit`` (True: it settled the message),
        then requeue all the others."""
        channel = self.connection.channel()
        held: list[Message] = []
        try:
            try:
                depth = channel.queue_declare(queue=name, passive=True).message_count
            except ChannelError as exc:
                if _not_found(exc):
                    return
                raise
            for position in range(depth if limit is None else min(limit, depth)):
                if until():
                    break
                # Not kombu's Queue.get, which raises a message's decode error: one that the
                # worker will dead-letter (a routing key not UTF-8, ...) is shown as it is.
                raw = channel.basic_get(queue=name, no_ack=False)
                if raw is None:
                    break
                message: Message = AsSent(raw, channel=channel)
                if not visit(position, message):
                    held.append(message)
        finally:
            for message in held:
                message.reject(requeue=True)
            _close_quietly(channel)


def fetch_management_queues(url: str, vhost: str, userid: str | None = None,
                            password: str | None = None,
                            timeout: float = MANAGEMENT_TIMEOUT) -> list[QueueInfo]:
    """``GET /api/queues/<vhost>`` of the RabbitMQ management API. Credentials come from the
    URL (``http://user:password@host:15672/``), else from the broker connection."""
    payload = management_call(url, f"queues/{urllib.parse.quote(vhost, safe='')}"
                              "?columns=name,vhost,messages_ready,messages_unacknowledged,"
                              "consumers", userid, password, timeout=timeout)
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


def management_call(url: str, path: str, userid: str | None = None,
                    password: str | None = None, data: Any = None,
                    timeout: float = MANAGEMENT_TIMEOUT) -> Any:
    """The JSON answer of the RabbitMQ management API's ``/api/<path>`` (a POST of ``data``
    when given). Credentials come from the URL (``http://user:password@host:15672/``), else
    from the broker connection."""
    parts = urllib.parse.urlsplit(url)
    user = urllib.parse.unquote(parts.username) if parts.username else userid
    secret = urllib.parse.unquote(parts.password) if parts.password else password
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    request = urllib.request.Request(
        f"{base}/api/{path}", headers={"Accept": "application/json"},
        data=None if data is None else json.dumps(data).encode())
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if user is not None:
        token = base64.b64encode(f"{user}:{secret or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        raise QueueInspectionError(
            f"the RabbitMQ management API at {mask_url(url)} answered {exc.code} {exc.reason} "
            "(check the user, password and vhost in broker_management_url)") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise QueueInspectionError(
            f"cannot read queues from the RabbitMQ management API at {mask_url(url)}: {exc}. "
            "Is the rabbitmq_management plugin enabled? Unset broker_management_url to look "
            "queues up by name instead.") from exc


#: What each peek does on RabbitMQ, said in the view and by ``qtui peek`` (RabbitMQ's docs,
#: "Negative Acknowledgements": a requeued message goes back to its original position if it
#: can, else nearer the head, when other consumers took or acked messages meanwhile).
MANAGEMENT_PEEK = ("the management API's get with ackmode=ack_requeue_true: each message is "
                   "taken and requeued, back at its place unless other consumers took messages "
                   "meanwhile, and flagged redelivered")
GET_PEEK = ("basic.get of each message, then basic.reject with requeue: taken and requeued, "
            "back at its place unless other consumers took messages meanwhile (then nearer "
            "the head), and flagged redelivered")


class AsSent(pyamqp.Message):
    """kombu's AMQP message with the body as it was sent: kombu would decompress it, uncapped
    (peek decompresses with a cap; a move sends the bytes on with their ``compression``)."""

    def __init__(self, raw: Any, channel: Any = None) -> None:
        # A content header the worker will dead-letter is shown as it came (see the worker
        # transport's message_to_python, which carries the error instead).
        raw.properties.pop(frames.UNREADABLE, None)
        headers = raw.properties.get("application_headers") or {}
        compression = headers.pop(COMPRESSION_HEADER, None)
        super().__init__(raw, channel=channel)
        if compression is not None:
            headers[COMPRESSION_HEADER] = compression
            self.headers = headers


def _waiting(position: int, message: Message) -> WaitingMessage:
    headers = message.headers or {}
    task_id = str(headers.get("id") or message.properties.get("correlation_id") or "")
    body = message.body
    if isinstance(body, str):  # py-amqp decoded it by its content_encoding: back to its bytes
        body = body.encode(message.content_encoding or "utf-8")
    return WaitingMessage(position, _handle(task_id, body), body, message.content_type,
                          message.content_encoding, headers, message.properties)


def _handle(task_id: str, body: bytes) -> tuple[str, bytes]:
    """How a delete or move finds a peeked message again among those it gets from the head:
    its task id and body, so a message whose id cannot be read (empty) is never mistaken for
    another one without an id. Copies equal in both are the same task."""
    return task_id, body


def parse_management_messages(payload: Any) -> list[WaitingMessage]:
    """Messages from a management API ``/api/queues/<vhost>/<name>/get`` answer."""
    if not isinstance(payload, list):
        raise QueueInspectionError("the RabbitMQ management API did not answer with a list of "
                                   f"messages: {str(payload)[:200]}")
    found = []
    for position, entry in enumerate(payload):
        properties = dict(entry.get("properties") or {}) if isinstance(entry, Mapping) else {}
        raw = str(entry.get("payload", "")) if isinstance(entry, Mapping) else ""
        body = (base64.b64decode(raw) if entry.get("payload_encoding") == "base64"
                else raw.encode())
        headers = properties.pop("headers", None) or {}
        task_id = str(headers.get("id") or properties.get("correlation_id") or "")
        found.append(WaitingMessage(position, _handle(task_id, body), body,
                                    properties.get("content_type"),
                                    properties.get("content_encoding"), headers, properties))
    return found
