"""The App: configuration, the task registry, sending tasks, and the broker and backend it uses."""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone, tzinfo
from functools import cached_property
from typing import TYPE_CHECKING, Any, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kombu import Connection, Producer, Queue

from . import brokers, builtins, config, sending
from .backends import ResultBackend, backend_for
from .brokers import amqp as amqp_broker
from .brokers.family import transport_name
from .brokers.redis.urls import BROKER_SCHEMES, scheme
from .canvas import gather_stamps, stamp_names
from .config import Conf
from .events import EventDispatcher
from .exceptions import ConfigError, NotRegistered
from .lineage import running_priority
from .plans import PLANS_KEPT, Lanes, SendPlan, plan_key
from .protocol import TaskMessage
from .result import AsyncResult
from .routing import Router
from .sending import Outgoing
from .task import _MISSING, SendOptions, Task

if TYPE_CHECKING:
    from typing import Unpack

logger = logging.getLogger(__name__)

_apps: list[weakref.ref[App]] = []
_default_app: App | None = None


def current_app() -> App:
    """The most recently created app, or a default one (embedded broker) if none exists."""
    global _default_app
    for ref in reversed(_apps):
        app = ref()
        if app is not None:
            return app
    if _default_app is None:
        _default_app = App("default")
    return _default_app


_shared_tasks: list[tuple[Callable[..., Any], dict[str, Any]]] = []


def _live_apps() -> list[App]:
    return [app for app in (ref() for ref in _apps) if app is not None]


def shared_task(fun: Callable[..., Any] | None = None, **options: Any) -> Any:
    """A task for every app, as Celery's ``shared_task``: registered with each app that exists
    and each one made later (for modules that must not import the app). The task returned is
    the current app's (the most recent one) at the time of decorating."""
    def register(f: Callable[..., Any]) -> Task:
        _shared_tasks.append((f, options))
        for app in _live_apps():
            app.task(**options)(f)
        task: Task = current_app().task(**options)(f)
        return task
    return register(fun) if fun is not None else register


def gen_task_name(app: App, name: str, module: str) -> str:
    """``module.name``; in a script run as ``__main__`` the app's main name replaces the module,
    so a worker that imports the module under its real name finds the same task."""
    if module == "__main__" and app.main:
        module = app.main
    return f"{module}.{name}"


class App:
    """A qtui application: ``app = App('tasks', broker='redis://', backend='redis://')``.

    With no broker configured, the embedded SQLite broker in the user's data directory is used,
    and results go next to it unless ``result_backend`` says otherwise.
    """

    def __init__(self, main: str | None = None, broker: str | None = None,
                 backend: str | None = None, *, include: list[str] | None = None,
                 config_source: Any = None, **settings: Any) -> None:
        self.main = main
        self.conf = Conf()
        self.tasks: dict[str, Task] = {}
        self._lock = threading.RLock()
        self._backends: dict[str, ResultBackend] = {}
        self._router: tuple[int, Router] | None = None
        self._send_settings: sending.SendSettings | None = None
        self._plans: tuple[int, dict[tuple[Any, ...], SendPlan]] = (-1, {})
        """Send plans by :func:`~qtui.core.plans.plan_key`, for one configuration version."""
        self._producers: list[Producer] = []
        """Idle producers, each on a connection of its own (see :meth:`producer`)."""
        self._producers_pid = os.getpid()
        self._batch = threading.local()
        """``outgoing``: the tasks a :meth:`sending_batch` block of this thread holds."""
        if config_source is not None:
            self.config_from_object(config_source)
        explicit = {"broker_url": broker, "result_backend": backend, "imports": include}
        self.conf.update({k: v for k, v in explicit.items() if v is not None},
                         source=f"App({main!r})")
        if settings:
            self.conf.update(settings, source=f"App({main!r})")
        builtins.register(self)
        _apps.append(weakref.ref(self))
        for fun, options in _shared_tasks:
            self.task(**options)(fun)

    # configuration -----------------------------------------------------------------------
    def config_from_object(self, obj: Any) -> None:
        """Load settings from a module (or its import name), an object or a mapping."""
        name = obj if isinstance(obj, str) else getattr(obj, "__name__", type(obj).__name__)
        self.conf.update(config.settings_from_object(obj), source=f"config object {name}")

    def config_from_file(self, path: str | os.PathLike[str]) -> None:
        """Load settings from a TOML file; errors name the file and the key."""
        self.conf.update(config.load_toml(path), source=f"config file {os.fspath(path)}")

    def config_from_envvar(self, variable: str = config.CONFIG_ENV) -> None:
        """Load the TOML file named by an environment variable."""
        path = os.environ.get(variable)
        if not path:
            raise ConfigError(f"environment variable {variable} is not set; "
                              "it should name a TOML config file")
        self.config_from_file(path)

    @property
    def broker_url(self) -> str:
        return self.conf.broker_url or brokers.default_broker_url()

    @property
    def result_backend_url(self) -> str | None:
        configured: str | None = self.conf.result_backend
        if configured:
            return configured
        if not self.conf.broker_url:
            return f"sqlite://{brokers.default_broker_path().with_name('results.sqlite')}"
        return None

    # tasks ---------------------------------------------------------------------------------
    @overload
    def task(self, fun: Callable[..., Any]) -> Task: ...
    @overload
    def task(self, *, name: str | None = None, base: type[Task] | None = None,
             **options: Any) -> Callable[[Callable[..., Any]], Task]: ...

    def task(self, fun: Callable[..., Any] | None = None, *, name: str | None = None,
             base: type[Task] | None = None, **options: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(bind=True, ...)``."""
        def register(f: Callable[..., Any]) -> Task:
            task_name = name or gen_task_name(self, f.__name__, f.__module__)
            cls = base or Task
            task = cls(self, f, task_name, **options)
            with self._lock:
                self.tasks[task_name] = task
            return task
        return register(fun) if fun is not None else register

    def get_task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            raise NotRegistered(f"task {name!r} is not registered with app {self.main!r}. "
                                "Is its module imported by the worker (-A / imports)?") from None

    def annotation(self, task_name: str, option: str) -> Any:
        """The value ``task_annotations`` sets for one option of one task, or _MISSING."""
        annotations = self.conf.task_annotations
        if not annotations:
            return _MISSING
        tables = annotations if isinstance(annotations, (list, tuple)) else [annotations]
        for table in tables:
            if callable(table) and not isinstance(table, Mapping):
                found = table(task_name)
                if found and option in found:
                    return found[option]
                continue
            if task_name in table and option in table[task_name]:
                return table[task_name][option]
            for pattern, values in table.items():
                if isinstance(pattern, str) and fnmatch.fnmatchcase(task_name, pattern) \
                        and option in values:
                    return values[option]
        return _MISSING

    # connections ----------------------------------------------------------------------------
    def connection_for_write(self, url: str | None = None, heartbeat: float = 0, *,
                             confirm: bool = False, worker: bool = False) -> Connection:
        """A new (unconnected) kombu Connection to the broker; Redis URLs get qtui's channel
        (:mod:`qtui.core.brokers.redis.channel`; with ``worker``, the channel a worker consumes
        on: :mod:`qtui.core.brokers.redis.worker_channel`), imported for a Redis URL only, so a
        process on another broker never loads redis-py. ``heartbeat`` (AMQP, seconds) is for
        connections whose owner calls ``heartbeat_check`` (the worker's): the broker closes a
        connection that stays silent past two of them. ``confirm``: on
        AMQP, publisher confirms and ``connection.blocked`` tracking
        (:mod:`qtui.core.brokers.amqp`), for the app's own producers: a send returns once the
        broker has the task. A worker's consuming connection does without (a confirm wait
        would run its delivery callbacks from inside a publish)."""
        url = url or self.broker_url
        options = dict(self.conf.broker_transport_options)
        if confirm and amqp_broker.is_amqp(url):
            options = amqp_broker.transport_options(options)
        settings: dict[str, Any] = {"connect_timeout": self.conf.broker_connection_timeout,
                                    "heartbeat": heartbeat, "transport_options": options}
        if scheme(url) not in BROKER_SCHEMES:
            return Connection(url, **settings)
        from .brokers.redis import channel
        if not worker:
            return channel.connection(url, **settings)
        from .brokers.redis import worker_channel
        return channel.connection(url, worker_channel.Transport, worker_channel.SentinelTransport,
                                  **settings)

    connection_for_read = connection_for_write
    connection = connection_for_write

    def producer(self) -> AbstractContextManager[Producer]:
        """A producer no other thread uses meanwhile: an idle one of this process, else a new
        one on a connection of its own. It goes back to the idle list afterwards, or is closed
        if its block raised (its connection may be in any state). A list pop and append are
        atomic, so this costs no lock on the path every task takes."""
        return _Lease(self)

    @property
    def send_settings(self) -> sending.SendSettings:
        """The configuration every send reads, rebuilt when the configuration changes."""
        settings = self._send_settings
        if settings is None or settings.version != self.conf.version:
            settings = self._send_settings = sending.SendSettings.of(self)
        return settings

    @property
    def router(self) -> Router:
        version = self.conf.version
        if self._router is None or self._router[0] != version:
            self._router = (version, Router(self.conf))
        return self._router[1]

    @property
    def backend(self) -> ResultBackend:
        url = self.result_backend_url or ""
        with self._lock:
            if url not in self._backends:
                self._backends[url] = backend_for(self, url)
            return self._backends[url]

    @cached_property
    def events(self) -> EventDispatcher:
        """Sends this client's events (task-sent, when task_send_sent_event is on)."""
        return EventDispatcher()

    @cached_property
    def control(self) -> Any:
        from .control import Control
        return Control(self)

    @property
    def timezone(self) -> tzinfo:
        """The zone naive datetimes are read in (Celery's timezone and enable_utc rules)."""
        if self.conf.timezone:
            try:
                return ZoneInfo(self.conf.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ConfigError(f"timezone {self.conf.timezone!r} is not a known time zone "
                                  "(use an IANA name such as 'Europe/Paris')") from None
        if self.conf.enable_utc:
            return timezone.utc
        return datetime.now().astimezone().tzinfo or timezone.utc  # astimezone() always sets one

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    # sending ------------------------------------------------------------------------------------
    def send_task(self, name: str, args: Any = None, kwargs: Mapping[str, Any] | None = None, *,
                  task: Task | None = None, **options: Unpack[SendOptions]) -> AsyncResult:
        """Send a task by name (it need not be registered here) and return its AsyncResult;
        ``options`` are :class:`~qtui.core.task.SendOptions`. Inside :meth:`send_many` (and a
        group's ``apply_async``) the task is sent with the rest of the batch."""
        others = options.keys() - _MESSAGE_OPTIONS  # the one set operation most sends pay
        if not others:
            return self.send_planned(self.plan(name, task, options), args, kwargs, options)
        if others - _PUBLISH_OPTIONS:
            unknown = others - _PUBLISH_OPTIONS - set(stamp_names(options))
            if unknown:
                raise TypeError(f"send_task({name!r}): unknown option(s) {sorted(unknown)}")
            options = gather_stamps(options)  # type: ignore[assignment]  # Celery's form
        retry, policy = self._publish_options(name, options)
        return self.send_planned(self.plan(name, task, options), args, kwargs, options,
                                 retry=retry, retry_policy=policy)

    def _publish_options(self, name: str, options: Mapping[str, Any]
                         ) -> tuple[bool | None, dict[str, Any] | None]:
        """The call's ``retry`` and ``retry_policy`` (its keys over the configured policy's,
        as Celery merges them), after checking that a ``producer``, ``publisher`` or
        ``connection`` given points at this app's broker: qtui sends through its own."""
        for key in ("producer", "publisher", "connection"):
            given = options.get(key)
            if given is not None:
                self._check_same_broker(name, key, given)
        policy = options.get("retry_policy")
        if policy is not None:
            if not config.RETRY_POLICY.check(policy):
                keys = sorted(set(policy) - config.RETRY_POLICY_KEYS) \
                    if isinstance(policy, Mapping) else policy
                raise TypeError(f"send_task({name!r}): retry_policy must be "
                                f"{config.RETRY_POLICY.expected}; got {keys!r}")
            policy = {**self.send_settings.retry_policy, **policy}
        retry = options.get("retry")
        return (None if retry is None else bool(retry)), policy

    def _check_same_broker(self, name: str, key: str, given: Any) -> None:
        """``given`` (a kombu Producer, or Connection for ``connection``) must point at the
        broker this app writes to; else TypeError or ValueError naming what it points at."""
        connection = given.connection if isinstance(given, Producer) else given
        if not isinstance(connection, Connection):
            kinds = "a kombu Connection" if key == "connection" else "a kombu Producer"
            raise TypeError(f"send_task({name!r}): {key} must be {kinds}, got "
                            f"{type(given).__name__}")
        if _broker_of(connection) != _broker_of(self.connection_for_write()):
            raise ValueError(
                f"send_task({name!r}): {key} points at {config.mask_url(connection.as_uri())}, "
                f"not at this app's broker {config.mask_url(self.broker_url)}; qtui sends "
                "through its own producers on the app's broker: leave it out, or send with an "
                "app configured for that broker")

    def send_planned(self, plan: SendPlan, args: Any, kwargs: Mapping[str, Any] | None,
                     options: Mapping[str, Any], *, retry: bool | None = None,
                     retry_policy: Mapping[str, Any] | None = None) -> AsyncResult:
        """Send one call of ``plan`` (see :meth:`send_task`), with ``options`` the call's
        send options, of which the plan's were made. ``retry``/``retry_policy`` (None: the
        configured ones) apply to a send on its own; in a batch, the batch's rule does."""
        name = plan.name
        if args is not None and not isinstance(args, (list, tuple)):
            raise TypeError(f"{name}: args must be a list or tuple, got {type(args).__name__}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError(f"{name}: kwargs must be a mapping, got {type(kwargs).__name__}")
        settings = self.send_settings
        route = plan.route_of(self, args, kwargs, options)
        priority = route.priority
        if priority is None and settings.inherit_priority:
            priority = running_priority(options.get("root_id"), options.get("parent_id"))
        call = plan.call(self, args, kwargs, options, priority)
        backend = settings.backend
        outgoing = Outgoing(call, route.exchange, route.routing_key, route.queue,
                            plan.serializer, compression=plan.compression)
        if plan.stores_result and backend.hears_of_calls:
            backend.on_task_call(outgoing.message)
        batch: list[Outgoing] | None = getattr(self._batch, "outgoing", None)
        if batch is not None:
            batch.append(outgoing)
        else:
            if plan.stores_result:
                backend.expect_result(call.id)
            if retry is None and retry_policy is None:
                sending.send(self, [outgoing])
            else:
                sending.send(self, [outgoing], retry=retry, retry_policy=retry_policy)
        return AsyncResult(call.id, app=self, backend=backend, task_name=name)

    def plan(self, name: str, task: Task | None, options: Mapping[str, Any]) -> SendPlan:
        """The send plan for ``name`` with ``options``: kept from an earlier call with the same
        ones under this configuration, else made (and kept, unless it is for this call alone)."""
        key = plan_key(name, task, options)
        if key is None:
            return SendPlan.of(self, name, task, options)
        version, plans = self._plans
        if version != self.conf.version:
            plans = {}
            self._plans = (self.conf.version, plans)
        plan = plans.get(key)
        if plan is None:
            if len(plans) >= PLANS_KEPT:
                plans.clear()
            plan = plans[key] = SendPlan.of(self, name, task, options)
        return plan

    def publish(self, message: TaskMessage, exchange: str, routing_key: str,
                declare: list[Any] | None = None, serializer: str | None = None) -> None:
        """Publish a built task message (see :mod:`qtui.core.sending`): retried per
        ``task_publish_retry_policy``, within ``broker_publish_timeout`` (a write or a publisher
        confirm that takes longer raises BrokerBlocked rather than returning as if the broker
        had the task). Every entity of ``declare`` is declared first; task-sent names the
        first queue among them."""
        entities = tuple(declare or ())
        queue = next((entity for entity in entities if isinstance(entity, Queue)), None)
        sending.send(self, [Outgoing(message, exchange, routing_key, queue,
                                     serializer or self.conf.task_serializer, entities)])

    def send_many(self, calls: Iterable[Mapping[str, Any]], *,
                  batch_size: int = sending.BATCH_SIZE) -> list[Any]:
        """Send many task calls at once, ``batch_size`` per broker call (one round trip on
        Redis, one transaction on SQLite), and return their results in order.

        ``calls`` are signatures (``add.s(2, 2)``, ``add.s(1).set(countdown=5)``; a group,
        chain or chord too, sent as its ``apply_async()`` sends it). A task registered here
        is sent as ``task.apply_async(args, kwargs, **options)`` sends it (its own routing
        and options), another by name as ``send_task`` does; each gets its task-sent event.
        Nothing is sent until every call's arguments are serialized; if the broker fails
        part way, :class:`~qtui.core.exceptions.SendFailed` names the ids sent, in doubt and
        not sent."""
        from .canvas import Signature, send_options, signature_of

        results: list[Any] = []
        with self.sending_batch(batch_size, discard_on_error=True):
            lanes = Lanes(self, eager=True)
            for call in calls:
                # a plain signature of a registered task: straight into its lane
                if type(call) is Signature and call["subtask_type"] is None \
                        and not call["options"]:
                    lane = lanes[call["task"]]
                    if lane is not None:
                        result = lane.hold(call["args"], call["kwargs"])
                        if result is not None:
                            results.append(result)
                            continue
                # a Signature is in shape already; anything else is checked and copied
                sig = call if type(call) is Signature else signature_of(call)
                if sig.get("subtask_type") is not None:
                    results.append(Signature.from_dict(sig, app=self).apply_async())
                    continue
                task = self.tasks.get(sig["task"])
                options = send_options(sig["options"])
                if task is not None:
                    results.append(task.apply_async(sig["args"], sig["kwargs"], **options))
                else:
                    results.append(self.send_task(sig["task"], sig["args"], sig["kwargs"],
                                                  **options))
        return results

    @contextmanager
    def sending_batch(self, batch_size: int = sending.BATCH_SIZE, *,
                      discard_on_error: bool = False) -> Iterator[None]:
        """Within the block, tasks this thread sends are held and sent together when it ends
        (``batch_size`` per broker call); nested blocks join the outer one. A block that raises
        still sends what it held before the error (what the code asked to send is not lost
        silently), then the error goes on; a failure to send them is raised instead, with the
        block's error as its context. ``discard_on_error``: a block that raises drops what it
        added itself (one call that sends all or nothing: ``send_many``, a group)."""
        held: list[Outgoing] | None = getattr(self._batch, "outgoing", None)
        if held is not None:
            mark = len(held)
            try:
                yield
            except BaseException:
                if discard_on_error:
                    del held[mark:]
                raise
            return
        held = []
        self._batch.outgoing = held
        try:
            yield
        except BaseException:
            if discard_on_error:
                held.clear()
            raise
        finally:
            self._batch.outgoing = None
            if held:
                sending.send(self, held, batch_size)

    @contextmanager
    def holding(self) -> Iterator[list[Outgoing]]:
        """Within the block, tasks this thread sends are only built and held, in the list it
        gives, for the caller to send (:func:`sending.send`): a send refused part way can then
        send again only what the broker did not take, under the same ids."""
        outer = getattr(self._batch, "outgoing", None)
        held: list[Outgoing] = []
        self._batch.outgoing = held
        try:
            yield held
        finally:
            self._batch.outgoing = outer

    @contextmanager
    def sending_now(self) -> Iterator[None]:
        """Within the block, tasks this thread sends go out at once, even inside
        :meth:`sending_batch` (a retry must be sent before the ``Retry`` it raises ends the
        task)."""
        held = getattr(self._batch, "outgoing", None)
        self._batch.outgoing = None
        try:
            yield
        finally:
            self._batch.outgoing = held

    def AsyncResult(self, task_id: str, task_name: str | None = None) -> AsyncResult:  # noqa: N802
        return AsyncResult(task_id, app=self, task_name=task_name)

    def after_fork(self) -> None:
        """In a forked child: drop the parent's connections without closing them (they are the
        parent's), and a lock another parent thread may have held at the fork."""
        self._lock = threading.RLock()
        self._producers = []
        self._producers_pid = os.getpid()
        self._backends = {}
        self._send_settings = None
        self._plans = (-1, {})

    def close(self) -> None:
        """Release the producer pool and backend connections."""
        with self._lock:
            producers, self._producers = self._producers, []
            for producer in producers:
                _release(producer)
            for backend in self._backends.values():
                backend.close()
            self._backends.clear()
            self._send_settings = None

    def __repr__(self) -> str:
        return f"<App {self.main or '__main__'} broker={config.mask_url(self.broker_url)}>"


#: The keyword options of send_task.
_SEND_OPTIONS = frozenset(SendOptions.__annotations__)
#: The send options about how a call is published rather than what its message says.
_PUBLISH_OPTIONS = frozenset({"retry", "retry_policy", "producer", "publisher", "connection",
                              "add_to_parent"})
#: The send options that make the message.
_MESSAGE_OPTIONS = _SEND_OPTIONS - _PUBLISH_OPTIONS


def _broker_of(connection: Connection) -> tuple[Any, ...]:
    """Where ``connection`` sends: its transport's kind, host, port and virtual host (``/``
    and empty alike; kombu's Redis reads both, and ``0``, as database 0)."""
    transport = connection.transport
    vhost = (connection.virtual_host or "").strip("/")
    return (transport_name(connection), connection.hostname or "localhost",
            connection.port or transport.default_port, "" if vhost == "0" else vhost,
            connection.userid or None)


class _Lease:
    """:meth:`App.producer`'s hold on one producer; a class rather than a generator-based
    context manager, which costs every send a few microseconds more."""

    __slots__ = ("app", "producer")

    def __init__(self, app: App) -> None:
        self.app = app

    def __enter__(self) -> Producer:
        app = self.app
        if app._producers_pid != os.getpid():
            app.after_fork()
        try:
            self.producer = app._producers.pop()
        except IndexError:
            self.producer = Producer(app.connection_for_write(confirm=True), auto_declare=False)
        return self.producer

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.app._producers.append(self.producer)
        else:
            _release(self.producer)


def _release(producer: Producer) -> None:
    """Close a producer's connection; one the broker blocks is dropped without the closing
    handshake, which a blocked RabbitMQ connection never answers."""
    try:
        if amqp_broker.block_hint(producer.connection):
            producer.connection.collect()
        else:
            producer.connection.release()
    except Exception:  # closing a broken connection can raise anything
        pass
