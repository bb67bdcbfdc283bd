"""Remote control client: commands to workers through Celery's ``celery.pidbox`` mailbox.

``app.control`` is Celery's API with Celery's names, arguments and reply shapes: ``broadcast``,
``inspect()`` (an :class:`Inspect`), and one method per control command. Replies are collected
until ``timeout`` seconds have passed (or every named destination answered): a slow or dead
worker costs that wait and nothing more, and :attr:`Replies.no_reply` names the destinations
that said nothing.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from kombu import Connection, Consumer, Producer
from kombu.common import maybe_declare
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.pidbox import Mailbox
from kombu.utils.uuid import uuid

from .brokers.dropped import warn_dropped
from .brokers.family import family_for
from .config import mask_url
from .exceptions import BrokerUnavailable
from .ledger import record_revoked
from .signing import secret_of, sign

if TYPE_CHECKING:
    from .app import App

MAILBOX_NAME = "celery"
TERM_SIGNAME = "SIGTERM"
#: Commands and replies travel as JSON whatever ``accept_content`` says: a reply comes from
#: anyone who can publish to the broker, and decoding pickle from them would run their code.
CONTROL_CONTENT = ["json"]
#: Stands for the (unknown) sender of a reply that could not be decoded, numbered.
UNDECODABLE = "undecodable reply #"

logger = logging.getLogger(__name__)


def _strtobool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "y", "on"}:
        return True
    if lowered in {"0", "false", "no", "n", "off"}:
        return False
    raise ValueError(f"{text!r} is not a boolean (use true or false)")


@dataclass(frozen=True)
class Command:
    """One remote-control command as Celery's worker declares it: its positional arguments
    (name and type, for the command line) and the argument that takes the rest, if any."""

    name: str
    kind: Literal["inspect", "control"]
    help: str
    args: tuple[tuple[str, Callable[[str], Any]], ...] = ()
    variadic: str | None = None
    signature: str = ""
    replies: bool = True
    """False for commands a worker may not answer (Celery's shutdown exits without a reply)."""

    def arguments(self, values: Sequence[str]) -> dict[str, Any]:
        """Command-line words -> the command's arguments, as ``celery inspect/control`` does."""
        required = self.signature.count("<")
        if len(values) < required:
            raise ValueError(f"{self.name} takes {self.signature}; got {len(values)} "
                             f"argument{'s' if len(values) != 1 else ''}")
        arguments: dict[str, Any] = {}
        for (name, convert), value in zip(self.args, values, strict=False):
            try:
                arguments[name] = convert(value)
            except ValueError as exc:
                raise ValueError(f"{self.name}: bad {name} {value!r}: {exc}") from None
        rest = list(values[len(self.args):])
        if self.variadic:
            arguments[self.variadic] = rest
        elif rest:
            raise ValueError(f"{self.name} takes {self.signature or 'no arguments'}; "
                             f"unexpected {' '.join(rest)!r}")
        return arguments


COMMANDS: dict[str, Command] = {c.name: c for c in [
    # inspect: no side effects
    Command("ping", "inspect", "Ping worker(s)."),
    Command("stats", "inspect", "Request worker statistics/information."),
    Command("active", "inspect", "List of tasks currently being executed."),
    Command("reserved", "inspect",
            "List of currently reserved tasks, not including scheduled/active."),
    Command("scheduled", "inspect", "List of currently scheduled ETA/countdown tasks."),
    Command("revoked", "inspect", "List of revoked task-ids."),
    Command("registered", "inspect", "List of registered tasks.", variadic="taskinfoitems",
            signature="[attr1 [attr2 [... [attrN]]]]"),
    Command("query_task", "inspect", "Query for task information by id.", variadic="ids",
            signature="[id1 [id2 [... [idN]]]]"),
    Command("conf", "inspect", "List configuration.", args=(("with_defaults", _strtobool),),
            signature="[include_defaults=False]"),
    Command("report", "inspect", "Information about the installation for bug reports."),
    Command("active_queues", "inspect",
            "List the task queues a worker is currently consuming from."),
    Command("clock", "inspect", "Get current logical clock value."),
    # control: change something
    Command("revoke", "control", "Revoke task by task id (or list of ids).", variadic="task_id",
            signature="[id1 [id2 [... [idN]]]]"),
    Command("terminate", "control", "Terminate task by task id (or list of ids).",
            args=(("signal", str),), variadic="task_id",
            signature="<signal> [id1 [id2 [... [idN]]]]"),
    Command("rate_limit", "control",
            "Tell worker(s) to modify the rate limit for a task by type.",
            args=(("task_name", str), ("rate_limit", str)),
            signature="<task_name> <rate_limit (e.g., 5/s | 5/m | 5/h)>"),
    Command("time_limit", "control",
            "Tell worker(s) to modify the time limit for task by type.",
            args=(("task_name", str), ("soft", float), ("hard", float)),
            signature="<task_name> <soft_secs> [hard_secs]"),
    Command("enable_events", "control", "Tell worker(s) to send task-related events."),
    Command("disable_events", "control", "Tell worker(s) to stop sending task-related events."),
    Command("heartbeat", "control", "Tell worker(s) to send event heartbeat immediately."),
    Command("pool_grow", "control", "Grow pool by n processes/threads.", args=(("n", int),),
            signature="[N=1]"),
    Command("pool_shrink", "control", "Shrink pool by n processes/threads.", args=(("n", int),),
            signature="[N=1]"),
    Command("autoscale", "control", "Modify autoscale settings.",
            args=(("max", int), ("min", int)), signature="[max [min]]"),
    Command("shutdown", "control", "Shutdown worker(s).", replies=False),
    Command("add_consumer", "control", "Tell worker(s) to consume from task queue by name.",
            args=(("queue", str), ("exchange", str), ("exchange_type", str),
                  ("routing_key", str)),
            signature="<queue> [exchange [type [routing_key]]]"),
    Command("cancel_consumer", "control",
            "Tell worker(s) to stop consuming from task queue by name.",
            args=(("queue", str),), signature="<queue>"),
]}


class Replies(list[dict[str, Any]]):
    """Celery's reply shape, a list of ``{hostname: reply}``, plus who was asked and was silent."""

    def __init__(self, replies: Iterable[dict[str, Any]] = (), no_reply: Iterable[str] = ()
                 ) -> None:
        super().__init__(replies)
        self.no_reply: tuple[str, ...] = tuple(no_reply)
        """Destinations named in the request that did not answer within the timeout."""

    def by_worker(self) -> dict[str, Any]:
        """``{hostname: reply}`` for every worker that answered (Celery's flattened shape)."""
        flat: dict[str, Any] = {}
        for reply in self:
            flat.update(reply)
        return flat


def _destinations(destination: str | Sequence[str] | None) -> list[str] | None:
    if destination is None:
        return None
    if isinstance(destination, str):
        return [destination]
    return list(destination)


class Control:
    """``app.control``: send a command to every worker (or some) and collect their replies."""

    def __init__(self, app: App) -> None:
        self.app = app
        # Celery's control_queue_ttl (300 s) and control_queue_expires (10 s).
        self.mailbox = Mailbox(MAILBOX_NAME, type="fanout", accept=CONTROL_CONTENT,
                               serializer="json", queue_ttl=300.0, reply_queue_ttl=300.0,
                               queue_expires=10.0, reply_queue_expires=10.0)

    def inspect(self, destination: str | Sequence[str] | None = None, timeout: float = 1.0,
                callback: Callable[[dict[str, Any]], None] | None = None,
                connection: Connection | None = None, limit: int | None = None,
                pattern: str | None = None, matcher: str | None = None) -> Inspect:
        """An :class:`Inspect` for these workers: ``app.control.inspect(timeout=2).active()``."""
        return Inspect(self, destination=destination, timeout=timeout, callback=callback,
                       connection=connection, limit=limit, pattern=pattern, matcher=matcher)

    def broadcast(self, command: str, arguments: Mapping[str, Any] | None = None,
                  destination: str | Sequence[str] | None = None,
                  connection: Connection | None = None, reply: bool = False,
                  timeout: float = 1.0, limit: int | None = None,
                  callback: Callable[[dict[str, Any]], None] | None = None,
                  pattern: str | None = None, matcher: str | None = None,
                  **extra_kwargs: Any) -> Replies | None:
        """Send ``command`` to the workers (those in ``destination``, or matching ``pattern``).

        With ``reply``, wait up to ``timeout`` seconds in all, or until ``limit`` replies (by
        default as many as there are destinations), calling ``callback`` on each as it comes.
        """
        destination = _destinations(destination)
        arguments = dict(arguments or {}, **extra_kwargs)
        secret = secret_of(self.app.conf)
        if limit is None and destination:
            limit = len(destination)
        context = nullcontext(connection) if connection is not None else _reading(self.app)
        try:
            with context as conn:
                mailbox = self.mailbox(conn)
                ticket = uuid() if reply else None
                _publish(mailbox, conn, {"method": command, "arguments": arguments,
                                         "destination": destination, "pattern": pattern,
                                         "matcher": matcher}, ticket, timeout, secret)
                if ticket is None:
                    return None
                replies = _collect(mailbox, conn, ticket, timeout, limit, callback)
        except KombuOperationalError as exc:
            raise BrokerUnavailable(
                f"cannot send {command!r} to the workers: the broker at "
                f"{mask_url(self.app.broker_url)} is unreachable ({exc}). Is it running?"
            ) from exc
        answered = {hostname for r in replies for hostname in r}
        return Replies(replies, [d for d in destination or () if d not in answered])

    # control commands (Celery's signatures) -------------------------------------------------
    def ping(self, destination: str | Sequence[str] | None = None, timeout: float = 1.0,
             **kwargs: Any) -> Replies | None:
        """``[{hostname: {'ok': 'pong'}}, ...]`` from every worker (or those named)."""
        return self.broadcast("ping", reply=True, arguments={}, destination=destination,
                              timeout=timeout, **kwargs)

    def revoke(self, task_id: str | Sequence[str], destination: str | Sequence[str] | None = None,
               terminate: bool = False, signal: str = TERM_SIGNAME, **kwargs: Any
               ) -> Replies | None:
        """Tell workers never to run these tasks (with ``terminate``, to kill them if running);
        kept in the cluster ledger too, for workers that start later."""
        record_revoked(self.app, [task_id] if isinstance(task_id, str) else task_id)
        return self.broadcast("revoke", destination=destination, arguments={
            "task_id": task_id, "terminate": terminate, "signal": signal}, **kwargs)

    def terminate(self, task_id: str | Sequence[str],
                  destination: str | Sequence[str] | None = None, signal: str = TERM_SIGNAME,
                  **kwargs: Any) -> Replies | None:
        """Revoke and kill the process running the task: ``revoke(..., terminate=True)``."""
        return self.revoke(task_id, destination=destination, terminate=True, signal=signal,
                           **kwargs)

    def rate_limit(self, task_name: str, rate_limit: str | int | float,
                   destination: str | Sequence[str] | None = None, **kwargs: Any
                   ) -> Replies | None:
        """Set a task type's rate limit on the workers ('100/m', '10/s', a number per second)."""
        return self.broadcast("rate_limit", destination=destination, arguments={
            "task_name": task_name, "rate_limit": rate_limit}, **kwargs)

    def time_limit(self, task_name: str, soft: float | None = None, hard: float | None = None,
                   destination: str | Sequence[str] | None = None, **kwargs: Any
                   ) -> Replies | None:
        """Set a task type's soft and hard time limits (seconds) on the workers."""
        return self.broadcast("time_limit", destination=destination, arguments={
            "task_name": task_name, "hard": hard, "soft": soft}, **kwargs)

    def add_consumer(self, queue: str, exchange: str | None = None,
                     exchange_type: str = "direct", routing_key: str | None = None,
                     options: Mapping[str, Any] | None = None,
                     destination: str | Sequence[str] | None = None, **kwargs: Any
                     ) -> Replies | None:
        """Tell workers to start consuming from ``queue``."""
        return self.broadcast("add_consumer", destination=destination, arguments=dict({
            "queue": queue, "exchange": exchange, "exchange_type": exchange_type,
            "routing_key": routing_key}, **(options or {})), **kwargs)

    def cancel_consumer(self, queue: str, destination: str | Sequence[str] | None = None,
                        **kwargs: Any) -> Replies | None:
        """Tell workers to stop consuming from ``queue``."""
        return self.broadcast("cancel_consumer", destination=destination,
                              arguments={"queue": queue}, **kwargs)

    def enable_events(self, destination: str | Sequence[str] | None = None, **kwargs: Any
                      ) -> Replies | None:
        return self.broadcast("enable_events", arguments={}, destination=destination, **kwargs)

    def disable_events(self, destination: str | Sequence[str] | None = None, **kwargs: Any
                       ) -> Replies | None:
        return self.broadcast("disable_events", arguments={}, destination=destination,
                              **kwargs)

    def heartbeat(self, destination: str | Sequence[str] | None = None, **kwargs: Any
                  ) -> Replies | None:
        """Ask workers to send a worker-heartbeat event now (how a new monitor finds them)."""
        return self.broadcast("heartbeat", arguments={}, destination=destination, **kwargs)

    def pool_grow(self, n: int = 1, destination: str | Sequence[str] | None = None,
                  **kwargs: Any) -> Replies | None:
        return self.broadcast("pool_grow", arguments={"n": n}, destination=destination,
                              **kwargs)

    def pool_shrink(self, n: int = 1, destination: str | Sequence[str] | None = None,
                    **kwargs: Any) -> Replies | None:
        return self.broadcast("pool_shrink", arguments={"n": n}, destination=destination,
                              **kwargs)

    def autoscale(self, max: int, min: int,  # noqa: A002 - Celery's argument names
                  destination: str | Sequence[str] | None = None, **kwargs: Any
                  ) -> Replies | None:
        return self.broadcast("autoscale", arguments={"max": max, "min": min},
                              destination=destination, **kwargs)

    def shutdown(self, destination: str | Sequence[str] | None = None, **kwargs: Any
                 ) -> Replies | None:
        """Ask workers to finish their current tasks and exit."""
        return self.broadcast("shutdown", arguments={}, destination=destination, **kwargs)

    def purge(self, connection: Connection | None = None) -> int:
        """Discard every waiting message in the app's task queues; returns how many."""
        from .queues import inspector_for

        names = list(self.app.router.queues)
        with inspector_for(self.app, connection) as inspector:
            return sum(inspector.purge(name) for name in names)

    discard_all = purge


def _reading(app: App) -> Connection:
    """A new connection that publishes the command and reads the replies: its broker family's
    reading one, since a reply comes from anyone who can publish to the broker (py-amqp's own
    reader raises RecursionError out of the collection on headers nested thousands deep)."""
    connection = app.connection_for_write()
    return family_for(connection).for_reading(connection)


def _publish(mailbox: Mailbox, conn: Connection, message: dict[str, Any], ticket: str | None,
             timeout: float, secret: bytes | None) -> None:
    """kombu's ``Mailbox._publish``, signing the command when there is a control secret."""
    channel = conn.default_channel
    exchange, reply_exchange = mailbox.exchange, mailbox.reply_exchange
    assert exchange is not None and reply_exchange is not None  # kombu types them optional
    if ticket is not None:
        maybe_declare(mailbox.reply_queue(channel))
        message.update(ticket=ticket, reply_to={"exchange": reply_exchange.name,
                                                "routing_key": mailbox.oid})
    if secret is not None:
        message = sign(message, secret)
    Producer(channel, auto_declare=False).publish(
        message, exchange=exchange.name, declare=[exchange], serializer="json", retry=True,
        headers={"clock": mailbox.clock.forward(),
                 "expires": time.time() + timeout if timeout else 0})


def _collect(mailbox: Mailbox, conn: Connection, ticket: str, timeout: float,
             limit: int | None, callback: Callable[[dict[str, Any]], None] | None
             ) -> list[dict[str, Any]]:
    """Replies carrying our ticket, until the deadline or ``limit`` of them. A reply that
    cannot be decoded (not JSON, headers unreadable) becomes an error entry when it carries our
    ticket, not counted in ``limit`` (anyone who saw the request can send one with it, and a
    worker's reply must not be shut out by it); without, it is dropped with a warning."""
    replies: list[dict[str, Any]] = []
    decoded = 0
    undecodable = itertools.count(1)
    deadline = time.monotonic() + timeout

    def ours(message: Any) -> bool:
        headers = message.headers or {}
        clock = headers.get("clock")
        if isinstance(clock, int) and not isinstance(clock, bool):
            mailbox.clock.adjust(clock)
        return bool(headers.get("ticket") == ticket)

    def add(body: dict[str, Any]) -> None:
        if callback is not None:
            callback(body)
        replies.append(body)

    def on_message(body: Any, message: Any) -> None:
        nonlocal decoded
        if ours(message) and isinstance(body, dict):  # else a late answer, or garbage
            decoded += 1
            add(body)

    def on_decode_error(message: Any, exc: Exception) -> None:
        if ours(message):
            add({f"{UNDECODABLE}{next(undecodable)}": {"error": (
                f"a reply that is not JSON ({message.content_type}) was dropped: {exc}")}})
        else:
            warn_dropped(logger, queue.name,
                         f"Dropped a remote-control reply that cannot be decoded: {exc}")

    queue = mailbox.reply_queue
    channel = conn.default_channel
    consumer = Consumer(channel, [queue], accept=CONTROL_CONTENT, no_ack=True,
                        callbacks=[on_message], on_decode_error=on_decode_error)
    try:
        with consumer:
            while limit is None or decoded < limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    conn.drain_events(timeout=remaining)
                except TimeoutError:
                    break
    finally:
        channel.after_reply_message_received(queue.name)
    return replies


def _safe_mode(safe: bool | None) -> dict[str, bool]:
    """The ``safe`` argument of a task list request, sent only when the caller chose (Celery's
    client sends none unless asked)."""
    return {} if safe is None else {"safe": safe}


class Inspect:
    """``app.control.inspect(...)``: read-only commands; each returns ``{hostname: reply}``,
    or None when nobody answered (Celery's shapes). :attr:`no_reply` then names the
    destinations that stayed silent on the last request."""

    def __init__(self, control: Control, destination: str | Sequence[str] | None = None,
                 timeout: float = 1.0, callback: Callable[[dict[str, Any]], None] | None = None,
                 connection: Connection | None = None, limit: int | None = None,
                 pattern: str | None = None, matcher: str | None = None) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout
        self.callback = callback
        self.connection = connection
        self.limit = limit
        self.pattern = pattern
        self.matcher = matcher
        self.no_reply: tuple[str, ...] = ()

    def _request(self, command: str, **kwargs: Any) -> Any:
        replies = self.control.broadcast(
            command, arguments=kwargs, destination=self.destination, connection=self.connection,
            reply=True, timeout=self.timeout, limit=self.limit, callback=self.callback,
            pattern=self.pattern, matcher=self.matcher)
        assert replies is not None
        self.no_reply = replies.no_reply
        if not replies:
            return None
        by_worker = replies.by_worker()
        if isinstance(self.destination, str):
            return by_worker.get(self.destination)
        return by_worker

    def ping(self, destination: str | Sequence[str] | None = None) -> Any:
        """``{hostname: {'ok': 'pong'}}``."""
        if destination:
            self.destination = destination
        return self._request("ping")

    def stats(self) -> Any:
        """``{hostname: {...}}``: pool, broker, clock, uptime, pid, prefetch_count, rusage..."""
        return self._request("stats")

    def active(self, safe: bool | None = None) -> Any:
        """``{hostname: [task info, ...]}`` of the tasks running now; with ``safe=True`` their
        args and kwargs are the reprs their senders wrote (a mask where they masked a secret),
        as ``qtui inspect`` and the console ask; by default the arguments, as Celery's client."""
        return self._request("active", **_safe_mode(safe))

    def reserved(self, safe: bool | None = None) -> Any:
        """``{hostname: [task info, ...]}`` prefetched, not yet running; ``safe`` as for
        :meth:`active` (a Celery worker ignores it here and sends the arguments)."""
        return self._request("reserved", **_safe_mode(safe))

    def scheduled(self, safe: bool | None = None) -> Any:
        """``{hostname: [{'eta', 'priority', 'request'}, ...]}`` waiting for their ETA;
        ``safe`` as for :meth:`reserved`."""
        return self._request("scheduled", **_safe_mode(safe))

    def revoked(self) -> Any:
        """``{hostname: [task id, ...]}``."""
        return self._request("revoked")

    def registered(self, *taskinfoitems: str) -> Any:
        """``{hostname: ['name [attr=value ...]', ...]}``."""
        return self._request("registered", taskinfoitems=taskinfoitems)

    registered_tasks = registered

    def query_task(self, *ids: str | Sequence[str], safe: bool | None = None) -> Any:
        """``{hostname: {task id: [state, task info]}}`` for the tasks a worker holds, by ids
        or one list of them (Celery's call); ``safe`` as for :meth:`reserved`."""
        if len(ids) == 1 and isinstance(ids[0], (list, tuple)):
            ids = tuple(ids[0])
        return self._request("query_task", ids=ids, **_safe_mode(safe))

    def conf(self, with_defaults: bool = False) -> Any:
        """``{hostname: {setting: value}}`` with secrets censored."""
        return self._request("conf", with_defaults=with_defaults)

    def report(self) -> Any:
        """``{hostname: {'ok': text}}``."""
        return self._request("report")

    def active_queues(self) -> Any:
        """``{hostname: [queue info, ...]}``: the queues each worker consumes."""
        return self._request("active_queues")

    def clock(self) -> Any:
        """``{hostname: {'clock': n}}``."""
        return self._request("clock")
