"""Sending built task messages, one or many, with the same guarantees either way.

A send returns once the broker has the task (its one round trip; on RabbitMQ with publisher
confirms, the confirm), retries per ``task_publish_retry_policy`` within
``broker_publish_timeout``, and emits ``task-sent`` when ``task_send_sent_event`` is on. Every
body is serialized once, before anything is sent, so arguments that cannot be serialized fail
the call with nothing sent. On a broker that stores kombu's envelope (Redis, SQLite:
:mod:`.brokers.envelope`) the stored text is built in one pass and a batch goes in one round
trip or one transaction; elsewhere kombu's ``Producer.publish`` sends each message. A bulk send
that fails part way raises :class:`~.exceptions.SendFailed`, naming the tasks sent, in doubt and
not sent; it never writes a batch twice (no retry after a failure that may have stored it).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from kombu import Connection, Exchange, Producer, Queue
from kombu.exceptions import EncodeError
from kombu.exceptions import OperationalError as KombuOperationalError

from . import config
from .brokers import amqp as amqp_broker
from .brokers.envelope import (
    Body,
    Envelope,
    EnvelopeChannel,
    ReplyLost,
    Template,
    encode,
    plain_json,
    publish_time,
)
from .brokers.family import family_for
from .events import task_sent_fields
from .exceptions import BrokerBlocked, BrokerUnavailable, SendFailed
from .protocol import NO_EMBED, TaskMessage, WireMessage, body_of, build, json_body

if TYPE_CHECKING:
    from .app import App
    from .backends import ResultBackend
    from .plans import Call

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Tasks per broker call of a bulk send: one script run on Redis, one transaction on SQLite.
BATCH_SIZE = 1000


@dataclass(frozen=True, slots=True)
class SendSettings:
    """What every send reads from the configuration, read once per configuration change
    (``Conf.version``) rather than a few dozen lookups per task."""

    version: int
    serializer: str
    compression: str | None
    """``task_compression``: what a send that names no compression uses."""
    ignore_result: bool
    sent_event: bool
    retry: bool
    retry_policy: dict[str, Any]
    publish_timeout: float
    where: str
    """``the broker at URL`` (password masked), for error messages."""
    always_eager: bool
    """``task_always_eager``: a task's ``apply_async`` runs it here instead of sending it."""
    inherit_priority: bool
    """``task_inherit_parent_priority``: a send from a running task with no priority of its
    own gets the task's."""
    backend: ResultBackend
    """The app's result backend (the app drops these settings when it closes or forks)."""

    @classmethod
    def of(cls, app: App) -> SendSettings:
        conf = app.conf
        return cls(conf.version, conf.task_serializer, conf.task_compression,
                   bool(conf.task_ignore_result),
                   bool(conf.task_send_sent_event), bool(conf.task_publish_retry),
                   dict(conf.task_publish_retry_policy), float(conf.broker_publish_timeout),
                   f"the broker at {config.mask_url(app.broker_url)}",
                   bool(conf.task_always_eager), bool(conf.task_inherit_parent_priority),
                   app.backend)


class Outgoing:
    """A task call and where it goes, as ``send_task`` resolved them, and its body once
    serialized. A call of a send plan (:class:`~qtui.core.plans.Call`) builds its message only
    when something asks for it: most sends fill the plan's template instead."""

    __slots__ = (
        "_message",
        "_wire",
        "body",
        "call",
        "compression",
        "declare",
        "exchange",
        "queue",
        "routing_key",
        "serializer",
    )
    body: Body
    """Set by :func:`send`, before anything is sent."""

    def __init__(self, message: TaskMessage | Call, exchange: str, routing_key: str,
                 queue: Queue | None, serializer: str,
                 declare: tuple[Queue | Exchange, ...] = (), compression: str | None = None
                 ) -> None:
        if isinstance(message, TaskMessage):
            self._message: TaskMessage | None = message
            self.call: Call | None = None
        else:
            self._message, self.call = None, message
        self.exchange = exchange
        self.routing_key = routing_key
        self.queue = queue
        """Declared before the send (unless this connection declared it already); task-sent
        names it."""
        self.serializer = serializer
        self.compression = compression
        """The content type of the body's compression (the message's ``compression``
        header says the same), or None."""
        self.declare = declare
        """More entities to declare before the send (``App.publish(declare=...)``)."""
        self._wire: WireMessage | None = None

    @property
    def task_id(self) -> str:
        return self.call.id if self.call is not None else self.message.id

    @property
    def unbuilt(self) -> Call | None:
        """The call, while its message is not built (nothing asked for it yet)."""
        return self.call if self._message is None else None

    @property
    def message(self) -> TaskMessage:
        if self._message is None:
            assert self.call is not None
            self._message = self.call.message()
        return self._message

    @property
    def wire(self) -> WireMessage:
        """The message's headers and properties, built when a send needs them (one filled
        into a template never does)."""
        if self._wire is None:
            self._wire = build(self.message)
        return self._wire


@dataclass(slots=True)
class _Progress:
    """How far the chunk being sent got, for the error should it fail: the ids the broker
    confirmed or took, and those it may or may not have."""

    stored: list[str] = field(default_factory=list)
    in_doubt: list[str] = field(default_factory=list)
    whole: bool = False
    """The ids in doubt are stored all or none (one script run, one transaction)."""


def send(app: App, outgoing: Sequence[Outgoing], batch_size: int = BATCH_SIZE, *,
         retry: bool | None = None, retry_policy: Mapping[str, Any] | None = None) -> None:
    """Send every message, ``batch_size`` per broker call, in order. ``retry`` and
    ``retry_policy`` (None: ``task_publish_retry`` and its policy) say how one message is sent
    again after a connection error; several never are. One message fails as
    ``App.send_task`` always has (BrokerUnavailable, BrokerBlocked, TypeError); several that
    the broker fails to take raise SendFailed (a BrokerUnavailable) naming what was sent, what
    is in doubt and what was not sent, whatever the error. A TypeError (arguments that cannot
    be serialized) means nothing was sent. Several are never sent again after a failure that
    may have stored them (the broker would hold them twice)."""
    _encode_all(outgoing)
    settings = app.send_settings
    several = len(outgoing) > 1
    retrying = settings.retry if retry is None else retry
    policy = settings.retry_policy if retry_policy is None else dict(retry_policy)
    sent: list[str] = []
    with app.producer() as producer:
        for start in range(0, len(outgoing), batch_size):
            chunk = outgoing[start:start + batch_size]
            progress = _Progress()
            try:
                refused = _send_chunk(settings, producer, chunk, progress,
                                      retrying and not several, policy, retrying)
            except Exception as exc:
                if not several:
                    raise
                stored = set(progress.stored)
                if settings.sent_event and stored:
                    _send_sent_events(app, producer, [e for e in chunk if e.task_id in stored])
                raise _failed_part_way(settings, producer, chunk, progress, exc,
                                       sent + progress.stored,
                                       _ids(outgoing[start + batch_size:])) from exc
            accepted = [e for e in chunk if e.task_id not in refused] if refused else chunk
            sent += [e.task_id for e in accepted]
            if settings.sent_event and accepted:
                _send_sent_events(app, producer, accepted)
            if refused:
                raise SendFailed(BrokerUnavailable(
                    f"{settings.where} refused {len(refused)} of {_describe(chunk)} (publisher "
                    "confirm nack)."), sent=sent, in_doubt=[],
                    unsent=refused + _ids(outgoing[start + batch_size:]))


def _ids(encoded: Sequence[Outgoing]) -> list[str]:
    return [e.task_id for e in encoded]


def _failed_part_way(settings: SendSettings, producer: Producer, chunk: Sequence[Outgoing],
                     progress: _Progress, exc: Exception, sent: list[str], later: list[str]
                     ) -> SendFailed:
    """The SendFailed for ``chunk`` failing with ``exc``: what the broker refused outright (an
    out-of-memory Redis refuses a script before its first write) is not sent; else what the
    chunk was sending when it failed is in doubt."""
    refused = isinstance(exc, family_for(producer.connection).write_refusals())
    in_doubt = [] if refused else progress.in_doubt
    accounted = set(sent) | set(in_doubt)
    unsent = [e.task_id for e in chunk if e.task_id not in accounted] + later
    if isinstance(exc, BrokerUnavailable):
        cause = exc
    elif refused:
        cause = BrokerUnavailable(f"cannot send {_describe(chunk)}: {settings.where} refused "
                                  f"it ({exc}); it stored none of them.")
    else:
        cause = BrokerUnavailable(f"cannot send {_describe(chunk)}: {type(exc).__name__}: {exc}.")
    return SendFailed(cause, sent=sent, in_doubt=in_doubt, unsent=unsent,
                      whole=progress.whole and bool(in_doubt))


def _encode_all(outgoing: Sequence[Outgoing]) -> None:
    """Serialize every body: a call's JSON body without canvas fields or compression (a bulk
    send's) written here, the text :func:`_encode` writes, and any other by it."""
    write = plain_json()
    for item in outgoing:
        call = item.call
        if write is not None and call is not None and item._message is None \
                and item.serializer == "json" and call.plan.embed is NO_EMBED \
                and not item.compression:
            try:
                text = json_body(call.args, call.kwargs, NO_EMBED, write)
            except (TypeError, ValueError, RecursionError):  # not JSON's own types: kombu's
                pass
            else:
                item.body = Body("application/json", "utf-8", text)
                continue
        _encode(item)


def _encode(outgoing: Outgoing) -> None:
    """Serialize the body (a JSON body from the call's own arguments: the same text)."""
    serializer = outgoing.serializer
    call = outgoing.unbuilt
    try:
        if call is not None and serializer == "json":
            outgoing.body = Body.json_of_call(call.args, call.kwargs, call.plan.embed)
        else:
            outgoing.body = Body.serialize(
                body_of(outgoing.message, copy=serializer != "json"), serializer)
    except EncodeError as exc:
        raise TypeError(f"cannot send task {_name(outgoing)}: its arguments cannot be "
                        f"serialized with {serializer!r}: {exc}") from exc
    if outgoing.compression:
        outgoing.body = outgoing.body.compressed(outgoing.compression)


def _name(outgoing: Outgoing) -> str:
    return outgoing.call.plan.name if outgoing.call is not None else outgoing.message.task


def _describe(chunk: Sequence[Outgoing]) -> str:
    """``task NAME [ID]``, or ``N tasks (NAME [ID] and N-1 more)``, for error messages."""
    first = chunk[0]
    if len(chunk) == 1:
        return f"task {_name(first)} [{first.task_id}]"
    return f"{len(chunk)} tasks ({_name(first)} [{first.task_id}] and {len(chunk) - 1} more)"


def _send_chunk(settings: SendSettings, producer: Producer, chunk: Sequence[Outgoing],
                progress: _Progress, retry: bool, retry_policy: dict[str, Any],
                redeclare: bool) -> list[str]:
    """Send ``chunk`` in one broker call where the broker allows it, within
    ``broker_publish_timeout`` (with ``retry``, retrying per ``retry_policy``; declaring, which
    may be repeated, with ``redeclare``); returns the ids of
    the tasks the broker refused (RabbitMQ's nack). ``progress`` follows what was sent."""
    timeout = settings.publish_timeout
    deadline = time.monotonic() + timeout
    where = settings.where
    connection = producer.connection

    def unconfirmed(exc: BaseException) -> BrokerBlocked:
        hint = amqp_broker.block_hint(connection)
        return BrokerBlocked(
            f"cannot send {_describe(chunk)}: {where} did not confirm it within "
            f"broker_publish_timeout ({timeout:g}s): {exc}. {hint}The broker may still enqueue "
            "it once it recovers: sending again may run it twice.")

    def give_up_after_deadline(exc: BaseException, _interval: float) -> None:
        """kombu's retry errback: no new attempt once the send's time is spent."""
        if time.monotonic() >= deadline:
            raise unconfirmed(exc) from exc

    policy = {**retry_policy, "errback": _both(retry_policy.get("errback"),
                                               give_up_after_deadline)}
    try:
        reason = amqp_broker.wait_unblocked(connection, timeout)
        if reason is not None:
            raise BrokerBlocked(
                f"cannot send {_describe(chunk)}: {where} blocks publishers ({reason}) and "
                f"did not lift the block within broker_publish_timeout ({timeout:g}s). Nothing "
                f"was sent. {amqp_broker.ALARM_HINT}.")
        _declare(producer, chunk, policy, redeclare)
        family = family_for(connection)
        if family.stores_envelopes and _accepted(producer.channel, chunk):
            if time.monotonic() >= deadline:  # connecting and declaring took it all
                raise BrokerBlocked(
                    f"cannot send {_describe(chunk)}: broker_publish_timeout ({timeout:g}s) "
                    f"was spent connecting to {where} and declaring its queue. Nothing was "
                    "sent.")
            progress.in_doubt, progress.whole = [e.task_id for e in chunk], True
            _retrying(retry, producer, policy,
                      lambda: _put_envelopes(producer, chunk, deadline))
            return []
        if len(chunk) > 1 and family.confirms_batches(connection):
            progress.in_doubt = [e.task_id for e in chunk]
            confirmed: dict[int, bool] = {}
            try:
                refused = amqp_broker.publish_confirmed(
                    connection, [_publication(e) for e in chunk], timeout, confirmed)
            except Exception:
                progress.stored = [chunk[position].task_id for position, acked
                                   in sorted(confirmed.items()) if acked]
                progress.in_doubt = [e.task_id for position, e in enumerate(chunk)
                                     if position not in confirmed]
                raise
            return [chunk[position].task_id for position in refused]
        for encoded in chunk:
            progress.in_doubt = [encoded.task_id]
            _publish(settings, producer, encoded, policy, retry)
            progress.stored.append(encoded.task_id)
        progress.in_doubt = []
        return []
    except TimeoutError as exc:  # a write or confirm past the timeout, with retries off
        raise unconfirmed(exc) from exc
    except ReplyLost as exc:  # with retries off (or spent)
        raise BrokerUnavailable(
            f"cannot send {_describe(chunk)}: {where} lost the connection after it was sent "
            f"({exc}): the broker may have stored it. Sending it again may run it twice; "
            "check the queue first.") from exc
    except (KombuOperationalError, *connection.connection_errors) as exc:
        # kombu's error once retries are spent; the transport's own with retries off
        if _out_of_space(exc):
            raise BrokerUnavailable(
                f"cannot send {_describe(chunk)}: {where} has no space left on its disk "
                f"({exc}). Nothing was sent; what it stored before is kept. Free some space "
                "and send again.") from exc
        raise BrokerUnavailable(
            f"cannot send {_describe(chunk)}: {where} is unreachable ({exc}). Is it running? "
            "task_publish_retry_policy sets how long sending retries.") from exc


def _declare(producer: Producer, chunk: Sequence[Outgoing], policy: dict[str, Any],
             retry: bool) -> None:
    """Declare the queues (and other entities) this connection has not declared yet (kombu
    would check the same set, after copying and binding each entity). The retry is the
    producer's: one that connects again gives the producer the new channel, where kombu's
    ``maybe_declare(retry=True)`` revives only the entity and leaves the producer on the
    channel the reconnect closed, for the send to fail on."""
    declared = producer.connection.declared_entities
    entities: set[Queue | Exchange] = set()
    queue = None
    for outgoing in chunk:
        if outgoing.queue is not queue:  # a chunk's calls share a few Queue objects, in runs
            queue = outgoing.queue
            if queue is not None and hash(queue) not in declared:
                entities.add(queue)
        if outgoing.declare:
            entities.update(e for e in outgoing.declare if hash(e) not in declared)
    if not entities:
        return

    def declare() -> None:
        for entity in entities:
            producer.maybe_declare(entity)

    _retrying(retry, producer, policy, declare)


def _accepted(channel: EnvelopeChannel, chunk: Sequence[Outgoing]) -> bool:
    """Whether ``channel`` takes the envelope of every message of ``chunk`` (asked once for
    each run of messages to one exchange and routing key)."""
    exchange = routing_key = None
    for outgoing in chunk:
        if outgoing.routing_key != routing_key or outgoing.exchange != exchange:
            exchange, routing_key = outgoing.exchange, outgoing.routing_key
            if not channel.accepts_envelopes(exchange, routing_key):
                return False
    return True


def _put_envelopes(producer: Producer, chunk: Sequence[Outgoing], deadline: float
                   ) -> None:
    """Build the envelopes on the producer's channel now (a retry revives the channel), from
    each message's template where it has one, and store them in one call, waiting for the
    broker until ``deadline`` where the channel can bound it. A call of a send plan finds its
    template on the plan, its message unbuilt. The chunk is stored at once: its messages
    share one publish time."""
    channel: EnvelopeChannel = producer.channel
    sent_at = publish_time()
    envelopes = []
    for outgoing in chunk:
        call = outgoing.unbuilt
        template = None if call is None or call.expiration is not None else Template.of_call(
            channel, call, outgoing.body, outgoing.exchange, outgoing.routing_key)
        if call is None or template is None:
            envelopes.append(_envelope(channel, outgoing, sent_at))
        else:
            envelopes.append(template.fill(call, outgoing.body, call.plan.prototype.headers,
                                           sent_at))
    channel.put_envelopes(envelopes, deadline)


def _envelope(channel: EnvelopeChannel, outgoing: Outgoing, sent_at: str) -> Envelope:
    message = outgoing.message
    template = Template.of(channel, message, outgoing.body, outgoing.exchange,
                           outgoing.routing_key)
    if template is not None:
        return template.fill(message, outgoing.body, message.headers, sent_at)
    wire = outgoing.wire
    return encode(channel, outgoing.task_id, outgoing.body, wire.headers, wire.properties,
                  outgoing.exchange, outgoing.routing_key, message.headers)


def _publish(settings: SendSettings, producer: Producer, encoded: Outgoing,
             policy: dict[str, Any], retry: bool) -> None:
    """One message through kombu's ``Producer.publish``, its body serialized already (its
    ``expiration`` in seconds, which kombu writes as :func:`build` does)."""
    properties = encoded.wire.properties
    if "expiration" in properties:
        properties = {k: v for k, v in properties.items() if k != "expiration"}
    producer.publish(
        encoded.body.data, exchange=encoded.exchange,
        routing_key=encoded.routing_key, content_type=encoded.body.content_type,
        content_encoding=encoded.body.content_encoding, headers=encoded.wire.headers,
        retry=retry, retry_policy=policy, timeout=settings.publish_timeout,
        confirm_timeout=settings.publish_timeout, delivery_mode=2,
        expiration=encoded.message.expiration, **properties)


def _publication(encoded: Outgoing) -> amqp_broker.Publication:
    return amqp_broker.Publication(
        encoded.exchange, encoded.routing_key, encoded.body.data,
        encoded.body.content_type, encoded.body.content_encoding, encoded.wire.headers,
        encoded.wire.properties.get("priority"),
        {**{k: v for k, v in encoded.wire.properties.items() if k != "priority"},
         "delivery_mode": 2})


def _retrying(retry: bool, producer: Producer, policy: dict[str, Any],
              fun: Callable[[], T]) -> T:
    """``fun()``, with ``retry`` retried per the policy when the connection fails (kombu's
    ``ensure``, as ``Producer.publish(retry=True)`` does it). The first attempt is made here,
    as ensure's first is, and ensure is built only for an error it would retry: its loop
    then starts from that error (no second plain attempt), so the retries, their errback and
    ``max_retries`` are ensure's own."""
    try:
        return fun()
    except Exception as exc:  # which errors ensure retries is asked only once one is raised
        if not (retry and isinstance(exc, _retried_errors(producer.connection, policy))):
            raise
        failed: BaseException | None = exc

    def again() -> T:
        nonlocal failed
        if failed is not None:
            exc, failed = failed, None
            raise exc
        return fun()

    ensured: Callable[[], T] = producer.connection.ensure(producer, again, **policy)
    return ensured()


def _both(errback: Callable[[BaseException, float], Any] | None,
          deadline: Callable[[BaseException, float], None]
          ) -> Callable[[BaseException, float], None]:
    """kombu's retry errback: the policy's own (``errback``, as in Celery's policies) and then
    the send's deadline."""
    if errback is None:
        return deadline

    def both(exc: BaseException, interval: float) -> None:
        errback(exc, interval)
        deadline(exc, interval)

    return both


def _retried_errors(connection: Connection, policy: dict[str, Any]
                    ) -> tuple[type[BaseException], ...]:
    """The errors ``connection.ensure`` retries under ``policy`` (every other error it lets
    through as it is)."""
    named = policy.get("retry_errors") or ()
    if isinstance(named, type):  # one class, as kombu's ``except retry_errors`` takes it
        named = (named,)
    return (*named, *connection.recoverable_connection_errors,
            *connection.recoverable_channel_errors)


def _send_sent_events(app: App, producer: Producer, chunk: Sequence[Outgoing]) -> None:
    """task-sent for each task of ``chunk`` (one ``task.multi`` list for several, as workers
    batch theirs). The tasks are sent already, so a failure here is logged, not raised (the
    caller would send the tasks again)."""
    fields = [task_sent_fields(e.message,
                               e.queue.name if e.queue is not None else None,
                               e.exchange, e.routing_key) for e in chunk]
    try:
        if len(fields) == 1:
            app.events.publish("task-sent", fields[0], producer)
        else:
            app.events.publish_many("task-sent", fields, producer)
    except Exception as exc:  # noqa: BLE001 - any failure: the tasks themselves went out
        logger.warning("%s was sent, but its task-sent event was not: %s", _describe(chunk),
                       exc)


def _out_of_space(exc: BaseException) -> bool:
    """A send failed for a full disk (the embedded broker's SQLite, or a broker's own ENOSPC)."""
    seen: BaseException | None = exc
    for _ in range(8):  # the exception and what it was raised from
        if seen is None:
            return False
        text = str(seen)
        if "database or disk is full" in text or "No space left" in text \
                or getattr(seen, "errno", None) == errno.ENOSPC:
            return True
        seen = seen.__cause__ or seen.__context__
    return False
